"""Roles, parameters, the approval policy and validator-set changes."""

from __future__ import annotations

from datetime import date

import pytest

from ledger.codes import Code
from ledger.ops.governance import promote_validator_changes
from ledger.types import ApprovalRule, Validator
from tests.ledger.test_ops_harness import Chain, key_for

BOND = "PKBOND28"


def role(chain: Chain, name: str, role_name: str, institution: str | None = None) -> dict:
    args = {"account": chain.addr(name), "role": role_name}
    if institution is not None:
        args["institution"] = institution
    return args


# ---------------------------------------------------------------------------------------
# roles


def test_grant_creates_the_account_and_revoke_removes_the_role():
    chain = Chain()
    receipt = chain.ok(
        "regulator",
        "grant_role",
        role(chain, "custodian", "reserve_custodian", "ministry"),
        cosigners=("ministry",),
    )
    assert chain.account("custodian").roles == ("reserve_custodian",)
    assert chain.account("custodian").institution == "ministry"
    assert receipt.events[0].attributes["role"] == "reserve_custodian"
    assert receipt.events[0].attributes["institution"] == "ministry"
    chain.ok(
        "regulator",
        "revoke_role",
        role(chain, "custodian", "reserve_custodian"),
        cosigners=("central-bank",),
    )
    assert chain.account("custodian").roles == ()


def test_a_revoked_role_stops_working():
    chain = Chain()
    chain.cash()
    chain.ok(
        "regulator",
        "revoke_role",
        role(chain, "central-bank", "paying_agent"),
        cosigners=("ministry",),
    )
    chain.bond()
    chain.at(date(2026, 7, 1)).expect(
        Code.UNAUTHORIZED,
        "central-bank",
        "pay_coupon",
        {"instrument": BOND, "cash": "PKR", "coupon_date": "2026-07-01"},
    )


ROLE_REFUSALS = [
    (
        "unknown role",
        "grant_role",
        lambda c: role(c, "x", "king"),
        ("ministry",),
        "regulator",
        Code.BAD_FIELD,
    ),
    (
        "vasp needs a licence",
        "grant_role",
        lambda c: role(c, "x", "vasp"),
        ("ministry",),
        "regulator",
        Code.BAD_FIELD,
    ),
    (
        "already held",
        "grant_role",
        lambda c: role(c, "ministry", "issuer"),
        ("central-bank",),
        "regulator",
        Code.BAD_FIELD,
    ),
    (
        "one approval",
        "grant_role",
        lambda c: role(c, "x", "auditor"),
        (),
        "regulator",
        Code.MISSING_APPROVALS,
    ),
    (
        "approver lacks the role",
        "grant_role",
        lambda c: role(c, "x", "auditor"),
        ("auditor",),
        "regulator",
        Code.MISSING_APPROVALS,
    ),
    (
        "auditor sends",
        "grant_role",
        lambda c: role(c, "x", "auditor"),
        ("ministry", "regulator"),
        "auditor",
        Code.UNAUTHORIZED,
    ),
    (
        "revoke unheld",
        "revoke_role",
        lambda c: role(c, "ministry", "regulator"),
        ("central-bank",),
        "regulator",
        Code.BAD_FIELD,
    ),
    (
        "revoke from nobody",
        "revoke_role",
        lambda c: role(c, "nobody", "issuer"),
        ("central-bank",),
        "regulator",
        Code.ACCOUNT_NOT_FOUND,
    ),
]


@pytest.mark.parametrize(
    "op,args,cosigners,sender,code",
    [c[1:] for c in ROLE_REFUSALS],
    ids=[c[0] for c in ROLE_REFUSALS],
)
def test_role_refusals(op, args, cosigners, sender, code):
    chain = Chain()
    chain.expect(code, sender, op, args(chain), cosigners=cosigners)


def test_an_unsigned_cosigner_key_is_not_an_approval():
    # Approvals are signatures: naming an institution is not enough, it must sign.
    chain = Chain()
    tx = chain.sign("regulator", "grant_role", role(chain, "x", "auditor"))
    assert len(tx.signatures) == 1
    chain.expect(Code.MISSING_APPROVALS, "regulator", "grant_role", role(chain, "x", "auditor"))


# ---------------------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize(
    "name,value,check",
    [
        ("closed_period_days", 5, lambda s: s.parameters.closed_period_days == 5),
        ("reserve_max_age_s", 3600, lambda s: s.parameters.reserve_max_age_s == 3600),
        (
            "investor_categories",
            ["retail", "accredited"],
            lambda s: s.parameters.investor_categories == ("accredited", "retail"),
        ),
        ("programme_cap_usd_cents", 10**12, lambda s: s.programme.cap_usd_cents == 10**12),
    ],
)
def test_set_parameter(name, value, check):
    chain = Chain()
    chain.ok("ministry", "set_parameter", {"name": name, "value": value}, cosigners=("regulator",))
    assert check(chain.state)


def test_a_shorter_closed_period_reopens_transfers():
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.investor("alice")
    chain.investor("bob")
    chain.issue(BOND, "alice", 10)
    to_bob = {"instrument": BOND, "to": chain.addr("bob"), "amount": 1}
    chain.at(date(2026, 6, 20)).expect(Code.CLOSED_PERIOD, "alice", "transfer", to_bob)
    chain.ok(
        "ministry",
        "set_parameter",
        {"name": "closed_period_days", "value": 5},
        cosigners=("regulator",),
    )
    chain.ok("alice", "transfer", to_bob)


def _outstanding(chain: Chain) -> None:
    chain.cash()
    chain.bond()
    chain.issue(BOND, "ministry", 1000)  # 360,000 US cents


PARAMETER_REFUSALS = [
    ("unknown", None, {"name": "gas_price", "value": 1}, ("regulator",), Code.BAD_FIELD),
    ("zero days", None, {"name": "closed_period_days", "value": 0}, ("regulator",), Code.BAD_FIELD),
    (
        "text for a number",
        None,
        {"name": "reserve_max_age_s", "value": "60"},
        ("regulator",),
        Code.BAD_FIELD,
    ),
    (
        "empty categories",
        None,
        {"name": "investor_categories", "value": []},
        ("regulator",),
        Code.BAD_FIELD,
    ),
    (
        "cap below outstanding",
        _outstanding,
        {"name": "programme_cap_usd_cents", "value": 359_999},
        ("regulator",),
        Code.PROGRAMME_CAP,
    ),
    (
        "one institution",
        None,
        {"name": "closed_period_days", "value": 5},
        (),
        Code.MISSING_APPROVALS,
    ),
]


@pytest.mark.parametrize(
    "setup,args,cosigners,code",
    [c[1:] for c in PARAMETER_REFUSALS],
    ids=[c[0] for c in PARAMETER_REFUSALS],
)
def test_parameter_refusals(setup, args, cosigners, code):
    chain = Chain()
    if setup is not None:
        setup(chain)
    chain.expect(code, "ministry", "set_parameter", args, cosigners=cosigners)


# ---------------------------------------------------------------------------------------
# policy


def test_set_policy_changes_who_must_approve():
    chain = Chain()
    chain.ok(
        "ministry",
        "set_policy",
        {"operation": "freeze", "roles": ["regulator", "auditor"], "min": 2},
        cosigners=("regulator", "central-bank"),
    )
    assert chain.state.policy.rules["freeze"] == ApprovalRule(("auditor", "regulator"), 2)
    chain.investor("alice")
    freeze = {"account": chain.addr("alice"), "reason_code": 1, "legal_reference": "L"}
    chain.expect(Code.MISSING_APPROVALS, "regulator", "freeze", freeze)
    chain.ok("regulator", "freeze", freeze, cosigners=("auditor",))


POLICY_REFUSALS = [
    (
        "open operation",
        {"operation": "transfer", "roles": ["regulator"], "min": 1},
        ("regulator", "central-bank"),
        Code.BAD_FIELD,
    ),
    (
        "unknown role",
        {"operation": "freeze", "roles": ["sheriff"], "min": 1},
        ("regulator", "central-bank"),
        Code.BAD_FIELD,
    ),
    (
        "min zero",
        {"operation": "freeze", "roles": ["regulator"], "min": 0},
        ("regulator", "central-bank"),
        Code.BAD_FIELD,
    ),
    (
        "two of three",
        {"operation": "freeze", "roles": ["regulator"], "min": 1},
        ("regulator",),
        Code.MISSING_APPROVALS,
    ),
]


@pytest.mark.parametrize(
    "args,cosigners,code", [c[1:] for c in POLICY_REFUSALS], ids=[c[0] for c in POLICY_REFUSALS]
)
def test_policy_refusals(args, cosigners, code):
    chain = Chain()
    chain.expect(code, "ministry", "set_policy", args, cosigners=cosigners)


# ---------------------------------------------------------------------------------------
# validators


def new_validator(power: int = 10) -> dict:
    return {"name": "validator-5", "public_key": key_for("validator-5").public_key, "power": power}


def test_validator_change_is_pending_with_its_height_then_promoted():
    chain = Chain()
    before = chain.state.validator_set.validators
    receipt = chain.ok(
        "ministry",
        "change_validators",
        {"changes": [new_validator()]},
        cosigners=("regulator", "auditor"),
    )
    decided = chain.height
    current = chain.state.validator_set
    assert current.validators == before  # not applied by the ledger itself
    assert current.pending[0].decided_height == decided
    assert receipt.events[0].attributes["decided_height"] == decided
    promote_validator_changes(chain.state, decided - 1)
    assert len(chain.state.validator_set.validators) == 4
    promote_validator_changes(chain.state, decided)
    assert len(chain.state.validator_set.validators) == 5
    assert chain.state.validator_set.pending == ()
    assert Validator("validator-5", key_for("validator-5").public_key, 10) in (
        chain.state.validator_set.validators
    )


def test_removing_every_validator_is_refused():
    chain = Chain()
    removals = [
        {"name": v.name, "public_key": v.public_key, "power": 0}
        for v in chain.state.validator_set.validators
    ]
    chain.expect(
        Code.BAD_FIELD,
        "ministry",
        "change_validators",
        {"changes": removals},
        cosigners=("regulator", "auditor"),
    )


VALIDATOR_REFUSALS = [
    ("empty", {"changes": []}, ("regulator", "auditor"), Code.BAD_FIELD),
    (
        "bad key",
        {"changes": [{**new_validator(), "public_key": b"\x00" * 32}]},
        ("regulator", "auditor"),
        Code.BAD_FIELD,
    ),
    ("negative power", {"changes": [new_validator(-1)]}, ("regulator", "auditor"), Code.BAD_FIELD),
    (
        "twice",
        {"changes": [new_validator(), new_validator(3)]},
        ("regulator", "auditor"),
        Code.BAD_FIELD,
    ),
    ("two of four", {"changes": [new_validator()]}, ("regulator",), Code.MISSING_APPROVALS),
]


@pytest.mark.parametrize(
    "args,cosigners,code",
    [c[1:] for c in VALIDATOR_REFUSALS],
    ids=[c[0] for c in VALIDATOR_REFUSALS],
)
def test_validator_refusals(args, cosigners, code):
    chain = Chain()
    chain.expect(code, "ministry", "change_validators", args, cosigners=cosigners)
