"""Bond maths: T-bill pricing, coupon amounts, accrued interest, coupon distribution.

This module owns the arithmetic behind coupon payments, redemption and T-bill pricing. It is
pure: functions of `decimal.Decimal`, `int` and `datetime.date` only -- no floats, no clock,
no I/O -- so every validator computes the same minor unit from the same inputs.

Day counts live in `ledger.daycount` and schedules in `ledger.schedule`; their public names
are re-exported here, so `bondmath` stays the one import for bond arithmetic.

Theory of operation
-------------------
* **Rates are fractions** in code: ``Decimal("0.05235")`` means 5.235 %. Only where a market
  convention quotes a percentage is one used, and then the name says so: T-bill *prices* are
  per 100 of face (``98.676708``) and ``redemption_price_percent`` is a percentage of face.
  Instrument records carry rates as decimal strings; `parse_rate` reads them strictly.
* **Exact first, one rounding last.** Day-count fractions and amounts are computed as exact
  rationals (`fractions.Fraction`, built from the `Decimal` inputs without loss) and converted
  to `Decimal` once, at the end, in an explicit local context of `PRECISION` (50) significant
  digits -- never the thread's current decimal context. Each docstring states that rounding.
* **Amounts are minor units.** A face value is an `int` number of minor units per unit held
  (e.g. 100_000 = 1 000.00 of a two-decimal currency). Per-unit amounts (`coupon_per_unit`,
  `accrued_interest`) stay `Decimal` fractions of a minor unit; `distribute` turns them into
  whole minor units per holder, rounding down, and reports what rounding left unpaid.

Errors: wrong types raise `TypeError`; values that break a rule raise `BondMathError`, a
`ValueError` (callers in `ledger/ops` map it to `Code.BAD_FIELD`). Both are our callers'
misuse or a bad instrument record, never something to swallow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, Inexact
from fractions import Fraction

from ledger.daycount import (
    _CONTEXT_TRAPS,
    FREQUENCIES,
    MAX_MAGNITUDE,
    MAX_NOTIONAL_PERIODS,
    MAX_RATE_DECIMALS,
    PRECISION,
    BondMathError,
    DayCount,
    Stub,
    _context,
    _require_date,
    _require_decimal,
    _require_frequency,
    _require_int,
    _require_places,
    _require_rate,
    _rounded,
    _to_decimal,
    _to_decimal_in,
    _year_fraction_exact,
    day_count,
    is_month_end,
    year_fraction,
)
from ledger.schedule import MAX_COUPONS, Schedule, coupon_periods, coupon_schedule

__all__ = [
    "FREQUENCIES",
    "MAX_COUPONS",
    "MAX_MAGNITUDE",
    "MAX_NOTIONAL_PERIODS",
    "MAX_RATE_DECIMALS",
    "PRECISION",
    "BondMathError",
    "DayCount",
    "Distribution",
    "Schedule",
    "Stub",
    "accrued_interest",
    "coupon_per_unit",
    "coupon_periods",
    "coupon_schedule",
    "day_count",
    "distribute",
    "is_month_end",
    "money_market_yield",
    "parse_rate",
    "redemption_amount",
    "scheduled_accrued_interest",
    "scheduled_coupon",
    "tbill_discount_rate",
    "tbill_investment_yield",
    "tbill_price",
    "year_fraction",
]

MAX_UNITS = 10**30
"""Exclusive bound on units held by one holder; keeps every product exact in `_EXACT`."""

MAX_AMOUNT_DIGITS = 60
"""Most significant digits accepted in an amount handed to `distribute`."""

# Products in `distribute` must be exact: 200 digits hold any MAX_AMOUNT_DIGITS x MAX_UNITS
# product, and trapping Inexact turns a violated bound into a loud error instead of a rounding.
_EXACT = Context(
    prec=200,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[*_CONTEXT_TRAPS, Inexact],
)


# ---------------------------------------------------------------------------------------------
# Treasury bills (prices per 100 of face, rates as fractions)
# ---------------------------------------------------------------------------------------------


def _require_days(days: object) -> int:
    return _require_int("days", days, minimum=1)


def _require_price(price: object) -> Fraction:
    value = _require_decimal("price", price)
    if value == 0:
        raise BondMathError("price must be > 0")
    return Fraction(value)


def tbill_price(
    discount_rate: Decimal, days: int, basis: int = 360, *, places: int | None = 6
) -> Decimal:
    """Price per 100 of face of a discount bill: ``100 x (1 - discount_rate x days / basis)``.

    `discount_rate` is a fraction (0.05235 for 5.235 %); `days` from settlement (issue) to
    maturity; `basis` 360 for US bills (ACT/360), 365 where a market quotes ACT/365.
    Example (US Treasury convention): 5.235 %, 91 days -> 98.676708 (exactly 98.676708333...).

    Rounding: half-even to `places` decimals; the default 6 is how the US Treasury publishes a
    bill's "price per $100" (e.g. 98.742431); pass 7 for 98.6767083 or None for 50 significant
    digits. For a discount rate quoted to 3 decimals of a percent and basis 360 no tie can
    occur at 6 or 7 places, so half-even agrees with the Treasury's "normal rounding".
    """
    rate = Fraction(_require_decimal("discount_rate", discount_rate))
    days = _require_days(days)
    basis = _require_int("basis", basis, minimum=1)
    price = 100 * (1 - rate * Fraction(days, basis))
    if price <= 0:
        raise BondMathError(f"discount {discount_rate} over {days} days leaves no price")
    return _rounded(price, _require_places(places))


def tbill_discount_rate(
    price: Decimal, days: int, basis: int = 360, *, places: int | None = None
) -> Decimal:
    """Bank discount rate (a fraction) of a bill priced `price` per 100: ``(100-P)/100 x basis/days``.

    Rounding: half-even to `places` decimals (5 places = a percentage to 3 decimals, as the
    Treasury announces auction rates), or to 50 significant digits when None.
    """
    p = _require_price(price)
    days = _require_days(days)
    basis = _require_int("basis", basis, minimum=1)
    return _rounded((100 - p) / 100 * Fraction(basis, days), _require_places(places))


def tbill_investment_yield(
    price: Decimal, days: int, *, year_days: int = 365, places: int | None = None
) -> Decimal:
    """US Treasury investment rate (coupon-equivalent / bond-equivalent yield), as a fraction.

    `year_days` (y) is 365, or 366 when the year following the issue date contains 29 Feb
    (31 CFR 356 App. B). With r = days to maturity and P the price per 100:

    * r <= y/2 (not more than a half-year): ``i = (100 - P)/P x y/r`` (simple interest).
    * r > y/2: the i that solves ``P x (1 + (r - y/2) x i/y) x (1 + i/2) = 100`` -- a simple
      stub and then one semi-annual compounding -- that is the positive root of
      ``a i^2 + b i + c = 0`` with a = r/2y - 1/4, b = r/y, c = (P - 100)/P.

    Rounding: the simple case is exact then half-even at 50 digits; the quadratic takes a
    square root in a 60-digit context, then rounds half-even to 50 digits (error < 1e-45).
    `places`, when given, rounds the result half-even to that many decimals.
    """
    p = _require_price(price)
    days = _require_days(days)
    year_days = _require_int("year_days", year_days)
    if year_days not in (365, 366):
        raise BondMathError(f"year_days must be 365 or 366, got {year_days}")
    if days > year_days:
        raise BondMathError(f"a bill of {days} days is longer than a year of {year_days}")
    places = _require_places(places)
    if 2 * days <= year_days:
        return _rounded((100 - p) / p * Fraction(year_days, days), places)
    a = Fraction(days, 2 * year_days) - Fraction(1, 4)
    b = Fraction(days, year_days)
    c = (p - 100) / p
    discriminant = b * b - 4 * a * c  # a > 0 here; >= 0 whenever the price is <= 100
    if discriminant < 0:
        raise BondMathError(f"no real investment rate for price {price} over {days} days")
    # The square root is the only irrational step: take it with 10 guard digits, then
    # finish exactly. The root is positive (the other one is negative).
    wide = _context(ROUND_HALF_EVEN, PRECISION + 10)
    root = Fraction(wide.sqrt(_to_decimal_in(discriminant, wide)))
    result = (root - b) / (2 * a)
    return _rounded(result, places)


def money_market_yield(
    price: Decimal, days: int, basis: int = 360, *, places: int | None = None
) -> Decimal:
    """Money-market (CD-equivalent) yield of a discount instrument, as a fraction.

    ``(100 - P)/P x basis/days``: simple interest on the amount invested, on the money-market
    basis (360). Equivalently ``basis x d / (basis - days x d)`` from the discount rate d.
    Rounding: half-even to `places` decimals, or to 50 significant digits when None.
    """
    p = _require_price(price)
    days = _require_days(days)
    basis = _require_int("basis", basis, minimum=1)
    return _rounded((100 - p) / p * Fraction(basis, days), _require_places(places))


# ---------------------------------------------------------------------------------------------
# Coupon schedules and amounts
# ---------------------------------------------------------------------------------------------


def _per_unit_amount(face_value: object, annual_rate: object, fraction: Fraction) -> Decimal:
    face = _require_int("face_value", face_value, minimum=0)
    rate = Fraction(_require_rate("annual_rate", annual_rate))
    # Ceiling in the 50th digit, not half-even: a per-unit amount that is rounded down
    # (1/12 -> 0.0833...3) would make floor(amount x units) in `distribute` lose a whole minor
    # unit when the exact rational product is an integer (12 units -> 0.999...96 -> 0).
    # Rounding up cannot gain one: with <= 12 rate decimals and day-count denominators of at
    # most 372 per notional period (ACT/ACT-ISDA: 365 x 366 for a period across a year end),
    # a non-integer exact product is at least 1/(10^12 x 372^k) below the next integer (k
    # notional periods, 1 or 2 in practice; 1/(10^12 x 133590) for ISDA), far more than the
    # excess of < total x 10^-49 for any total under 10^30 minor units.
    return _to_decimal(face * rate * fraction, ROUND_CEILING)


def coupon_per_unit(
    face_value: int,
    annual_rate: Decimal,
    frequency: int,
    convention: DayCount,
    period_start: date,
    period_end: date,
    *,
    stub: Stub = "first",
    maturity: date | None = None,
) -> Decimal:
    """Coupon in minor units for one unit of `face_value` minor units, for one coupon period.

    ``face_value x annual_rate x year_fraction(period)``: under ACT/ACT-ICMA a regular period
    pays exactly face x rate / frequency (31 CFR 356 App. B: 1000 x 8 % / 2 = 40); stubs are
    split into notional periods as in `year_fraction` (`stub`, `maturity` passed through;
    ledger code should always pass the instrument's `maturity`). Other conventions use their
    day count as is (30/360: 31 Aug -> 28 Feb is 178/360, not 1/2).

    Rounding: exact rational, converted to Decimal rounding toward +infinity in the 50th
    significant digit (exact whenever it fits); see `distribute` for whole minor units.
    """
    frequency = _require_frequency(frequency)
    fraction = _year_fraction_exact(
        convention, period_start, period_end, period_start, period_end, frequency, stub, maturity
    )
    return _per_unit_amount(face_value, annual_rate, fraction)


def accrued_interest(
    face_value: int,
    annual_rate: Decimal,
    frequency: int,
    convention: DayCount,
    last_coupon: date,
    settlement: date,
    next_coupon: date,
    *,
    stub: Stub = "first",
    maturity: date | None = None,
) -> Decimal:
    """Interest accrued on one unit from `last_coupon` (included) to `settlement` (excluded).

    ``face_value x annual_rate x year_fraction(last_coupon, settlement)``, with the coupon
    period [last_coupon, next_coupon] used by ACT/ACT-ICMA (for a first stub pass the issue
    date as `last_coupon`). last_coupon <= settlement <= next_coupon; accrued interest on
    `next_coupon` itself equals the full coupon. Minor units per unit.

    Rounding: as `coupon_per_unit` (exact, else toward +infinity in the 50th digit).
    """
    frequency = _require_frequency(frequency)
    _require_date("settlement", settlement)
    _require_date("next_coupon", next_coupon)
    if settlement > next_coupon:
        raise BondMathError(f"settlement {settlement} is after next coupon {next_coupon}")
    fraction = _year_fraction_exact(
        convention, last_coupon, settlement, last_coupon, next_coupon, frequency, stub, maturity
    )
    return _per_unit_amount(face_value, annual_rate, fraction)


def scheduled_coupon(
    face_value: int, annual_rate: Decimal, convention: DayCount, schedule: Schedule, coupon: date
) -> Decimal:
    """The coupon per unit due on `coupon`, a date of `schedule`: what the ledger pays.

    ``face_value x annual_rate x fraction`` of the period that ends on `coupon`, the fraction
    measured by `Schedule.fraction` -- so an irregular period is measured against the
    schedule's own grid, never a guessed one. Rounding: as `coupon_per_unit`.
    """
    _require_date("coupon", coupon)
    for start, end in schedule.periods():
        if end == coupon:
            return _per_unit_amount(
                face_value, annual_rate, schedule.fraction(convention, start, end)
            )
    raise BondMathError(f"{coupon} is not a coupon date of the schedule")


def scheduled_accrued_interest(
    face_value: int, annual_rate: Decimal, convention: DayCount, schedule: Schedule, day: date
) -> Decimal:
    """Interest accrued per unit from the start of the coupon period holding `day` to `day`.

    Zero on a coupon date (the coupon then due is a payment, not accrual) and at issue;
    measured by `Schedule.fraction` like `scheduled_coupon`. Rounding: as `coupon_per_unit`.
    """
    start, _ = schedule.period_of(_require_date("day", day))
    if day == schedule.maturity:
        start = day
    return _per_unit_amount(face_value, annual_rate, schedule.fraction(convention, start, day))


# ---------------------------------------------------------------------------------------------
# Paying holders
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Distribution:
    """Whole-minor-unit payments for one coupon or redemption, and what rounding left over.

    `payments`: (holder, minor units) sorted by holder bytes, holders owed 0 left out.
    `total`: sum of the payments. `exact_total`: amount per unit x all units, exact.
    `residual`: exact_total - total, in [0, number of holders); reported on chain so the
    paying agent's books reconcile to the last fraction.
    """

    payments: tuple[tuple[bytes, int], ...]
    total: int
    exact_total: Decimal
    residual: Decimal


def distribute(amount_per_unit: Decimal, holdings: Mapping[bytes, int]) -> Distribution:
    """Pay `amount_per_unit` (minor units, e.g. `coupon_per_unit`) on each holder's units.

    Each holder gets ``floor(amount_per_unit x units)`` minor units (ROUND_DOWN = floor, as
    amounts are >= 0), so the paying agent never pays more in total than it owes; the sum
    of the fractions cut off is `residual` < number of holders. Holders are processed in
    sorted byte order, so the result never depends on the mapping's insertion order.
    Rounding: products are exact (a 200-digit context that traps Inexact); only the floor
    rounds.
    """
    amount = _require_decimal("amount_per_unit", amount_per_unit)
    if len(amount.as_tuple().digits) > MAX_AMOUNT_DIGITS:
        raise BondMathError(f"amount_per_unit has more than {MAX_AMOUNT_DIGITS} digits")
    if not isinstance(holdings, Mapping):
        raise TypeError(f"holdings must be a Mapping, got {type(holdings).__name__}")
    payments: list[tuple[bytes, int]] = []
    total_units = 0
    paid = 0
    for holder in sorted(holdings):
        if type(holder) is not bytes:
            raise TypeError(f"holder keys must be bytes, got {type(holder).__name__}")
        units = _require_int(f"units of {holder.hex()}", holdings[holder], minimum=0)
        if units >= MAX_UNITS:
            raise BondMathError(f"units of {holder.hex()} must be < 10^30, got {units}")
        owed = _EXACT.multiply(amount, Decimal(units))
        minor_units = int(owed.to_integral_value(rounding=ROUND_FLOOR, context=_EXACT))
        total_units += units
        if minor_units:
            payments.append((holder, minor_units))
            paid += minor_units
    exact_total = _EXACT.multiply(amount, Decimal(total_units))
    return Distribution(
        payments=tuple(payments),
        total=paid,
        exact_total=exact_total,
        residual=_EXACT.subtract(exact_total, Decimal(paid)),
    )


def redemption_amount(
    face_value: int, units: int, redemption_price_percent: Decimal | int = 100
) -> int:
    """Minor units paid to redeem `units` units of `face_value` minor units each.

    ``face_value x units x redemption_price_percent / 100``; the price is a percentage of face
    because that is how redemption is quoted ("at par" = 100, "at 101.25"). Rounding: down
    to a whole minor unit (exact for 100 and any whole percentage of an integer face), so
    the paying agent never pays more than owed.
    """
    face = _require_int("face_value", face_value, minimum=0)
    units = _require_int("units", units, minimum=0)
    percent = Fraction(_require_decimal("redemption_price_percent", redemption_price_percent))
    owed = face * units * percent / 100
    return owed.numerator // owed.denominator


# ---------------------------------------------------------------------------------------------
# Rates in instrument records
# ---------------------------------------------------------------------------------------------

_RATE_TEXT = re.compile(rf"[0-9]{{1,3}}(?:\.[0-9]{{1,{MAX_RATE_DECIMALS}}})?", re.ASCII)


def parse_rate(text: str) -> Decimal:
    """A rate from an instrument record, as a fraction: ``"0.05235"`` -> Decimal('0.05235').

    Records hold rates as plain decimal strings of a fraction (5.235 % is "0.05235", not
    "5.235"). Accepted: ASCII digits, optionally one point followed by 1 to 12 digits, value
    at most 1 (100 %). Refused with ValueError (`BondMathError`): signs, exponents ("5e-2"),
    NaN/Infinity, spaces, underscores, non-ASCII digits, a bare or trailing point, more than
    12 decimals, and values above 1 -- which are almost always a percentage typed by mistake.
    The string's own decimals are kept ("0.050" stays 0.050); no rounding.
    """
    if type(text) is not str:
        raise TypeError(f"rate must be a str, got {type(text).__name__}")
    if _RATE_TEXT.fullmatch(text) is None:
        raise BondMathError(
            f"rate {text!r} is not a plain decimal fraction with at most "
            f"{MAX_RATE_DECIMALS} decimals (write 5.235 % as '0.05235')"
        )
    rate = Decimal(text)
    if rate > 1:
        raise BondMathError(
            f"rate {text!r} is above 1 (100 %); rates are fractions: write 5.235 % as '0.05235'"
        )
    return rate
