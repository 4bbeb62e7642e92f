"""Day counts and year fractions: the arithmetic every coupon and accrual is measured with.

Owns the day-count conventions (`DayCount`), the exact year fraction of a date range under
each, the regular-period grid that ACT/ACT-ICMA measures stubs against, and the input checks
and exact-to-Decimal conversions that `ledger.schedule` and `ledger.bondmath` share. Pure:
`Decimal`, `int`, `Fraction` and `datetime.date` only -- no floats, no clock, no I/O.
`ledger.bondmath` re-exports the public names; see its docstring for the theory of operation.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from enum import StrEnum
from fractions import Fraction
from typing import Literal

PRECISION = 50
"""Significant digits of every Decimal result that is not exact (>= 34 = IEEE decimal128)."""

FREQUENCIES = (1, 2, 4, 12)
"""Coupon frequencies per year that this module accepts: annual, semi-annual, quarterly, monthly."""

MAX_RATE_DECIMALS = 12
"""Most decimal places a rate may carry (0.000000000001 = one hundred-millionth of a percent)."""

MAX_NOTIONAL_PERIODS = 24
"""Bound on the notional periods one irregular ACT/ACT-ICMA period may be split into."""

MAX_MAGNITUDE = 30
"""Every Decimal argument is 0 or between 10^-30 and 10^30 (exclusive): rates, prices, amounts."""

_CONTEXT_TRAPS = [InvalidOperation, DivisionByZero, Overflow]


def _context(rounding: str, prec: int = PRECISION) -> Context:
    # A fresh, explicit context per use: nothing here reads or mutates the thread's (or trio
    # task's) current decimal context, so callers' settings can never change a result.
    return Context(prec=prec, rounding=rounding, Emin=-999_999, Emax=999_999, traps=_CONTEXT_TRAPS)


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
    THIRTY_360_US = "30/360-US"
    """30/360 US (SIA/BMA "30U/360"): Bond Basis plus the last-of-February rules."""
    THIRTY_E_360 = "30E/360"
    """30E/360 Eurobond Basis (ISDA 2006 4.16(g)): every 31st counts as the 30th."""
    ACT_ACT_ISDA = "ACT/ACT-ISDA"
    """Actual/Actual ISDA (ISDA 2006 4.16(b)): days in leap years / 366, others / 365."""


_THIRTY = frozenset({DayCount.THIRTY_360, DayCount.THIRTY_360_US, DayCount.THIRTY_E_360})


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


def _is_last_of_february(day: date) -> bool:
    return day.month == 2 and is_month_end(day)


def day_count(convention: DayCount, start: date, end: date) -> int:
    """Days from `start` (included) to `end` (excluded) under `convention`; negative if reversed.

    Actual-day conventions count calendar days. The 30/360 family counts
    ``360*(Y2-Y1) + 30*(M2-M1) + (D2-D1)`` after adjusting the days of month D1 and D2:

    * 30/360 Bond Basis (ISDA 2006 4.16(f)): D1 = 31 becomes 30; D2 = 31 becomes 30 only if
      D1 (after that change) is 30 or 31. No February rule: 28 Feb -> 31 Aug is 183 days.
    * 30E/360 Eurobond Basis (ISDA 2006 4.16(g)): D1 = 31 and D2 = 31 both become 30.
    * 30/360 US (the SIA/BMA rule, "30U/360"; QuantLib Thirty360.USA), applied in order:
      if start and end are both the last day of February, D2 becomes 30; if start is the
      last day of February, D1 becomes 30; if D2 is 31 and D1 is 30 or 31, D2 becomes 30;
      if D1 is 31 it becomes 30. The February rules always apply (coupon dates of a bond
      that pays on 28 Feb and 31 Aug are month ends, which is the case they were made for):
      28 Feb 2023 -> 31 Aug 2023 is 180 days, not 183.

    Exact integer arithmetic; no rounding.
    """
    convention = DayCount(convention)
    _require_date("start", start)
    _require_date("end", end)
    if convention not in _THIRTY:
        return (end - start).days
    d1, d2 = start.day, end.day
    if convention is DayCount.THIRTY_360_US:
        if _is_last_of_february(start):
            if _is_last_of_february(end):
                d2 = 30
            d1 = 30
        if d2 == 31 and d1 >= 30:
            d2 = 30
        d1 = min(d1, 30)
    elif convention is DayCount.THIRTY_E_360:
        d1, d2 = min(d1, 30), min(d2, 30)
    else:
        d1 = min(d1, 30)
        d2 = 30 if d2 == 31 and d1 >= 30 else d2
    return 360 * (end.year - start.year) + 30 * (end.month - start.month) + (d2 - d1)


def _isda_fraction(start: date, end: date) -> Fraction:
    """ACT/ACT-ISDA (ISDA 2006 4.16(b)): days in leap years / 366 + the rest / 365."""
    total = Fraction(0)
    cursor = start
    while cursor < end:
        # cursor.year < end.year <= 9999 whenever the next 1 January is needed.
        stop = end if cursor.year == end.year else date(cursor.year + 1, 1, 1)
        total += Fraction((stop - cursor).days, 366 if calendar.isleap(cursor.year) else 365)
        cursor = stop
    return total


def grid_date(anchor: date, steps: int, months: int, eom: bool) -> date:
    """The regular schedule date `steps` periods of `months` after `anchor` (before if < 0).

    Always computed from the anchor (never step by step, so days never drift); with `eom`
    every grid date is the last day of its month, otherwise it keeps the anchor's day of
    month, clipped to shorter months.
    """
    if steps == 0:
        return anchor
    return _add_months(anchor, steps * months, eom)


def notional_dates(start: date, end: date, anchor: date, months: int, eom: bool) -> list[date]:
    """The regular grid dates (`grid_date` of `anchor`) that cover [start, end], ascending.

    The first is the last grid date on or before `start`, the last the first grid date on or
    after `end`: the notional periods ACT/ACT-ICMA measures each day of [start, end] against.
    """
    # Jump close to `start` in one step, then correct by at most a step or two either way.
    month_gap = (start.year - anchor.year) * 12 + (start.month - anchor.month)
    k = month_gap // months
    while grid_date(anchor, k, months, eom) > start:
        k -= 1
    while grid_date(anchor, k + 1, months, eom) <= start:
        k += 1
    dates = [grid_date(anchor, k, months, eom)]
    while dates[-1] < end:
        if len(dates) > MAX_NOTIONAL_PERIODS:
            raise BondMathError(
                f"{start} -> {end} spans more than {MAX_NOTIONAL_PERIODS} notional periods"
            )
        k += 1
        dates.append(grid_date(anchor, k, months, eom))
    return dates


def _notional_dates_from_maturity(
    start: date, end: date, months: int, maturity: date
) -> list[date]:
    """The schedule's own (possibly virtual) coupon dates around [start, end], ascending."""
    if end > maturity:
        raise BondMathError(f"accrual end {end} is after maturity {maturity}")
    return notional_dates(start, end, maturity, months, is_month_end(maturity))


def icma_fraction(start: date, end: date, notional: Sequence[date], frequency: int) -> Fraction:
    """ACT/ACT-ICMA fraction of [start, end] measured against the notional periods `notional`.

    ICMA Rule 251: each day accrues 1 / (frequency x days of the notional period it falls
    in). `notional` are ascending regular-grid dates with notional[0] <= start and
    notional[-1] >= end (`notional_dates`). Exact; no rounding.
    """
    total = Fraction(0)
    for lo, hi in zip(notional, notional[1:], strict=False):
        overlap = (min(hi, end) - max(lo, start)).days
        if overlap > 0:
            total += Fraction(overlap, frequency * (hi - lo).days)
    return total


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
    return icma_fraction(start, end, dates, frequency)


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
    if convention in _THIRTY:
        return Fraction(day_count(convention, start, end), 360)
    if convention is DayCount.ACT_ACT_ISDA:
        return _isda_fraction(start, end)
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

    ACT/360 = days/360, ACT/365F = days/365, the 30/360 family = `day_count`/360, ACT/ACT-ISDA
    = days in leap years/366 + other days/365; they ignore the keyword arguments.
    ACT/ACT-ICMA (ICMA Rule 251) needs the coupon period
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
