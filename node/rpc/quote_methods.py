"""The `quote` read: yield to maturity, clean and dirty price and accrued interest of a
fixed-coupon bond for a settlement date (ledger/quote.py), from committed state.

Public, like `instrument` (a quote is arithmetic on the bond's public terms). The arithmetic
runs on a worker thread (a 100-year monthly bond has 1200 cash flows), at most
`[rpc] max_quotes` (default 2) at a time, so a burst of quotes never stalls the event loop.
"""

from __future__ import annotations

from typing import Any

import trio

from ledger.quote import QuoteError, quote_instrument
from ledger.state import instrument_key
from ledger.types import Instrument, date_from_text
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

        def compute() -> dict:
            answer = quote_instrument(record, day, clean_price=price, yield_=yield_)
            return {"instrument": instrument_id, **answer.to_map()}

        try:
            return await trio.to_thread.run_sync(compute, limiter=self.limiter)
        except QuoteError as exc:
            raise invalid_params(str(exc)) from None
