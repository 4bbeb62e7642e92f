"""An independent oracle for what the ledger pays on a bond: QuantLib's instruments and days.

Used by tests/ledger/test_bond_oracle.py (a fixed seed, a count the suite can afford) and by
scripts/check_bonds.py (any seed and count). Each generated bond is registered, issued to a
few investors, paid every coupon and redeemed on a real in-memory chain (`Chain`: signed
transactions through `apply_transaction`), and every payment is compared with:

* the schedule QuantLib generates (`Schedule`, backward from maturity or the penultimate date,
  with the first coupon date when one is given, unadjusted, its end-of-month flag on unless the
  bond says "no" -- QuantLib applies it only from a month-end anchor, the ledger's rule);
* the year fraction QuantLib's day counter gives for each period;
* for bonds given a business-day convention and an on-chain holiday calendar (random weekends
  and holidays on or next to coupon dates), the payment date QuantLib's `BespokeCalendar`
  gives: the payment is refused the day before it and made on it;
* the rounding docs/PROTOCOL.md states: each holder gets floor(exact coupon per unit x units),
  the residual reported is exact total - paid, redemption pays face x units exactly.

Every payment is also compared with QuantLib's own instrument for the bond
(tests/ledger/bond_instruments.py: `FixedRateBond`, `FloatingRateBond`,
`AmortizingFixedRateBond`, `AmortizingFloatingRateBond`, truncated at a call date with the call
price as its last redemption): each coupon's accrual dates, nominal (the face outstanding),
fixing date, amount and accrued amount to a day inside its period, and each principal flow
(an amortisation part, the redemption); each holder's payment within one minor unit of
QuantLib's float amount x units. Protocol versions 3 and 4's instruments (docs/PROTOCOL.md
section 10) are among the generated ones:

* floating-rate notes: fixings are published as the run goes (some too early for the
  lookback: the coupon must then be refused with RATE_FIXING_MISSING until the fixing date's
  own is published); QuantLib's index is given, for the fixing date its coupon asks for
  (`Calendar.advance` by `fixing_days` business days: the ledger's `fixing_date` event
  attribute must be the same), the fixing the ledger's rule selects -- the latest published
  within the lookback (QuantLib has no lookback) -- and its coupon, floored at 0 by
  QuantLib's `floors`, is the amount; the exact rule is max(0, that fixing + spread);
* Ijara sukuk, paid by `pay_rental` and `dissolve_sukuk`, their events checked by name;
* redemption at a stated price and bonds called for one of their coupon dates: no coupon
  after the call, redemption on the call date's payment day at the call price, each holder
  floor(face outstanding x price / 100 x units), the residual exact;
* amortising bonds (also called or priced: version 4): each part paid by `amortise` on its
  payment day (refused the day before it; the coupon of its date refused until it is paid),
  face x percent / 100 per unit, coupons on the face outstanding over their period, the rest
  redeemed at the price; a call redeems the face outstanding on the call date.

QuantLib's known quirks, and what is done about each (the oracle says who is right):

* ActualActual(ISMA) without reference dates treats a lone irregular period as its own
  reference period, and with the schedule passed in it rolls the notional period back from
  the first coupon date itself (28 Feb -> 28 Aug), not from the schedule's anchor (30 Aug).
  ICMA Rule 251 measures a stub against the regular periods "had the schedule continued",
  i.e. the grid the schedule is generated on: the reference period is therefore taken from a
  second QuantLib schedule over the same grid started well before issue, and passed to
  `yearFraction` explicitly. The first coupon of the issue-18 bond (5 %, face 100,000, issued
  2025-01-15, maturing 2035-08-30) is 604.3956 this way, as Rule 251 gives; QuantLib's
  schedule-passed answer (597.83, a 184-day notional period) is wrong by the rule.
* One-period bonds (issue -> maturity shorter than one period): QuantLib's schedule is the
  two dates; the reference period comes from the extended schedule as above.
* QuantLib's instruments give an irregular ACT/ACT-ICMA period a reference period rolled back
  one tenor from its end (bond_instruments' docstring): where that is not Rule 251's notional
  period and the amounts differ, QuantLib is wrong by the rule (the issue-18 bond's first
  coupon: 607.7348, the ledger's version-1 defect exactly); such coupons are counted
  (`reference_quirks`) and held to the piecewise Rule 251 amount above instead.
* Fixing 0 business days before a period that starts on a holiday: QuantLib's `IborCoupon`
  fixes on the business day before (its `fixingConvention`, Preceding); the ledger's rule
  (PROTOCOL 10.3) fixes on the start itself and, nothing being published for a holiday,
  takes the latest fixing within the lookback -- the one QuantLib asks for when the lookback
  reaches it. A different convention, not an error: the ledger's is the documented one. The
  oracle gives QuantLib's index the fixing the ledger's rule picks and counts such periods
  (`fixing_quirks`); the ledger's `fixing_date` must be the start.
* QuantLib's Ibor coupon pricer refuses a period its day count measures as no time (30/360
  from the 30th to the 31st: "null accrual period"); such a coupon is 0 however priced.
* End of month: QuantLib applies its endOfMonth flag only when the schedule's seed (maturity,
  generating backward) is a month end, which is the ledger's rule, so the flag is passed as
  is_month_end(maturity) (True with a non-month-end maturity is the same schedule anyway).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import QuantLib as ql

from ledger import bondmath
from ledger.codes import Code
from ledger.ops.instruments import isin_is_valid
from tests.ledger import bond_instruments
from tests.ledger.bond_cases import (  # noqa: F401  (re-exported: quote_oracle, tests)
    AGENT,
    CASH,
    CONVENTIONS,
    INVESTORS,
    TOLERANCE,
    BondCase,
    _day_counter,
    _pieces,
    _ql_calendar,
    _ql_grid,
    _ql_schedule,
    _ql_schedule_object,
    exact_fraction,
    generate,
    oracle_coupons,
    oracle_fraction,
    payment_day,
)
from tests.ledger.bond_instruments import notional_fraction, pydate, qdate
from tests.ledger.test_ops_harness import Chain


@dataclass
class Outcome:
    """What one bond's life on the chain checked, and what it found."""

    payments: int = 0
    coupons: int = 0
    residual: Fraction = Fraction(0)
    differences: list[str] = field(default_factory=list)
    floating_coupons: int = 0  # coupons of floating-rate notes among `coupons`
    missing_fixings: int = 0  # coupons refused for want of a fixing, as they must be
    amortisations: int = 0  # partial redemptions paid (amortising bonds)
    reference_quirks: int = 0  # ICMA coupons where QuantLib's instrument is wrong (module doc)
    fixing_quirks: int = 0  # FRN periods QuantLib fixes on another day (module doc)


# ---------------------------------------------------------------------------------------------
# The chain


_isin_serial = 0


def _next_isin() -> str:
    global _isin_serial
    _isin_serial += 1
    body = f"XS{_isin_serial:09d}"
    return next(body + str(d) for d in range(10) if isin_is_valid(body + str(d)))


def new_chain() -> Chain:
    chain = Chain()
    chain.cash(CASH, cap=10**18)
    for name in INVESTORS:
        chain.investor(name, expiry="9999-12-31")
    chain.issue(CASH, AGENT, 10**17, issuer=AGENT)
    return chain


def _schedule_fields(case: BondCase) -> dict:
    fields: dict = {}
    if case.first_coupon is not None:
        fields["first_coupon_date"] = case.first_coupon.isoformat()
    if case.penultimate_coupon is not None:
        fields["penultimate_coupon_date"] = case.penultimate_coupon.isoformat()
    if case.end_of_month:
        fields["end_of_month"] = case.end_of_month
    if case.convention:
        fields["business_day_convention"] = case.convention
        fields["holiday_calendar"] = "CAL"
    return fields


def _floating_fields(case: BondCase, bond_id: str) -> dict:
    if case.floating is None:
        return {}
    spread, fixing_days, lookback, _ = case.floating
    return {
        "rate_index": f"IX-{bond_id}",
        "spread_bp": spread,
        "fixing_days": fixing_days,
        "fixing_lookback_days": lookback,
    }


def oracle_fixing_date(case: BondCase, calendar_: ql.Calendar, start: date) -> date:
    """The fixing date of the ledger's rule, by QuantLib's calendar: `fixing_days` business
    days before the period's start (`Calendar.advance`), calendar days without a calendar;
    0 business days is the start itself (QuantLib's advance by 0 would adjust it)."""
    assert case.floating is not None
    days = case.floating[1]
    if not case.convention or days == 0:
        return pydate(qdate(start) - days)
    return pydate(calendar_.advance(qdate(start), -days, ql.Days))


def _publish_fixing(
    chain: Chain,
    case: BondCase,
    calendar_: ql.Calendar,
    bond_id: str,
    start: date,
    rng: random.Random,
    outcome: Outcome,
    published: dict[date, Fraction],
) -> Fraction | None:
    """Publish a fixing for the period starting at `start` (at times too early for the
    lookback); return the fixing the rule picks: the latest published on or before the
    fixing date and within the lookback (QuantLib has no lookback: this is what its index is
    given for the fixing date). Where the rule finds none, the coupon must be refused
    (RATE_FIXING_MISSING) until one is published on the fixing date itself."""
    assert case.floating is not None
    _, _, lookback, _ = case.floating
    fixed_on = oracle_fixing_date(case, calendar_, start)
    index = f"IX-{bond_id}"

    def publish(day: date) -> None:
        if day in published:
            return  # published once per date (a second one is refused)
        published[day] = value = Fraction(rng.randrange(0, 25 * 10**4), 10**6)
        text = f"{Decimal(value.numerator) / Decimal(value.denominator):f}"
        chain.at(day).ok(
            "central-bank",
            "publish_rate_fixing",
            {"name": index, "date": day.isoformat(), "rate": text, "document_hash": b"d" * 32},
        )

    def rule() -> Fraction | None:
        window = [d for d in published if 0 <= (fixed_on - d).days <= lookback]
        return published[max(window)] if window else None

    publish(fixed_on - timedelta(days=rng.randrange(0, lookback + 2)))
    if rule() is None:
        dates = _ql_schedule(case)
        end = next(e for s, e in zip(dates, dates[1:], strict=False) if s == start)
        receipt = chain.at(payment_day(case, calendar_, end)).run(
            AGENT, "pay_coupon", _coupon_args(bond_id, end)
        )
        chain.state.take_changes()
        if receipt.code != Code.RATE_FIXING_MISSING:
            outcome.differences.append(
                f"{case.describe()}: coupon {end} without a fixing: {Code(receipt.code).name}"
            )
            return None
        outcome.missing_fixings += 1
        publish(fixed_on)
    fixing = rule()
    assert fixing is not None
    return fixing


def _coupon_args(bond_id: str, day: date) -> dict:
    return {"instrument": bond_id, "cash": CASH, "coupon_date": day.isoformat()}


def _refused_before(chain: Chain, due: date, op: str, args: dict) -> bool:
    """For a moved payment date only (elsewhere it would double the run time): the day before
    it, the payment is refused as not yet due."""
    if not chain.state.instruments[args["instrument"]].business_day_convention:
        return True
    receipt = chain.at(due - timedelta(days=1)).run(AGENT, op, args)
    chain.state.take_changes()
    return receipt.code in (Code.COUPON_NOT_DUE, Code.NOT_MATURED, Code.AMORTISATION_NOT_DUE)


def register(chain: Chain, case: BondCase, bond_id: str, name: str = "oracle bond") -> None:
    """`case` registered on `chain` 60 days before its issue (with its holiday calendar, if
    its convention needs one): what the payment and the quote oracles both start from."""
    if case.convention:
        names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        chain.at(case.issue - timedelta(days=60)).ok(
            "ministry",
            "set_holiday_calendar",
            {
                "id": "CAL",
                "weekend": [names[day - 1] for day in case.weekend],
                "holidays": [day.isoformat() for day in case.holidays],
            },
        )
    chain.at(case.issue - timedelta(days=60)).ok(
        "ministry",
        "register_instrument",
        {
            "id": bond_id,
            "kind": "bond",
            "name": name,
            "isin": _next_isin(),
            "currency": "PKR",
            "face_value": case.face,
            "decimals": 0,
            "cap": 10**6,
            "usd_face_value": 1,
            "issue_date": case.issue.isoformat(),
            "maturity_date": case.maturity.isoformat(),
            **({} if case.floating else {"coupon_rate": case.rate}),
            **_floating_fields(case, bond_id),
            **({"sukuk": "ijara", "sukuk_asset": "oracle asset"} if case.sukuk else {}),
            **({"redemption_price": case.redemption_price} if case.redemption_price else {}),
            **({"call_notice_days": 30, "call_price": case.call[1]} if case.call else {}),
            **_amortisation_field(case),
            "coupon_frequency": case.frequency,
            "day_count": case.day_count,
            **_schedule_fields(case),
        },
    )


def run_case(chain: Chain, case: BondCase, serial: int) -> Outcome:
    """Register, issue, pay every coupon and redeem `case` on `chain`; compare with the oracle."""
    outcome = Outcome()
    bond_id = f"B{serial}"
    # Registered and sold before the issue date: a first coupon due within the closed period
    # (record date) after issue would otherwise refuse the sale.
    register(chain, case, bond_id)
    calendar_ = _ql_calendar(case)
    for name, units in case.holdings.items():
        chain.issue(bond_id, name, units)
    by_address = {chain.addr(name): units for name, units in case.holdings.items()}
    periods = oracle_coupons(case)
    every = _ql_schedule(case)
    if chain.state.instruments[bond_id].next_coupon != periods[0][1]:
        outcome.differences.append(f"{case.describe()}: first coupon date differs")
    final = case.maturity
    if case.call is not None:
        # Called at registration time (60 days before issue: the 30 days' notice is kept) for
        # the coupon date at the index drawn; no coupon after it is paid or due, and no part
        # of an amortising bond's face dated on or after it (the call redeems the face then
        # outstanding at the call price, as QuantLib's truncated instrument does).
        final = periods[case.call[0]][1]
        chain.at(case.issue - timedelta(days=60)).ok(
            "ministry", "call_bond", {"instrument": bond_id, "call_date": final.isoformat()}
        )
        periods = periods[: case.call[0] + 1]
    whole = _ql_schedule_object(case)
    fixing_calendar = calendar_ if case.convention else ql.NullCalendar()
    instrument = bond_instruments.build(
        case, serial, whole, _day_counter(case.day_count), fixing_calendar
    )
    if len(instrument.coupons) != len(periods):
        outcome.differences.append(f"{case.describe()}: QuantLib has {len(instrument.coupons)}")
        return outcome
    parts = {
        every[i + 1]: Fraction(Decimal(p)) for i, p in case.amortisation if every[i + 1] < final
    }
    fixings = random.Random(case.floating[3]) if case.floating else None
    published: dict[date, Fraction] = {}
    grid = _ql_grid(case)
    for period, coupon in zip(periods, instrument.coupons, strict=True):
        start, end = period[0], period[1]
        if (pydate(coupon.accrualStartDate()), pydate(coupon.accrualEndDate())) != (start, end):
            outcome.differences.append(f"{case.describe()}: QuantLib's period {coupon}")
        rate = Fraction(Decimal(case.rate))
        fixed_on = None
        if fixings is not None:
            # A floating-rate note: publish this period's fixing (at times too early for the
            # lookback: then the coupon must be refused until the right one is published).
            fixing = _publish_fixing(
                chain, case, calendar_, bond_id, start, fixings, outcome, published
            )
            if fixing is None:
                return outcome
            fixed_on = oracle_fixing_date(case, calendar_, start)
            ql_fixed = pydate(coupon.fixingDate())
            if ql_fixed != fixed_on:
                # QuantLib fixes 0 days before a holiday start on the business day before it
                # (IborCoupon's Preceding fixing convention); the ledger's rule fixes on the
                # start itself and its lookback reaches the fixing QuantLib uses.
                preceding = pydate(calendar_.adjust(qdate(start), ql.Preceding))
                if case.floating[1] == 0 and ql_fixed == preceding:
                    outcome.fixing_quirks += 1
                else:
                    outcome.differences.append(f"{case.describe()}: QuantLib fixes {ql_fixed}")
            instrument.add_fixing(ql_fixed, fixing)
            rate = max(Fraction(0), fixing + Fraction(case.floating[0], 10**4))
            outcome.floating_coupons += 1
        if end in parts:
            _amortise(
                chain, case, calendar_, bond_id, end, parts[end], by_address, instrument, outcome
            )
        outstanding = notional_fraction(case, every, end)
        if not _close(coupon.nominal(), case.face * outstanding, case.face):
            outcome.differences.append(f"{case.describe()}: {end} on {coupon.nominal()}")
        paying = Paying(chain, case, calendar_, bond_id, by_address, outcome)
        if not _pay_coupon(paying, period, rate, outstanding, coupon, grid, fixed_on):
            return outcome
    _redeem(chain, case, calendar_, bond_id, final, by_address, instrument, outcome)
    return outcome


def _close(theirs: float, ours: Fraction, face: int) -> bool:
    """QuantLib's float amount against an exact one: within 10^-12 of the face (QuantLib's
    rate arithmetic, e.g. a fixing plus a spread that nearly cancel, is exact only to about
    10^-16 of the face; a holder's payment is checked exactly, against the exact oracle)."""
    return abs(theirs - float(ours)) <= 1e-12 * max(1, face)


def _near(paid: dict[bytes, int], per_unit: float, by_address: dict[bytes, int]) -> bool:
    """Each holder paid within one minor unit of QuantLib's float amount per unit x units."""
    return all(
        abs(paid.get(address, 0) - per_unit * units) <= 1 + 1e-9 * per_unit * units
        for address, units in by_address.items()
    )


def _amount(coupon, inside: date | None = None) -> float | None:
    """QuantLib's coupon amount (accrued to `inside` if given), None where QuantLib cannot
    measure the period. Two refusals of QuantLib's, neither the ledger's error:

    * its Ibor coupon pricer refuses a period the day count measures as no time ("null
      accrual period": 30/360 from the 30th to the 31st); such a period pays nothing however
      it is priced (face x rate x 0), which is what the ledger pays: 0;
    * its legs give a lone period that is both the first and the last (a one-period bond,
      longer than its tenor) the reference period [end - tenor, start + tenor], which ends
      before it starts, and ActualActual(ISMA) then refuses it ("invalid reference period"):
      None, a reference-period quirk (the piecewise Rule 251 check stands)."""
    try:
        return coupon.amount() if inside is None else coupon.accruedAmount(qdate(inside))
    except RuntimeError as exc:
        if "invalid reference period" in str(exc):
            return None
        if "null accrual period" not in str(exc) or coupon.accrualPeriod() != 0:
            raise
        return 0.0


def _reference_quirk(case: BondCase, grid: list[date], coupon, start: date, end: date) -> bool:
    """True when QuantLib's instrument measured an ACT/ACT-ICMA period against a reference
    period that is not the schedule grid's (the quirk in bond_instruments' docstring)."""
    if case.day_count != "ACT/ACT-ICMA":
        return False
    pieces = _pieces(case, grid, start, end)
    ref = (pydate(coupon.referencePeriodStart()), pydate(coupon.referencePeriodEnd()))
    return len(pieces) > 1 or ref != pieces[0][2:]


@dataclass
class Paying:
    """One bond's run: where it is paid and what the checks found."""

    chain: Chain
    case: BondCase
    calendar: ql.Calendar
    bond_id: str
    by_address: dict[bytes, int]
    outcome: Outcome


def _pay_coupon(
    paying: Paying,
    period: tuple,
    rate: Fraction,
    outstanding: Fraction,
    coupon,
    grid: list[date],
    fixed_on: date | None,
) -> bool:
    """Pay one coupon on the chain (annual `rate`, on the `outstanding` part of the face)
    and compare it with the exact rule and QuantLib's coupon; False if it was refused."""
    chain, case, calendar_, bond_id = paying.chain, paying.case, paying.calendar, paying.bond_id
    by_address, outcome = paying.by_address, paying.outcome
    start, end, exact, ql_fraction, inside, exact_accrued = period
    annual = rate * case.face * outstanding
    # Accrued interest to a day inside the period: bondmath's (the quotes' rule), per unit on
    # the face outstanding, against the exact rule and QuantLib's coupon.accruedAmount.
    accrued = outstanding * Fraction(
        bondmath.scheduled_accrued_interest(
            case.face,
            Decimal(rate.numerator) / Decimal(rate.denominator),  # exact: 10^k denominators
            bondmath.DayCount(case.day_count),
            _ledger_schedule(case),
            inside,
        )
    )
    want_accrued = annual * exact_accrued
    if not 0 <= accrued - want_accrued < Fraction(1, 10**40) * max(1, want_accrued):
        outcome.differences.append(
            f"{case.describe()}: accrued to {inside}: {accrued}, oracle {float(want_accrued)}"
        )
    quirk = _reference_quirk(case, grid, coupon, start, end)
    theirs = _amount(coupon, inside)
    if (theirs is None or not _close(theirs, want_accrued, case.face)) and not quirk:
        outcome.differences.append(
            f"{case.describe()}: accrued to {inside}: {float(accrued)}, QuantLib "
            f"{_amount(coupon, inside)}"
        )
    due = payment_day(case, calendar_, end)
    if not _refused_before(chain, due, "pay_coupon", _coupon_args(bond_id, end)):
        outcome.differences.append(f"{case.describe()}: coupon {end} paid before {due}")
    receipt = chain.at(due).run(
        AGENT,
        "pay_rental" if case.sukuk else "pay_coupon",
        _coupon_args(bond_id, end),
    )
    if receipt.code != Code.OK:
        outcome.differences.append(
            f"{case.describe()}: coupon {end} refused: {Code(receipt.code).name} {receipt.log}"
        )
        return False
    chain.state.take_changes()
    summary, *payments = [e for e in receipt.events if e.type != "balance_change"]
    names = ("rental_paid", "rental_payment") if case.sukuk else ("coupon_paid", "coupon_payment")
    if {summary.type, *(p.type for p in payments)} - set(names) or summary.type != names[0]:
        outcome.differences.append(f"{case.describe()}: coupon {end} events misnamed")
    if fixed_on is not None and summary.attributes["fixing_date"] != fixed_on.isoformat():
        outcome.differences.append(f"{case.describe()}: fixed on {summary.attributes}")
    per_unit = Fraction(Decimal(str(summary.attributes["per_unit"])))
    want_per_unit = annual * exact
    # The ledger's per-unit amount is exact or rounded up in the 50th digit (PROTOCOL).
    if not (0 <= per_unit - want_per_unit < Fraction(1, 10**40) * max(1, want_per_unit)):
        outcome.differences.append(
            f"{case.describe()}: coupon {start} -> {end}: ledger {float(per_unit):.10f} per "
            f"unit, oracle {float(want_per_unit):.10f} (QuantLib fraction {ql_fraction!r})"
        )
    if abs(float(exact) - ql_fraction) > TOLERANCE:
        outcome.differences.append(f"{case.describe()}: oracle fraction not exact {exact}")
    # QuantLib's instrument: its coupon's amount, unless its reference period is not Rule
    # 251's (then the exact check above, with QuantLib's day counter piece by piece, stands).
    theirs = _amount(coupon)
    if theirs is None or not _close(theirs, per_unit, case.face):
        if quirk:
            outcome.reference_quirks += 1
        else:
            outcome.differences.append(
                f"{case.describe()}: coupon {end}: ledger {float(per_unit)!r}, QuantLib's "
                f"{type(coupon).__name__} {theirs!r}"
            )
    paid = {event.attributes["to"]: event.attributes["amount"] for event in payments}
    want = {a: (want_per_unit * u).__floor__() for a, u in by_address.items()}
    want = {a: v for a, v in want.items() if v}
    if paid != want:
        outcome.differences.append(f"{case.describe()}: coupon {end} paid {paid}, owed {want}")
    if not quirk and theirs is not None and not _near(paid, theirs, by_address):
        outcome.differences.append(f"{case.describe()}: coupon {end} far from QuantLib")
    residual = Fraction(Decimal(str(summary.attributes["residual"])))
    exact_residual = want_per_unit * sum(by_address.values()) - sum(want.values())
    if not 0 <= residual - exact_residual < Fraction(1, 10**30):
        outcome.differences.append(f"{case.describe()}: residual {residual} != {exact_residual}")
    outcome.residual += residual
    outcome.coupons += 1
    outcome.payments += len(payments)
    return True


def _principal(chain, case, bond_id, receipt, names, per_unit_owed, ql_amount, by_address, outcome):
    """Compare a principal payment (a part of an amortising bond, the redemption) with the
    rule (floor per holder of the exact amount, the residual exact) and QuantLib's flow."""
    if receipt.code != Code.OK:
        outcome.differences.append(f"{case.describe()}: {names[0]} refused: {receipt.log}")
        return
    chain.state.take_changes()
    summary, *payments = [e for e in receipt.events if e.type != "balance_change"]
    if summary.type != names[0] or {p.type for p in payments} - {names[1]}:
        outcome.differences.append(f"{case.describe()}: {names[0]} named {summary.type}")
    if not _close(ql_amount, per_unit_owed, case.face):
        outcome.differences.append(
            f"{case.describe()}: {names[0]} {float(per_unit_owed)!r} per unit, QuantLib's "
            f"{ql_amount!r}"
        )
    paid = {event.attributes["to"]: event.attributes["amount"] for event in payments}
    if not _near(paid, ql_amount, by_address):
        outcome.differences.append(f"{case.describe()}: {names[0]} far from QuantLib {paid}")
    owed = {a: (per_unit_owed * u).__floor__() for a, u in by_address.items()}
    if paid != {a: v for a, v in owed.items() if v}:
        outcome.differences.append(f"{case.describe()}: {names[0]} paid {paid}, owed {owed}")
    exact_residual = per_unit_owed * sum(by_address.values()) - sum(owed.values())
    residual = Fraction(Decimal(str(summary.attributes["residual"])))
    if residual != exact_residual:
        outcome.differences.append(f"{case.describe()}: {names[0]} {summary.attributes}")
    outcome.residual += residual
    outcome.payments += len(payments)


def _amortise(chain, case, calendar_, bond_id, day, percent, by_address, instrument, outcome):
    """Pay the part of the face due on `day` (its coupon refused until it is paid)."""
    due = payment_day(case, calendar_, day)
    args = {"instrument": bond_id, "cash": CASH, "date": day.isoformat()}
    if not _refused_before(chain, due, "amortise", args):
        outcome.differences.append(f"{case.describe()}: amortisation {day} paid before {due}")
    if outcome.amortisations == 0:
        receipt = chain.at(due).run(AGENT, "pay_coupon", _coupon_args(bond_id, day))
        chain.state.take_changes()
        if receipt.code != Code.AMORTISATION_UNPAID:
            outcome.differences.append(f"{case.describe()}: coupon before its part: {receipt}")
    receipt = chain.at(due).run(AGENT, "amortise", args)
    owed = case.face * percent / 100
    names = ("amortised", "amortisation_payment")
    _principal(
        chain,
        case,
        bond_id,
        receipt,
        names,
        owed,
        instrument.principal.get(day, 0.0),
        by_address,
        outcome,
    )
    outcome.amortisations += 1


def _redeem(chain, case, calendar_, bond_id, final, by_address, instrument, outcome):
    """Redeem on the final date (maturity or the call date): face outstanding x price / 100
    per unit (the call price when called, else the stated redemption price, else par)."""
    if chain.state.instruments[bond_id].next_coupon is not None:
        outcome.differences.append(f"{case.describe()}: a coupon after the last is due")
    due = payment_day(case, calendar_, final)
    if not _refused_before(chain, due, "redeem", {"instrument": bond_id, "cash": CASH}):
        outcome.differences.append(f"{case.describe()}: redeemed before {due}")
    receipt = chain.at(due).run(
        AGENT, "dissolve_sukuk" if case.sukuk else "redeem", {"instrument": bond_id, "cash": CASH}
    )
    price = Fraction(Decimal(case.call[1] if case.call else case.redemption_price or "100"))
    owed = case.face * notional_fraction(case, _ql_schedule(case), final) * price / 100
    names = (
        ("sukuk_dissolved", "dissolution_payment")
        if case.sukuk
        else ("redeemed", "redemption_payment")
    )
    ql_amount = instrument.principal.get(final, 0.0)
    _principal(chain, case, bond_id, receipt, names, owed, ql_amount, by_address, outcome)
    if receipt.code == Code.OK and price == 100 and not case.amortisation:
        if receipt.events[0].attributes["residual"] != "0":
            outcome.differences.append(f"{case.describe()}: par residual {receipt.events[0]}")


def _ledger_schedule(case: BondCase) -> bondmath.Schedule:
    return bondmath.Schedule(
        case.issue,
        case.maturity,
        case.frequency,
        case.first_coupon,
        case.penultimate_coupon,
        {"": None, "yes": True, "no": False}[case.end_of_month],
    )


def _amortisation_field(case: BondCase) -> dict:
    if not case.amortisation:
        return {}
    every = _ql_schedule(case)
    return {"amortisation": [[every[i + 1].isoformat(), p] for i, p in case.amortisation]}


COUNTS = dict.fromkeys(
    (
        "floating_coupons",
        "missing_fixings",
        "called",
        "priced",
        "sukuk",
        "amortising",
        "amortisations",
        "reference_quirks",
        "fixing_quirks",
    ),
    0,
)
"""Totals over every `check` run in this process (what the floating-rate part exercised)."""


def check(count: int, seed: int) -> tuple[int, int, int, Fraction, list[str]]:
    """Run `count` generated bonds from `seed`: (bonds, coupons, payments, residual, diffs)."""
    rng = random.Random(seed)
    chain = new_chain()
    coupons = payments = 0
    residual = Fraction(0)
    differences: list[str] = []
    for serial in range(count):
        if serial % 500 == 499:
            chain = new_chain()  # keeps the in-memory state small
        case = generate(rng)
        outcome = run_case(chain, case, serial)
        coupons += outcome.coupons
        payments += outcome.payments
        residual += outcome.residual
        differences.extend(outcome.differences)
        COUNTS["floating_coupons"] += outcome.floating_coupons
        COUNTS["missing_fixings"] += outcome.missing_fixings
        COUNTS["called"] += case.call is not None
        COUNTS["priced"] += bool(case.redemption_price) and case.call is None
        COUNTS["sukuk"] += case.sukuk
        COUNTS["amortising"] += bool(case.amortisation)
        COUNTS["amortisations"] += outcome.amortisations
        COUNTS["reference_quirks"] += outcome.reference_quirks
        COUNTS["fixing_quirks"] += outcome.fixing_quirks
    return count, coupons, payments, residual, differences
