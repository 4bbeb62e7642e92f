"""The genesis document: the default one, its validation, its hash, the state it starts."""

from __future__ import annotations

import copy
import json

import pytest

from ledger.commitment import StateTree
from ledger.crypto import address_from_text, generate_key
from ledger.genesis import (
    DEFAULT_PROGRAMME_CAP_USD_CENTS,
    GenesisError,
    default_genesis,
    genesis_hash,
    state_from_genesis,
    validate_genesis,
)
from ledger.ops import REQUIRED_POLICY_RULES
from ledger.types import ApprovalRule

NAMES = ("ministry", "central-bank", "regulator", "auditor")


def key(label: str):
    return generate_key(label.encode().ljust(32, b"\x00"))


def genesis() -> dict:
    return default_genesis(
        validators=[(n, key("v-" + n).public_key) for n in NAMES],
        institutions={n: key(n).address for n in NAMES},
        chain_id="khazana-test",
        genesis_time_ms=1_767_225_600_000,
    )


def test_default_genesis_has_the_programme_cap_and_every_policy_rule():
    doc = genesis()
    assert doc["programme_cap_usd_cents"] == 200_000_000_000 == DEFAULT_PROGRAMME_CAP_USD_CENTS
    assert set(doc["policy"]) == REQUIRED_POLICY_RULES
    assert doc["policy"]["forced_transfer"] == {"roles": ["issuer", "regulator"], "min": 2}
    roles = {inst["name"]: inst["roles"] for inst in doc["institutions"]}
    assert "issuer" in roles["ministry"]
    assert {"registrar", "paying_agent", "cash_issuer"} <= set(roles["central-bank"])
    assert "regulator" in roles["regulator"]
    assert "auditor" in roles["auditor"]


def test_genesis_is_json_and_its_hash_survives_a_round_trip():
    doc = genesis()
    again = json.loads(json.dumps(doc))
    assert genesis_hash(again) == genesis_hash(doc)
    assert len(genesis_hash(doc)) == 32
    other = copy.deepcopy(doc)
    other["parameters"]["closed_period_days"] = 14
    assert genesis_hash(other) != genesis_hash(doc)


def test_state_from_genesis():
    doc = genesis()
    state = state_from_genesis(doc)
    ministry = state.accounts[key("ministry").address]
    assert ministry.name == "ministry"
    assert ministry.roles == ("issuer", "validator_operator")
    assert ministry.nonce == 0
    assert state.policy.rules["key_recovery"] == ApprovalRule(("registrar", "regulator"), 2)
    assert len(state.validator_set.validators) == 4
    assert state.programme.outstanding_usd_cents == 0
    # Genesis accounts come from the document's text addresses.
    for inst in doc["institutions"]:
        assert address_from_text(inst["address"]) in state.accounts


def _broken(mutate) -> dict:
    doc = genesis()
    mutate(doc)
    return doc


BROKEN = [
    ("extra key", lambda d: d.update(extra=1), "exactly the keys"),
    ("chain id with a space", lambda d: d.update(chain_id="a b"), "chain_id"),
    ("negative time", lambda d: d.update(genesis_time_ms=-1), "genesis_time_ms"),
    ("no validators", lambda d: d.update(validators=[]), "validators"),
    (
        "validator key not hex",
        lambda d: d["validators"][0].update(public_key="zz" * 32),
        "validators[0].public_key",
    ),
    (
        "validator key small order",
        lambda d: d["validators"][0].update(public_key="00" * 32),
        "validators[0].public_key",
    ),
    ("zero power", lambda d: d["validators"][1].update(power=0), "validators[1].power"),
    ("duplicate validator", lambda d: d["validators"].append(dict(d["validators"][0])), "repeats"),
    (
        "bad address checksum",
        lambda d: d["institutions"][0].update(address=d["institutions"][0]["address"][:-1] + "q"),
        "institutions[0].address",
    ),
    (
        "unknown role",
        lambda d: d["institutions"][0].update(roles=["king"]),
        "institutions[0].roles",
    ),
    (
        "duplicate institution",
        lambda d: d["institutions"].append(dict(d["institutions"][0])),
        "repeats",
    ),
    ("missing rule", lambda d: d["policy"].pop("forced_transfer"), "lacks rules"),
    (
        "unknown rule",
        lambda d: d["policy"].update(teleport={"roles": ["issuer"], "min": 1}),
        "unknown operations",
    ),
    ("min zero", lambda d: d["policy"].update(freeze={"roles": ["regulator"], "min": 0}), "min"),
    (
        "unsatisfiable",
        lambda d: d["policy"].update(freeze={"roles": ["regulator"], "min": 2}),
        "needs 2 institutions",
    ),
    ("zero cap", lambda d: d.update(programme_cap_usd_cents=0), "programme_cap"),
    ("float cap", lambda d: d.update(programme_cap_usd_cents=2e11), "programme_cap"),
    (
        "closed period zero",
        lambda d: d["parameters"].update(closed_period_days=0),
        "closed_period_days",
    ),
    (
        "no categories",
        lambda d: d["parameters"].update(investor_categories=[]),
        "investor_categories",
    ),
]


@pytest.mark.parametrize("mutate,message", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_validation_names_the_problem(mutate, message):
    with pytest.raises(GenesisError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_genesis(_broken(mutate))


def test_state_from_an_invalid_genesis_is_refused():
    with pytest.raises(GenesisError):
        state_from_genesis(_broken(lambda d: d.update(chain_id="")))


# A genesis file as versions before institutions were counted wrote it (the format has not
# changed): it must still load, hash the same, and map each institution's client account.
OLDER_GENESIS = """{
  "chain_id": "khazana-old",
  "genesis_time_ms": 1767225600000,
  "validators": [{"name": "ministry", "power": 10,
    "public_key": "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"}],
  "institutions": [
    {"name": "ministry", "address": "kz1793ctwdgnrhff39mgwr8c2r0yx63xpgsk536l9",
     "roles": ["issuer", "validator_operator"]},
    {"name": "central-bank", "address": "kz1zpsjhd7amnrx5r04m9wttup8ymdapt59v4n4dk",
     "roles": ["cash_issuer", "paying_agent", "registrar", "validator_operator"]},
    {"name": "regulator", "address": "kz1a6g6g3p9guyu2c3x0d90vq8zxy3lup7x5mnukc",
     "roles": ["regulator", "validator_operator"]},
    {"name": "auditor", "address": "kz1fuuwktujgare76qtfhkrrl33pln42wgwzwfgqs",
     "roles": ["auditor", "reserve_custodian", "validator_operator"]}
  ],
  "policy": {"forced_transfer": {"roles": ["issuer", "regulator"], "min": 2}},
  "programme_cap_usd_cents": 200000000000,
  "parameters": {"closed_period_days": 15, "reserve_max_age_s": 2592000,
                 "investor_categories": ["institutional", "professional", "retail"]}
}"""


def test_an_older_genesis_file_loads_and_maps_its_institutions():
    doc = json.loads(OLDER_GENESIS)
    doc["policy"] = genesis()["policy"]  # every rule, as `khazana init` has always written
    validate_genesis(doc)
    # Both values computed by the code before institutions were counted (commit 51cbb4b):
    # the same document, the same genesis state, so an existing chain's height 0 is unchanged.
    assert genesis_hash(doc).hex() == (
        "7b1a70c48715e9dedfd10b2ca3e409971f991e38a419de792d2f24a8b2e0af2a"
    )
    root = StateTree().apply(state_from_genesis(doc).take_changes())
    assert root.hex() == "bd2fe1b2560f69b31d890a86d75bdd41322e82f58c78a9993d8d541a002d943d"
    state = state_from_genesis(doc)
    for inst in doc["institutions"]:
        account = state.accounts[address_from_text(inst["address"])]
        assert account.institution == inst["name"]
        assert account.roles == tuple(sorted(inst["roles"]))


def test_a_rule_needs_as_many_genesis_institutions_as_its_min():
    doc = genesis()
    # Only the regulator holds the regulator role: a rule needing two of them is refused.
    doc["policy"]["freeze"] = {"roles": ["regulator"], "min": 2}
    with pytest.raises(GenesisError, match=r"needs 2 institutions holding \['regulator'\]"):
        validate_genesis(doc)
