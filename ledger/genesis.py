"""The genesis document: the chain's first validators, institutions, policy and parameters.

A genesis document is a JSON-able dict (it is written to `genesis.json` by `khazana init`
and served by the `genesis` RPC method):

    {
      "chain_id": "khazana-local",
      "genesis_time_ms": 1767225600000,           # block time of height 0, ms since epoch
      "validators": [{"name": "ministry", "public_key": "<64 hex>", "power": 10}, ...],
      "institutions": [{"name": "ministry", "address": "kz1...", "roles": ["issuer", ...]}],
      "policy": {"forced_transfer": {"roles": ["issuer", "regulator"], "min": 2}, ...},
      "programme_cap_usd_cents": 200000000000,    # $2,000,000,000
      "parameters": {"closed_period_days": 15, "reserve_max_age_s": 2592000,
                     "investor_categories": ["institutional", "professional", "retail"]}
    }

`parameters` may also hold `block_time_step_ms` (test networks only, absent by default): block
h's header time is then exactly block h-1's time + the step, set by the proposer and checked
by every validator, so chain time runs ahead of the clock at a known pace and a 91-day T-bill
can mature during a demo (docs/NODE.md, "Chain time"). It changes no ledger rule: a block's
time is the one input it changes.

Which institutions must sign what is data here, not code: every policy rule in
`ledger.ops.REQUIRED_POLICY_RULES` must be present, and each must be satisfiable by the
institutions (enough distinct institutions hold its roles), or the document is refused.

Each entry of `institutions` is one institution and the one account (its client key) that
belongs to it at genesis: the account record gets the roles and, as its institution
(`Account.institution`, stored in the record's `name`), the entry's name. Approval rules
count these institutions, never keys; further keys join an institution on chain, by a
`grant_role` that names it and that it signs (docs/PROTOCOL.md, section 7). The format is
unchanged since before institutions were counted, so older genesis files load as they are
and keep their hash.

`genesis_hash` is the hash of the canonical encoding of the document; nodes compare it
before they talk, so two nodes never run different rules under one chain id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ledger import codec
from ledger.codes import LedgerError
from ledger.crypto import (
    address_from_text,
    address_to_text,
    hash256,
    is_strict_public_key,
)
from ledger.ops import REQUIRED_POLICY_RULES
from ledger.ops.governance import MAX_INSTITUTION_NAME, MAX_POWER, parse_policy_rules
from ledger.protocol import LATEST_VERSION, ProtocolRecord
from ledger.state import State
from ledger.tx import CHAIN_ID_PATTERN
from ledger.types import (
    ALL_ROLES,
    AUDITOR,
    CASH_ISSUER,
    ISSUER,
    PAYING_AGENT,
    REGISTRAR,
    REGULATOR,
    RESERVE_CUSTODIAN,
    VALIDATOR_OPERATOR,
    Account,
    Parameters,
    Policy,
    Programme,
    Validator,
    ValidatorSet,
)

DEFAULT_PROGRAMME_CAP_USD_CENTS = 2_000_000_000 * 100  # the $2 billion programme
DEFAULT_CHAIN_ID = "khazana-local"
DEFAULT_VALIDATOR_POWER = 10

# The four founding institutions and what the law gives each.
DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "ministry": (ISSUER, VALIDATOR_OPERATOR),
    "central-bank": (REGISTRAR, PAYING_AGENT, CASH_ISSUER, VALIDATOR_OPERATOR),
    "regulator": (REGULATOR, VALIDATOR_OPERATOR),
    "auditor": (AUDITOR, RESERVE_CUSTODIAN, VALIDATOR_OPERATOR),
}


def _rule(roles: Sequence[str], minimum: int) -> dict:
    return {"roles": sorted(roles), "min": minimum}


# Maker-checker where an action is grave (forced transfer, key recovery, governance), a
# single competent institution where it is routine (issuing, paying, licensing).
DEFAULT_POLICY: dict[str, dict] = {
    "register_instrument": _rule([ISSUER, CASH_ISSUER], 1),
    "pause_instrument": _rule([ISSUER, CASH_ISSUER, REGULATOR], 1),
    "unpause_instrument": _rule([ISSUER, CASH_ISSUER, REGULATOR], 1),
    "issue": _rule([ISSUER, CASH_ISSUER], 1),
    "burn": _rule([ISSUER, CASH_ISSUER], 1),
    "attest_reserve": _rule([RESERVE_CUSTODIAN], 1),
    "pay_coupon": _rule([PAYING_AGENT], 1),
    "redeem": _rule([PAYING_AGENT], 1),
    "license_vasp": _rule([REGULATOR], 1),
    "suspend_vasp": _rule([REGULATOR], 1),
    "onboard_investor": _rule([REGULATOR, "vasp"], 1),
    "freeze": _rule([REGULATOR], 1),
    "unfreeze": _rule([REGULATOR], 1),
    "forced_transfer": _rule([REGULATOR, ISSUER], 2),
    "key_recovery": _rule([REGULATOR, REGISTRAR], 2),
    "grant_role": _rule([REGULATOR, ISSUER, REGISTRAR], 2),
    "revoke_role": _rule([REGULATOR, ISSUER, REGISTRAR], 2),
    "set_parameter": _rule([ISSUER, REGISTRAR, REGULATOR], 2),
    "set_policy": _rule([ISSUER, REGISTRAR, REGULATOR, AUDITOR], 3),
    "validator_set": _rule([VALIDATOR_OPERATOR], 3),
}

_KEYS = (
    "chain_id",
    "genesis_time_ms",
    "institutions",
    "parameters",
    "policy",
    "programme_cap_usd_cents",
    "validators",
)
_OPTIONAL_KEYS = ("protocol_version",)  # absent: version 1 (a genesis from before versions)
_PARAMETER_KEYS = ("closed_period_days", "investor_categories", "reserve_max_age_s")
_OPTIONAL_PARAMETER_KEYS = ("block_time_step_ms",)
MAX_BLOCK_TIME_STEP_MS = 366 * 86_400_000  # a year per block is already absurd


class GenesisError(ValueError):
    """A genesis document that cannot start a chain; the message says which field and why."""


def default_genesis(
    *,
    validators: Sequence[tuple[str, bytes]],
    institutions: Mapping[str, bytes],
    chain_id: str = DEFAULT_CHAIN_ID,
    genesis_time_ms: int = 0,
    programme_cap_usd_cents: int = DEFAULT_PROGRAMME_CAP_USD_CENTS,
    block_time_step_ms: int | None = None,
    protocol_version: int = LATEST_VERSION,
) -> dict:
    """The genesis `khazana init` writes (a new chain runs the latest protocol version): `validators` are (name, Ed25519 public key),
    `institutions` map a name ("ministry", "central-bank", "regulator", "auditor") to the
    address of its client key; each gets the roles in `DEFAULT_ROLES` (another name gets
    validator_operator only)."""
    parameters = Parameters()
    genesis = {
        "chain_id": chain_id,
        "genesis_time_ms": genesis_time_ms,
        "validators": [
            {"name": name, "public_key": key.hex(), "power": DEFAULT_VALIDATOR_POWER}
            for name, key in validators
        ],
        "institutions": [
            {
                "name": name,
                "address": address_to_text(address),
                "roles": sorted(DEFAULT_ROLES.get(name, (VALIDATOR_OPERATOR,))),
            }
            for name, address in institutions.items()
        ],
        "policy": {name: dict(rule) for name, rule in sorted(DEFAULT_POLICY.items())},
        "programme_cap_usd_cents": programme_cap_usd_cents,
        "parameters": {
            "closed_period_days": parameters.closed_period_days,
            "reserve_max_age_s": parameters.reserve_max_age_s,
            "investor_categories": list(parameters.investor_categories),
        },
    }
    if block_time_step_ms is not None:
        genesis["parameters"]["block_time_step_ms"] = block_time_step_ms
    genesis["protocol_version"] = protocol_version
    validate_genesis(genesis)
    return genesis


def genesis_hash(genesis: Mapping) -> bytes:
    """BLAKE2b-256 of the canonical encoding of the document."""
    return hash256(codec.encode(dict(genesis)))


def validate_genesis(genesis: object) -> None:
    """Raise `GenesisError` naming the first problem; return None for a usable document."""
    if not isinstance(genesis, Mapping):
        raise GenesisError("genesis must be a JSON object")
    if tuple(sorted(set(genesis) - set(_OPTIONAL_KEYS))) != _KEYS:
        raise GenesisError(
            f"genesis must have exactly the keys {list(_KEYS)} (and optionally "
            f"{list(_OPTIONAL_KEYS)}), has {sorted(genesis)}"
        )
    version = genesis.get("protocol_version", 1)
    if type(version) is not int or not 1 <= version <= LATEST_VERSION:
        raise GenesisError(
            f"protocol_version must be an integer in [1, {LATEST_VERSION}] (the versions this "
            f"node runs), got {version!r:.40}"
        )
    chain_id = genesis["chain_id"]
    if type(chain_id) is not str or not CHAIN_ID_PATTERN.fullmatch(chain_id):
        raise GenesisError(f"chain_id must be 1-64 printable ASCII characters, got {chain_id!r}")
    time_ms = genesis["genesis_time_ms"]
    if type(time_ms) is not int or not 0 <= time_ms < 2**63:
        raise GenesisError(f"genesis_time_ms must be a non-negative integer, got {time_ms!r}")
    _validators(genesis["validators"])
    holders = _institutions(genesis["institutions"])  # role -> institution names
    try:
        rules = parse_policy_rules(genesis["policy"])
    except ValueError as exc:
        raise GenesisError(f"policy: {exc}") from None
    missing = sorted(REQUIRED_POLICY_RULES - rules.keys())
    if missing:
        raise GenesisError(f"policy lacks rules for {missing}")
    extra = sorted(rules.keys() - REQUIRED_POLICY_RULES)
    if extra:
        raise GenesisError(f"policy has rules for unknown operations {extra}")
    for name, rule in rules.items():
        able = {inst for role in rule.roles for inst in holders.get(role, ())}
        if len(able) < rule.min:
            raise GenesisError(
                f"policy[{name!r}] needs {rule.min} institutions holding {list(rule.roles)}, "
                f"genesis has {len(able)}"
            )
    cap = genesis["programme_cap_usd_cents"]
    if type(cap) is not int or not 0 < cap < 2**63:
        raise GenesisError(f"programme_cap_usd_cents must be a positive integer, got {cap!r}")
    _parameters(genesis["parameters"])


def _validators(validators: object) -> None:
    if type(validators) is not list or not validators:
        raise GenesisError("validators must be a non-empty list")
    names, keys = set(), set()
    for index, v in enumerate(validators):
        where = f"validators[{index}]"
        if not isinstance(v, Mapping) or set(v) != {"name", "public_key", "power"}:
            raise GenesisError(f"{where} must have exactly name, public_key, power")
        if type(v["name"]) is not str or not 0 < len(v["name"]) <= 64:
            raise GenesisError(f"{where}.name must be text of 1-64 characters")
        key = _hex_key(v["public_key"], f"{where}.public_key")
        if type(v["power"]) is not int or not 0 < v["power"] <= MAX_POWER:
            raise GenesisError(f"{where}.power must be an integer in [1, 2**40]")
        if v["name"] in names or key in keys:
            raise GenesisError(f"{where} repeats a validator name or key")
        names.add(v["name"])
        keys.add(key)


def _hex_key(text: object, where: str) -> bytes:
    if type(text) is not str or len(text) != 64 or text != text.lower():
        raise GenesisError(f"{where} must be 64 lowercase hex characters")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise GenesisError(f"{where} is not hex") from None
    if not is_strict_public_key(key):
        raise GenesisError(f"{where} is not a valid Ed25519 public key")
    return key


def _institutions(institutions: object) -> dict[str, set[str]]:
    """Check the institutions; return role -> the names of the institutions holding it."""
    if type(institutions) is not list or not institutions:
        raise GenesisError("institutions must be a non-empty list")
    holders: dict[str, set[str]] = {}
    names, addresses = set(), set()
    for index, inst in enumerate(institutions):
        where = f"institutions[{index}]"
        if not isinstance(inst, Mapping) or set(inst) != {"name", "address", "roles"}:
            raise GenesisError(f"{where} must have exactly name, address, roles")
        name = inst["name"]
        if type(name) is not str or not 0 < len(name) <= MAX_INSTITUTION_NAME:
            raise GenesisError(f"{where}.name must be text of 1-64 characters")
        try:
            address = address_from_text(inst["address"])
        except (LedgerError, ValueError, TypeError) as exc:
            raise GenesisError(f"{where}.address: {exc}") from None
        roles = inst["roles"]
        if type(roles) is not list or not roles or any(r not in ALL_ROLES for r in roles):
            raise GenesisError(f"{where}.roles must be a non-empty list of {sorted(ALL_ROLES)}")
        if len(set(roles)) != len(roles):
            raise GenesisError(f"{where}.roles lists a role twice")
        if name in names or address in addresses:
            raise GenesisError(f"{where} repeats an institution name or address")
        names.add(name)
        addresses.add(address)
        for role in roles:
            holders.setdefault(role, set()).add(name)
    return holders


def block_time_step_ms(genesis: Mapping) -> int | None:
    """The fixed header-time step of a test network, None when block time is the clock's."""
    return genesis["parameters"].get("block_time_step_ms")


def _parameters(parameters: object) -> None:
    if (
        not isinstance(parameters, Mapping)
        or tuple(sorted(set(parameters) - set(_OPTIONAL_PARAMETER_KEYS))) != _PARAMETER_KEYS
    ):
        raise GenesisError(
            f"parameters must have exactly the keys {list(_PARAMETER_KEYS)} "
            f"(and optionally {list(_OPTIONAL_PARAMETER_KEYS)})"
        )
    if "block_time_step_ms" in parameters:
        step = parameters["block_time_step_ms"]
        if type(step) is not int or not 0 < step <= MAX_BLOCK_TIME_STEP_MS:
            raise GenesisError(
                f"parameters.block_time_step_ms must be an integer in [1, "
                f"{MAX_BLOCK_TIME_STEP_MS}], got {step!r}"
            )
    days = parameters["closed_period_days"]
    if type(days) is not int or not 0 < days <= 366:
        raise GenesisError("parameters.closed_period_days must be an integer in [1, 366]")
    age = parameters["reserve_max_age_s"]
    if type(age) is not int or not 0 < age <= 10 * 366 * 86_400:
        raise GenesisError("parameters.reserve_max_age_s must be a positive number of seconds")
    categories = parameters["investor_categories"]
    if (
        type(categories) is not list
        or not 0 < len(categories) <= 16
        or any(type(c) is not str or not c.isidentifier() or not c.islower() for c in categories)
        or len(set(categories)) != len(categories)
    ):
        raise GenesisError("parameters.investor_categories must be 1-16 distinct lowercase names")


def state_from_genesis(genesis: Mapping) -> State:
    """The state at height 0. Every record is dirty, so the first `take_changes` is the
    genesis state as the store and the commitment must hold it."""
    validate_genesis(genesis)
    params = genesis["parameters"]
    state = State(
        parameters=Parameters(
            closed_period_days=params["closed_period_days"],
            reserve_max_age_s=params["reserve_max_age_s"],
            investor_categories=tuple(sorted(params["investor_categories"])),
        ),
        policy=Policy(parse_policy_rules(genesis["policy"])),
        programme=Programme(genesis["programme_cap_usd_cents"]),
        validators=ValidatorSet(
            tuple(
                sorted(
                    (
                        Validator(v["name"], bytes.fromhex(v["public_key"]), v["power"])
                        for v in genesis["validators"]
                    ),
                    key=lambda v: v.public_key,
                )
            )
        ),
    )
    for inst in genesis["institutions"]:
        # The account's institution is the entry's name (`Account.institution`).
        address = address_from_text(inst["address"])
        state.put_account(Account(address, roles=tuple(sorted(inst["roles"])), name=inst["name"]))
    if "protocol_version" in genesis:
        # Absent: version 1 and no record, so a genesis from before versions keeps its state.
        state.put_protocol(ProtocolRecord(genesis["protocol_version"]))
    return state
