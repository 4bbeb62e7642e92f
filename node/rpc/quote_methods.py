"""The `quote` read: yield to maturity, clean and dirty price and accrued interest of a
bond (a floating-rate note's at its index held flat) for a settlement date (ledger/quote.py), from committed state.

A floating-rate note is quoted from its index's fixings in `fixing_window` (the current
period's fixing date less the lookback, to the settlement date: at most a period and a few
weeks of daily fixings, one key-ordered range read) and its holiday calendar.

Public, like `instrument` (a quote is arithmetic on the bond's public terms). The arithmetic
runs on a worker thread (a 100-year monthly bond has 1200 cash flows), at most
`[rpc] max_quotes` (default 2) at a time, so a burst of quotes never stalls the event loop.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import trio

from ledger.debt_terms import RateFixing, fixing_key
from ledger.quote import QuoteError, fixing_window, quote_instrument
from ledger.state import calendar_key, instrument_key
from ledger.types import HolidayCalendar, Instrument, date_from_text
from node.rpc.errors import NOT_FOUND, RpcError, invalid_params
from node.rpc.framing import Method
from node.rpc.nodeview import NodeView
from node.rpc.params import instrument_param, str_param
from node.rpc.render import decode_record


class QuoteMethods:
    """`quote {instrument, settlement, price | yield}`."""

    def __init__(self, node: NodeView, max_quotes: int = 2) -> None:
        self.node = node
        self.limiter = trio.CapacityLimiter(max_quotes)  # [rpc] max_quotes

    def table(self) -> dict[str, Method]:
        return {
            "quote": Method(
                self.quote,
                ("instrument", "settlement", "price", "yield"),
                ("instrument", "settlement"),
            )
        }

    async def quote(self, instrument: Any, settlement: Any, price: Any = None, **rest: Any) -> dict:
        instrument_id = instrument_param(instrument)
        try:
            day = date_from_text(str_param("settlement", settlement, 10))
        except ValueError as exc:
            raise invalid_params(f"settlement: {exc}") from None
        yield_ = rest.get("yield")
        if (price is None) == (yield_ is None):
            raise invalid_params("give either price (clean, per 100 of face) or yield")
        raw = await self.node.store.read(lambda s: s.state.get_state(instrument_key(instrument_id)))
        if raw is None:
            raise RpcError(NOT_FOUND, "Not found", f"no instrument {instrument_id}")
        record = Instrument.from_map(decode_record(raw))
        fixings: dict[date, RateFixing] = {}
        calendar = None
        try:
            if record.terms is not None and record.terms.floating and not record.redeemed:
                calendar = await self._calendar(record)
                fixings = await self._fixings(record, day, calendar)

            def compute() -> dict:
                answer = quote_instrument(
                    record,
                    day,
                    clean_price=price,
                    yield_=yield_,
                    fixings=fixings,
                    calendar=calendar,
                )
                return {"instrument": instrument_id, **answer.to_map()}

            return await trio.to_thread.run_sync(compute, limiter=self.limiter)
        except QuoteError as exc:
            raise invalid_params(str(exc)) from None

    async def _calendar(self, record: Instrument) -> HolidayCalendar | None:
        if not record.holiday_calendar:
            return None
        key = calendar_key(record.holiday_calendar)
        raw = await self.node.store.read(lambda s: s.state.get_state(key))
        return None if raw is None else HolidayCalendar.from_map(decode_record(raw))

    async def _fixings(
        self, record: Instrument, day: date, calendar: HolidayCalendar | None
    ) -> dict[date, RateFixing]:
        """The note's index's fixings in `fixing_window` (none outside [issue, final))."""
        assert record.terms is not None and record.issue_date is not None
        if not record.issue_date <= day < (record.maturity_date or day):
            return {}  # quote_instrument refuses the settlement date
        lo, hi = fixing_window(record, day, calendar)
        name = record.terms.rate_index
        prefix = fixing_key(name, lo)[:-10]  # b"f" + len(name) + name
        after = fixing_key(name, lo - timedelta(days=1))
        limit = (hi - lo).days + 1  # one fixing per date at most
        rows = await self.node.store.read(lambda s: s.state.scan_prefix(prefix, limit, after))
        found = (RateFixing.from_map(decode_record(value)) for _, value in rows)
        return {f.day: f for f in found if f.day <= hi}
