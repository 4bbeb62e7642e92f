"""The dates a payment hangs on: its payment date and its record date.

* **Payment date**: a scheduled coupon date or maturity moved by the instrument's
  business-day convention over its issuer's holiday calendar (unadjusted without one).
* **Record date**: the day from which units stop moving until the payment is made, so the
  register the paying agent pays from is the register of that day (entitlement is fixed
  there). A bond whose terms state `record_business_days` (protocol version 3) records that
  many business days of its calendar before the payment date; every other instrument
  `closed_period_days` calendar days before the unadjusted date, as before version 3.

Pure functions of the state; no writes.
"""

from __future__ import annotations

from datetime import date, timedelta

from ledger import business_days
from ledger.state import State
from ledger.types import BOND, TBILL, Instrument


def business_calendar(state: State, instrument: Instrument) -> business_days.BusinessCalendar:
    """The instrument's issuer calendar as a `BusinessCalendar` (Sat/Sun without one)."""
    if not instrument.holiday_calendar:
        return business_days.BusinessCalendar()
    calendar = state.calendars[instrument.holiday_calendar]
    return business_days.BusinessCalendar(
        frozenset(business_days.WEEKDAYS.index(name) + 1 for name in calendar.weekend),
        frozenset(calendar.holidays),
    )


def payment_date(state: State, instrument: Instrument, day: date) -> date:
    """The day a payment scheduled for `day` is due: `day` moved by the instrument's
    business-day convention over its issuer's holiday calendar (unadjusted without one)."""
    if not instrument.business_day_convention:
        return day
    return business_calendar(state, instrument).adjust(day, instrument.business_day_convention)


def next_payment(instrument: Instrument) -> date | None:
    """The scheduled (unadjusted) date of the instrument's next payment, None if none."""
    if instrument.redeemed:
        return None
    if instrument.next_coupon is not None:
        return instrument.next_coupon
    if instrument.kind not in (BOND, TBILL):
        return None
    terms = instrument.terms
    if terms is not None and terms.called_on is not None:
        return terms.called_on  # a called bond is redeemed on its call date
    return instrument.maturity_date


def record_date_for(state: State, instrument: Instrument, scheduled: date) -> date:
    """The record date of the payment scheduled for `scheduled` (see the module docstring)."""
    terms = instrument.terms
    if terms is not None and terms.record_business_days:
        due = payment_date(state, instrument, scheduled)
        return business_calendar(state, instrument).business_days_before(
            due, terms.record_business_days
        )
    return scheduled - timedelta(days=state.parameters.closed_period_days)
