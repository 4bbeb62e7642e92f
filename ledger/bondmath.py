"""Bond maths: day counts, T-bill pricing, coupon schedules, accrued interest, coupon distribution.

This module owns the arithmetic behind coupon payments, redemption and T-bill pricing. It is
pure: functions of `decimal.Decimal`, `int` and `datetime.date` only -- no floats, no clock,
no I/O -- so every validator computes the same minor unit from the same inputs.

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

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from enum import StrEnum
from fractions import Fraction
from typing import Literal

__all__ = [
    "FREQUENCIES",
    "MAX_RATE_DECIMALS",
    "PRECISION",
    "BondMathError",
    "DayCount",
    "Distribution",
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
    "tbill_discount_rate",
    "tbill_investment_yield",
    "tbill_price",
    "year_fraction",
]

PRECISION = 50
"""Significant digits of every Decimal result that is not exact (>= 34 = IEEE decimal128)."""

FREQUENCIES = (1, 2, 4, 12)
"""Coupon frequencies per year that this module accepts: annual, semi-annual, quarterly, monthly."""

MAX_RATE_DECIMALS = 12
"""Most decimal places a rate may carry (0.000000000001 = one hundred-millionth of a percent)."""

MAX_COUPONS = 1200
"""Bound on a generated schedule: 100 years of monthly coupons."""

MAX_NOTIONAL_PERIODS = 24
"""Bound on the notional periods one irregular ACT/ACT-ICMA period may be split into."""

MAX_UNITS = 10**30
"""Exclusive bound on units held by one holder; keeps every product exact in `_EXACT`."""

MAX_AMOUNT_DIGITS = 60
"""Most significant digits accepted in an amount handed to `distribute`."""

MAX_MAGNITUDE = 30
"""Every Decimal argument is 0 or between 10^-30 and 10^30 (exclusive): rates, prices, amounts."""

_CONTEXT_TRAPS = [InvalidOperation, DivisionByZero, Overflow]


def _context(rounding: str, prec: int = PRECISION) -> Context:
    # A fresh, explicit context per use: nothing here reads or mutates the thread's (or trio
    # task's) current decimal context, so callers' settings can never change a result.
    return Context(prec=prec, rounding=rounding, Emin=-999_999, Emax=999_999, traps=_CONTEXT_TRAPS)


# Products in `distribute` must be exact: 200 digits hold any MAX_AMOUNT_DIGITS x MAX_UNITS
# product, and trapping Inexact turns a violated bound into a loud error instead of a rounding.
_EXACT = Context(
    prec=200,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[*_CONTEXT_TRAPS, Inexact],
)


class BondMathError(ValueError):
    """An argument that breaks a rule of this module (the message names the value)."""


class DayCount(StrEnum):
    """Day-count conventions, by their market names (stored in instrument records)."""

    ACT_360 = "ACT/360"
    """Actual days / 360 (ISDA 2006 4.16(e)); money markets, T-bills."""
    ACT_365F = "ACT/365F"
    """Actual days / 365, whatever the year (ISDA 2006 4.16(d))."""
    THIRTY_360 = "30/360"
    """30/360 Bond Basis (ISDA 2006 4.16(f)); see `day_count` for the day adjustments."""
    ACT_ACT_ICMA = "ACT/ACT-ICMA"
    """Actual/Actual (ICMA Rule 251; ISDA 2006 4.16(c)); needs the coupon period and frequency."""


Stub = Literal["first", "last"]


# ---------------------------------------------------------------------------------------------
# Input checks and conversions
# ---------------------------------------------------------------------------------------------


def _require_date(name: str, value: object) -> date:
    # datetime.datetime is a subclass of date; a time of day has no place in day counts.
    if type(value) is not date:
        raise TypeError(f"{name} must be a datetime.date, got {type(value).__name__}")
    return value


def _require_int(name: str, value: object, *, minimum: int | None = None) -> int:
    if type(value) is not int:  # bool is an int subclass; True is not a quantity
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise BondMathError(f"{name} must be >= {minimum}, got {value}")
    return value


def _require_decimal(name: str, value: object, *, non_negative: bool = True) -> Decimal:
    if type(value) is int:
        value = Decimal(value)
    if not isinstance(value, Decimal):
        # Floats in particular: 0.1 is not one tenth, and money must not depend on it.
        raise TypeError(f"{name} must be a Decimal (or int), got {type(value).__name__}")
    if not value.is_finite():
        raise BondMathError(f"{name} must be finite, got {value}")
    if value and not -MAX_MAGNITUDE <= value.adjusted() < MAX_MAGNITUDE:
        # 1E+999999 is a valid Decimal; turned into an exact integer it would cost megabytes.
        raise BondMathError(f"{name} is out of range: {value}")
    if non_negative and value < 0:
        raise BondMathError(f"{name} must be >= 0, got {value}")
    return value


def _require_rate(name: str, value: object) -> Decimal:
    rate = _require_decimal(name, value)
    if -rate.as_tuple().exponent > MAX_RATE_DECIMALS:  # type: ignore[operator]
        raise BondMathError(f"{name} has more than {MAX_RATE_DECIMALS} decimals: {value}")
    return rate


def _require_frequency(value: object) -> int:
    frequency = _require_int("frequency", value)
    if frequency not in FREQUENCIES:
        raise BondMathError(f"frequency must be one of {FREQUENCIES}, got {frequency}")
    return frequency


def _require_places(places: object) -> int | None:
    if places is None:
        return None
    return _require_int("places", places, minimum=0)


def _to_decimal(value: Fraction, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """`value` as a Decimal: exact if it fits PRECISION digits, else rounded with `rounding`."""
    return _to_decimal_in(value, _context(rounding))


def _to_decimal_in(value: Fraction, ctx: Context) -> Decimal:
    return ctx.divide(Decimal(value.numerator), Decimal(value.denominator))


def _rounded(value: Fraction, places: int | None) -> Decimal:
    """Half-even to `places` decimals, or to PRECISION significant digits when places is None."""
    if places is None:
        return _to_decimal(value)
    # Scale first so the single rounding happens at the requested decimal place.
    scaled = value * 10**places
    whole, remainder = divmod(scaled.numerator, scaled.denominator)
    twice = 2 * remainder
    if twice > scaled.denominator or (twice == scaled.denominator and whole % 2 == 1):
        whole += 1
    return Decimal(whole).scaleb(-places)


# ---------------------------------------------------------------------------------------------
# Calendar helpers
# ---------------------------------------------------------------------------------------------


def _last_day(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def is_month_end(day: date) -> bool:
    """True if `day` is the last day of its month (28/29 Feb, 30 Apr, 31 May, ...)."""
    return day.day == _last_day(day.year, day.month)


def _add_months(anchor: date, months: int, eom: bool) -> date:
    """`anchor` moved by `months` calendar months.

    With `eom` the result is the last day of the target month (the end-of-month rule);
    without it the anchor's day of month is kept, clipped to the month's length (31 -> 30 Apr,
    -> 28/29 Feb). Always computed from the anchor, never step by step, so days never drift.
    """
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month0 = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise BondMathError(f"{anchor} moved by {months} months leaves the calendar")
    last = _last_day(year, month0 + 1)
    return date(year, month0 + 1, last if eom else min(anchor.day, last))


# ---------------------------------------------------------------------------------------------
# Day counts
# ---------------------------------------------------------------------------------------------


def day_count(convention: DayCount, start: date, end: date) -> int:
    """Days from `start` (included) to `end` (excluded) under `convention`; negative if reversed.

    Actual-day conventions count calendar days. 30/360 Bond Basis (ISDA 2006 4.16(f)) counts
    ``360*(Y2-Y1) + 30*(M2-M1) + (D2-D1)`` where D1 = 31 becomes 30, and D2 = 31 becomes 30
    only if D1 (after that change) is 30 or 31. No February rule: 28 Feb -> 31 Aug is 183 days.
    Exact integer arithmetic; no rounding.
    """
    convention = DayCount(convention)
    _require_date("start", start)
    _require_date("end", end)
    if convention is not DayCount.THIRTY_360:
        return (end - start).days
    d1 = 30 if start.day == 31 else start.day
    d2 = 30 if end.day == 31 and d1 >= 30 else end.day
    return 360 * (end.year - start.year) + 30 * (end.month - start.month) + (d2 - d1)


def _schedule_date(maturity: date, steps_back: int, months: int) -> date:
    """The coupon date `steps_back` frequency steps before `maturity` (EOM from maturity)."""
    if steps_back == 0:
        return maturity
    return _add_months(maturity, -steps_back * months, is_month_end(maturity))


def _notional_dates_from_maturity(
    start: date, end: date, months: int, maturity: date
) -> list[date]:
    """The schedule's own (possibly virtual) coupon dates around [start, end], ascending."""
    if end > maturity:
        raise BondMathError(f"accrual end {end} is after maturity {maturity}")
    # Jump close to `start` in one step, then correct by at most a step or two either way.
    month_gap = (maturity.year - start.year) * 12 + (maturity.month - start.month)
    k = max(0, month_gap // months)
    while _schedule_date(maturity, k, months) > start:
        k += 1
    while k > 0 and _schedule_date(maturity, k - 1, months) <= start:
        k -= 1
    dates = [_schedule_date(maturity, k, months)]
    while dates[-1] < end:
        if len(dates) > MAX_NOTIONAL_PERIODS:
            raise BondMathError(
                f"{start} -> {end} spans more than {MAX_NOTIONAL_PERIODS} notional periods"
            )
        k -= 1
        dates.append(_schedule_date(maturity, k, months))
    return dates


def _notional_dates_from_anchor(
    start: date, end: date, period_start: date, period_end: date, months: int, stub: Stub
) -> list[date]:
    """Notional dates for [start, end] when the schedule's maturity is not known."""
    # Regular period: one frequency step apart under some month-end reading. Both readings
    # and both directions are tried because a lone period cannot tell its schedule's rule:
    # 30 Jan -> 28 Feb is regular for a schedule on the 30th (only forward from 30 Jan
    # finds it) and 31 Mar -> 30 Sep for an end-of-month one (only backward with EOM does).
    if period_start in (
        _add_months(period_end, -months, False),
        _add_months(period_end, -months, is_month_end(period_end)),
    ) or period_end in (
        _add_months(period_start, months, False),
        _add_months(period_start, months, is_month_end(period_start)),
    ):
        return [period_start, period_end]
    # A stub: roll notional dates from the regular coupon date that bounds it, keeping the
    # end-of-month rule if that date is a month end.
    anchor = period_end if stub == "first" else period_start
    eom = is_month_end(anchor)
    step = -months if stub == "first" else months
    dates = [anchor]
    for k in range(1, MAX_NOTIONAL_PERIODS + 1):
        dates.append(_add_months(anchor, k * step, eom))
        if (stub == "first" and dates[-1] <= start) or (stub == "last" and dates[-1] >= end):
            return sorted(dates)
    raise BondMathError(
        f"irregular period {period_start} -> {period_end} spans more than "
        f"{MAX_NOTIONAL_PERIODS} notional periods"
    )


def _icma_fraction(
    start: date,
    end: date,
    period_start: date,
    period_end: date,
    frequency: int,
    stub: Stub,
    maturity: date | None,
) -> Fraction:
    """ACT/ACT-ICMA fraction of [start, end] inside the coupon period [period_start, period_end].

    ICMA Rule 251: each day accrues 1 / (frequency x days of the notional period it falls
    in). A regular coupon period is its own notional period, so it totals 1/frequency; a
    stub is measured against the notional periods of regular length that would have
    existed had the schedule continued (251.1(iii)/(iv)).
    """
    if not period_start <= start <= end <= period_end:
        raise BondMathError(
            f"ACT/ACT-ICMA needs period_start <= start <= end <= period_end, got "
            f"{period_start} <= {start} <= {end} <= {period_end}"
        )
    months = 12 // frequency
    if maturity is not None:
        dates = _notional_dates_from_maturity(start, end, months, maturity)
    else:
        dates = _notional_dates_from_anchor(start, end, period_start, period_end, months, stub)
    total = Fraction(0)
    for lo, hi in zip(dates, dates[1:], strict=False):
        overlap = (min(hi, end) - max(lo, start)).days
        if overlap > 0:
            total += Fraction(overlap, frequency * (hi - lo).days)
    return total


def _year_fraction_exact(
    convention: DayCount,
    start: date,
    end: date,
    period_start: date | None,
    period_end: date | None,
    frequency: int | None,
    stub: Stub,
    maturity: date | None,
) -> Fraction:
    convention = DayCount(convention)
    _require_date("start", start)
    _require_date("end", end)
    if end < start:
        raise BondMathError(f"end {end} is before start {start}")
    if convention is DayCount.ACT_360:
        return Fraction((end - start).days, 360)
    if convention is DayCount.ACT_365F:
        return Fraction((end - start).days, 365)
    if convention is DayCount.THIRTY_360:
        return Fraction(day_count(convention, start, end), 360)
    if period_start is None or period_end is None or frequency is None:
        raise BondMathError("ACT/ACT-ICMA needs period_start, period_end and frequency")
    if stub not in ("first", "last"):
        raise BondMathError(f"stub must be 'first' or 'last', got {stub!r}")
    return _icma_fraction(
        start,
        end,
        _require_date("period_start", period_start),
        _require_date("period_end", period_end),
        _require_frequency(frequency),
        stub,
        None if maturity is None else _require_date("maturity", maturity),
    )


def year_fraction(
    convention: DayCount,
    start: date,
    end: date,
    *,
    period_start: date | None = None,
    period_end: date | None = None,
    frequency: int | None = None,
    stub: Stub = "first",
    maturity: date | None = None,
) -> Decimal:
    """Fraction of a year from `start` to `end` (start <= end) under `convention`.

    ACT/360 = days/360, ACT/365F = days/365, 30/360 = `day_count`/360; they ignore the
    keyword arguments. ACT/ACT-ICMA (ICMA Rule 251) needs the coupon period
    [period_start, period_end] that contains [start, end], and the coupon `frequency`.
    Each day accrues 1 / (frequency x days of the notional period it falls in):

    * Regular period (one frequency step long): days(start, end) / (frequency x days in
      the period), so a whole regular period is exactly 1/frequency.
    * Irregular period (a short or long stub): the notional periods are the regular periods
      the schedule would have had, and the fraction sums days-in-each / (frequency x its
      length). Give `maturity` (the instrument's) and they are the schedule's own dates,
      rolled back from maturity exactly as `coupon_schedule` does -- always right, and what
      ledger code should do. Without it they are rolled from the regular coupon date that
      bounds the stub, keeping the end-of-month rule if that date is a month end: backward
      from `period_end` for a first-period stub (``stub="first"``, the only kind
      `coupon_schedule` makes), forward from `period_start` for a final stub
      (``stub="last"``). That guess can be a day off for a schedule on the 29th or 30th
      whose anchor falls on a shorter month's end.

    Rounding: computed exactly, then rounded half-even to PRECISION (50) significant digits;
    results with a terminating decimal expansion that fits (0.5, 0.41096... does not) are exact.
    """
    return _to_decimal(
        _year_fraction_exact(
            convention, start, end, period_start, period_end, frequency, stub, maturity
        )
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


def coupon_schedule(issue_date: date, maturity_date: date, frequency: int) -> tuple[date, ...]:
    """Unadjusted coupon dates after `issue_date` up to and including `maturity_date`, ascending.

    Generated backward from maturity in steps of 12/frequency months, each date computed
    from maturity (maturity - k steps), so days never drift. End-of-month rule: if maturity
    is the last day of its month, every coupon date is the last day of its month (maturity
    31 Aug -> 28/29 Feb and 31 Aug; 30 Apr -> 31 Oct); otherwise dates keep maturity's day,
    clipped to shorter months (maturity 30 Mar -> 30 Sep; 29 Aug -> 28 Feb in common years).
    Dates are not moved to business days: the payment-date adjustment is the caller's.
    If `issue_date` is not on the schedule the first period (issue -> first date) is a short
    first stub; it is never merged into a long one.
    """
    _require_date("issue_date", issue_date)
    _require_date("maturity_date", maturity_date)
    frequency = _require_frequency(frequency)
    if maturity_date <= issue_date:
        raise BondMathError(f"maturity {maturity_date} is not after issue {issue_date}")
    months = 12 // frequency
    dates: list[date] = []
    for k in range(MAX_COUPONS + 1):
        if k == MAX_COUPONS:
            raise BondMathError(f"more than {MAX_COUPONS} coupons from {issue_date}")
        coupon = _schedule_date(maturity_date, k, months)
        if coupon <= issue_date:
            break
        dates.append(coupon)
    return tuple(reversed(dates))


def coupon_periods(
    issue_date: date, maturity_date: date, frequency: int
) -> tuple[tuple[date, date], ...]:
    """The accrual periods (start, end) of `coupon_schedule`; the first starts at issue."""
    dates = coupon_schedule(issue_date, maturity_date, frequency)
    starts = (issue_date, *dates[:-1])
    return tuple(zip(starts, dates, strict=True))


def _per_unit_amount(face_value: object, annual_rate: object, fraction: Fraction) -> Decimal:
    face = _require_int("face_value", face_value, minimum=0)
    rate = Fraction(_require_rate("annual_rate", annual_rate))
    # Ceiling in the 50th digit, not half-even: a per-unit amount that is rounded down
    # (1/12 -> 0.0833...3) would make floor(amount x units) in `distribute` lose a whole minor
    # unit when the exact rational product is an integer (12 units -> 0.999...96 -> 0).
    # Rounding up cannot gain one: with <= 12 rate decimals and day-count denominators of at
    # most 372 per notional period, a non-integer exact product is at least 1/(10^12 x 372^k)
    # below the next integer (k notional periods, 1 or 2 in practice), far more than the
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
