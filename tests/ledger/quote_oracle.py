"""QuantLib as the oracle of `ledger.quote`: yield, clean and dirty price, accrued interest.

For each generated fixed-coupon bond (tests/ledger/bond_oracle.py's generator) and a random
settlement date, QuantLib is given the bond as the ledger defines it -- a leg of
`FixedRateCoupon`s over the ledger's schedule (QuantLib's own schedule, checked equal to the
ledger's by bond_oracle), each with its reference period taken from the schedule's grid
(ICMA Rule 251: see bond_oracle's note on QuantLib's stub quirk), and the redemption at 100 --
and asked, through `BondFunctions`, for the clean and dirty price at a random yield
(`Compounded` at the coupon frequency, the bond's day counter), the accrued amount, and the
yield of the clean price it gave. The ledger's quote must agree:

* prices and accrued interest per 100 of face within 1e-9 (QuantLib computes in binary
  floating point; the ledger's quote is rounded to 12 places);
* the ledger's yield from QuantLib's clean price within 1e-9 of the yield QuantLib started
  from, and of QuantLib's own yield for that price (not within 10 days of maturity, where a
  price known to 16 digits no longer fixes a yield to 1e-9).

Bonds with a long first coupon or an odd last coupon (a period spanning several notional
periods) are left out: QuantLib's coupons take a single reference period, which for such a
period is not the Rule 251 measure the ledger uses (bond_oracle checks their amounts piece by
piece instead).
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import QuantLib as ql

from ledger import bondmath
from ledger.quote import Principal, QuoteError, quote
from tests.ledger.bond_oracle import (
    BondCase,
    _day_counter,
    _ql_grid,
    _ql_schedule,
    generate,
    qdate,
)

TOLERANCE = 1e-9
MIN_YIELD_DAYS = 10  # closer to maturity, the yield from a price is not compared


def quotable(rng: random.Random) -> BondCase:
    """A generated fixed-coupon bond (amortising, called, redeemed at a price or not) with
    regular or short irregular periods only."""
    while True:
        case = generate(rng)
        if case.first_coupon is None and case.penultimate_coupon is None:
            case.floating = None
            return case


def principal(case: BondCase) -> Principal:
    """The ledger's `Principal` of a generated bond (its rule: docs/PROTOCOL.md 10.6, 10.7)."""
    dates = _ql_schedule(case)
    final = case.maturity if case.call is None else dates[case.call[0] + 1]
    parts = tuple(
        (dates[i + 1], Fraction(Decimal(p)) / 100)
        for i, p in case.amortisation
        if dates[i + 1] < final
    )
    price = Fraction(Decimal(case.call[1] if case.call else case.redemption_price or "100"))
    return Principal(final, parts, price)


def _ql_leg(case: BondCase) -> ql.Leg:
    """QuantLib's leg of the bond: coupons on the face outstanding over each period (100 at
    issue), `AmortizingPayment`s for the parts, the rest redeemed at the price on the final
    date; in date order, each coupon before the part repaid on its date. (Not a `ql.Bond`:
    its constructor re-sorts the flows with an unstable sort, and a part sorted before its
    date's coupon is discounted over a reference period QuantLib fakes -- one year back from
    its date, `getStepwiseDiscountTime` -- which under ACT/ACT-ICMA is not the coupon's.)"""
    counter = _day_counter(case.day_count)
    dates = _ql_schedule(case)
    grid = _ql_grid(case)
    rate = float(Decimal(case.rate))
    repaid = principal(case)
    leg = []
    for start, end in zip(dates, dates[1:], strict=False):
        if start >= repaid.final:
            break
        reference = max(g for g in grid if g < end)
        nominal = float(100 * repaid.outstanding(start))
        parts = [part for day, part in repaid.parts if day == end]
        leg.append(
            ql.FixedRateCoupon(
                qdate(end),
                nominal,
                rate,
                counter,
                qdate(start),
                qdate(end),
                qdate(reference),
                qdate(end),
            )
        )
        leg.extend(ql.AmortizingPayment(float(100 * part), qdate(end)) for part in parts)
    rest = 1 - sum((part for _, part in repaid.parts), Fraction(0))
    leg.append(ql.Redemption(float(rest * repaid.price), qdate(repaid.final)))
    return ql.Leg(leg)


def check_one(case: BondCase, rng: random.Random) -> list[str]:
    """Compare one bond's quote at a random settlement and yield; the differences found."""
    repaid = principal(case)
    settlement = case.issue + timedelta(days=rng.randrange((repaid.final - case.issue).days))
    y = Decimal(rng.randrange(-200, 2500)).scaleb(-4)  # -2 % to 25 %
    schedule = bondmath.Schedule(
        case.issue,
        case.maturity,
        case.frequency,
        None,
        None,
        {"": None, "yes": True, "no": False}[case.end_of_month],
    )
    convention = bondmath.DayCount(case.day_count)
    ql.Settings.instance().evaluationDate = qdate(settlement)
    leg = _ql_leg(case)
    counter = _day_counter(case.day_count)
    rate = ql.InterestRate(float(y), counter, ql.Compounded, case.frequency)
    ql_settle = qdate(settlement)
    # QuantLib's `CashFlows` (what `BondFunctions` runs on a bond's flows) price the leg per
    # 100 of the original face; QuantLib's amortising bonds (and the ledger) quote per 100 of
    # the face outstanding at settlement (`Bond::notional(settlement)`): divide by it.
    scale = float(repaid.outstanding(settlement))
    dirty = ql.CashFlows.npv(leg, rate, False, ql_settle, ql_settle) / scale
    accrued = ql.CashFlows.accruedAmount(leg, False, ql_settle) / scale
    clean = dirty - accrued
    ours = quote(Decimal(case.rate), convention, schedule, settlement, yield_=y, principal=repaid)
    where = f"{case.describe()} settle {settlement} yield {y}"
    differences = []
    for name, mine, theirs in (
        ("clean", ours.clean_price, clean),
        ("dirty", ours.dirty_price, dirty),
        ("accrued", ours.accrued, accrued),
    ):
        if abs(float(mine) - theirs) > TOLERANCE * max(1.0, abs(theirs)):
            differences.append(f"{where}: {name} {mine}, QuantLib {theirs!r}")
    price = Decimal(repr(clean))
    if (repaid.final - settlement).days < MIN_YIELD_DAYS:
        # Days from maturity the price hardly depends on the yield (30/360 can even measure
        # no time at all): a float price then fixes no yield to 1e-9, QuantLib's nor ours.
        return differences
    try:
        back = quote(
            Decimal(case.rate),
            convention,
            schedule,
            settlement,
            clean_price=price,
            principal=repaid,
        )
    except QuoteError as exc:
        return [*differences, f"{where}: no yield for QuantLib's clean {price}: {exc}"]
    ql_yield = ql.CashFlows.yieldRate(
        leg,
        (float(price) + accrued) * scale,
        counter,
        ql.Compounded,
        case.frequency,
        False,
        ql_settle,
        ql_settle,
        1e-14,
        200,
        0.05,
    )
    if abs(float(back.yield_) - ql_yield) > TOLERANCE or abs(back.yield_ - y) > Decimal("1e-9"):
        differences.append(f"{where}: yield {back.yield_}, QuantLib {ql_yield!r}, from {y}")
    return differences


def check(count: int, seed: int) -> tuple[int, list[str]]:
    """Quote `count` generated bonds from `seed`: (quotes checked, differences)."""
    rng = random.Random(seed)
    differences: list[str] = []
    for _ in range(count):
        differences.extend(check_one(quotable(rng), rng))
    return count, differences


__all__ = ["check", "check_one", "quotable", "date"]
