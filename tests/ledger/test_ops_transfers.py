"""transfer, dvp and forced_transfer: the accepted cases and every refusal code they give."""

from __future__ import annotations

from datetime import date

import pytest

from ledger.codes import Code
from tests.ledger.test_ops_harness import ISIN_B, Chain

BOND = "PKBOND28"


def world() -> Chain:
    """Cash token, a bond, two retail investors in Pakistan; alice holds 100 bonds and both
    hold 1,000,000 cash units."""
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.investor("alice")
    chain.investor("bob")
    chain.issue(BOND, "alice", 100)
    chain.issue("PKR", "alice", 1_000_000, issuer="central-bank")
    chain.issue("PKR", "bob", 1_000_000, issuer="central-bank")
    return chain


def send(chain: Chain, to: str = "bob", amount: int = 10, instrument: str = BOND) -> dict:
    return {"instrument": instrument, "to": chain.addr(to), "amount": amount}


# ---------------------------------------------------------------------------------------
# transfer


def test_transfer_moves_units_and_reports_the_parties():
    chain = world()
    receipt = chain.ok("alice", "transfer", send(chain, amount=40))
    assert chain.balance(BOND, "alice") == 60
    assert chain.balance(BOND, "bob") == 40
    assert chain.state.supply(BOND) == 100  # supply is conserved
    event, debit, credit = receipt.events
    assert event.type == "transfer"
    assert event.attributes == {
        "instrument": BOND,
        "from": chain.addr("alice"),
        "to": chain.addr("bob"),
        "amount": 40,
    }
    # One balance change per debit and credit, signed, with the balance after and the cause.
    assert (debit.type, credit.type) == ("balance_change", "balance_change")
    assert debit.attributes == {
        "account": chain.addr("alice"),
        "instrument": BOND,
        "amount": -40,
        "balance": 60,
        "cause": "transfer",
    }
    assert credit.attributes == {
        "account": chain.addr("bob"),
        "instrument": BOND,
        "amount": 40,
        "balance": 40,
        "cause": "transfer",
    }


def test_transfer_of_everything_removes_the_holding():
    chain = world()
    chain.ok("alice", "transfer", send(chain, amount=100))
    assert chain.addr("alice") not in chain.state.holdings[BOND]
    assert [a for a, _ in chain.state.holders(BOND)] == [chain.addr("bob")]


def _freeze_account(chain: Chain, name: str) -> None:
    chain.ok(
        "regulator",
        "freeze",
        {"account": chain.addr(name), "reason_code": 7, "legal_reference": "Court order 12/2026"},
    )


def _freeze_units(chain: Chain, name: str, amount: int) -> None:
    chain.ok(
        "regulator",
        "freeze",
        {
            "account": chain.addr(name),
            "instrument": BOND,
            "amount": amount,
            "reason_code": 7,
            "legal_reference": "AML case 3",
        },
    )


def _investor_without_kyc(chain: Chain, name: str) -> None:
    chain.ok(
        "regulator",
        "grant_role",
        {"account": chain.addr(name), "role": "investor"},
        cosigners=("ministry",),
    )


def _restricted_bond(chain: Chain, **limits) -> None:
    """A second bond with investor limits, held by the ministry (institutions are exempt
    from country, category and balance limits, so it can hold and distribute it)."""
    chain.bond("PKBOND30", isin=ISIN_B, maturity_date="2030-01-01", **limits)
    chain.issue("PKBOND30", "ministry", 100)


TRANSFER_REFUSALS = [
    # (case, set-up, args(chain), expected code)
    ("missing field", None, lambda c: {"instrument": BOND, "amount": 1}, Code.BAD_FIELD),
    ("unknown field", None, lambda c: {**send(c), "memo": "x"}, Code.BAD_FIELD),
    ("address too short", None, lambda c: {**send(c), "to": b"\x01" * 19}, Code.BAD_FIELD),
    ("to itself", None, lambda c: send(c, to="alice"), Code.BAD_FIELD),
    ("zero amount", None, lambda c: send(c, amount=0), Code.INVALID_AMOUNT),
    ("negative amount", None, lambda c: send(c, amount=-5), Code.INVALID_AMOUNT),
    ("no instrument", None, lambda c: send(c, instrument="NOPE"), Code.INSTRUMENT_NOT_FOUND),
    ("unknown recipient", None, lambda c: send(c, to="nobody"), Code.ACCOUNT_NOT_FOUND),
    (
        "paused",
        lambda c: c.ok("ministry", "pause_instrument", {"instrument": BOND, "reason": "incident"}),
        send,
        Code.INSTRUMENT_PAUSED,
    ),
    ("matured", lambda c: c.at(date(2028, 1, 1)), send, Code.INSTRUMENT_MATURED),
    ("record date", lambda c: c.at(date(2026, 6, 16)), send, Code.CLOSED_PERIOD),
    ("sender frozen", lambda c: _freeze_account(c, "alice"), send, Code.ACCOUNT_FROZEN),
    ("recipient frozen", lambda c: _freeze_account(c, "bob"), send, Code.ACCOUNT_FROZEN),
    (
        "recipient has no KYC",
        lambda c: _investor_without_kyc(c, "carol"),
        lambda c: send(c, to="carol"),
        Code.KYC_MISSING,
    ),
    (
        "sender KYC expired",
        lambda c: c.investor("alice", expiry="2026-03-01") and c.at(date(2026, 3, 2)),
        send,
        Code.KYC_EXPIRED,
    ),
    (
        "recipient KYC expired",
        lambda c: c.investor("bob", expiry="2026-03-01") and c.at(date(2026, 3, 2)),
        send,
        Code.KYC_EXPIRED,
    ),
    ("more than held", None, lambda c: send(c, amount=101), Code.INSUFFICIENT_BALANCE),
    (
        "cash beyond balance",
        None,
        lambda c: send(c, instrument="PKR", amount=10**7),
        Code.INSUFFICIENT_BALANCE,
    ),
    (
        "frozen units",
        lambda c: _freeze_units(c, "alice", 95),
        send,
        Code.INSUFFICIENT_UNFROZEN_BALANCE,
    ),
    # Sent by the ministry, which holds the restricted bond.
    (
        "country",
        lambda c: _restricted_bond(c, allowed_countries=["AE"]),
        lambda c: send(c, instrument="PKBOND30"),
        Code.COUNTRY_NOT_ALLOWED,
        "ministry",
    ),
    (
        "category",
        lambda c: _restricted_bond(c, allowed_categories=["professional"]),
        lambda c: send(c, instrument="PKBOND30"),
        Code.CATEGORY_NOT_ALLOWED,
        "ministry",
    ),
    (
        "holder limit",
        lambda c: _restricted_bond(c, max_holders=1),
        lambda c: send(c, instrument="PKBOND30"),
        Code.HOLDER_LIMIT,
        "ministry",
    ),
    (
        "balance limit",
        lambda c: _restricted_bond(c, max_balance=5),
        lambda c: send(c, instrument="PKBOND30", amount=6),
        Code.BALANCE_LIMIT,
        "ministry",
    ),
]


@pytest.mark.parametrize(
    "setup,args,code,sender",
    [(*case[1:], "alice")[:4] for case in TRANSFER_REFUSALS],
    ids=[c[0] for c in TRANSFER_REFUSALS],
)
def test_transfer_refusals(setup, args, code, sender):
    chain = world()
    if setup is not None:
        setup(chain)
    chain.expect(code, sender, "transfer", args(chain))


def test_sender_with_no_units_is_refused_with_insufficient_balance():
    chain = world()
    chain.expect(Code.INSUFFICIENT_BALANCE, "bob", "transfer", send(chain, to="alice"))


def test_transfer_at_the_limits_is_accepted():
    # The boundaries of the refusals above: exactly the limits pass.
    chain = world()
    _restricted_bond(chain, max_holders=2, max_balance=5)
    chain.ok("ministry", "transfer", send(chain, instrument="PKBOND30", amount=5))
    # The day before the record date is still open.
    chain.at(date(2026, 6, 15)).ok("alice", "transfer", send(chain, amount=1))


def test_holder_limit_allows_a_holder_to_hand_over_everything():
    # One holder out, one in: the count does not grow.
    chain = world()
    _restricted_bond(chain, max_holders=1)
    chain.ok("ministry", "transfer", send(chain, instrument="PKBOND30", amount=100))
    assert chain.state.holder_count("PKBOND30") == 1


def test_suspended_vasp_stops_its_clients_both_ways():
    chain = world()
    chain.vasp("exchange")
    chain.investor("carol", vasp="exchange")
    chain.issue(BOND, "carol", 10)
    chain.ok("regulator", "suspend_vasp", {"vasp": chain.addr("exchange"), "reason": "audit"})
    chain.expect(Code.VASP_SUSPENDED, "carol", "transfer", send(chain, amount=1))
    chain.expect(Code.VASP_SUSPENDED, "alice", "transfer", send(chain, to="carol", amount=1))
    # Reinstated: they move again.
    chain.ok("regulator", "license_vasp", {"vasp": chain.addr("exchange"), "name": "exchange"})
    chain.ok("carol", "transfer", send(chain, amount=1))


def test_institutions_need_no_kyc():
    chain = world()
    chain.ok("alice", "transfer", send(chain, to="ministry", amount=5))
    assert chain.balance(BOND, "ministry") == 5
    assert chain.account("ministry").kyc is None


def test_frozen_units_stay_while_free_units_move():
    chain = world()
    _freeze_units(chain, "alice", 30)
    chain.ok("alice", "transfer", send(chain, amount=70))
    assert chain.state.holdings[BOND][chain.addr("alice")].balance == 30
    assert chain.state.frozen_amount(BOND, chain.addr("alice")) == 30


# ---------------------------------------------------------------------------------------
# dvp


def dvp_args(chain: Chain, asset_amount: int = 10, cash_amount: int = 500_000, **extra) -> dict:
    args = {
        "seller": chain.addr("alice"),
        "buyer": chain.addr("bob"),
        "asset": BOND,
        "asset_amount": asset_amount,
        "cash": "PKR",
        "cash_amount": cash_amount,
    }
    args.update(extra)
    return args


def test_dvp_settles_both_legs():
    chain = world()
    receipt = chain.ok("alice", "dvp", dvp_args(chain), cosigners=("bob",))
    assert chain.balance(BOND, "alice") == 90
    assert chain.balance(BOND, "bob") == 10
    assert chain.balance("PKR", "alice") == 1_500_000
    assert chain.balance("PKR", "bob") == 500_000
    assert [e.type for e in receipt.events] == ["dvp", "transfer", "transfer"] + [
        "balance_change"
    ] * 4
    changes = [
        (e.attributes["account"], e.attributes["instrument"], e.attributes["amount"])
        for e in receipt.events[3:]
    ]
    # Both legs, the cash the seller received included.
    assert changes == [
        (chain.addr("alice"), BOND, -10),
        (chain.addr("bob"), BOND, 10),
        (chain.addr("bob"), "PKR", -500_000),
        (chain.addr("alice"), "PKR", 500_000),
    ]


def test_dvp_can_be_sent_by_the_buyer():
    chain = world()
    chain.ok("bob", "dvp", dvp_args(chain), cosigners=("alice",))
    assert chain.balance(BOND, "bob") == 10


DVP_REFUSALS = [
    ("missing field", {"cash_amount": None}, ("bob",), "alice", Code.BAD_FIELD),
    ("zero cash", {"cash_amount": 0}, ("bob",), "alice", Code.INVALID_AMOUNT),
    ("counterparty did not sign", {}, (), "alice", Code.MISSING_APPROVALS),
    ("sender not a party", {}, ("alice", "bob"), "ministry", Code.UNAUTHORIZED),
    ("asset leg is cash", {"asset": "PKR"}, ("bob",), "alice", Code.WRONG_INSTRUMENT_KIND),
    ("cash leg is a bond", {"cash": BOND}, ("bob",), "alice", Code.WRONG_INSTRUMENT_KIND),
    ("unknown asset", {"asset": "NOPE"}, ("bob",), "alice", Code.INSTRUMENT_NOT_FOUND),
    # The cash leg fails: the asset leg, checked first and valid, must not settle either.
    ("cash leg short", {"cash_amount": 1_000_001}, ("bob",), "alice", Code.INSUFFICIENT_BALANCE),
    ("asset leg short", {"asset_amount": 101}, ("bob",), "alice", Code.INSUFFICIENT_BALANCE),
]


@pytest.mark.parametrize(
    "override,cosigners,sender,code",
    [c[1:] for c in DVP_REFUSALS],
    ids=[c[0] for c in DVP_REFUSALS],
)
def test_dvp_refusals_settle_neither_leg(override, cosigners, sender, code):
    chain = world()
    args = dvp_args(chain)
    for key, value in override.items():
        if value is None:
            del args[key]
        else:
            args[key] = value
    chain.expect(code, sender, "dvp", args, cosigners=cosigners)
    assert chain.balance(BOND, "alice") == 100
    assert chain.balance("PKR", "bob") == 1_000_000


def test_dvp_cash_leg_obeys_the_buyers_freeze():
    chain = world()
    _freeze_account(chain, "bob")
    chain.expect(Code.ACCOUNT_FROZEN, "alice", "dvp", dvp_args(chain), cosigners=("bob",))


# ---------------------------------------------------------------------------------------
# forced_transfer


def forced(chain: Chain, amount: int = 50, **extra) -> dict:
    args = {
        "instrument": BOND,
        "from": chain.addr("alice"),
        "to": chain.addr("ministry"),
        "amount": amount,
        "reason_code": 3,
        "legal_reference": "Supreme Court order 44/2026",
    }
    args.update(extra)
    return args


def test_forced_transfer_moves_frozen_units_of_a_frozen_account_with_two_institutions():
    chain = world()
    _freeze_units(chain, "alice", 80)
    _freeze_account(chain, "alice")
    chain.ok("ministry", "pause_instrument", {"instrument": BOND, "reason": "court order"})
    receipt = chain.ok(
        "regulator", "forced_transfer", forced(chain, amount=90), cosigners=("ministry",)
    )
    assert chain.balance(BOND, "alice") == 10
    assert chain.balance(BOND, "ministry") == 90
    # The freeze never exceeds what is left.
    assert chain.state.frozen_amount(BOND, chain.addr("alice")) == 10
    assert receipt.events[0].attributes["legal_reference"] == "Supreme Court order 44/2026"


FORCED_REFUSALS = [
    ("no legal reference", {"legal_reference": None}, ("ministry",), "regulator", Code.BAD_FIELD),
    ("one institution", {}, (), "regulator", Code.MISSING_APPROVALS),
    ("approver without the role", {}, ("auditor",), "regulator", Code.MISSING_APPROVALS),
    ("sender without the role", {}, ("ministry", "regulator"), "auditor", Code.UNAUTHORIZED),
    (
        "unknown instrument",
        {"instrument": "NOPE"},
        ("ministry",),
        "regulator",
        Code.INSTRUMENT_NOT_FOUND,
    ),
    ("unknown recipient", {"to": b"\x09" * 20}, ("ministry",), "regulator", Code.ACCOUNT_NOT_FOUND),
    ("more than held", {"amount": 101}, ("ministry",), "regulator", Code.INSUFFICIENT_BALANCE),
    ("zero", {"amount": 0}, ("ministry",), "regulator", Code.INVALID_AMOUNT),
]


@pytest.mark.parametrize(
    "override,cosigners,sender,code",
    [c[1:] for c in FORCED_REFUSALS],
    ids=[c[0] for c in FORCED_REFUSALS],
)
def test_forced_transfer_refusals(override, cosigners, sender, code):
    chain = world()
    args = forced(chain)
    for key, value in override.items():
        if value is None:
            del args[key]
        else:
            args[key] = value
    chain.expect(code, sender, "forced_transfer", args, cosigners=cosigners)
