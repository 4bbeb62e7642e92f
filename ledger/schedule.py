"""Coupon schedules as issued: the coupon dates of a bond and the periods its coupons accrue over.

A `Schedule` is the whole of what a coupon's amount depends on besides the rate: issue date,
maturity, frequency and, optionally, the first and penultimate coupon dates and the
end-of-month rule. Its regular dates form one grid, anchored on the penultimate coupon date
if there is one and on maturity otherwise, rolled in whole periods from that anchor. Every
irregular period (a first period that does not start on the grid, a final period after a
stated penultimate date) is measured by ACT/ACT-ICMA against that same grid -- the notional
periods ICMA Rule 251 speaks of -- and never against a grid guessed from the period alone.

That was the defect of issue 18: the ledger priced each coupon from its period's two dates
and let the day count guess the schedule, and the guess (end-of-month from a first coupon on
28 February) differed from the schedule (the 30th of each month), overpaying the first coupon
of every ACT/ACT-ICMA bond whose first period is irregular and whose first coupon date is
clipped to a month end the schedule does not keep. Keeping the schedule in one object that
both lists the dates and measures the periods removes the class.

Pure: `datetime.date`, `int` and `Fraction` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from fractions import Fraction

from ledger.daycount import (
    BondMathError,
    DayCount,
    _require_date,
    _require_frequency,
    _year_fraction_exact,
    grid_date,
    icma_fraction,
    is_month_end,
    notional_dates,
)

__all__ = ["MAX_COUPONS", "Schedule", "coupon_periods", "coupon_schedule"]

MAX_COUPONS = 1200
"""Bound on a generated schedule: 100 years of monthly coupons."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """A bond's unadjusted coupon schedule, as issued.

    * `issue`, `maturity`, `frequency` (1, 2, 4 or 12 coupons a year).
    * `first_coupon` (optional): the first coupon date. It must be a regular date of the
      grid; when it is more than one period after `issue` the first coupon is long. Without
      it the first coupon date is the first grid date after `issue` (a short or regular
      first period).
    * `penultimate_coupon` (optional): the last coupon date before maturity. The grid is then
      anchored on it, and the final period (penultimate -> maturity) is an odd last coupon,
      short or long, measured against the grid continued past the penultimate date.
    * `end_of_month` (optional): True rolls every grid date to its month's last day (the
      anchor must then be a month end); False keeps the anchor's day of month, clipped to
      shorter months (a bond maturing on 28 Feb of a common year pays on the 28th); None (the
      default, and the ledger's behaviour before these fields existed) means True exactly
      when the anchor is a month end.
    """

    issue: date
    maturity: date
    frequency: int
    first_coupon: date | None = None
    penultimate_coupon: date | None = None
    end_of_month: bool | None = None

    def __post_init__(self) -> None:
        _require_date("issue_date", self.issue)
        _require_date("maturity_date", self.maturity)
        _require_frequency(self.frequency)
        if self.maturity <= self.issue:
            raise BondMathError(f"maturity {self.maturity} is not after issue {self.issue}")
        if self.end_of_month not in (None, True, False):
            raise TypeError("end_of_month must be None or a bool")
        anchor = self.anchor
        if self.penultimate_coupon is not None:
            _require_date("penultimate_coupon", self.penultimate_coupon)
            if not self.issue < self.penultimate_coupon < self.maturity:
                raise BondMathError(
                    f"penultimate coupon {self.penultimate_coupon} is not between issue "
                    f"{self.issue} and maturity {self.maturity}"
                )
        if self.end_of_month is True and not is_month_end(anchor):
            raise BondMathError(f"end-of-month rule needs a month-end anchor, got {anchor}")
        if self.first_coupon is not None:
            first = _require_date("first_coupon", self.first_coupon)
            if not self.issue < first <= anchor:
                raise BondMathError(
                    f"first coupon {first} is not after issue {self.issue} and on or "
                    f"before {anchor}"
                )
            if self._steps_back(first) is None:
                raise BondMathError(
                    f"first coupon {first} is not a regular date of the schedule rolled "
                    f"from {anchor}"
                )
        periods = self.periods()  # checks the length bound
        # Every period must be measurable: an irregular first or last period spanning more
        # than MAX_NOTIONAL_PERIODS grid periods is refused here, at registration, rather
        # than when its coupon falls due.
        for start, end in {periods[0], periods[-1]}:
            notional_dates(start, end, self.anchor, self.months, self.eom)

    @property
    def months(self) -> int:
        return 12 // self.frequency

    @property
    def anchor(self) -> date:
        """The grid's anchor: the penultimate coupon date if stated, else maturity."""
        return self.maturity if self.penultimate_coupon is None else self.penultimate_coupon

    @property
    def eom(self) -> bool:
        """Whether grid dates are month ends (the end-of-month rule in force)."""
        if self.end_of_month is None:
            return is_month_end(self.anchor)
        return self.end_of_month

    def _grid(self, steps: int) -> date:
        return grid_date(self.anchor, steps, self.months, self.eom)

    def _steps_back(self, day: date) -> int | None:
        """k >= 0 with grid(-k) == day, or None if `day` is not a grid date before the anchor."""
        for k in range(MAX_COUPONS + 1):
            candidate = self._grid(-k)
            if candidate == day:
                return k
            if candidate < day:
                return None
        return None

    def dates(self) -> tuple[date, ...]:
        """Unadjusted coupon dates after `issue`, ascending; the last is `maturity`."""
        stop = self.issue if self.first_coupon is None else self.first_coupon
        dates: list[date] = [] if self.penultimate_coupon is None else [self.maturity]
        for k in range(MAX_COUPONS + 1):
            if len(dates) >= MAX_COUPONS:
                raise BondMathError(f"more than {MAX_COUPONS} coupons from {self.issue}")
            coupon = self._grid(-k)
            if coupon < stop or (self.first_coupon is None and coupon == stop):
                break
            dates.append(coupon)
        return tuple(reversed(dates))

    def periods(self) -> tuple[tuple[date, date], ...]:
        """The accrual periods (start, end); the first starts at issue."""
        dates = self.dates()
        return tuple(zip((self.issue, *dates[:-1]), dates, strict=True))

    def fraction(self, convention: DayCount, start: date, end: date) -> Fraction:
        """Exact year fraction of [start, end], a range inside one coupon period.

        ACT/ACT-ICMA measures each day against the notional period of this schedule's grid
        that contains it (a regular period is its own notional period: 1/frequency); the
        other conventions ignore the schedule. No rounding.
        """
        convention = DayCount(convention)
        _require_date("start", start)
        _require_date("end", end)
        if not self.issue <= start <= end <= self.maturity:
            raise BondMathError(f"{start} -> {end} is not inside {self.issue} -> {self.maturity}")
        if convention is not DayCount.ACT_ACT_ICMA:
            return _year_fraction_exact(convention, start, end, None, None, None, "first", None)
        notional = notional_dates(start, end, self.anchor, self.months, self.eom)
        return icma_fraction(start, end, notional, self.frequency)

    def period_of(self, day: date) -> tuple[date, date]:
        """The coupon period (start, end) with start <= `day` < end (or end == maturity)."""
        for start, end in self.periods():
            if start <= day < end or day == end == self.maturity:
                return start, end
        raise BondMathError(f"{day} is not between issue {self.issue} and {self.maturity}")


def coupon_schedule(issue_date: date, maturity_date: date, frequency: int) -> tuple[date, ...]:
    """Unadjusted coupon dates after `issue_date` up to and including `maturity_date`, ascending.

    Generated backward from maturity in steps of 12/frequency months, each date computed
    from maturity (maturity - k steps), so days never drift. End-of-month rule: if maturity
    is the last day of its month, every coupon date is the last day of its month (maturity
    31 Aug -> 28/29 Feb and 31 Aug; 30 Apr -> 31 Oct); otherwise dates keep maturity's day,
    clipped to shorter months (maturity 30 Mar -> 30 Sep; 29 Aug -> 28 Feb in common years).
    Dates are not moved to business days: the payment-date adjustment is the caller's.
    If `issue_date` is not on the schedule the first period (issue -> first date) is a short
    first stub; it is never merged into a long one. `Schedule(issue, maturity, frequency)`
    with its optional fields is the general form.
    """
    return Schedule(issue_date, maturity_date, frequency).dates()


def coupon_periods(
    issue_date: date, maturity_date: date, frequency: int
) -> tuple[tuple[date, date], ...]:
    """The accrual periods (start, end) of `coupon_schedule`; the first starts at issue."""
    return Schedule(issue_date, maturity_date, frequency).periods()
