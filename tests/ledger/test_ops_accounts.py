"""VASP licences, investor onboarding, freezes and key recovery."""

from __future__ import annotations

from datetime import date

import pytest

from ledger.codes import Code
from ledger.crypto import generate_key
from ledger.types import Kyc
from tests.ledger.test_ops_harness import Chain

BOND = "PKBOND28"


def world() -> Chain:
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.investor("alice")
    chain.investor("bob")
    chain.issue(BOND, "alice", 100)
    return chain


# ---------------------------------------------------------------------------------------
# VASPs


def test_license_grants_the_role_and_suspension_is_recorded():
    chain = world()
    chain.vasp("exchange")
    assert "vasp" in chain.account("exchange").roles
    assert not chain.state.vasps[chain.addr("exchange")].suspended
    chain.ok("regulator", "suspend_vasp", {"vasp": chain.addr("exchange"), "reason": "AML"})
    vasp = chain.state.vasps[chain.addr("exchange")]
    assert (vasp.suspended, vasp.reason) == (True, "AML")


VASP_REFUSALS = [
    (
        "license twice",
        lambda c: c.vasp("exchange"),
        "regulator",
        "license_vasp",
        lambda c: {"vasp": c.addr("exchange"), "name": "x"},
        Code.BAD_FIELD,
    ),
    (
        "license without name",
        None,
        "regulator",
        "license_vasp",
        lambda c: {"vasp": c.addr("exchange")},
        Code.BAD_FIELD,
    ),
    (
        "ministry licenses",
        None,
        "ministry",
        "license_vasp",
        lambda c: {"vasp": c.addr("exchange"), "name": "x"},
        Code.UNAUTHORIZED,
    ),
    (
        "suspend unknown",
        None,
        "regulator",
        "suspend_vasp",
        lambda c: {"vasp": c.addr("exchange"), "reason": "x"},
        Code.VASP_NOT_LICENSED,
    ),
    (
        "suspend twice",
        lambda c: (
            c.vasp("exchange"),
            c.ok("regulator", "suspend_vasp", {"vasp": c.addr("exchange"), "reason": "x"}),
        ),
        "regulator",
        "suspend_vasp",
        lambda c: {"vasp": c.addr("exchange"), "reason": "x"},
        Code.VASP_SUSPENDED,
    ),
    (
        "auditor suspends",
        lambda c: c.vasp("exchange"),
        "auditor",
        "suspend_vasp",
        lambda c: {"vasp": c.addr("exchange"), "reason": "x"},
        Code.UNAUTHORIZED,
    ),
]


@pytest.mark.parametrize(
    "setup,sender,op,args,code", [c[1:] for c in VASP_REFUSALS], ids=[c[0] for c in VASP_REFUSALS]
)
def test_vasp_refusals(setup, sender, op, args, code):
    chain = world()
    if setup is not None:
        setup(chain)
    chain.expect(code, sender, op, args(chain))


def test_suspended_vasp_cannot_move_its_own_units():
    chain = world()
    chain.vasp("exchange")
    chain.issue(BOND, "exchange", 5)
    chain.ok("regulator", "suspend_vasp", {"vasp": chain.addr("exchange"), "reason": "x"})
    chain.expect(
        Code.VASP_SUSPENDED,
        "exchange",
        "transfer",
        {"instrument": BOND, "to": chain.addr("alice"), "amount": 1},
    )


# ---------------------------------------------------------------------------------------
# onboarding


def onboard(chain: Chain, name: str = "carol", **changes) -> dict:
    args = {
        "investor": chain.addr(name),
        "country": "AE",
        "category": "professional",
        "kyc_expiry": "2027-06-30",
    }
    for key, value in changes.items():
        if value is None:
            del args[key]
        else:
            args[key] = value
    return args


def test_regulator_onboards_with_a_kyc_file():
    chain = world()
    chain.ok("regulator", "onboard_investor", onboard(chain))
    account = chain.account("carol")
    assert account.roles == ("investor",)
    assert account.kyc == Kyc(
        "AE", "professional", date(2027, 6, 30), chain.addr("regulator"), None
    )


def test_vasp_onboards_its_own_client_and_renewal_replaces_the_file():
    chain = world()
    chain.vasp("exchange")
    chain.ok("exchange", "onboard_investor", onboard(chain))
    assert chain.account("carol").kyc.vasp == chain.addr("exchange")
    chain.ok("exchange", "onboard_investor", onboard(chain, kyc_expiry="2029-01-01"))
    assert chain.account("carol").kyc.expiry == date(2029, 1, 1)


def _suspended_exchange(chain: Chain) -> None:
    chain.vasp("exchange")
    chain.ok("regulator", "suspend_vasp", {"vasp": chain.addr("exchange"), "reason": "x"})


ONBOARD_REFUSALS = [
    ("unknown category", None, "regulator", lambda c: onboard(c, category="whale"), Code.BAD_FIELD),
    ("lower-case country", None, "regulator", lambda c: onboard(c, country="ae"), Code.BAD_FIELD),
    ("unassigned country", None, "regulator", lambda c: onboard(c, country="XX"), Code.BAD_FIELD),
    (
        "expired already",
        None,
        "regulator",
        lambda c: onboard(c, kyc_expiry="2025-12-31"),
        Code.BAD_FIELD,
    ),
    ("an institution", None, "regulator", lambda c: onboard(c, "ministry"), Code.BAD_FIELD),
    ("ministry attests", None, "ministry", onboard, Code.UNAUTHORIZED),
    (
        "VASP for another VASP",
        lambda c: (c.vasp("exchange"), c.vasp("broker")),
        "exchange",
        lambda c: onboard(c, vasp=c.addr("broker")),
        Code.UNAUTHORIZED,
    ),
    ("suspended VASP attests", _suspended_exchange, "exchange", onboard, Code.VASP_SUSPENDED),
    (
        "regulator names a suspended VASP",
        _suspended_exchange,
        "regulator",
        lambda c: onboard(c, vasp=c.addr("exchange")),
        Code.VASP_SUSPENDED,
    ),
]


@pytest.mark.parametrize(
    "setup,sender,args,code",
    [c[1:] for c in ONBOARD_REFUSALS],
    ids=[c[0] for c in ONBOARD_REFUSALS],
)
def test_onboard_refusals(setup, sender, args, code):
    chain = world()
    if setup is not None:
        setup(chain)
    chain.expect(code, sender, "onboard_investor", args(chain))


# ---------------------------------------------------------------------------------------
# freeze / unfreeze


def freeze_args(chain: Chain, name: str = "alice", **changes) -> dict:
    args = {"account": chain.addr(name), "reason_code": 12, "legal_reference": "FIA case 7"}
    for key, value in changes.items():
        if value is None:
            del args[key]
        else:
            args[key] = value
    return args


def test_freeze_and_unfreeze_an_account():
    chain = world()
    receipt = chain.ok("regulator", "freeze", freeze_args(chain))
    assert chain.account("alice").frozen.legal_reference == "FIA case 7"
    assert receipt.events[0].attributes["reason_code"] == 12
    chain.ok("regulator", "unfreeze", freeze_args(chain))
    assert chain.account("alice").frozen is None


def test_freeze_and_unfreeze_an_amount():
    chain = world()
    chain.ok("regulator", "freeze", freeze_args(chain, instrument=BOND, amount=60))
    chain.ok("regulator", "freeze", freeze_args(chain, instrument=BOND, amount=40))
    assert chain.state.frozen_amount(BOND, chain.addr("alice")) == 100
    chain.ok("regulator", "unfreeze", freeze_args(chain, instrument=BOND, amount=25))
    assert chain.state.frozen_amount(BOND, chain.addr("alice")) == 75


FREEZE_REFUSALS = [
    (
        "no legal reference",
        None,
        "freeze",
        lambda c: freeze_args(c, legal_reference=None),
        Code.BAD_FIELD,
    ),
    (
        "amount without instrument",
        None,
        "freeze",
        lambda c: freeze_args(c, amount=5),
        Code.BAD_FIELD,
    ),
    ("ministry freezes", None, "freeze", freeze_args, Code.UNAUTHORIZED, "ministry"),
    ("unknown account", None, "freeze", lambda c: freeze_args(c, "nobody"), Code.ACCOUNT_NOT_FOUND),
    (
        "unknown instrument",
        None,
        "freeze",
        lambda c: freeze_args(c, instrument="NOPE", amount=1),
        Code.INSTRUMENT_NOT_FOUND,
    ),
    (
        "frozen twice",
        lambda c: c.ok("regulator", "freeze", freeze_args(c)),
        "freeze",
        freeze_args,
        Code.ACCOUNT_FROZEN,
    ),
    (
        "more than free",
        lambda c: c.ok("regulator", "freeze", freeze_args(c, instrument=BOND, amount=90)),
        "freeze",
        lambda c: freeze_args(c, instrument=BOND, amount=11),
        Code.INSUFFICIENT_UNFROZEN_BALANCE,
    ),
    (
        "zero amount",
        None,
        "freeze",
        lambda c: freeze_args(c, instrument=BOND, amount=0),
        Code.INVALID_AMOUNT,
    ),
    ("unfreeze a free account", None, "unfreeze", freeze_args, Code.BAD_FIELD),
    (
        "unfreeze more than frozen",
        lambda c: c.ok("regulator", "freeze", freeze_args(c, instrument=BOND, amount=10)),
        "unfreeze",
        lambda c: freeze_args(c, instrument=BOND, amount=11),
        Code.INVALID_AMOUNT,
    ),
    (
        "auditor unfreezes",
        lambda c: c.ok("regulator", "freeze", freeze_args(c)),
        "unfreeze",
        freeze_args,
        Code.UNAUTHORIZED,
        "auditor",
    ),
]


@pytest.mark.parametrize(
    "setup,op,args,code,sender",
    [(*c[1:], "regulator")[:5] for c in FREEZE_REFUSALS],
    ids=[c[0] for c in FREEZE_REFUSALS],
)
def test_freeze_refusals(setup, op, args, code, sender):
    chain = world()
    if setup is not None:
        setup(chain)
    chain.expect(code, sender, op, args(chain))


# ---------------------------------------------------------------------------------------
# key recovery


def recover(chain: Chain, name: str, new_key: bytes) -> dict:
    return {"account": chain.addr(name), "new_public_key": new_key}


def test_recovered_account_keeps_its_address_and_only_the_new_key_speaks():
    chain = world()
    lost = chain.key("alice")
    new = generate_key(b"\x42" * 32)
    chain.ok(
        "regulator",
        "recover_key",
        recover(chain, "alice", new.public_key),
        cosigners=("central-bank",),
    )
    to_bob = {"instrument": BOND, "to": chain.addr("bob"), "amount": 1}
    receipt = chain.expect(Code.SENDER_NOT_SIGNED, "alice", "transfer", to_bob, signer=lost)
    assert not receipt.executed
    chain.ok("alice", "transfer", to_bob, signer=new)
    assert chain.balance(BOND, "alice") == 99  # same address, same holdings


def test_recovered_institution_key_counts_as_approval_and_the_old_one_does_not():
    chain = world()
    new = generate_key(b"\x43" * 32)
    chain.ok(
        "central-bank",
        "recover_key",
        recover(chain, "regulator", new.public_key),
        cosigners=("regulator",),
    )
    chain.keys["regulator-old"] = chain.keys["regulator"]
    args = recover(chain, "bob", generate_key(b"\x44" * 32).public_key)
    # The old regulator key approves nothing any more.
    chain.expect(
        Code.MISSING_APPROVALS, "central-bank", "recover_key", args, cosigners=("regulator-old",)
    )
    chain.keys["regulator"] = new
    chain.ok("central-bank", "recover_key", args, cosigners=("regulator",))


RECOVER_REFUSALS = [
    (
        "not a point",
        lambda c: recover(c, "alice", b"\x00" * 32),
        ("central-bank",),
        "regulator",
        Code.BAD_FIELD,
    ),
    (
        "short key",
        lambda c: recover(c, "alice", b"\x01" * 31),
        ("central-bank",),
        "regulator",
        Code.BAD_FIELD,
    ),
    (
        "key of another account",
        lambda c: recover(c, "alice", c.key("bob").public_key),
        ("central-bank",),
        "regulator",
        Code.BAD_FIELD,
    ),
    (
        "one institution",
        lambda c: recover(c, "alice", generate_key(b"\x45" * 32).public_key),
        (),
        "regulator",
        Code.MISSING_APPROVALS,
    ),
    (
        "auditor sends",
        lambda c: recover(c, "alice", generate_key(b"\x45" * 32).public_key),
        ("central-bank", "regulator"),
        "auditor",
        Code.UNAUTHORIZED,
    ),
    (
        "unknown account",
        lambda c: recover(c, "nobody", generate_key(b"\x45" * 32).public_key),
        ("central-bank",),
        "regulator",
        Code.ACCOUNT_NOT_FOUND,
    ),
]


@pytest.mark.parametrize(
    "args,cosigners,sender,code",
    [c[1:] for c in RECOVER_REFUSALS],
    ids=[c[0] for c in RECOVER_REFUSALS],
)
def test_recover_refusals(args, cosigners, sender, code):
    chain = world()
    chain.expect(code, sender, "recover_key", args(chain), cosigners=cosigners)


def test_a_vasp_cannot_take_over_another_vasps_client():
    chain = world()
    chain.vasp("exchange")
    chain.vasp("broker")
    chain.ok("exchange", "onboard_investor", onboard(chain))
    chain.expect(Code.UNAUTHORIZED, "broker", "onboard_investor", onboard(chain))
    # The regulator may move the client.
    chain.ok("regulator", "onboard_investor", onboard(chain, vasp=chain.addr("broker")))
    assert chain.account("carol").kyc.vasp == chain.addr("broker")


def test_recovering_back_to_the_original_key_unbinds_the_interim_one():
    chain = world()
    original = chain.key("alice")
    interim = generate_key(b"\x46" * 32)
    approvals = {"cosigners": ("central-bank",)}
    chain.ok("regulator", "recover_key", recover(chain, "alice", interim.public_key), **approvals)
    assert chain.state.key_bindings[interim.public_key].address == chain.addr("alice")
    chain.ok("regulator", "recover_key", recover(chain, "alice", original.public_key), **approvals)
    assert chain.account("alice").public_key is None
    assert interim.public_key not in chain.state.key_bindings
    to_bob = {"instrument": BOND, "to": chain.addr("bob"), "amount": 1}
    chain.expect(Code.SENDER_NOT_SIGNED, "alice", "transfer", to_bob, signer=interim)
    chain.ok("alice", "transfer", to_bob, signer=original)
    assert chain.state.invariant_violations() == []
