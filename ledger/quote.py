"""Quotes of a fixed-coupon bond for a settlement date: accrued interest, clean and dirty
price from a yield, or the yield to maturity from a clean price.

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fractions import Fraction

from ledger import bondmath
from ledger.ops import debt
from ledger.ops.payments import bond_schedule
from ledger.schedule import Schedule
from ledger.types import BOND, Instrument

__all__ = [
    "QUOTE_PLACES",
    "QUOTE_PRECISION",
    "Principal",
    "Quote",
    "QuoteError",
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
    """A quote that cannot be given: the message says why."""


@dataclass(frozen=True, slots=True)
class Quote:
    settlement: date
    accrued: Decimal  # per 100 of face
    clean_price: Decimal
    dirty_price: Decimal
    yield_: Decimal  # annual fraction, compounded at the coupon frequency

    def to_map(self) -> dict:
        # Fixed-point text (format "f"): str() of a zero rounded to 12 places is "0E-12".
        return {
            "accrued": f"{self.accrued:f}",
            "clean_price": f"{self.clean_price:f}",
            "dirty_price": f"{self.dirty_price:f}",
            "settlement": self.settlement.isoformat(),
            "yield": f"{self.yield_:f}",
        }


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
    rate: Decimal,
    convention: bondmath.DayCount,
    schedule: Schedule,
    settlement: date,
    principal: Principal,
) -> tuple[Fraction, list[tuple[Fraction, Fraction]]]:
    """(accrued per 100, [(cash flow per 100, time in years)]) after `settlement`, per 100 of
    the face outstanding on the settlement date (a part repaid on it belongs to the seller,
    as a coupon does): QuantLib's `BondFunctions`, prices per 100 of `notional(settlement)`."""
    exact_rate = Fraction(rate)
    flows: list[tuple[Fraction, Fraction]] = []
    start, _ = schedule.period_of(settlement)
    accrued = (
        Fraction(0)
        if settlement == start
        else 100 * exact_rate * schedule.fraction(convention, start, settlement)
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
        flows.append((100 * exact_rate * period * on, time))
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
    rate: Decimal,
    convention: bondmath.DayCount,
    schedule: Schedule,
    settlement: date,
    *,
    clean_price: Decimal | None = None,
    yield_: Decimal | None = None,
    principal: Principal | None = None,
) -> Quote:
    """The quote for `settlement` from a clean price (per 100) or a yield (exactly one);
    `principal` how the face is repaid (None: all of it at par on maturity)."""
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
) -> Quote:
    """`quote` for a registered fixed-coupon bond; price and yield as decimal text (a clean
    price per 100 of face, "99.125"; a yield as a fraction, "0.0525"). QuoteError says why
    a quote cannot be given (not a bond, a floating-rate note, redeemed, bad text)."""
    if instrument.kind != BOND:
        raise QuoteError(f"{instrument.id} is a {instrument.kind}; only bonds are quoted")
    if instrument.terms is not None and instrument.terms.floating:
        raise QuoteError(
            f"{instrument.id} is a floating-rate note: its coupons after the next depend on "
            "fixings not yet published, so it has no yield to maturity to quote"
        )
    if instrument.redeemed:
        raise QuoteError(f"{instrument.id} has been redeemed")
    price = _decimal_text("price", clean_price, _PRICE_TEXT)
    rate = _decimal_text("yield", yield_, _YIELD_TEXT)
    return quote(
        bondmath.parse_rate(instrument.coupon_rate),
        bondmath.DayCount(instrument.day_count),
        bond_schedule(instrument),
        settlement,
        clean_price=price,
        yield_=rate,
        principal=principal_of(instrument),
    )


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
