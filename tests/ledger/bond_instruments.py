"""QuantLib's own bond instruments for a generated bond: the oracle of every cash flow.

tests/ledger/bond_oracle.py pays a generated bond on a chain; this module builds the bond as
QuantLib would book it and hands back its cash flows, so every amount the ledger pays is
compared with what a QuantLib instrument pays, not with a recomputation of our own rule:

* a fixed-coupon bond (or Ijara sukuk: the same cash flows): `ql.FixedRateBond`, redemption
  at the stated `redemption_price` (100 when none);
* a floating-rate note: `ql.FloatingRateBond` over an `IborIndex` whose fixing calendar is the
  bond's holiday calendar (calendar days without one), `fixingDays` the bond's, the spread as
  QuantLib's spread, floored at 0 (QuantLib's `floors`: a `CappedFlooredIborCoupon`, priced
  from the historic fixing with no volatility needed); the fixings are added as the chain
  publishes them (`add_fixing`);
* an amortising bond: `ql.AmortizingFixedRateBond` / `ql.AmortizingFloatingRateBond` with the
  notional of each period (face x the percentage outstanding over it), its principal
  repayments QuantLib's `AmortizingPayment`s;
* a called bond: the same instrument on its schedule truncated at the call date (the dates
  QuantLib generated for the whole bond, with their regular/irregular flags, so the leg's
  reference periods are those of the whole bond) with the call price as the last
  redemption (on an amortising bond: 100 for every earlier repayment, the call price on the
  face outstanding on the call date).

Instruments are built on the unadjusted schedule with a `NullCalendar` and `Unadjusted`
payments: the payment dates are checked separately with QuantLib's calendar
(bond_oracle.payment_day). A schedule carrying the bond's calendar would make QuantLib roll
its ACT/ACT-ICMA reference periods to the last *business* day of a month
(`Calendar.advance` with endOfMonth), a second quirk on top of the one bond_oracle documents.

QuantLib's known quirk that shows in these instruments (and what the oracle does about it):
`FixedRateLeg` / `IborLeg` give an irregular period a reference period rolled back one tenor
from the period's end with the schedule's end-of-month flag (the issue-18 bond's first
coupon, 15 Jan -> 28 Feb 2025 on a grid of the 30th, gets 31 Aug 2024 -> 28 Feb 2025: 181
days, 607.7348 per unit). ICMA Rule 251 measures a stub against the regular period of the
schedule's own grid (30 Aug 2024: 182 days, 604.3956). Where an ACT/ACT-ICMA coupon's amount
differs from the instrument's and QuantLib's reference period is not the grid's notional
period, the difference is QuantLib's, counted as `reference_quirks` (bond_oracle checks that
coupon against Rule 251 piece by piece with QuantLib's day counter instead); any other
difference is a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction

import QuantLib as ql

__all__ = ["Instrument", "build", "notional_fraction", "pydate", "qdate"]

_FAR = ql.Date(31, 12, 2190)  # every fixing is historic, every flow known


def qdate(day: date) -> ql.Date:
    return ql.Date(day.day, day.month, day.year)


def pydate(day: ql.Date) -> date:
    return date(day.year(), day.month(), day.dayOfMonth())


def notional_fraction(case, dates: list[date], end: date) -> Fraction:
    """The part of the original face outstanding over the period ending on `end` (`dates`:
    the bond's schedule, issue first): 1 less every amortisation dated before it
    (docs/PROTOCOL.md 10.7). `case.amortisation` is ((index of the coupon date, percent))."""
    parts = (Fraction(Decimal(pct)) / 100 for i, pct in case.amortisation if dates[i + 1] < end)
    return 1 - sum(parts, Fraction(0))


@dataclass
class Instrument:
    bond: ql.Bond
    index: ql.IborIndex | None
    coupons: list  # ql.Coupon (FixedRateCoupon / FloatingRateCoupon), in date order
    principal: dict[date, float]  # amortisation parts and the final redemption, per unit

    def add_fixing(self, day: date, rate: Fraction) -> None:
        assert self.index is not None
        self.index.addFixing(qdate(day), float(rate), True)


def _schedule(case, whole: ql.Schedule, dates: list[date]) -> ql.Schedule:
    """`whole` (QuantLib's generated schedule of the bond) cut to `dates` (a prefix)."""
    regular = ql.BoolVector([whole.isRegular(i) for i in range(1, len(dates))])
    return ql.Schedule(
        [qdate(d) for d in dates],
        ql.NullCalendar(),
        ql.Unadjusted,
        ql.Unadjusted,
        whole.tenor(),
        ql.DateGeneration.Backward,
        case.ql_end_of_month,
        regular,
    )


def build(
    case, serial: int, whole: ql.Schedule, counter: ql.DayCounter, fixing_calendar: ql.Calendar
) -> Instrument:
    """QuantLib's instrument for `case` (bond_oracle.BondCase; per unit: every face amount is
    one unit's face): `whole` its generated schedule, `counter` its day counter,
    `fixing_calendar` the calendar its fixings are counted back on (floating only)."""
    ql.Settings.instance().evaluationDate = _FAR
    every = [pydate(d) for d in whole]
    dates = every if case.call is None else every[: case.call[0] + 2]
    schedule = _schedule(case, whole, dates)
    price = float(Decimal(case.call[1] if case.call else case.redemption_price or "100"))
    issue = qdate(case.issue)
    notionals = [float(case.face * notional_fraction(case, every, end)) for end in dates[1:]]
    # QuantLib's redemptions are indexed by notional change from 1 (Bond::
    # addRedemptionsToCashflows): 100 for every part, the price for the final one.
    changes = sum(1 for a, b in zip(notionals, notionals[1:], strict=False) if a != b)
    redemptions = [100.0] * (changes + 1) + [price]
    index = None
    if case.floating is None:
        rate = [float(Decimal(case.rate))]
        if case.amortisation:
            bond = ql.AmortizingFixedRateBond(
                0, notionals, schedule, rate, counter, ql.Unadjusted, issue,
                ql.Period(), ql.NullCalendar(), ql.Unadjusted, False, redemptions,
            )  # fmt: skip
        else:
            bond = ql.FixedRateBond(
                0, float(case.face), schedule, rate, counter, ql.Unadjusted, price, issue
            )
    else:
        spread, fixing_days, _, _ = case.floating
        index = ql.IborIndex(
            f"ORACLE{serial}",
            ql.Period(12 // case.frequency, ql.Months),
            0,
            ql.USDCurrency(),
            fixing_calendar,
            ql.Unadjusted,
            False,
            ql.Actual360(),
        )
        index.clearFixings()
        spreads = [spread / 10**4]
        if case.amortisation:
            bond = ql.AmortizingFloatingRateBond(
                0, notionals, schedule, index, counter, ql.Unadjusted, fixing_days,
                [1.0], spreads, [], [0.0], False, issue,
                ql.Period(), ql.NullCalendar(), ql.Unadjusted, False, redemptions,
            )  # fmt: skip
        else:
            bond = ql.FloatingRateBond(
                0, float(case.face), schedule, index, counter, ql.Unadjusted, fixing_days,
                [1.0], spreads, [], [0.0], False, price, issue,
            )  # fmt: skip
        ql.setCouponPricer(bond.cashflows(), ql.BlackIborCouponPricer())
    coupons = []
    principal: dict[date, float] = {}
    for flow in bond.cashflows():
        coupon = ql.as_floating_rate_coupon(flow) if index is not None else None
        coupon = coupon or ql.as_coupon(flow)
        if coupon is not None:
            coupons.append(coupon)
        else:
            key = pydate(flow.date())
            principal[key] = principal.get(key, 0.0) + flow.amount()
    return Instrument(bond, index, coupons, principal)
