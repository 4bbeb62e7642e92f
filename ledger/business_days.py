"""Business days: moving a payment date off weekends and holidays, and counting back to a
record date.

A `BusinessCalendar` is a set of weekend weekdays and a set of dated holidays (the on-chain
`HolidayCalendar` record of an issuer, `ledger/types.py`). Conventions (ISDA 2006 4.12):

* ``following``: the first business day on or after the date;
* ``modified_following``: following, unless that falls in the next calendar month, then
  preceding;
* ``preceding``: the last business day on or before the date;
* ``unadjusted``: the date itself.

Coupons accrue over unadjusted dates (the bond convention): only the day a payment may be made
moves. Pure: `datetime.date` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

__all__ = [
    "CONVENTIONS",
    "MAX_HOLIDAYS",
    "MAX_RECORD_DAYS",
    "WEEKDAYS",
    "BusinessCalendar",
]

CONVENTIONS = ("unadjusted", "following", "modified_following", "preceding")
"""Business-day conventions by their names in instrument records."""

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names in calendar records, in ISO order (mon = 1)."""

MAX_HOLIDAYS = 1000
"""Most dated holidays one calendar may hold (ten a year for a century; ~13 kB of a transaction)."""

MAX_RECORD_DAYS = 30
"""Most business days a record date may precede its payment date."""

_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Weekend weekdays (ISO numbers, 1 = Monday) and dated holidays.

    At least one weekday is a business day, so every search below ends: a run of non-business
    days is at most len(holidays) + 6 days long.
    """

    weekend: frozenset[int] = frozenset({6, 7})
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not self.weekend <= frozenset(range(1, 8)) or len(self.weekend) > 6:
            raise ValueError(f"weekend must be 0 to 6 ISO weekdays, got {sorted(self.weekend)}")
        if len(self.holidays) > MAX_HOLIDAYS:
            raise ValueError(f"more than {MAX_HOLIDAYS} holidays")

    def is_business_day(self, day: date) -> bool:
        return day.isoweekday() not in self.weekend and day not in self.holidays

    def _roll(self, day: date, step: timedelta) -> date:
        while not self.is_business_day(day):
            day += step
        return day

    def adjust(self, day: date, convention: str) -> date:
        """`day` moved by `convention` (one of `CONVENTIONS`)."""
        if convention == "unadjusted":
            return day
        if convention == "following":
            return self._roll(day, _ONE_DAY)
        if convention == "preceding":
            return self._roll(day, -_ONE_DAY)
        if convention == "modified_following":
            following = self._roll(day, _ONE_DAY)
            return following if following.month == day.month else self._roll(day, -_ONE_DAY)
        raise ValueError(
            f"business-day convention must be one of {CONVENTIONS}, got {convention!r}"
        )

    def business_days_before(self, day: date, count: int) -> date:
        """The business day `count` business days before `day` (`day` itself not counted)."""
        if not 0 <= count <= MAX_RECORD_DAYS:
            raise ValueError(f"count must be 0 to {MAX_RECORD_DAYS}, got {count}")
        for _ in range(count):
            day = self._roll(day - _ONE_DAY, -_ONE_DAY)
        return day
