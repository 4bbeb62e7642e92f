"""Business-day conventions and record dates (ledger/business_days.py) against QuantLib's
BespokeCalendar, an independent implementation of the same ISDA 2006 4.12 conventions, and
against dates worked by hand."""

from __future__ import annotations

from datetime import date

import pytest
import QuantLib as ql
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.business_days import CONVENTIONS, MAX_RECORD_DAYS, BusinessCalendar

QL_CONVENTION = {
    "following": ql.Following,
    "modified_following": ql.ModifiedFollowing,
    "preceding": ql.Preceding,
    "unadjusted": ql.Unadjusted,
}
QL_WEEKDAY = {
    1: ql.Monday,
    2: ql.Tuesday,
    3: ql.Wednesday,
    4: ql.Thursday,
    5: ql.Friday,
    6: ql.Saturday,
    7: ql.Sunday,
}


def qdate(day: date) -> ql.Date:
    return ql.Date(day.day, day.month, day.year)


def test_hand_worked_dates():
    # Pakistan-style calendar: Sat/Sun weekend, 5 Feb 2027 (Kashmir Day, a Friday) a holiday.
    cal = BusinessCalendar(frozenset({6, 7}), frozenset({date(2027, 2, 5)}))
    # Coupon on Sat 30 Jan 2027: following -> Mon 1 Feb; modified following -> Fri 29 Jan
    # (following leaves January); preceding -> Fri 29 Jan.
    saturday = date(2027, 1, 30)
    assert cal.adjust(saturday, "following") == date(2027, 2, 1)
    assert cal.adjust(saturday, "modified_following") == date(2027, 1, 29)
    assert cal.adjust(saturday, "preceding") == date(2027, 1, 29)
    assert cal.adjust(saturday, "unadjusted") == saturday
    # The holiday Friday 5 Feb: following -> Mon 8 Feb; preceding -> Thu 4 Feb.
    assert cal.adjust(date(2027, 2, 5), "following") == date(2027, 2, 8)
    assert cal.adjust(date(2027, 2, 5), "preceding") == date(2027, 2, 4)
    # Record date 2 business days before Mon 8 Feb: Thu 4 Feb (Fri 5 is a holiday).
    assert cal.business_days_before(date(2027, 2, 8), 2) == date(2027, 2, 3)
    assert cal.business_days_before(date(2027, 2, 8), 1) == date(2027, 2, 4)
    assert cal.business_days_before(date(2027, 2, 8), 0) == date(2027, 2, 8)


def test_refusals():
    with pytest.raises(ValueError, match="weekend"):
        BusinessCalendar(frozenset(range(1, 8)))
    with pytest.raises(ValueError, match="convention"):
        BusinessCalendar().adjust(date(2027, 1, 1), "nearest")
    with pytest.raises(ValueError, match="count"):
        BusinessCalendar().business_days_before(date(2027, 1, 1), MAX_RECORD_DAYS + 1)


_weekend = st.frozensets(st.integers(1, 7), max_size=3)
_holidays = st.frozensets(st.dates(date(2026, 12, 1), date(2027, 3, 31)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(weekend=_weekend, holidays=_holidays, day=st.dates(date(2027, 1, 1), date(2027, 2, 28)))
def test_agrees_with_quantlib(weekend, holidays, day):
    ours = BusinessCalendar(weekend, holidays)
    theirs = ql.BespokeCalendar("oracle")
    for weekday in weekend:
        theirs.addWeekend(QL_WEEKDAY[weekday])
    for holiday in holidays:
        theirs.addHoliday(qdate(holiday))
    assert ours.is_business_day(day) == theirs.isBusinessDay(qdate(day))
    for convention in CONVENTIONS:
        assert qdate(ours.adjust(day, convention)) == theirs.adjust(
            qdate(day), QL_CONVENTION[convention]
        ), convention
    for count in (1, 2, 5):
        # QuantLib's advance by -n business days from a business day is the same count.
        start = ours.adjust(day, "following")
        want = theirs.advance(qdate(start), -count, ql.Days)
        assert qdate(ours.business_days_before(start, count)) == want
    assert ours.business_days_before(day, 1) < day
