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
Floating-rate notes (`check_floating`, docs/PROTOCOL.md 10.4): each generated note is
registered on a chain and fixings are published up to a random settlement date, as the
central bank would (a period's at times too early for its lookback: the quote must then be
refused with RATE_FIXING_MISSING, and is asked again once the fixing date's own is published;
a few on other days, so the latest fixing is not always a period's). The oracle reads the
convention on its own (`_expected_fixings`: the fixing of each period fixed by the settlement
date, by QuantLib's calendar; the latest fixing for the rest) and hands QuantLib's index those
fixings on each coupon's own fixing date, over a leg of `CappedFlooredIborCoupon`s (floor 0,
QuantLib's spread, the grid's reference periods as above): QuantLib's coupon pricer sets every
amount, `CashFlows` the prices, accrued interest and yield, compared as above with the
ledger's `quote_instrument` on the chain's records. Not a flat forward curve at the latest
fixing: QuantLib forecasts an Ibor fixing as the simple forward over the index's own span on
its day count (Actual/360), so a flat curve gives each period a rate that depends on its
length and the curve's compounding, not the fixing itself; the convention is a flat fixing,
which is what the fixings given state exactly. A period QuantLib's day count measures as no
time is a zero coupon (its Ibor pricer refuses it: bond_oracle).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import QuantLib as ql

from ledger import bondmath
from ledger.codes import Code
from ledger.quote import Principal, Quote, QuoteError, quote, quote_instrument
from tests.ledger.bond_instruments import _FAR
from tests.ledger.bond_oracle import (
    BondCase,
    _day_counter,
    _ql_calendar,
    _ql_grid,
    _ql_schedule,
    generate,
    new_chain,
    oracle_fixing_date,
    qdate,
    register,
)
from tests.ledger.test_ops_harness import Chain

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
    rate = Decimal(case.rate)
    answer = quote(rate, convention, schedule, settlement, yield_=y, principal=repaid)
    return _compare(
        case,
        settlement,
        y,
        leg,
        answer,
        lambda price: quote(
            rate, convention, schedule, settlement, clean_price=price, principal=repaid
        ),
    )


def _compare(
    case: BondCase,
    settlement: date,
    y: Decimal,
    leg: ql.Leg,
    ours: Quote,
    from_price: Callable[[Decimal], Quote],
) -> list[str]:
    """The differences between the ledger's quote `ours` (at yield `y`) and QuantLib's
    `CashFlows` over `leg`, and between the yield `from_price` gives for QuantLib's clean
    price (12 decimals, as the RPC takes it) and QuantLib's own yield for it."""
    repaid = principal(case)
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
    where = f"{case.describe()} settle {settlement} yield {y}"
    differences = []
    for name, mine, theirs in (
        ("clean", ours.clean_price, clean),
        ("dirty", ours.dirty_price, dirty),
        ("accrued", ours.accrued, accrued),
    ):
        if abs(float(mine) - theirs) > TOLERANCE * max(1.0, abs(theirs)):
            differences.append(f"{where}: {name} {mine}, QuantLib {theirs!r}")
    price = Decimal(repr(clean)).quantize(Decimal("1e-12"))
    if (repaid.final - settlement).days < MIN_YIELD_DAYS or price <= 0:
        # Days from maturity the price hardly depends on the yield (30/360 can even measure
        # no time at all): a float price then fixes no yield to 1e-9, QuantLib's nor ours.
        return differences
    try:
        back = from_price(price)
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


def check_floating(count: int, seed: int) -> tuple[int, list[str]]:
    """Quote `count` generated floating-rate notes from `seed` on a chain: (quotes checked,
    differences); what was exercised adds up in `FLOATING`."""
    rng = random.Random(seed)
    chain = new_chain()
    differences: list[str] = []
    for serial in range(count):
        if serial % 500 == 499:
            chain = new_chain()  # keeps the in-memory state small
        differences.extend(check_floating_one(chain, quotable_floating(rng), serial, rng))
    return count, differences


# ---------------------------------------------------------------------------------------------
# Floating-rate notes: the current period at its fixing, the later ones at the index held flat


@dataclass
class FloatingCounts:
    """What the floating-rate part exercised (scripts/check_bonds.py prints them)."""

    quotes: int = 0
    refused: int = 0  # current period unfixed: refused with RATE_FIXING_MISSING, as it must be
    known: int = 0  # later periods already fixed by settlement, at their own fixing
    projected: int = 0  # periods priced at the latest fixing + spread
    floored: int = 0  # coupons floored at 0


FLOATING = FloatingCounts()


def quotable_floating(rng: random.Random) -> BondCase:
    """A generated floating-rate note (amortising, called, priced or not; with or without a
    holiday calendar) with regular or short irregular periods only."""
    while True:
        case = generate(rng)
        if case.floating is not None and case.first_coupon is None:
            if case.penultimate_coupon is None:
                return case


def _register(chain: Chain, case: BondCase, bond_id: str) -> None:
    """The note on `chain` as bond_oracle registers it (its calendar, its call)."""
    register(chain, case, bond_id, name="oracle note")
    if case.call is not None:
        final = _ql_schedule(case)[case.call[0] + 1]
        chain.at(case.issue - timedelta(days=60)).ok(
            "ministry", "call_bond", {"instrument": bond_id, "call_date": final.isoformat()}
        )


def _expected_fixings(
    case: BondCase,
    calendar_: ql.Calendar,
    settlement: date,
    published: dict[date, Fraction],
) -> dict[date, Fraction] | None:
    """The oracle's own reading of the convention: {period start: index fixing} of every
    period after settlement (None if the current period has no fixing). A period whose fixing date (bond_oracle's
    `oracle_fixing_date`, by QuantLib's calendar) is on or before the settlement date takes
    the latest fixing within its lookback if there is one (docs/PROTOCOL.md 10.3); every other
    period the latest fixing; each max(0, fixing + spread)."""
    assert case.floating is not None
    spread, _, lookback, _ = case.floating
    latest = published[max(d for d in published if d <= settlement)]
    dates = _ql_schedule(case)
    fixings: dict[date, Fraction] = {}
    for start, end in zip(dates, dates[1:], strict=False):
        if end <= settlement:
            continue
        fixed_on = oracle_fixing_date(case, calendar_, start)
        window = [d for d in published if 0 <= (fixed_on - d).days <= lookback]
        if fixed_on <= settlement and window:
            fixing = published[max(window)]
            FLOATING.known += start > settlement
        elif start <= settlement:
            return None  # the current period: its rate is unknown
        else:
            fixing = latest
            FLOATING.projected += 1
        fixings[start] = fixing
        FLOATING.floored += fixing + Fraction(spread, 10**4) < 0
    return fixings


def _publish(chain: Chain, index: str, day: date, value: Fraction) -> None:
    text = f"{Decimal(value.numerator) / Decimal(value.denominator):f}"
    chain.at(day).ok(
        "central-bank",
        "publish_rate_fixing",
        {"name": index, "date": day.isoformat(), "rate": text, "document_hash": b"d" * 32},
    )


def _fixings(
    chain: Chain, case: BondCase, calendar_: ql.Calendar, index: str, settlement: date, rng
) -> dict[date, Fraction]:
    """Publish, as the central bank would, a fixing for each period fixed by the settlement
    date (at times too early for its lookback, as bond_oracle does) and a few on other days
    (a daily index: the latest fixing is then not always a period's)."""
    assert case.floating is not None
    lookback = case.floating[2]
    published: dict[date, Fraction] = {}
    days = set()
    dates = _ql_schedule(case)
    for start in dates[:-1]:
        fixed_on = oracle_fixing_date(case, calendar_, start)
        if fixed_on <= settlement:
            days.add(fixed_on - timedelta(days=rng.randrange(0, lookback + 2)))
    first = min(days)
    for _ in range(rng.randrange(0, 4)):
        days.add(first + timedelta(days=rng.randrange((settlement - first).days + 1)))
    for day in sorted(days):
        published[day] = value = Fraction(rng.randrange(0, 25 * 10**4), 10**6)
        _publish(chain, index, day, value)
    return published


def _ql_floating_leg(
    case: BondCase, calendar_: ql.Calendar, fixings: dict[date, Fraction], serial: int
) -> ql.Leg:
    """`_ql_leg` with QuantLib's floating coupons: a `CappedFlooredIborCoupon` (floor 0, the
    spread QuantLib's) per period after settlement, its index given, on the coupon's own
    fixing date, the fixing the convention assigns the period -- the period's published one,
    or for a later period the latest fixing (the index held flat) -- so QuantLib's coupon
    pricer sets each amount. A period QuantLib's day count measures as no time (its pricer
    refuses it: bond_oracle) is a zero `FixedRateCoupon`."""
    assert case.floating is not None
    spread, fixing_days, _, _ = case.floating
    counter = _day_counter(case.day_count)
    fixing_calendar = calendar_ if case.convention else ql.NullCalendar()
    index = ql.IborIndex(
        f"QUOTE{serial}",
        ql.Period(12 // case.frequency, ql.Months),
        0,
        ql.USDCurrency(),
        fixing_calendar,
        ql.Unadjusted,
        False,
        ql.Actual360(),
    )
    index.clearFixings()
    dates = _ql_schedule(case)
    grid = _ql_grid(case)
    repaid = principal(case)
    pricer = ql.BlackIborCouponPricer()
    leg = []
    for start, end in zip(dates, dates[1:], strict=False):
        if start >= repaid.final:
            break
        reference = max(g for g in grid if g < end)
        nominal = float(100 * repaid.outstanding(start))
        args = (qdate(start), qdate(end), qdate(reference), qdate(end))
        if start not in fixings or counter.yearFraction(*args) == 0:
            rate = float(max(0, fixings.get(start, 0) + Fraction(spread, 10**4)))
            leg.append(ql.FixedRateCoupon(qdate(end), nominal, rate, counter, *args))
        else:
            coupon = ql.CappedFlooredIborCoupon(
                qdate(end), nominal, qdate(start), qdate(end), fixing_days, index, 1.0,
                spread / 10**4, ql.nullDouble(), 0.0, qdate(reference), qdate(end), counter,
            )  # fmt: skip
            coupon.setPricer(pricer)
            index.addFixing(coupon.fixingDate(), float(fixings[start]), True)
            leg.append(coupon)
        leg.extend(
            ql.AmortizingPayment(float(100 * part), qdate(end))
            for day, part in repaid.parts
            if day == end
        )
    rest = 1 - sum((part for _, part in repaid.parts), Fraction(0))
    leg.append(ql.Redemption(float(rest * repaid.price), qdate(repaid.final)))
    return ql.Leg(leg)


def check_floating_one(chain: Chain, case: BondCase, serial: int, rng: random.Random) -> list[str]:
    """Register the note, publish fixings up to a random settlement date and compare its
    quote at a random yield (and back from QuantLib's price) with QuantLib's; the
    differences found."""
    assert case.floating is not None
    bond_id = f"Q{serial}"
    _register(chain, case, bond_id)
    repaid = principal(case)
    settlement = case.issue + timedelta(days=rng.randrange((repaid.final - case.issue).days))
    calendar_ = _ql_calendar(case)
    index = f"IX-{bond_id}"
    published = _fixings(chain, case, calendar_, index, settlement, rng)
    where = f"{case.describe()} settle {settlement}"
    differences: list[str] = []
    fixings = _expected_fixings(case, calendar_, settlement, published)

    def ours(**given: str) -> Quote:
        state = chain.state
        return quote_instrument(
            state.instruments[bond_id],
            settlement,
            fixings={d: f for (name, d), f in state.fixings.items() if name == index},
            calendar=state.calendars.get("CAL") if case.convention else None,
            **given,
        )

    if fixings is None:
        # Nothing within the current period's lookback: refused, never a silent zero.
        try:
            ours(yield_="0.05")
            differences.append(f"{where}: quoted without the current period's fixing")
        except QuoteError as exc:
            if exc.code != Code.RATE_FIXING_MISSING:
                differences.append(f"{where}: refused with {exc}")
        FLOATING.refused += 1
        start = max(d for d in _ql_schedule(case) if d <= settlement)
        fixed_on = oracle_fixing_date(case, calendar_, start)
        published[fixed_on] = Fraction(rng.randrange(0, 25 * 10**4), 10**6)
        _publish(chain, index, fixed_on, published[fixed_on])
        fixings = _expected_fixings(case, calendar_, settlement, published)
        assert fixings is not None
    FLOATING.quotes += 1
    y = Decimal(rng.randrange(-200, 2500)).scaleb(-4)
    ql.Settings.instance().evaluationDate = _FAR  # every fixing historic: all given
    leg = _ql_floating_leg(case, calendar_, fixings, serial)
    answer = ours(yield_=f"{y:f}")
    latest = max(d for d in published if d <= settlement)
    assumption = answer.floating or {}
    if assumption.get("latest_fixing", {}).get("date") != latest.isoformat():
        differences.append(f"{where}: assumed {assumption}, the latest fixing is {latest}")
    return differences + _compare(
        case, settlement, y, leg, answer, lambda price: ours(clean_price=f"{price:f}")
    )


__all__ = ["check", "check_floating", "check_one", "quotable", "quotable_floating", "date"]
