"""`balance_change` events (protocol version 3): one per credit or debit of every operation,
signed, with the balance after and the operation as cause; none on a version-2 chain, where
receipts stay byte for byte what they were (they are hashed into `results_hash`).

The property over every operation and random sequences is tests/ledger/test_stateful.py's
(`check_balance_changes`); here each family once, against balances computed by hand.
"""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.codes import Code
from ledger.execute import balance_change_events
from ledger.protocol import ProtocolRecord
from ledger.types import Event
from tests.ledger.test_ops_harness import Chain
from tests.ledger.test_ops_payments import BOND, TBILL, coupon, tbill_world, world


def changes(receipt) -> list[tuple[bytes, str, int, int, str]]:
    return [
        (a["account"], a["instrument"], a["amount"], a["balance"], a["cause"])
        for a in (e.attributes for e in receipt.events if e.type == "balance_change")
    ]


def test_issue_and_burn_credit_and_debit_the_issuer_side():
    chain = world()
    receipt = chain.ok(
        "ministry", "issue", {"instrument": BOND, "to": chain.addr("alice"), "amount": 5}
    )
    assert changes(receipt) == [(chain.addr("alice"), BOND, 5, 65, "issue")]
    receipt = chain.ok("central-bank", "burn", {"instrument": "PKR", "amount": 1000})
    assert changes(receipt) == [(chain.addr("central-bank"), "PKR", -1000, 10**9 - 1000, "burn")]


def test_forced_transfer_reports_both_sides():
    chain = world()
    args = {
        "instrument": BOND,
        "from": chain.addr("alice"),
        "to": chain.addr("bob"),
        "amount": 60,
        "reason_code": 3,
        "legal_reference": "Court order 1/2026",
    }
    receipt = chain.ok("regulator", "forced_transfer", args, cosigners=("ministry",))
    assert changes(receipt) == [
        (chain.addr("alice"), BOND, -60, 0, "forced_transfer"),
        (chain.addr("bob"), BOND, 60, 100, "forced_transfer"),
    ]


def test_redemption_debits_the_units_and_credits_the_cash():
    chain = tbill_world()
    receipt = chain.at(date(2026, 7, 1)).ok(
        "central-bank", "redeem", {"instrument": TBILL, "cash": "PKR"}
    )
    got = sorted(changes(receipt))
    assert got == sorted(
        [
            (chain.addr("central-bank"), "PKR", -1_000_000, 10**9 - 1_000_000, "redeem"),
            (chain.addr("alice"), "PKR", 700_000, 700_000, "redeem"),
            (chain.addr("bob"), "PKR", 300_000, 300_000, "redeem"),
            (chain.addr("alice"), TBILL, -7, 0, "redeem"),
            (chain.addr("bob"), TBILL, -3, 0, "redeem"),
        ]
    )
    payments = [e.attributes for e in receipt.events if e.type == "redemption_payment"]
    assert {(p["instrument"], p["security"]) for p in payments} == {("PKR", TBILL)}


def test_a_payer_holding_what_it_pays_on_nets_out():
    # The central bank holds 10 bond units: its coupon share comes back to it, so its one
    # record is the net outflow (one per account and instrument, never a debit and a credit).
    chain = world()
    chain.issue(BOND, "central-bank", 10)
    receipt = chain.at(date(2026, 7, 1)).ok("central-bank", "pay_coupon", coupon())
    bank = [c for c in changes(receipt) if c[0] == chain.addr("central-bank")]
    assert bank == [(chain.addr("central-bank"), "PKR", -400_000, 10**9 - 400_000, "pay_coupon")]


def test_operations_that_move_no_balance_and_refusals_report_none():
    chain = world()
    freeze = {
        "account": chain.addr("alice"),
        "instrument": BOND,
        "amount": 10,
        "reason_code": 9,
        "legal_reference": "AML 5",
    }
    assert changes(chain.ok("regulator", "freeze", freeze)) == []  # frozen, not moved
    refused = chain.expect(
        Code.INSUFFICIENT_BALANCE,
        "bob",
        "transfer",
        {"instrument": BOND, "to": chain.addr("alice"), "amount": 41},
    )
    assert refused.events == ()


def test_a_version_2_chain_keeps_its_receipts():
    chain = world()
    chain.state.put_protocol(ProtocolRecord(2))
    chain.state.take_changes()
    receipt = chain.ok(
        "alice", "transfer", {"instrument": BOND, "to": chain.addr("bob"), "amount": 1}
    )
    assert [e.type for e in receipt.events] == ["transfer"]
    receipt = chain.at(date(2026, 7, 1)).ok("central-bank", "pay_coupon", coupon())
    assert "balance_change" not in {e.type for e in receipt.events}
    payment = next(e.attributes for e in receipt.events if e.type == "coupon_payment")
    assert set(payment) == {"instrument", "cash", "to", "amount"}
    assert payment["instrument"] == BOND  # the version-2 naming, kept for replay


def test_balance_change_encodes_negative_amounts_canonically():
    chain = Chain()
    chain.cash()
    chain.investor("alice")
    chain.investor("bob")
    chain.issue("PKR", "alice", 10, issuer="central-bank")
    receipt = chain.ok(
        "alice", "transfer", {"instrument": "PKR", "to": chain.addr("bob"), "amount": 10}
    )
    debit = next(e for e in receipt.events if e.type == "balance_change")
    assert codec.decode(debit.encoded)["attributes"]["amount"] == -10
    assert codec.encode(debit.to_map()) == debit.encoded


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.binary(min_size=20, max_size=20),
            st.integers(-(2**63), 2**63 - 1),
            st.integers(0, 2**64 - 1),
        ),
        max_size=4,
    ),
    st.sampled_from(["transfer", "issue", "pay_coupon", "x" * 64]),
)
def test_balance_change_events_are_the_events_codec_encode_would_give(changes, op):
    class _Journal:
        def balance_changes_since(self, token):
            return changes

    events = balance_change_events(_Journal(), 0, op)
    expected = [
        Event(
            "balance_change",
            {"account": a, "amount": n, "balance": b, "cause": op, "instrument": i},
        )
        for i, a, n, b in changes
    ]
    assert events == expected
    assert [e.encoded for e in events] == [codec.encode(e.to_map()) for e in expected]
