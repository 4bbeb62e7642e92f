"""Generated bonds for the oracle, and QuantLib's schedules, day counts and calendars of them.

`generate` draws a bond biased toward what breaks schedules (tests/ledger/bond_oracle.py pays
it on a chain); the rest is QuantLib's view of it: its schedule, the grid the schedule is
generated on (for ICMA Rule 251's notional periods), its day counter and holiday calendar,
and each period's year fraction (exact where QuantLib's day count is an integer count).
"""

from __future__ import annotations

import calendar
import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import QuantLib as ql

from tests.ledger.bond_instruments import pydate, qdate

CONVENTIONS = (
    "ACT/360",
    "ACT/365F",
    "30/360",
    "ACT/ACT-ICMA",
    "30/360-US",
    "30E/360",
    "ACT/ACT-ISDA",
)
INVESTORS = ("inv-a", "inv-b", "inv-c", "inv-d")
AGENT = "central-bank"
CASH = "ORCASH"
TOLERANCE = 1e-12


def _day_counter(name: str) -> ql.DayCounter:
    return {
        "ACT/360": ql.Actual360(),
        "ACT/365F": ql.Actual365Fixed(),
        "30/360": ql.Thirty360(ql.Thirty360.BondBasis),
        "ACT/ACT-ICMA": ql.ActualActual(ql.ActualActual.ISMA),
        "30/360-US": ql.Thirty360(ql.Thirty360.USA),
        "30E/360": ql.Thirty360(ql.Thirty360.European),
        "ACT/ACT-ISDA": ql.ActualActual(ql.ActualActual.ISDA),
    }[name]


@dataclass
class BondCase:
    face: int
    rate: str
    frequency: int
    day_count: str
    issue: date
    maturity: date
    holdings: dict[str, int]
    first_coupon: date | None = None
    penultimate_coupon: date | None = None
    end_of_month: str = ""  # the instrument field: "", "yes" or "no"
    convention: str = ""  # business_day_convention ("" none)
    weekend: tuple[int, ...] = ()  # ISO weekdays of the bond's holiday calendar
    holidays: tuple[date, ...] = ()
    # A floating-rate note (protocol version 3): spread in bp, fixing days, lookback days,
    # and the generator's seed for its fixings (published as the run goes).
    floating: tuple[int, int, int, int] | None = None
    sukuk: bool = False  # an Ijara sukuk: paid by pay_rental / dissolve_sukuk
    redemption_price: str = ""  # percent of face at maturity ("" par)
    call: tuple[int, str] | None = None  # (index of the coupon date called for, call price)
    # An amortising bond: ((index of the coupon date, percent of the original face), ...).
    amortisation: tuple[tuple[int, str], ...] = ()

    def describe(self) -> str:
        return (
            f"{self.day_count} {self.rate} x{self.frequency} face {self.face} "
            f"{self.issue} -> {self.maturity} first {self.first_coupon} penultimate "
            f"{self.penultimate_coupon} eom {self.end_of_month!r} {self.convention} "
            f"weekend {self.weekend} holidays {self.holidays} holdings {self.holdings} "
            f"floating {self.floating} sukuk {self.sukuk} redemption {self.redemption_price!r} "
            f"call {self.call} amortisation {self.amortisation}"
        )

    @property
    def anchor(self) -> date:
        return self.maturity if self.penultimate_coupon is None else self.penultimate_coupon

    @property
    def ql_end_of_month(self) -> bool:
        # QuantLib rolls month ends only from a month-end seed (the anchor), as the ledger's
        # default does; "no" turns it off. "yes" is only accepted with a month-end anchor.
        return self.end_of_month != "no"


def _random_day(rng: random.Random, lo: date, hi: date) -> date:
    return lo + timedelta(days=rng.randrange((hi - lo).days + 1))


def generate(rng: random.Random) -> BondCase:
    """One bond, biased toward the cases that break schedules: maturities on the 28th-31st
    and at month ends, issue dates off the grid, short tenors, every frequency and convention."""
    frequency = rng.choice((1, 2, 4, 12))
    issue = _random_day(rng, date(2000, 1, 1), date(2040, 12, 31))
    # At most 16 periods keeps the chain run short (the irregular periods are the first and
    # the last); one-period bonds and bonds shorter than one period included.
    months = rng.randrange(1, 16 * 12 // frequency + 1)
    year, month0 = divmod(issue.year * 12 + issue.month - 1 + months, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    shape = rng.random()
    if shape < 0.35:
        day = last  # month end (28 Feb of a common year included)
    elif shape < 0.7:
        day = min(rng.choice((28, 29, 30, 31)), last)
    else:
        day = rng.randrange(1, last + 1)
    maturity = date(year, month0 + 1, day)
    if maturity <= issue:
        maturity = issue + timedelta(days=rng.randrange(1, 40))
    rate_decimals = rng.randrange(2, 9)  # 1 % steps to 0.000001 %
    rate = Decimal(rng.randrange(1, 25 * 10 ** (rate_decimals - 2) + 1)).scaleb(-rate_decimals)
    holders = rng.sample(INVESTORS, rng.randrange(1, len(INVESTORS) + 1))
    case = BondCase(
        face=rng.choice((100, 1000, 100_000, rng.randrange(1, 10_000_000))),
        rate=f"{rate:f}",
        frequency=frequency,
        day_count=rng.choice(CONVENTIONS),
        issue=issue,
        maturity=maturity,
        holdings={name: rng.randrange(1, 10_000) for name in sorted(holders)},
    )
    _as_issued(rng, case)
    if rng.random() < 0.25:
        _business_days(rng, case)
    if rng.random() < 0.2:
        # Fixed 0-3 business days before a period (calendar days without a calendar; with
        # one, 0 days is QuantLib's fixing-date quirk: bond_oracle's docstring).
        fixing_days = rng.randrange(0, 4)
        case.floating = (
            rng.randrange(-300, 501),
            fixing_days,
            rng.randrange(0, 8),
            rng.randrange(2**32),
        )
    case.sukuk = rng.random() < 0.1
    if rng.random() < 0.1:
        case.redemption_price = f"{Decimal(rng.randrange(9_000_000, 11_000_001)).scaleb(-5)}"
    if rng.random() < 0.1:
        dates = _ql_schedule(case)[1:]
        if len(dates) > 1:  # called for one of its coupon dates before maturity
            price = f"{Decimal(rng.randrange(100_000, 105_001)).scaleb(-3)}"
            case.call = (rng.randrange(len(dates) - 1), price)
    if rng.random() < 0.2 and not case.sukuk:
        _amortising(rng, case)
    return case


def _amortising(rng: random.Random, case: BondCase) -> None:
    """Parts of the face repaid on some coupon dates before maturity (at most 99 % in all,
    percentages of up to 6 decimals, some tiny)."""
    if AMORTISING_COMBINATIONS is False and (case.call or case.redemption_price):
        return
    dates = _ql_schedule(case)[1:-1]
    if not dates:
        return
    chosen = sorted(rng.sample(range(len(dates)), rng.randrange(1, min(len(dates), 8) + 1)))
    left = 99 * 10**6
    parts = []
    for index in chosen:
        micro = rng.randrange(1, max(2, left // 2)) if rng.random() < 0.9 else 1
        left -= micro
        whole, frac = divmod(micro, 10**6)
        parts.append((index, f"{whole}.{frac:06d}".rstrip("0").rstrip(".")))
    case.amortisation = tuple(parts)


AMORTISING_COMBINATIONS = True
"""Amortising bonds are also generated callable or redeemed at a stated price (protocol
version 4: docs/PROTOCOL.md 10.7); False generates only what version 3 accepts."""


def _business_days(rng: random.Random, case: BondCase) -> None:
    """A convention and a calendar whose holidays fall on or next to coupon dates."""
    case.convention = rng.choice(("following", "modified_following", "preceding"))
    case.weekend = rng.choice(((6, 7), (5, 6), (7,), ()))
    near = [d + timedelta(days=rng.randrange(-1, 2)) for d in _ql_schedule(case)[1:]]
    case.holidays = tuple(sorted({d for d in near if rng.random() < 0.4}))


def _ql_calendar(case: BondCase) -> ql.Calendar:
    calendar_ = ql.BespokeCalendar("oracle")
    for weekday in case.weekend:
        calendar_.addWeekend(
            (
                0,
                ql.Monday,
                ql.Tuesday,
                ql.Wednesday,
                ql.Thursday,
                ql.Friday,
                ql.Saturday,
                ql.Sunday,
            )[weekday]
        )
    for holiday in case.holidays:
        calendar_.addHoliday(qdate(holiday))
    return calendar_


def payment_day(case: BondCase, calendar_: ql.Calendar, day: date) -> date:
    """QuantLib's adjusted payment date of a scheduled `day`."""
    if not case.convention:
        return day
    convention = {
        "following": ql.Following,
        "modified_following": ql.ModifiedFollowing,
        "preceding": ql.Preceding,
    }[case.convention]
    return pydate(calendar_.adjust(qdate(day), convention))


def _as_issued(rng: random.Random, case: BondCase) -> None:
    """Give some bonds an odd last coupon, a long first coupon and an end-of-month choice."""
    period = 366 // case.frequency
    if rng.random() < 0.2 and (case.maturity - case.issue).days > period // 2 + 2:
        # An odd last coupon: short (a third of a period) to long (nearly two periods).
        back = rng.randrange(period // 3, 2 * period)
        case.penultimate_coupon = max(
            case.maturity - timedelta(days=back), case.issue + timedelta(days=1)
        )
    month_end = calendar.monthrange(case.anchor.year, case.anchor.month)[1] == case.anchor.day
    choice = rng.random()
    if choice < 0.15:
        case.end_of_month = "no"
    elif choice < 0.25 and month_end:
        case.end_of_month = "yes"
    if rng.random() < 0.25:
        # A first coupon on the grid (QuantLib's own backward schedule from the anchor), one
        # to three periods after issue: a long first coupon when it is more than one.
        grid = _ql_grid(case)
        later = [d for d in grid if case.issue < d <= case.anchor]
        if later:
            case.first_coupon = later[min(len(later) - 1, rng.randrange(3))]


# ---------------------------------------------------------------------------------------------
# The oracle


def _tenor(case: BondCase) -> ql.Period:
    return ql.Period(12 // case.frequency, ql.Months)


def _ql_schedule(case: BondCase) -> list[date]:
    """The bond's coupon dates (with issue first), as QuantLib generates them."""
    return [pydate(d) for d in _ql_schedule_object(case)]


def _ql_schedule_object(case: BondCase) -> ql.Schedule:
    return ql.Schedule(
        qdate(case.issue),
        qdate(case.maturity),
        _tenor(case),
        ql.NullCalendar(),
        ql.Unadjusted,
        ql.Unadjusted,
        ql.DateGeneration.Backward,
        case.ql_end_of_month,
        ql.Date() if case.first_coupon is None else qdate(case.first_coupon),
        ql.Date() if case.penultimate_coupon is None else qdate(case.penultimate_coupon),
    )


def _ql_grid(case: BondCase) -> list[date]:
    """The schedule's regular dates continued both ways from its anchor (QuantLib's backward
    schedule from well before issue, and its forward schedule past maturity)."""
    months = 12 // case.frequency
    early = case.issue - timedelta(days=(4 + 12 // case.frequency) * 31 * months)
    args = (_tenor(case), ql.NullCalendar(), ql.Unadjusted, ql.Unadjusted)
    back = ql.Schedule(
        qdate(early), qdate(case.anchor), *args, ql.DateGeneration.Backward, case.ql_end_of_month
    )
    late = case.maturity + timedelta(days=3 * 31 * months)
    forward = ql.Schedule(
        qdate(case.anchor), qdate(late), *args, ql.DateGeneration.Forward, case.ql_end_of_month
    )
    # Each schedule's far end is a stub boundary, not a grid date: drop it.
    return sorted({pydate(d) for d in list(back)[1:]} | {pydate(d) for d in list(forward)[:-1]})


def _pieces(case: BondCase, grid: list[date], start: date, end: date):
    """[start, end] cut at grid dates, each piece with its notional period (ICMA only)."""
    if case.day_count != "ACT/ACT-ICMA":
        return [(start, end, start, end)]
    bounds = [start, *(g for g in grid if start < g < end), end]
    pieces = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        lo = max(g for g in grid if g <= a)
        pieces.append((a, b, lo, min(g for g in grid if g > lo)))
    return pieces


def oracle_fraction(case: BondCase, grid: list[date], start: date, end: date):
    """(exact fraction, QuantLib's float) of [start, end]: under ACT/ACT-ICMA the sum over the
    notional periods it spans (Rule 251), each measured by QuantLib with that period passed
    as its reference period."""
    counter = _day_counter(case.day_count)
    exact, approximate = Fraction(0), 0.0
    for a, b, lo, hi in _pieces(case, grid, start, end):
        piece = counter.yearFraction(qdate(a), qdate(b), qdate(lo), qdate(hi))
        exact += exact_fraction(case, a, b, piece)
        approximate += piece
    return exact, approximate


def oracle_coupons(case: BondCase) -> list[tuple[date, date, Fraction, float, date, Fraction]]:
    """(start, end, exact fraction, QuantLib's float, a day inside, fraction accrued to it)
    of every coupon period of `case`, on QuantLib's schedule."""
    dates = _ql_schedule(case)
    grid = _ql_grid(case)
    periods = []
    for start, end in zip(dates, dates[1:], strict=False):
        exact, approximate = oracle_fraction(case, grid, start, end)
        inside = start + (end - start) * 2 // 3
        accrued, _ = oracle_fraction(case, grid, start, inside)
        periods.append((start, end, exact, approximate, inside, accrued))
    return periods


def exact_fraction(case: BondCase, start: date, end: date, ql_fraction: float) -> Fraction:
    """The oracle's fraction as an exact rational, where the convention makes that possible
    without trusting the ledger: integer day counts from QuantLib over the basis, or (ICMA,
    ISDA) the float itself as a best rational with a small denominator."""
    counter = _day_counter(case.day_count)
    basis = {"ACT/360": 360, "ACT/365F": 365, "30/360": 360, "30/360-US": 360, "30E/360": 360}
    if case.day_count in basis:
        return Fraction(counter.dayCount(qdate(start), qdate(end)), basis[case.day_count])
    # ICMA: days / (f x notional days), a denominator of at most 12 x 372; ISDA: days / 365 +
    # days / 366, at most 133,590. Two distinct rationals with denominators under 10^6 differ
    # by more than 10^-12, far above a float's error here (< 10^-14), so the best rational
    # approximation with a denominator under 10^6 is the exact value QuantLib computed.
    return Fraction(ql_fraction).limit_denominator(10**6)
