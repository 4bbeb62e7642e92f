"""A debt office's instruments (protocol version 3): record dates in business days, rate
fixings and floating-rate notes, and their refusals before version 3."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest

from ledger import codec
from ledger.codes import Code
from ledger.debt_terms import DebtTerms, RateFixing
from ledger.ops import OPERATIONS, POLICY_NAMES
from ledger.protocol import ProtocolRecord
from ledger.quote import quote_instrument
from ledger.state import State
from ledger.types import Holding
from tests.ledger.test_ops_harness import Chain

BOND = "PKBOND28"
CAL = "PK-SBP"
INDEX = "PKR-TB6M"


def world(*, calendar=True, version: int | None = None, **bond) -> Chain:
    """The harness bond (8 % semi-annual, 2026-01-01 -> 2028-01-01; coupons Wed 1 Jul 2026,
    Fri 1 Jan 2027 (a holiday here), Thu 1 Jul 2027, Sat 1 Jan 2028), alice holding 10."""
    chain = Chain()
    if version is not None:
        chain.state.put_protocol(ProtocolRecord(version))
    chain.cash()
    if calendar:
        chain.ok(
            "ministry",
            "set_holiday_calendar",
            {"id": CAL, "weekend": ["sat", "sun"], "holidays": ["2027-01-01", "2026-06-30"]},
        )
    chain.bond(**bond)
    chain.investor("alice")
    chain.investor("bob")
    chain.issue(bond.get("id", BOND), "alice", 10)
    chain.issue("PKR", "central-bank", 10**9, issuer="central-bank")
    return chain


def with_calendar(**extra) -> dict:
    return {"business_day_convention": "following", "holiday_calendar": CAL, **extra}


def to_bob(chain: Chain, units: int = 1) -> dict:
    return {"instrument": BOND, "to": chain.addr("bob"), "amount": units}


def pay(chain: Chain, coupon_date: str, on: date, code: Code = Code.OK):
    args = {"instrument": BOND, "cash": "PKR", "coupon_date": coupon_date}
    chain.at(on)
    if code == Code.OK:
        return chain.ok("central-bank", "pay_coupon", args)
    return chain.expect(code, "central-bank", "pay_coupon", args)


def settled(chain: Chain, receipt, units: dict[bytes, int] | None = None) -> dict[bytes, int]:
    """What a payment's receipt says each holder was paid, by address, checked against the
    receipt's `balance_change` events, a record made apart from the payment events (from the
    state's journal, ledger/execute.py). From protocol version 3 every payment names the cash
    it credits as `instrument` and what it pays on as `security`; the cash changes are those
    credits and the paying agent's debit of the summary's `paid_out`, nothing else; the only
    other changes are the security's units leaving their holders (`units`, a redemption)."""
    summary, *rest = receipt.events
    changes = [e.attributes for e in rest if e.type == "balance_change"]
    payments = rest[: len(rest) - len(changes)]
    assert all(e.type != "balance_change" for e in payments), "balance changes come last"
    paid = {}
    for event in payments:
        assert event.type in {
            "coupon_payment",
            "redemption_payment",
            "rental_payment",
            "dissolution_payment",
            "amortisation_payment",
        }
        assert set(event.attributes) == {"instrument", "security", "to", "amount"}
        assert (event.attributes["instrument"], event.attributes["security"]) == ("PKR", BOND)
        paid[event.attributes["to"]] = event.attributes["amount"]
    agent = chain.addr("central-bank")
    credits = {to: amount for to, amount in paid.items() if amount and to != agent}
    assert sum(credits.values()) == summary.attributes["paid_out"]
    expected = {**credits, agent: -summary.attributes["paid_out"]} if credits else {}
    moved = {(c["instrument"], c["account"]): c["amount"] for c in changes}
    assert len(moved) == len(changes), "one change per account and instrument"
    assert moved == {
        **{("PKR", account): amount for account, amount in expected.items()},
        **{(BOND, account): -held for account, held in (units or {}).items()},
    }
    for change in changes:  # the balance after, as the state has it now
        holding = chain.state.holdings[change["instrument"]].get(change["account"])
        assert change["balance"] == (0 if holding is None else holding.balance)
    return paid


# ---------------------------------------------------------------------------------------
# Record date: business days before the payment date


def test_record_date_counts_business_days_back_over_weekends_and_holidays():
    chain = world(**with_calendar(record_business_days=2))
    assert chain.state.instruments[BOND].terms == DebtTerms(record_business_days=2)
    # Coupon Wed 1 Jul 2026, paid that day; 30 Jun is a holiday: two business days before
    # are Mon 29 Jun (1) and Fri 26 Jun (2). Units move on Thu 25 Jun, not on Fri 26 Jun.
    chain.at(date(2026, 6, 25)).ok("alice", "transfer", to_bob(chain))
    chain.at(date(2026, 6, 26)).expect(Code.CLOSED_PERIOD, "alice", "transfer", to_bob(chain))
    chain.at(date(2026, 6, 27)).expect(Code.CLOSED_PERIOD, "alice", "transfer", to_bob(chain))
    receipt = pay(chain, "2026-07-01", date(2026, 7, 1))
    # Entitlement was taken at the record date: alice 9, bob 1.
    assert settled(chain, receipt) == {chain.addr("alice"): 9 * 4000, chain.addr("bob"): 4000}
    # Next coupon Fri 1 Jan 2027 is a holiday: paid Mon 4 Jan 2027; two business days
    # before: Thu 31 Dec (1), Wed 30 Dec (2). Calendar days would have said 17 Dec.
    chain.at(date(2026, 12, 29)).ok("alice", "transfer", to_bob(chain))
    chain.at(date(2026, 12, 30)).expect(Code.CLOSED_PERIOD, "alice", "transfer", to_bob(chain))
    pay(chain, "2027-01-01", date(2027, 1, 1), Code.COUPON_NOT_DUE)
    pay(chain, "2027-01-01", date(2027, 1, 4))
    chain.at(date(2027, 1, 4)).ok("alice", "transfer", to_bob(chain))  # open again


def test_without_the_term_the_closed_period_is_calendar_days_as_before():
    chain = world(**with_calendar())
    assert chain.state.instruments[BOND].terms is None
    assert "terms" not in chain.state.instruments[BOND].to_map()
    days = chain.state.parameters.closed_period_days
    start = date(2026, 7, 1).toordinal() - days
    chain.at(date.fromordinal(start - 1)).ok("alice", "transfer", to_bob(chain))
    chain.at(date.fromordinal(start)).expect(Code.CLOSED_PERIOD, "alice", "transfer", to_bob(chain))


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"record_business_days": 2}, Code.BAD_FIELD),  # no calendar to count on
        (with_calendar(record_business_days=0), Code.BAD_FIELD),
        (with_calendar(record_business_days=31), Code.BAD_FIELD),
        (with_calendar(rate_index=INDEX), Code.BAD_FIELD),  # spread etc. missing
        (with_calendar(sukuk="mudaraba"), Code.BAD_FIELD),
    ],
)
def test_term_refusals(extra, code):
    chain = world()
    args = {**_bond_args(), "id": "B2", "isin": "GB0002634946", **extra}
    chain.expect(code, "ministry", "register_instrument", args)


def test_version_2_refuses_the_new_fields_and_operations_as_older_code_does():
    chain = world(version=2)
    args = {**_bond_args(), "id": "B2", "isin": "GB0002634946", **with_calendar()}
    receipt = chain.expect(
        Code.BAD_FIELD, "ministry", "register_instrument", {**args, "record_business_days": 2}
    )
    assert "unknown field(s) ['record_business_days']" in receipt.log
    receipt = chain.expect(Code.UNKNOWN_OPERATION, "central-bank", "publish_rate_fixing", fixing())
    assert receipt.log == "no operation 'publish_rate_fixing'"


def _bond_args() -> dict:
    return {
        "kind": "bond",
        "name": "Bond",
        "currency": "PKR",
        "face_value": 100_000,
        "decimals": 0,
        "cap": 1_000_000,
        "usd_face_value": 360,
        "issue_date": "2026-01-01",
        "maturity_date": "2028-01-01",
        "coupon_rate": "0.08",
        "coupon_frequency": 2,
        "day_count": "ACT/ACT-ICMA",
    }


# ---------------------------------------------------------------------------------------
# Rate fixings


def fixing(day: str = "2025-12-30", rate: str = "0.1125", name: str = INDEX) -> dict:
    return {"name": name, "date": day, "rate": rate, "document_hash": b"\x07" * 32}


def test_the_central_bank_publishes_fixings_on_chain():
    assert "publish_rate_fixing" in OPERATIONS
    assert POLICY_NAMES["publish_rate_fixing"] == "register_instrument"
    chain = world()
    receipt = chain.ok("central-bank", "publish_rate_fixing", fixing())
    record = chain.state.fixings[(INDEX, date(2025, 12, 30))]
    assert record == RateFixing(
        INDEX, date(2025, 12, 30), "0.1125", b"\x07" * 32, chain.addr("central-bank"), record.height
    )
    assert RateFixing.from_map(codec.decode(codec.encode(record.to_map()))) == record
    assert receipt.events[0].type == "rate_fixing_published"
    # Into the store's form and back (the state loader knows the namespace).
    again = State.from_items(chain.state.items())
    assert again.fixings == chain.state.fixings


@pytest.mark.parametrize(
    ("sender", "args", "code"),
    [
        ("ministry", fixing(), Code.UNAUTHORIZED),  # an issuer, not the central bank
        ("regulator", fixing(), Code.UNAUTHORIZED),
        ("central-bank", fixing(rate="11.25"), Code.BAD_FIELD),  # a percentage typed
        ("central-bank", fixing(rate="0.1e-1"), Code.BAD_FIELD),
        ("central-bank", fixing(rate="-0.01"), Code.BAD_FIELD),
        ("central-bank", fixing(day="2026-01-02"), Code.BAD_FIELD),  # after the block date
        ("central-bank", fixing(name="pkr tb"), Code.BAD_FIELD),
        ("central-bank", {**fixing(), "document_hash": b"\x07" * 31}, Code.BAD_FIELD),
    ],
)
def test_fixing_refusals(sender, args, code):
    chain = world()
    chain.at(date(2026, 1, 1)).expect(code, sender, "publish_rate_fixing", args)


def test_a_fixing_is_published_once():
    chain = world()
    chain.ok("central-bank", "publish_rate_fixing", fixing())
    chain.expect(Code.RATE_FIXING_EXISTS, "central-bank", "publish_rate_fixing", fixing(rate="0.2"))


# ---------------------------------------------------------------------------------------
# Floating-rate notes


def frn(**extra) -> Chain:
    """The world's calendar and a floating-rate note on the harness bond's schedule (6M
    T-bill + 75 bp, fixed 2 business days before each period, 7 days of lookback)."""
    chain = world(calendar=True, id="FIXED", isin="GB0002634946")
    args = {**_bond_args(), "id": BOND, "isin": "US0378331005"}
    del args["coupon_rate"]
    terms = {"rate_index": INDEX, "spread_bp": 75, "fixing_days": 2, "fixing_lookback_days": 7}
    chain.ok("ministry", "register_instrument", {**args, **with_calendar(**{**terms, **extra})})
    chain.issue(BOND, "alice", 10)
    assert chain.state.instruments[BOND].coupon_rate == "0"
    return chain


def test_register_frn_needs_no_fixed_rate_and_refuses_one():
    chain = world()
    args = {**_bond_args(), "id": "B2", "isin": "GB0002634946"}
    terms = {"rate_index": INDEX, "spread_bp": 75, "fixing_days": 2, "fixing_lookback_days": 7}
    receipt = chain.expect(Code.BAD_FIELD, "ministry", "register_instrument", {**args, **terms})
    assert "coupon_rate" in receipt.log
    del args["coupon_rate"]
    chain.ok("ministry", "register_instrument", {**args, **terms})
    assert chain.state.instruments["B2"].terms == DebtTerms(
        rate_index=INDEX, spread_bp=75, fixing_days=2, fixing_lookback_days=7
    )


def test_frn_coupon_is_the_fixing_plus_the_spread_reset_each_period():
    chain = frn()
    # Period 1 starts Thu 1 Jan 2026: fixed 2 business days before, Tue 30 Dec 2025.
    chain.at(date(2025, 12, 30)).ok("central-bank", "publish_rate_fixing", fixing("2025-12-30"))
    receipt = pay(chain, "2026-07-01", date(2026, 7, 1))
    summary = receipt.events[0].attributes
    assert summary["rate"] == "0.1200"  # 11.25 % + 75 bp
    assert summary["fixing_date"] == "2025-12-30" and summary["fixing_of"] == "2025-12-30"
    # ACT/ACT-ICMA regular period: face x rate / 2, exactly.
    assert Fraction(Decimal(summary["per_unit"])) == Fraction(100_000) * Fraction(12, 100) / 2
    # Period 2 starts Wed 1 Jul 2026: fixed 2 business days before, Mon 29 Jun (1) and Fri
    # 26 Jun (2), as 30 Jun is a holiday. Nothing
    # is published for it: refused with its own code, never a zero coupon.
    pay(chain, "2027-01-01", date(2027, 1, 4), Code.RATE_FIXING_MISSING)
    # The last fixing within the 7-day lookback is used: Thu 25 Jun 2026.
    chain.ok("central-bank", "publish_rate_fixing", fixing("2026-06-25", "0.0950"))
    chain.ok("central-bank", "publish_rate_fixing", fixing("2026-06-30", "0.5"))  # too late
    receipt = pay(chain, "2027-01-01", date(2027, 1, 4))
    summary = receipt.events[0].attributes
    assert (summary["rate"], summary["fixing_of"]) == ("0.1025", "2026-06-25")
    assert summary["fixing_date"] == "2026-06-26"


def test_frn_lookback_has_an_end_and_a_negative_rate_pays_nothing():
    chain = frn(spread_bp=-200, fixing_lookback_days=0)
    chain.at(date(2025, 12, 29)).ok("central-bank", "publish_rate_fixing", fixing("2025-12-29"))
    pay(chain, "2026-07-01", date(2026, 7, 1), Code.RATE_FIXING_MISSING)  # a day off
    chain.ok("central-bank", "publish_rate_fixing", fixing("2025-12-30", "0.0150"))
    receipt = pay(chain, "2026-07-01", date(2026, 7, 1))
    # 1.50 % - 2.00 % floors at zero: the coupon is paid (and recorded) as nothing.
    assert receipt.events[0].attributes["rate"] == "0"
    assert receipt.events[0].attributes["total"] == 0
    assert chain.state.instruments[BOND].next_coupon == date(2027, 1, 1)


# ---------------------------------------------------------------------------------------
# Ijara sukuk


def sukuk(**extra) -> Chain:
    """The harness bond's schedule as an Ijara sukuk: 8 % rental, certificates to alice."""
    chain = world(calendar=False, id="FIXED", isin="GB0002634946")
    args = {**_bond_args(), "id": BOND, "isin": "US0378331005", "name": "Ijara sukuk 2028"}
    args |= {"sukuk": "ijara", "sukuk_asset": "Jinnah terminal, Karachi airport", **extra}
    chain.ok("ministry", "register_instrument", args)
    chain.issue(BOND, "alice", 10)
    return chain


def test_an_ijara_sukuk_pays_rental_and_dissolves_through_the_same_engine():
    chain = sukuk()
    terms = chain.state.instruments[BOND].terms
    assert (terms.sukuk, terms.sukuk_asset) == ("ijara", "Jinnah terminal, Karachi airport")
    args = {"instrument": BOND, "cash": "PKR", "coupon_date": "2026-07-01"}
    receipt = chain.at(date(2026, 7, 1)).ok("central-bank", "pay_rental", args)
    summary, *payments = (e for e in receipt.events if e.type != "balance_change")
    assert summary.type == "rental_paid" and summary.attributes["certificate_holders"] == 1
    assert [(p.type, p.attributes["amount"]) for p in payments] == [("rental_payment", 40_000)]
    assert settled(chain, receipt) == {chain.addr("alice"): 40_000}
    # pay_coupon is the same operation: the events keep the sukuk's names.
    args["coupon_date"] = "2027-01-01"
    receipt = chain.at(date(2027, 1, 1)).ok("central-bank", "pay_coupon", args)
    assert receipt.events[0].type == "rental_paid"
    for day in ("2027-07-01", "2028-01-01"):
        args["coupon_date"] = day
        chain.at(date.fromisoformat(day)).ok("central-bank", "pay_rental", args)
    receipt = chain.ok("central-bank", "dissolve_sukuk", {"instrument": BOND, "cash": "PKR"})
    summary, *payments = (e for e in receipt.events if e.type != "balance_change")
    assert summary.type == "sukuk_dissolved" and summary.attributes["residual"] == "0"
    assert [(p.type, p.attributes["amount"]) for p in payments] == [
        ("dissolution_payment", 10 * 100_000)
    ]
    alice = chain.addr("alice")
    assert settled(chain, receipt, units={alice: 10}) == {alice: 10 * 100_000}
    assert chain.state.instruments[BOND].redeemed


def test_sukuk_names_refuse_a_bond_and_a_sukuk_states_its_asset():
    chain = world()
    args = {"instrument": BOND, "cash": "PKR", "coupon_date": "2026-07-01"}
    chain.at(date(2026, 7, 1)).expect(
        Code.WRONG_INSTRUMENT_KIND, "central-bank", "pay_rental", args
    )
    chain.expect(
        Code.WRONG_INSTRUMENT_KIND,
        "central-bank",
        "dissolve_sukuk",
        {"instrument": BOND, "cash": "PKR"},
    )
    bond_args = {**_bond_args(), "id": "B2", "isin": "GB0002634946", "sukuk": "ijara"}
    receipt = chain.expect(Code.BAD_FIELD, "ministry", "register_instrument", bond_args)
    assert "sukuk_asset" in receipt.log
    # Before version 3 the names do not exist.
    old = world(version=2)
    old.at(date(2026, 7, 1)).expect(Code.UNKNOWN_OPERATION, "central-bank", "pay_rental", args)


# ---------------------------------------------------------------------------------------
# Redemption at a stated price, and the issuer's call


def callable_bond(**extra) -> Chain:
    """The harness bond's schedule, callable with 30 days' notice at 101.5, redeeming at
    maturity at 100.25; alice 7 units, bob 3."""
    chain = world(calendar=False, id="FIXED", isin="GB0002634946")
    args = {**_bond_args(), "id": BOND, "isin": "US0378331005"}
    args |= {"call_notice_days": 30, "call_price": "101.5", "redemption_price": "100.25"}
    chain.ok("ministry", "register_instrument", {**args, **extra})
    chain.issue(BOND, "alice", 7)
    chain.issue(BOND, "bob", 3)
    return chain


def coupon(chain: Chain, day: str, code: Code = Code.OK):
    return pay(chain, day, date.fromisoformat(day), code)


def test_redeemed_at_maturity_at_the_stated_price():
    chain = callable_bond(face_value=99_999)
    for day in ("2026-07-01", "2027-01-01", "2027-07-01", "2028-01-01"):
        coupon(chain, day)
    receipt = chain.ok("central-bank", "redeem", {"instrument": BOND, "cash": "PKR"})
    # 99,999 x 100.25 % = 100,248.9975 per unit: alice floor(701,742.9825), bob 300,746.9925.
    alice, bob = chain.addr("alice"), chain.addr("bob")
    paid = settled(chain, receipt, units={alice: 7, bob: 3})
    assert paid == {alice: 701_742, bob: 300_746}
    assert receipt.events[0].attributes["residual"] == "1.9750"
    assert chain.state.instruments[BOND].redeemed


def test_the_issuer_calls_with_notice_and_redeems_at_the_call_price():
    chain = callable_bond()
    call = {"instrument": BOND, "call_date": "2027-01-01"}
    chain.at(date(2026, 12, 15)).expect(Code.CALL_NOTICE_TOO_SHORT, "ministry", "call_bond", call)
    chain.at(date(2026, 6, 1)).expect(Code.UNAUTHORIZED, "central-bank", "call_bond", call)
    bad = {**call, "call_date": "2026-12-31"}
    chain.expect(Code.BAD_FIELD, "ministry", "call_bond", bad)  # not a coupon date
    receipt = chain.ok("ministry", "call_bond", call)
    assert receipt.events[0].type == "bond_called"
    assert chain.state.instruments[BOND].terms.called_on == date(2027, 1, 1)
    chain.expect(Code.NOT_CALLABLE, "ministry", "call_bond", call)  # once
    coupon(chain, "2026-07-01")
    # Redemption waits for the call date, and for its coupon.
    chain.at(date(2026, 12, 31)).expect(
        Code.NOT_MATURED, "central-bank", "redeem", {"instrument": BOND, "cash": "PKR"}
    )
    chain.at(date(2027, 1, 1)).expect(
        Code.COUPON_UNPAID, "central-bank", "redeem", {"instrument": BOND, "cash": "PKR"}
    )
    # Units stop moving on the call date (the closed period before it too).
    chain.expect(Code.INSTRUMENT_MATURED, "alice", "transfer", {**to_bob(chain), "amount": 1})
    coupon(chain, "2027-01-01")
    assert chain.state.instruments[BOND].next_coupon is None  # nothing after the call
    coupon(chain, "2027-07-01", Code.COUPON_NOT_DUE)
    receipt = chain.ok("central-bank", "redeem", {"instrument": BOND, "cash": "PKR"})
    alice, bob = chain.addr("alice"), chain.addr("bob")
    paid = settled(chain, receipt, units={alice: 7, bob: 3})
    assert paid == {alice: 7 * 101_500, bob: 3 * 101_500}
    assert receipt.events[0].attributes["residual"] == "0"


def test_call_refusals():
    chain = world()  # the harness bond: no call terms
    call = {"instrument": BOND, "call_date": "2027-01-01"}
    chain.expect(Code.NOT_CALLABLE, "ministry", "call_bond", call)
    args = {**_bond_args(), "id": "B2", "isin": "GB0002634946", "call_notice_days": 30}
    chain.expect(Code.BAD_FIELD, "ministry", "register_instrument", args)  # no call_price
    for price in ("0.5", "250", "101.1234567", "1e2"):
        bad = {**args, "call_price": price}
        chain.expect(Code.BAD_FIELD, "ministry", "register_instrument", bad)
    old = world(version=2)
    old.expect(Code.UNKNOWN_OPERATION, "ministry", "call_bond", call)


# ---------------------------------------------------------------------------------------
# Amortising bonds: partial redemptions on a schedule


def amortising(schedule: list[list[str]], **extra) -> Chain:
    """The harness bond's schedule (8 % semi-annual ACT/ACT-ICMA, face 100,000: every
    coupon period is regular, so a coupon is 4 % of the face outstanding over it),
    amortising on `schedule`; alice 7 units, bob 3."""
    chain = world(calendar=False, id="FIXED", isin="GB0002634946")
    args = {**_bond_args(), "id": BOND, "isin": "US0378331005", "amortisation": schedule}
    chain.ok("ministry", "register_instrument", {**args, **extra})
    chain.issue(BOND, "alice", 7)
    chain.issue(BOND, "bob", 3)
    return chain


def amortise(chain: Chain, day: str, code: Code = Code.OK, on: date | None = None):
    args = {"instrument": BOND, "cash": "PKR", "date": day}
    chain.at(on or date.fromisoformat(day))
    if code == Code.OK:
        return chain.ok("central-bank", "amortise", args)
    return chain.expect(code, "central-bank", "amortise", args)


def test_amortisation_repays_principal_and_later_coupons_are_on_the_reduced_face():
    chain = amortising([["2026-07-01", "25"], ["2027-01-01", "12.5"]])
    terms = chain.state.instruments[BOND].terms
    assert terms.amortisation == ((date(2026, 7, 1), "25"), (date(2027, 1, 1), "12.5"))
    alice, bob = chain.addr("alice"), chain.addr("bob")
    # Worked by hand from the terms: principal 25 % and 12.5 % of 100,000 on the two dates,
    # 62.5 % at maturity; each coupon 4 % of the face outstanding over its period: 100 %
    # to 2026-07-01, 75 % to 2027-01-01, 62.5 % after.
    expected = [
        ("amortise", "2026-07-01", 25_000),
        ("coupon", "2026-07-01", 4_000),
        ("amortise", "2027-01-01", 12_500),
        ("coupon", "2027-01-01", 3_000),
        ("coupon", "2027-07-01", 2_500),
        ("coupon", "2028-01-01", 2_500),
    ]
    for kind, day, per_unit in expected:
        receipt = amortise(chain, day) if kind == "amortise" else coupon(chain, day)
        assert settled(chain, receipt) == {alice: 7 * per_unit, bob: 3 * per_unit}, (kind, day)
        assert Decimal(receipt.events[0].attributes["per_unit"]) == per_unit
        assert receipt.events[0].attributes["residual"] == "0"
    assert receipt.events[0].type == "coupon_paid"
    receipt = chain.ok("central-bank", "redeem", {"instrument": BOND, "cash": "PKR"})
    paid = settled(chain, receipt, units={alice: 7, bob: 3})
    assert paid == {alice: 7 * 62_500, bob: 3 * 62_500}
    # Every unit got its whole face back, in three parts.
    assert 25_000 + 12_500 + 62_500 == 100_000


def test_amortisation_rounds_down_per_holder_and_reports_the_residual():
    chain = amortising([["2026-07-01", "33.333333"]])
    alice, bob = chain.addr("alice"), chain.addr("bob")
    receipt = amortise(chain, "2026-07-01")
    summary = receipt.events[0]
    assert summary.type == "amortised"
    # 100,000 x 33.333333 % = 33,333.333 per unit: alice 7 -> 233,333.331, bob 3 -> 99,999.999.
    assert settled(chain, receipt) == {alice: 233_333, bob: 99_999}
    assert Fraction(summary.attributes["per_unit"]) == Fraction(33_333_333, 1000)
    assert Fraction(summary.attributes["residual"]) == Fraction(1_330, 1000)
    assert summary.attributes["total"] == 233_333 + 99_999
    assert summary.attributes["percent"] == "33.333333"
    assert summary.attributes["outstanding_percent"] == "66.666667"
    assert chain.state.instruments[BOND].terms.amortised == 1
    receipt = coupon(chain, "2026-07-01")  # its period ran on the whole face
    assert receipt.events[0].attributes["per_unit"] == "4000"
    assert settled(chain, receipt) == {alice: 28_000, bob: 12_000}
    # Then on 66.666667 % of 100,000 = 66,666.667 x 4 % = 2,666.66668 per unit.
    receipt = coupon(chain, "2027-01-01")
    assert Fraction(receipt.events[0].attributes["per_unit"]) == Fraction(266_666_668, 10**5)
    assert settled(chain, receipt) == {alice: 18_666, bob: 8_000}
    assert Fraction(receipt.events[0].attributes["residual"]) == Fraction(66_680, 10**5)
    for day in ("2027-07-01", "2028-01-01"):
        coupon(chain, day)
    receipt = chain.ok("central-bank", "redeem", {"instrument": BOND, "cash": "PKR"})
    # 66,666.667 per unit: alice 466,666.669, bob 200,000.001.
    assert settled(chain, receipt, units={alice: 7, bob: 3}) == {alice: 466_666, bob: 200_000}
    assert Fraction(receipt.events[0].attributes["residual"]) == Fraction(670, 1000)


def test_amortisation_refusals_in_order_due_and_once():
    chain = amortising([["2026-07-01", "25"], ["2027-01-01", "12.5"]])
    amortise(chain, "2026-07-01", Code.AMORTISATION_NOT_DUE, on=date(2026, 6, 30))  # early
    amortise(chain, "2027-01-01", Code.AMORTISATION_NOT_DUE)  # out of order
    amortise(chain, "2026-07-02", Code.AMORTISATION_NOT_DUE)  # not scheduled
    coupon(chain, "2026-07-01", Code.AMORTISATION_UNPAID)  # the principal first
    amortise(chain, "2026-07-01")
    amortise(chain, "2026-07-01", Code.AMORTISATION_NOT_DUE)  # once
    amortise(chain, "2027-01-01", Code.COUPON_UNPAID)  # the coupon before it is unpaid
    coupon(chain, "2026-07-01")
    coupon(chain, "2027-01-01", Code.AMORTISATION_UNPAID)
    amortise(chain, "2027-01-01")
    amortise(chain, "2027-01-01", Code.AMORTISATION_NOT_DUE)  # all paid
    wrong = {"instrument": "FIXED", "cash": "PKR", "date": "2026-07-01"}
    chain.expect(Code.WRONG_INSTRUMENT_KIND, "central-bank", "amortise", wrong)
    # The paying agent's rule: an investor cannot pay it.
    chain.expect(
        Code.UNAUTHORIZED,
        "alice",
        "amortise",
        {"instrument": BOND, "cash": "PKR", "date": "2027-07-01"},
    )


@pytest.mark.parametrize(
    "schedule",
    [
        [["2026-07-02", "10"]],  # not a coupon date
        [["2028-01-01", "10"]],  # maturity: the remainder is paid there by redeem
        [["2027-01-01", "10"], ["2026-07-01", "10"]],  # not increasing
        [["2026-07-01", "10"], ["2026-07-01", "10"]],
        [["2026-07-01", "60"], ["2027-01-01", "40"]],  # nothing left for maturity
        [["2026-07-01", "0"]],
        [["2026-07-01", "1e1"]],
        [["2026-07-01", "10.1234567"]],
        [["2026-07-01", 10]],
        [["2026-07-01"]],
        [],
        "2026-07-01",
        [["2026-02-30", "10"]],
    ],
)
def test_amortisation_schedule_refusals(schedule):
    chain = world()
    args = {**_bond_args(), "id": "B2", "isin": "GB0002634946", "amortisation": schedule}
    chain.expect(Code.BAD_FIELD, "ministry", "register_instrument", args)


def test_amortisation_combines_with_calls_and_a_price_from_version_4_never_with_sukuk():
    args = {**_bond_args(), "id": "B2", "isin": "GB0002634946"}
    args["amortisation"] = [["2026-07-01", "10"]]
    combined = ({"call_notice_days": 30, "call_price": "101"}, {"redemption_price": "101"})
    v3 = world(version=3)  # a rule change: version 3 refuses them as it always did
    for extra in combined:
        receipt = v3.expect(Code.BAD_FIELD, "ministry", "register_instrument", {**args, **extra})
        assert "has no call, redemption_price or sukuk terms" in receipt.log
    chain = world()
    for isin, extra in zip(("DE000BAY0017", "US5949181045"), combined, strict=True):
        chain.ok(
            "ministry", "register_instrument", {**args, **extra, "id": isin[2:6], "isin": isin}
        )
    sukuk = {**args, "sukuk": "ijara", "sukuk_asset": "a road"}
    chain.expect(Code.BAD_FIELD, "ministry", "register_instrument", sukuk)


def test_amortisation_terms_encode_and_decode():
    terms = DebtTerms(amortisation=((date(2026, 7, 1), "25"),), amortised=1)
    assert terms.to_map() == {"amortisation": [["2026-07-01", "25"]], "amortised": 1}
    assert DebtTerms.from_map(codec.decode(codec.encode(terms.to_map()))) == terms


def test_version_2_refuses_amortisation_as_older_code_does():
    old = world(version=2)
    args = {**_bond_args(), "id": "B2", "isin": "GB0002634946"}
    args["amortisation"] = [["2026-07-01", "10"]]
    receipt = old.expect(Code.BAD_FIELD, "ministry", "register_instrument", args)
    assert "unknown field(s) ['amortisation']" in receipt.log
    receipt = old.expect(
        Code.UNKNOWN_OPERATION,
        "central-bank",
        "amortise",
        {"instrument": BOND, "cash": "PKR", "date": "2026-07-01"},
    )
    assert receipt.log == "no operation 'amortise'"


def test_amortisation_on_frozen_units_is_frozen_cash_and_amortising_bonds_are_quoted():
    chain = amortising([["2026-07-01", "25"]])
    alice = chain.addr("alice")
    order = {"account": alice, "reason_code": 12, "legal_reference": "FIA case 7"}
    chain.ok("regulator", "freeze", {**order, "instrument": BOND, "amount": 2})
    amortise(chain, "2026-07-01")
    # 2 frozen units x 25,000 repaid: that cash stays under the order.
    assert chain.state.holdings["PKR"][alice] == Holding(7 * 25_000, 2 * 25_000)
    # Quoted per 100 of the face outstanding (75 %): at its coupon rate on a coupon date, par.
    answer = quote_instrument(chain.state.instruments[BOND], date(2026, 7, 1), yield_="0.08")
    assert answer.accrued == 0 and abs(answer.clean_price - 100) < Decimal("1e-9")
