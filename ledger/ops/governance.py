"""Changing the rules themselves: roles, parameters, the approval policy, the validator set.

All of these need the institutions' approvals named in the policy (genesis data).
"""

from __future__ import annotations

from dataclasses import replace

from ledger.codes import Code
from ledger.crypto import PUBLIC_KEY_BYTES, is_strict_public_key
from ledger.ops.common import (
    Args,
    TxView,
    fail,
    get_account,
    require_approvals,
    show,
    signed_by_institution,
)
from ledger.state import State
from ledger.types import (
    ALL_ROLES,
    INVESTOR,
    VASP,
    Account,
    ApprovalRule,
    BlockContext,
    Event,
    PendingValidatorChange,
    Policy,
    Programme,
    Validator,
    ValidatorSet,
)

VALSET_DELAY = 2
"""A validator change decided in block H is in force from block H + VALSET_DELAY. It must equal
the consensus core's `consensus.types.VALSET_DELAY` (the ledger imports nothing from consensus;
a test holds the two equal)."""
MAX_VALIDATORS = 100
MAX_PENDING_CHANGES = 16
MAX_POWER = 2**40
MAX_INSTITUTION_NAME = 64  # characters, as the genesis allows


def grant_role(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{account, role, institution?}`: grant a role (the vasp role comes with a licence:
    `license_vasp`).

    An account belongs to at most one institution, for good (`Account.institution`), and
    approvals count institutions. `institution` names the account's:

    * the account belongs to none yet: required for every role but investor. The grant binds
      the account to it, which needs, besides the policy's approvals, a signature of that
      institution itself (a key of it that holds a role): institutions cannot make a key
      count as another institution that did not agree, so k institutions never become k+1;
    * the account belongs to one: may be left out; naming another is INSTITUTION_MISMATCH.

    A role the account holds is refused (BAD_FIELD), except to bind an account of no
    institution: that is how a key granted a role before approvals counted institutions
    joins its institution.
    """
    if state.protocol_version < 2:
        return _grant_role_v1(state, tx, args)
    address = args.address("account")
    role = _role_arg(args)
    institution = args.opt_text("institution", default="", max_len=MAX_INSTITUTION_NAME)
    args.done()
    require_approvals(state, tx, "grant_role")
    account = state.accounts.get(address) or Account(address)
    current = account.institution
    if role in account.roles and (current or not institution):
        # (A held role may be granted again only to bind a key of no institution, e.g. one
        # granted before approvals counted institutions, to its institution.)
        fail(Code.BAD_FIELD, f"{show(address)} already holds the role {role!r}")
    if current:
        if institution and institution != current:
            fail(
                Code.INSTITUTION_MISMATCH,
                f"{show(address)} belongs to the institution {current!r}, "
                f"the grant names {institution!r}",
            )
    elif institution:
        if not signed_by_institution(state, tx, institution):
            signers = sorted({a.institution for a in tx.signer_accounts(state).values()} - {""})
            fail(
                Code.MISSING_APPROVALS,
                f"binding {show(address)} to the institution {institution!r} needs a signature "
                f"of {institution!r} itself; the signers belong to {signers}",
            )
        account = replace(account, name=institution)
    elif role != INVESTOR:
        fail(
            Code.BAD_FIELD,
            f"{show(address)} belongs to no institution: a grant of {role!r} must name one "
            f"(field 'institution')",
        )
    if role not in account.roles:
        account = replace(account, roles=tuple(sorted((*account.roles, role))))
    state.put_account(account)
    return [
        Event(
            "role_granted",
            {
                "account": address,
                "by": tx.sender,
                "institution": account.institution,
                "role": role,
            },
        )
    ]


def _grant_role_v1(state: State, tx: TxView, args: Args) -> list[Event]:
    """Protocol version 1's `grant_role {account, role}` (ledger/protocol.py), kept so that a
    chain started before version 2 replays as it ran: no institution to name or bind."""
    address = args.address("account")
    role = _role_arg(args)
    args.done()
    require_approvals(state, tx, "grant_role")
    account = state.accounts.get(address) or Account(address)
    if role in account.roles:
        fail(Code.BAD_FIELD, f"{show(address)} already holds the role {role!r}")
    state.put_account(replace(account, roles=tuple(sorted((*account.roles, role)))))
    return [Event("role_granted", {"account": address, "role": role, "by": tx.sender})]


def revoke_role(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{account, role}`: revoke a role. The account stays in its institution (and counts
    for it in a rule only while it holds one of the rule's roles)."""
    address = args.address("account")
    role = _role_arg(args)
    args.done()
    require_approvals(state, tx, "revoke_role")
    account = get_account(state, address)
    if role not in account.roles:
        fail(Code.BAD_FIELD, f"{show(address)} does not hold the role {role!r}")
    state.put_account(replace(account, roles=tuple(r for r in account.roles if r != role)))
    return [Event("role_revoked", {"account": address, "role": role, "by": tx.sender})]


def _role_arg(args: Args) -> str:
    role = args.text("role", max_len=32)
    if role not in ALL_ROLES:
        fail(Code.BAD_FIELD, f"unknown role {role!r}; roles are {sorted(ALL_ROLES)}")
    if role == VASP:
        fail(Code.BAD_FIELD, "the vasp role comes with a licence: use license_vasp/suspend_vasp")
    return role


# ---------------------------------------------------------------------------------------
# Parameters


def _positive_int(name: str, value: object, hi: int) -> int:
    if type(value) is not int or not 0 < value <= hi:
        fail(Code.BAD_FIELD, f"{name} must be an integer in [1, {hi}], got {value!r:.40}")
    return value


def set_parameter(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{name, value}`: change one parameter. Names: closed_period_days (1..366),
    reserve_max_age_s (1..10 years), investor_categories (list of names),
    programme_cap_usd_cents (not below what is outstanding)."""
    name = args.text("name", max_len=64)
    value = args.raw("value")
    args.done()
    parameters = state.parameters
    programme = state.programme
    if name == "closed_period_days":
        new = replace(parameters, closed_period_days=_positive_int(name, value, 366))
    elif name == "reserve_max_age_s":
        new = replace(parameters, reserve_max_age_s=_positive_int(name, value, 10 * 366 * 86_400))
    elif name == "investor_categories":
        if (
            type(value) is not list
            or not 0 < len(value) <= 16
            or any(type(v) is not str or not v.isidentifier() or not v.islower() for v in value)
            or len(set(value)) != len(value)
        ):
            fail(Code.BAD_FIELD, "investor_categories must be 1-16 distinct lowercase names")
        new = replace(parameters, investor_categories=tuple(sorted(value)))
    elif name == "programme_cap_usd_cents":
        cap = _positive_int(name, value, 2**63 - 1)
    else:
        fail(Code.BAD_FIELD, f"unknown parameter {name!r}")
    require_approvals(state, tx, "set_parameter")
    if name == "programme_cap_usd_cents":
        if cap < programme.outstanding_usd_cents:
            fail(
                Code.PROGRAMME_CAP,
                f"cap {cap} is below the {programme.outstanding_usd_cents} US cents outstanding",
            )
        state.put_programme(Programme(cap, programme.outstanding_usd_cents))
    else:
        state.put_parameters(new)
    shown = value if isinstance(value, int) else ",".join(value)
    return [Event("parameter_set", {"name": name, "value": shown, "by": tx.sender})]


def parse_policy_rules(value: object) -> dict[str, ApprovalRule]:
    """Policy data (genesis or `set_policy`): `{op: {"roles": [...], "min": n}}`, checked."""
    if type(value) is not dict or not value:
        raise ValueError("the policy must be a non-empty map of operation -> rule")
    rules: dict[str, ApprovalRule] = {}
    for op in sorted(value):
        rule = value[op]
        if type(rule) is not dict or set(rule) != {"roles", "min"}:
            raise ValueError(f"policy[{op!r}] must be a map with exactly 'roles' and 'min'")
        roles, minimum = rule["roles"], rule["min"]
        if type(roles) is not list or not roles or any(r not in ALL_ROLES for r in roles):
            raise ValueError(f"policy[{op!r}].roles must be a non-empty list of known roles")
        if len(set(roles)) != len(roles):
            raise ValueError(f"policy[{op!r}].roles lists a role twice")
        if type(minimum) is not int or not 1 <= minimum <= 8:
            # 8 = the most signatures a transaction can carry.
            raise ValueError(f"policy[{op!r}].min must be an integer in [1, 8]")
        rules[op] = ApprovalRule(tuple(sorted(roles)), minimum)
    return rules


def set_policy(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{operation, roles, min}`: change who must approve one policy rule (see `POLICY_NAMES`)."""
    operation = args.text("operation", max_len=64)
    rule_map = {"roles": args.raw("roles"), "min": args.raw("min")}
    args.done()
    # The policy holds exactly the rules of `ledger.ops.REQUIRED_POLICY_RULES` (the genesis is
    # refused otherwise, and a change replaces one rule), so it names the valid operations
    # without this module importing the registry that imports it.
    if operation not in state.policy.rules:
        fail(
            Code.BAD_FIELD,
            f"{operation!r} is not a policy rule; rules are {sorted(state.policy.rules)}",
        )
    try:
        rule = parse_policy_rules({operation: rule_map})[operation]
    except ValueError as exc:
        fail(Code.BAD_FIELD, str(exc))
    require_approvals(state, tx, "set_policy")
    rules = dict(state.policy.rules)
    rules[operation] = rule
    state.put_policy(Policy({op: rules[op] for op in sorted(rules)}))
    return [
        Event(
            "policy_set",
            {"operation": operation, "roles": ",".join(rule.roles), "min": rule.min},
        )
    ]


# ---------------------------------------------------------------------------------------
# Validators


def change_validators(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{changes: [{name, public_key, power}, ...]}`: add, re-weight (power > 0) or remove
    (power 0) validators. Recorded as pending with the height it was decided at; the chain
    puts it in force VALSET_DELAY blocks later (`promote_validator_changes`)."""
    raw = args.raw("changes")
    args.done()
    if type(raw) is not list or not 0 < len(raw) <= MAX_VALIDATORS:
        fail(Code.BAD_FIELD, f"changes must be a list of 1 to {MAX_VALIDATORS} entries")
    changes: list[Validator] = []
    for index, entry in enumerate(raw):
        if type(entry) is not dict or set(entry) != {"name", "public_key", "power"}:
            fail(Code.BAD_FIELD, f"changes[{index}] must have exactly name, public_key, power")
        name, key, power = entry["name"], entry["public_key"], entry["power"]
        if type(name) is not str or not 0 < len(name) <= 64:
            fail(Code.BAD_FIELD, f"changes[{index}].name must be text of 1-64 chars")
        if type(key) is not bytes or len(key) != PUBLIC_KEY_BYTES or not is_strict_public_key(key):
            fail(Code.BAD_FIELD, f"changes[{index}].public_key is not a valid Ed25519 key")
        if type(power) is not int or not 0 <= power <= MAX_POWER:
            fail(Code.BAD_FIELD, f"changes[{index}].power must be in [0, 2**40]")
        changes.append(Validator(name, key, power))
    if len({v.public_key for v in changes}) != len(changes):
        fail(Code.BAD_FIELD, "a validator appears twice in changes")
    require_approvals(state, tx, "validator_set")
    current = state.validator_set
    if len(current.pending) >= MAX_PENDING_CHANGES:
        fail(Code.BAD_FIELD, f"{MAX_PENDING_CHANGES} validator changes are already pending")
    result = apply_validator_changes(current.validators, changes)
    if not any(v.power for v in result):
        fail(Code.BAD_FIELD, "the change would leave no validator with voting power")
    pending = PendingValidatorChange(ctx.height, tuple(sorted(changes, key=lambda v: v.public_key)))
    state.put_validator_set(ValidatorSet(current.validators, (*current.pending, pending)))
    return [
        Event(
            "validator_change",
            {"decided_height": ctx.height, "changes": len(changes), "by": tx.sender},
        )
    ]


def apply_validator_changes(
    validators: tuple[Validator, ...], changes: list[Validator] | tuple[Validator, ...]
) -> tuple[Validator, ...]:
    """The set after `changes` (power 0 removes), sorted by public key."""
    by_key = {v.public_key: v for v in validators}
    for change in changes:
        if change.power == 0:
            by_key.pop(change.public_key, None)
        else:
            by_key[change.public_key] = change
    return tuple(by_key[k] for k in sorted(by_key))


def promote_validator_changes(state: State, decided_up_to: int) -> ValidatorSet:
    """Fold the pending changes decided at or before `decided_up_to` into the validators.

    Not a transaction: `Chain` calls it at the start of every block H with
    `decided_up_to = H - VALSET_DELAY`, at the same height on every node, so the state stays
    identical everywhere. Changes apply in decision order.
    """
    current = state.validator_set
    due = [p for p in current.pending if p.decided_height <= decided_up_to]
    if not due:
        return current
    validators = current.validators
    for change in due:
        validators = apply_validator_changes(validators, change.changes)
    updated = ValidatorSet(
        validators, tuple(p for p in current.pending if p.decided_height > decided_up_to)
    )
    state.put_validator_set(updated)
    return updated
