"""Quotes of a bond for a settlement date: accrued interest, clean and dirty price from a
yield, or the yield to maturity from a clean price; a floating-rate note's at its index held
flat (`floating_rates`, below).

Read-only: nothing here reaches a block. It still uses no floats: `decimal.Decimal` in a
local context of `QUOTE_PRECISION` (40) significant digits, results rounded half-even to
`QUOTE_PLACES` (12) decimal places. Every amount is per 100 of face value; yields are
annual fractions (0.0525 is 5.25 %), compounded at the bond's coupon frequency.

The conventions (docs/PROTOCOL.md section 10.4), those of QuantLib's `BondFunctions` with
`Compounded` at the coupon frequency and the bond's day count, which tests check against:

* cash flows are the coupons (`bondmath.scheduled_coupon`'s exact amounts, per 100 of face)
  of every coupon date after the settlement date, and the redemption (100) at maturity; a
  coupon on the settlement date itself belongs to the seller;
* `Principal` says how the face is repaid when not all at par on maturity (`principal_of`): a
  stated redemption price, a call (flows end on the call date, at the call price), the
  parts of an amortising bond (coupons on the face outstanding over their period); amounts
  are then per 100 of the face outstanding on the settlement date (QuantLib's
  `Bond::notional(settlement)`);
* accrued interest = `bondmath.scheduled_accrued_interest` per 100 of face;
* a cash flow's time t is measured stepwise along the schedule by the bond's day count: to
  the first coupon, the period's fraction less the fraction already accrued; then each
  period's own fraction (ACT/ACT-ICMA against the schedule's grid, `Schedule.fraction`);
* dirty price = sum of cash flow x (1 + y/f)^(-f t); clean price = dirty - accrued;
* the yield for a clean price is the y that gives it in (-f, 10], found by Newton's method
  kept inside a bisection bracket, to 10^-30 (the dirty price falls as the yield rises, so
  there is one).

A floating-rate note (`floating_rates`): the current period's rate is its own (10.3's rule:
the ledger's `debt.floating_rate`, refused with RATE_FIXING_MISSING's message without a
fixing), a later period fixed by the settlement date keeps its fixing, and every other period
is projected at the latest fixing of the index dated on or before the settlement date plus
the spread, floored at 0 -- the market's "assumed index" convention, named in the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fractions import Fraction
from typing import Any

from ledger import bondmath
from ledger.codes import Code, InvalidTransaction
from ledger.debt_terms import RateFixing
from ledger.ops import debt
from ledger.ops.payments import bond_schedule
from ledger.schedule import Schedule
from ledger.types import BOND, HolidayCalendar, Instrument

__all__ = [
    "QUOTE_PLACES",
    "QUOTE_PRECISION",
    "Floating",
    "Principal",
    "Quote",
    "QuoteError",
    "fixing_window",
    "floating_rates",
    "principal_of",
    "quote",
    "quote_instrument",
]

QUOTE_PRECISION = 40
QUOTE_PLACES = 12
_MAX_YIELD = Decimal(10)  # 1000 %: a price that needs more is refused
_STEPS = 200  # iterations at most (bisection alone: 10 x 2^-120 < 10^-30)
_CLOSE = Decimal("1e-30")


class QuoteError(ValueError):
    """A quote that cannot be given: the message says why; `code` the ledger's code when a
    ledger rule refuses it (RATE_FIXING_MISSING for a floating-rate note's current period)."""

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Quote:
    settlement: date
    accrued: Decimal  # per 100 of face
    clean_price: Decimal
    dirty_price: Decimal
    yield_: Decimal  # annual fraction, compounded at the coupon frequency
    # A floating-rate note's rates: the current period's and the assumption (`Floating.to_map`).
    floating: dict | None = field(default=None, compare=False)

    def to_map(self) -> dict:
        # Fixed-point text (format "f"): str() of a zero rounded to 12 places is "0E-12".
        answer = {
            "accrued": f"{self.accrued:f}",
            "clean_price": f"{self.clean_price:f}",
            "dirty_price": f"{self.dirty_price:f}",
            "settlement": self.settlement.isoformat(),
            "yield": f"{self.yield_:f}",
        }
        if self.floating is not None:
            answer["floating"] = self.floating
        return answer


@dataclass(frozen=True, slots=True)
class Principal:
    """How the face is repaid: `parts` ((coupon date, fraction of the original face), ...)
    of an amortising bond, the rest on `final` (maturity, or the call date of a called bond:
    no cash flow after it) at `price` percent of face."""

    final: date
    parts: tuple[tuple[date, Fraction], ...] = ()
    price: Fraction = Fraction(100)

    def outstanding(self, after: date) -> Fraction:
        """The part of the original face outstanding once every part dated up to `after`
        (inclusive) is repaid."""
        return 1 - sum((part for day, part in self.parts if day <= after), Fraction(0))


def _flows(
    rate: Decimal | Callable[[date], Decimal],
    convention: bondmath.DayCount,
    schedule: Schedule,
    settlement: date,
    principal: Principal,
) -> tuple[Fraction, list[tuple[Fraction, Fraction]]]:
    """(accrued per 100, [(cash flow per 100, time in years)]) after `settlement`, per 100 of
    the face outstanding on the settlement date (a part repaid on it belongs to the seller,
    as a coupon does): QuantLib's `BondFunctions`, prices per 100 of `notional(settlement)`.
    `rate`: the annual rate, or (a floating-rate note) the rate of the period starting on a
    date."""
    rate_of = rate if callable(rate) else (lambda _start: rate)
    flows: list[tuple[Fraction, Fraction]] = []
    start, _ = schedule.period_of(settlement)
    accrued = (
        Fraction(0)
        if settlement == start
        else 100 * Fraction(rate_of(start)) * schedule.fraction(convention, start, settlement)
    )
    now = principal.outstanding(settlement)
    parts = dict(principal.parts)
    time = Fraction(0)
    last = settlement
    for begin, end in schedule.periods():
        if end <= settlement:
            continue
        if begin >= principal.final:
            break
        period = schedule.fraction(convention, begin, end)
        if begin < settlement:  # the period under way: what is left of it
            time += period - schedule.fraction(convention, begin, settlement)
        else:
            time += period
        # The coupon is on the face outstanding over its period (parts dated before `end`).
        on = principal.outstanding(begin) / now
        flows.append((100 * Fraction(rate_of(begin)) * period * on, time))
        if end in parts and end < principal.final:
            flows.append((100 * parts[end] / now, time))
        last = end
    assert last == principal.final
    before_final = 1 - sum((p for day, p in principal.parts if day < principal.final), Fraction(0))
    flows.append((before_final / now * principal.price, time))
    return accrued, flows


def _dirty(
    flows: list[tuple[Fraction, Fraction]], y: Decimal, frequency: int
) -> tuple[Decimal, Decimal]:
    """The dirty price at yield `y` and its derivative in `y`."""
    log_base = (1 + y / frequency).ln()
    price = slope = Decimal(0)
    for amount, time in flows:
        t = Decimal(time.numerator) / Decimal(time.denominator)
        value = (
            Decimal(amount.numerator)
            / Decimal(amount.denominator)
            * (-frequency * t * log_base).exp()
        )
        price += value
        slope -= t * value
    return price, slope / (1 + y / frequency)


def _solve(flows: list[tuple[Fraction, Fraction]], dirty: Decimal, frequency: int) -> Decimal:
    """The yield giving `dirty`: Newton's method from 5 %, bisection where Newton strays."""
    lo, hi = Decimal(-frequency) + Decimal("1e-9"), _MAX_YIELD
    if not _dirty(flows, hi, frequency)[0] <= dirty <= _dirty(flows, lo, frequency)[0]:
        raise QuoteError(f"no yield in ({lo}, {hi}] gives that price")
    y = Decimal("0.05")
    for _ in range(_STEPS):
        price, slope = _dirty(flows, y, frequency)
        if price > dirty:
            lo = max(lo, y)
        else:
            hi = min(hi, y)
        step = (price - dirty) / slope if slope else Decimal(0)
        following = y - step
        if not lo < following < hi:
            following = (lo + hi) / 2  # Newton left the bracket: halve it instead
        if abs(following - y) < _CLOSE or hi - lo < _CLOSE:
            return following
        y = following
    return y


def _round(value: Decimal) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-QUOTE_PLACES), rounding=ROUND_HALF_EVEN)


def quote(
    rate: Decimal | Callable[[date], Decimal],
    convention: bondmath.DayCount,
    schedule: Schedule,
    settlement: date,
    *,
    clean_price: Decimal | None = None,
    yield_: Decimal | None = None,
    principal: Principal | None = None,
) -> Quote:
    """The quote for `settlement` from a clean price (per 100) or a yield (exactly one);
    `principal` how the face is repaid (None: all of it at par on maturity); `rate` the
    annual coupon rate, or a floating-rate note's rate of the period starting on a date."""
    if (clean_price is None) == (yield_ is None):
        raise QuoteError("give either a clean price or a yield")
    principal = principal or Principal(schedule.maturity)
    if not schedule.issue <= settlement < principal.final:
        raise QuoteError(
            f"settlement {settlement} is not on or after issue {schedule.issue} and before "
            f"the final payment {principal.final}"
        )
    frequency = schedule.frequency
    accrued_exact, flows = _flows(rate, convention, schedule, settlement, principal)
    with localcontext(Context(prec=QUOTE_PRECISION, rounding=ROUND_HALF_EVEN)):
        accrued = Decimal(accrued_exact.numerator) / Decimal(accrued_exact.denominator)
        if yield_ is not None:
            if not -frequency < yield_ <= _MAX_YIELD:
                raise QuoteError(f"yield must be above -{frequency} and at most {_MAX_YIELD}")
            dirty = _dirty(flows, yield_, frequency)[0]
            y = yield_
        else:
            assert clean_price is not None
            if clean_price <= 0:
                raise QuoteError("a clean price must be positive")
            dirty = clean_price + accrued
            if flows[-1][1] == 0:
                raise QuoteError(
                    f"from {settlement} the day count measures no time to maturity: every "
                    "yield gives the same price"
                )
            y = _solve(flows, dirty, frequency)
        return Quote(
            settlement,
            _round(accrued),
            _round(dirty - accrued),
            _round(dirty),
            _round(y),
        )


_PRICE_TEXT = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,12})?", re.ASCII)
_YIELD_TEXT = re.compile(r"-?[0-9]{1,2}(?:\.[0-9]{1,12})?", re.ASCII)


def quote_instrument(
    instrument: Instrument,
    settlement: date,
    *,
    clean_price: str | None = None,
    yield_: str | None = None,
    fixings: Mapping[date, RateFixing] | None = None,
    calendar: HolidayCalendar | None = None,
) -> Quote:
    """`quote` for a registered bond; price and yield as decimal text (a clean price per 100
    of face, "99.125"; a yield as a fraction, "0.0525"). A floating-rate note also needs its
    index's `fixings` published in `fixing_window` (by date) and its holiday `calendar` (if it
    names one): see `floating_rates`. QuoteError says why a quote cannot be given (not a
    bond, redeemed, bad text, the current period's fixing missing)."""
    if instrument.kind != BOND:
        raise QuoteError(f"{instrument.id} is a {instrument.kind}; only bonds are quoted")
    if instrument.redeemed:
        raise QuoteError(f"{instrument.id} has been redeemed")
    price = _decimal_text("price", clean_price, _PRICE_TEXT)
    rate_text = _decimal_text("yield", yield_, _YIELD_TEXT)
    schedule = bond_schedule(instrument)
    principal = principal_of(instrument)
    floating: Floating | None = None
    if debt.is_floating(instrument):
        if not schedule.issue <= settlement < principal.final:
            raise QuoteError(
                f"settlement {settlement} is not on or after issue {schedule.issue} and "
                f"before the final payment {principal.final}"
            )
        floating = floating_rates(instrument, settlement, fixings or {}, calendar)
        rate: Decimal | Callable[[date], Decimal] = floating.rate_of
    else:
        rate = bondmath.parse_rate(instrument.coupon_rate)
    answer = quote(
        rate,
        bondmath.DayCount(instrument.day_count),
        schedule,
        settlement,
        clean_price=price,
        yield_=rate_text,
        principal=principal,
    )
    if floating is None:
        return answer
    # The discount margin: the margin over the assumed index (the latest fixing) at which the
    # projected flows discount to the price, compounded as the yield -- so the yield less it.
    margin = _round(answer.yield_ - Decimal(floating.latest.rate))
    return replace(answer, floating={**floating.to_map(), "discount_margin": f"{margin:f}"})


# ---------------------------------------------------------------------------------------------
# Floating-rate notes: the current period as fixed, the later ones at the index held flat


@dataclass(frozen=True, slots=True)
class Floating:
    """The rates a floating-rate note is quoted at (docs/PROTOCOL.md 10.4).

    `known`: the rate of each period (by start) whose fixing date is on or before the
    settlement date and whose fixing the ledger's rule (10.3) finds -- the current period's
    always (else the quote is refused); `latest` the index's latest fixing dated on or before
    the settlement date; every other period is projected at max(0, latest + spread)."""

    rate_index: str
    spread: Decimal
    current: debt.FloatingRate
    known: dict[date, Decimal]
    latest: RateFixing

    @property
    def projected(self) -> Decimal:
        return max(Decimal(0), Decimal(self.latest.rate) + self.spread)

    def rate_of(self, start: date) -> Decimal:
        return self.known.get(start, self.projected)

    def to_map(self) -> dict:
        return {
            "assumption": "index_flat",
            "rate_index": self.rate_index,
            "spread_bp": int(self.spread.scaleb(4)),
            "current_rate": f"{self.current.rate:f}",
            "current_fixing": {
                "date": self.current.fixing.day.isoformat(),
                "rate": self.current.fixing.rate,
                "fixing_date": self.current.fixing_date.isoformat(),
            },
            "latest_fixing": {
                "date": self.latest.day.isoformat(),
                "rate": self.latest.rate,
            },
            "projected_rate": f"{self.projected:f}",
        }


@dataclass(frozen=True, slots=True)
class _Reads:
    """The part of the state `debt.floating_rate` reads (one index's fixings, a calendar)."""

    fixings: dict[tuple[str, date], RateFixing]
    calendars: dict[str, HolidayCalendar]


def _reads(
    instrument: Instrument,
    fixings: Mapping[date, RateFixing],
    calendar: HolidayCalendar | None,
) -> Any:
    terms = instrument.terms
    assert terms is not None
    calendars = {}
    if instrument.holiday_calendar:
        if calendar is None:
            raise QuoteError(f"{instrument.id}'s calendar {instrument.holiday_calendar} is absent")
        calendars[instrument.holiday_calendar] = calendar
    return _Reads({(terms.rate_index, day): f for day, f in fixings.items()}, calendars)


def fixing_window(
    instrument: Instrument, settlement: date, calendar: HolidayCalendar | None
) -> tuple[date, date]:
    """The dates whose fixings a floating-rate note's quote for `settlement` reads: from the
    current period's fixing date less the lookback to the settlement date (every known
    period's fixing and the latest fixing are in it, once the current period's is)."""
    terms = instrument.terms
    assert terms is not None and terms.floating
    start, _ = bond_schedule(instrument).period_of(settlement)
    fixed_on = debt.fixing_date(_reads(instrument, {}, calendar), instrument, start)
    return fixed_on - timedelta(days=terms.fixing_lookback_days), settlement


def floating_rates(
    instrument: Instrument,
    settlement: date,
    fixings: Mapping[date, RateFixing],
    calendar: HolidayCalendar | None,
) -> Floating:
    """The rates of a floating-rate note's quote (`Floating`) from its index's `fixings`
    (at least those in `fixing_window`); RATE_FIXING_MISSING's refusal, as a QuoteError,
    when the current period has no fixing (its accrued interest would be a guess)."""
    terms = instrument.terms
    assert terms is not None and terms.floating
    lo, hi = fixing_window(instrument, settlement, calendar)
    window = {day: f for day, f in fixings.items() if lo <= day <= hi}
    reads = _reads(instrument, window, calendar)
    schedule = bond_schedule(instrument)
    start, _ = schedule.period_of(settlement)
    try:
        current = debt.floating_rate(reads, instrument, start)
    except InvalidTransaction as exc:
        raise QuoteError(f"{exc}; the current period's rate is not known", exc.code) from None
    known = {start: current.rate}
    for begin, _end in schedule.periods():
        if begin <= start or debt.fixing_date(reads, instrument, begin) > settlement:
            continue
        try:
            known[begin] = debt.floating_rate(reads, instrument, begin).rate
        except InvalidTransaction:
            pass  # not published yet: projected like the periods after it
    spread = Decimal(terms.spread_bp).scaleb(-4)
    return Floating(terms.rate_index, spread, current, known, window[max(window)])


def principal_of(instrument: Instrument) -> Principal:
    """How a registered bond repays its face (docs/PROTOCOL.md 10.6, 10.7): its amortisation
    parts (a called bond's before the call date), the rest on the final date (the call date
    once called, else maturity) at the call price, the stated redemption price or par."""
    final = debt.final_date(instrument)
    assert final is not None
    terms = instrument.terms
    parts: tuple[tuple[date, Fraction], ...] = ()
    if terms is not None and terms.amortising:
        parts = tuple(
            (day, Fraction(debt.percent_micro(percent), debt.MICRO))
            for day, percent in debt.live_parts(terms)
        )
    return Principal(final, parts, Fraction(debt.price_percent(instrument)))


def _decimal_text(name: str, text: str | None, pattern: re.Pattern) -> Decimal | None:
    if text is None:
        return None
    if type(text) is not str or not pattern.fullmatch(text):
        raise QuoteError(f"{name} must be decimal text matching {pattern.pattern}")
    return Decimal(text)
