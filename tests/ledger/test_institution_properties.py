"""Property tests: approval rules count institutions, whatever keys and roles there are.

* No set of keys that all belong to one institution -- any roles, any number of keys, with
  or without keys of no institution beside them -- satisfies a rule with `min` >= 2.
* A rule with `min` n is satisfied by approvers from n distinct institutions holding its
  roles (the sender holding one), whatever else signs.
* `require_approvals` agrees with an independent model on random signer sets.
* No sequence of transactions signed only by one institution's keys (and keys of no
  institution) -- grants, revocations, policy changes, key recoveries, forced transfers,
  licences -- commits anything a two-institution rule guards, nor makes any key count as
  another institution.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.codes import Code, InvalidTransaction
from ledger.crypto import generate_key
from ledger.ops.common import TxView, require_approvals
from ledger.protocol import ProtocolRecord
from ledger.state import State
from ledger.types import (
    ALL_ROLES,
    VASP,
    Account,
    ApprovalRule,
    Parameters,
    Policy,
    Programme,
    ValidatorSet,
)
from tests.ledger.test_ops_harness import Chain

ROLES = sorted(ALL_ROLES)
INSTITUTION_NAMES = ("ministry", "central-bank", "regulator", "auditor", "observer", "bank-2")
# Eight keys: a transaction carries at most eight signatures.
KEYS = [generate_key(bytes([i + 1]) * 32) for i in range(8)]
OP = "guarded_op"

roles_st = st.lists(st.sampled_from(ROLES), unique=True, max_size=len(ROLES)).map(
    lambda roles: tuple(sorted(roles))
)
rule_roles_st = st.lists(st.sampled_from(ROLES), unique=True, min_size=1, max_size=4).map(
    lambda roles: tuple(sorted(roles))
)


def verdict(rule: ApprovalRule, signers: list[Account]) -> Code:
    """Run `require_approvals` for a transaction signed by `signers` (the first sends)."""
    state = State(
        parameters=Parameters(),
        policy=Policy({OP: rule}),
        programme=Programme(10**12),
        validators=ValidatorSet(()),
    )
    state.put_protocol(ProtocolRecord(2))  # the version whose rule counts institutions
    for account in signers:
        state.put_account(account)
    tx = TxView(signers[0].address, signers[0], tuple(KEYS[i].public_key for i in _idx(signers)))
    try:
        require_approvals(state, tx, OP)
    except InvalidTransaction as exc:
        return exc.code
    return Code.OK


def _idx(signers: list[Account]) -> list[int]:
    by_address = {key.address: i for i, key in enumerate(KEYS)}
    return [by_address[a.address] for a in signers]


def model(rule: ApprovalRule, signers: list[Account]) -> Code:
    """The rule as the design states it, written independently of the ledger."""
    if not set(signers[0].roles) & set(rule.roles):
        return Code.UNAUTHORIZED
    if rule.min == 1:
        return Code.OK
    institutions = {a.name for a in signers if a.name != "" and set(a.roles) & set(rule.roles)}
    return Code.OK if len(institutions) >= rule.min else Code.MISSING_APPROVALS


@st.composite
def one_institution(draw):
    """1-8 keys of one institution with any roles, then keys of no institution."""
    institution = draw(st.sampled_from(INSTITUTION_NAMES))
    own = draw(st.integers(1, 8))
    strays = draw(st.integers(0, 8 - own))
    signers = [
        Account(KEYS[i].address, roles=draw(roles_st), name=institution if i < own else "")
        for i in range(own + strays)
    ]
    return draw(st.permutations(signers))


@given(
    signers=one_institution(),
    roles=rule_roles_st,
    minimum=st.integers(2, 8),
)
@settings(max_examples=400, deadline=None)
def test_one_institution_never_satisfies_a_rule_that_needs_two(signers, roles, minimum):
    assert verdict(ApprovalRule(roles, minimum), signers) in (
        Code.MISSING_APPROVALS,
        Code.UNAUTHORIZED,
    )


@st.composite
def n_institutions(draw):
    """A rule with min n, one approver from each of n institutions holding one of its
    roles (the sender first), then any other keys: more of theirs, of no institution."""
    roles = draw(rule_roles_st)
    minimum = draw(st.integers(1, 6))
    names = draw(st.permutations(INSTITUTION_NAMES))[:minimum]
    signers = []
    for i, name in enumerate(names):
        held = {draw(st.sampled_from(roles)), *draw(roles_st)}
        signers.append(Account(KEYS[i].address, roles=tuple(sorted(held)), name=name))
    for i in range(minimum, draw(st.integers(minimum, 8))):
        name = draw(st.sampled_from(("", *INSTITUTION_NAMES)))
        signers.append(Account(KEYS[i].address, roles=draw(roles_st), name=name))
    return ApprovalRule(roles, minimum), [signers[0], *draw(st.permutations(signers[1:]))]


@given(case=n_institutions())
@settings(max_examples=400, deadline=None)
def test_n_institutions_holding_the_roles_satisfy_a_rule_with_min_n(case):
    rule, signers = case
    assert verdict(rule, signers) == Code.OK


@st.composite
def any_signers(draw):
    count = draw(st.integers(1, 8))
    return [
        Account(
            KEYS[i].address,
            roles=draw(roles_st),
            name=draw(st.sampled_from(("", *INSTITUTION_NAMES[:3]))),
        )
        for i in range(count)
    ]


@given(signers=any_signers(), roles=rule_roles_st, minimum=st.integers(1, 8))
@settings(max_examples=600, deadline=None)
def test_require_approvals_matches_the_model(signers, roles, minimum):
    rule = ApprovalRule(roles, minimum)
    assert verdict(rule, signers) == model(rule, signers)


def test_the_model_check_notices_a_key_count():
    """Negative control: the old rule (distinct keys holding a role) differs from the model
    on two keys of one institution, so the properties above can tell the two apart."""
    rule = ApprovalRule(("regulator",), 2)
    signers = [Account(KEYS[i].address, roles=("regulator",), name="regulator") for i in (0, 1)]
    assert model(rule, signers) == Code.MISSING_APPROVALS
    assert len({a.address for a in signers if "regulator" in a.roles}) >= rule.min


# ---------------------------------------------------------------------------------------
# Sequences signed by one institution alone

# The regulator's own keys beside its genesis account (bound with the ministry's help, once,
# before the sequence) and a key of no institution holding every role (a legacy state).
OWN_KEYS = ("regulator", "reg-2", "reg-3")
STRAY = "stray"
TARGETS = (*OWN_KEYS, STRAY, "newcomer", "ministry", "central-bank")
GRANTABLE = sorted(ALL_ROLES - {VASP})
POLICY_RULES = ("forced_transfer", "grant_role", "set_policy", "key_recovery", "set_parameter")


def _start() -> Chain:
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.investor("alice")
    chain.investor("bob")
    chain.issue("PKBOND28", "alice", 10)
    for name, roles in (("reg-2", ("regulator", "registrar")), ("reg-3", ("issuer", "auditor"))):
        for role in roles:
            chain.ok(
                "regulator",
                "grant_role",
                {"account": chain.addr(name), "role": role, "institution": "regulator"},
                cosigners=("ministry",),
            )
    stray = Account(chain.addr(STRAY), roles=tuple(GRANTABLE))
    chain.state.put_account(stray)
    chain.state.take_changes()
    return chain


action_st = st.tuples(
    st.sampled_from(
        (
            "grant_role",
            "revoke_role",
            "set_policy",
            "recover_key",
            "forced_transfer",
            "set_parameter",
            "license_vasp",
        )
    ),
    st.sampled_from(TARGETS),
    st.sampled_from(GRANTABLE),
    st.sampled_from(("", *INSTITUTION_NAMES)),
    st.integers(1, 3),
    st.lists(st.sampled_from((*OWN_KEYS, STRAY)), min_size=1, max_size=4, unique=True),
)


def _args(chain: Chain, op: str, target: str, role: str, institution: str, n: int) -> dict:
    address = chain.addr(target)
    if op in ("grant_role", "revoke_role"):
        args = {"account": address, "role": role}
        if institution and op == "grant_role":
            args["institution"] = institution
        return args
    if op == "set_policy":
        return {"operation": POLICY_RULES[n % len(POLICY_RULES)], "roles": [role], "min": n}
    if op == "recover_key":
        return {"account": address, "new_public_key": chain.key(f"{target}-new").public_key}
    if op == "set_parameter":
        return {"name": "closed_period_days", "value": n}
    if op == "license_vasp":
        return {"vasp": address, "name": target}
    return {
        "instrument": "PKBOND28",
        "from": chain.addr("alice"),
        "to": chain.addr("bob"),
        "amount": n,
        "reason_code": 1,
        "legal_reference": "Order",
    }


@given(actions=st.lists(action_st, min_size=1, max_size=12))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_no_sequence_signed_by_one_institution_escapes_a_two_institution_rule(actions):
    chain = _start()
    policy = chain.state.policy
    members = {a.address: a.institution for a in chain.state.accounts.values()}
    roles = {a.address: set(a.roles) - {VASP} for a in chain.state.accounts.values()}
    alice = chain.balance("PKBOND28", "alice")
    for op, target, role, institution, n, signers in actions:
        sender, *cosigners = signers
        rule = chain.state.policy.rules[{"recover_key": "key_recovery"}.get(op, op)]
        receipt = chain.run(
            sender, op, _args(chain, op, target, role, institution, n), cosigners=tuple(cosigners)
        )
        chain.state.take_changes()
        if rule.min >= 2:
            assert receipt.code != Code.OK, f"{op} by {signers} committed: {receipt.log}"
    # Nothing a two-institution rule guards changed, and no key changed institution; the
    # only role one institution can hand out alone is a VASP licence (a rule with min 1).
    assert chain.state.policy == policy
    assert chain.balance("PKBOND28", "alice") == alice
    for address, account in chain.state.accounts.items():
        assert account.institution == members.get(address, "")
        assert set(account.roles) - {VASP} == roles.get(address, set())
