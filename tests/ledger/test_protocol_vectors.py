"""docs/PROTOCOL.md's test vectors, read from the document itself and checked against the code.

The document is the specification a client in another language is written from; parsing the
vectors out of it (rather than copying them here) means the two can never drift apart.
Vector blocks are fenced with the info string `vector` and hold `key: value` lines;
`codec-vectors` and `codec-rejects` blocks hold `left => right` lines.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path

import pytest

from ledger import bondmath, codec
from ledger.codes import Code, DecodeError
from ledger.crypto import (
    ADDRESS_DOMAIN_TAG,
    _convert_bits,
    address_from_public_key,
    address_from_text,
    address_to_text,
    generate_key,
    hash256,
    verify_signature,
)
from ledger.state import account_key
from ledger.tx import TxBody, decode_signed_tx, sign_tx, verify_tx_signatures
from ledger.types import Account

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
FENCE = re.compile(r"^```([\w-]+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def fenced_blocks(kind: str) -> list[str]:
    return [body for info, body in FENCE.findall(DOC.read_text("utf-8")) if info == kind]


def parse_vector(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        assert sep, f"not a 'key: value' line: {line!r}"
        assert key not in fields, f"duplicate field {key}"
        fields[key] = value.strip()
    return fields


VECTORS = [parse_vector(block) for block in fenced_blocks("vector")]


def vectors(kind: str) -> list[dict[str, str]]:
    return [v for v in VECTORS if v["kind"] == kind]


def arrow_lines(kind: str) -> list[tuple[str, str]]:
    lines = []
    for block in fenced_blocks(kind):
        for line in block.splitlines():
            left, sep, right = line.rpartition(" => ")
            assert sep, f"not a 'left => right' line: {line!r}"
            lines.append((left, right))
    return lines


def from_json(value):
    """The document's JSON notation: {"bin": "<hex>"} is a byte string."""
    if isinstance(value, dict):
        if list(value) == ["bin"]:
            return bytes.fromhex(value["bin"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def test_the_document_has_every_kind_of_vector():
    # A parse that silently found nothing would make every test below vacuous.
    assert len(vectors("hash")) >= 3
    assert len(vectors("key")) >= 3
    assert len(vectors("address-example")) == 1
    assert len(vectors("tx")) >= 2
    assert any(v["signers"].count(",") >= 1 for v in vectors("tx"))  # a multi-signer one
    assert len(arrow_lines("codec-vectors")) >= 30
    assert len(arrow_lines("codec-rejects")) >= 15
    assert "## 5. State commitment" in DOC.read_text() and "## 6. Blocks" in DOC.read_text()
    assert len(vectors("account")) >= 2
    assert any(v["op"] == "grant_role" and "institution" in v["args"] for v in vectors("tx"))


@pytest.mark.parametrize("text, expected", arrow_lines("codec-vectors"))
def test_codec_vector(text, expected):
    value = from_json(json.loads(text))
    assert codec.encode(value).hex() == expected
    assert codec.decode(bytes.fromhex(expected)) == value


@pytest.mark.parametrize("hex_data, code", arrow_lines("codec-rejects"))
def test_codec_reject_vector(hex_data, code):
    with pytest.raises(DecodeError) as info:
        codec.decode(bytes.fromhex(hex_data))
    assert info.value.code is Code[code]


@pytest.mark.parametrize("v", vectors("hash"), ids=lambda v: v["input"])
def test_hash_vector(v):
    data = b"" if v["input"] == "(empty)" else bytes.fromhex(v["input"])
    assert hash256(data).hex() == v["blake2b_256"]


@pytest.mark.parametrize("v", vectors("key"), ids=lambda v: v["name"])
def test_key_vector(v):
    key = generate_key(bytes.fromhex(v["seed"]))
    assert key.public_key.hex() == v["public_key"]
    assert key.address.hex() == v["address_hex"]
    assert address_to_text(key.address) == v["address"]
    assert address_from_text(v["address"]) == key.address


def test_address_worked_example():
    (v,) = vectors("address-example")
    public_key = bytes.fromhex(v["public_key"])
    hash_input = bytes.fromhex(v["hash_input"])
    assert hash_input == ADDRESS_DOMAIN_TAG + public_key
    assert hash_input[:19] == b"khazana/address/v1\x00"
    # Independently of crypto.py: plain BLAKE2b with a 20-byte digest.
    assert hashlib.blake2b(hash_input, digest_size=20).hexdigest() == v["address_hex"]
    assert address_from_public_key(public_key).hex() == v["address_hex"]
    groups = [int(g) for g in v["groups"].split()]
    assert _convert_bits(bytes.fromhex(v["address_hex"]), 8, 5, pad=True) == groups
    charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    assert v["address"][3:35] == "".join(charset[g] for g in groups)
    assert address_to_text(bytes.fromhex(v["address_hex"])) == v["address"]


KEYS_BY_NAME = {v["name"]: generate_key(bytes.fromhex(v["seed"])) for v in vectors("key")}


@pytest.mark.parametrize("v", vectors("tx"), ids=lambda v: v["name"])
def test_tx_vector(v):
    signers = [KEYS_BY_NAME[name.strip()] for name in v["signers"].split(",")]
    body = TxBody(
        v["chain"],
        address_from_text(v["sender"]),
        int(v["nonce"]),
        v["op"],
        from_json(json.loads(v["args"])),
    )
    assert body.encoded.hex() == v["body"]
    assert body.signing_bytes().hex() == v["signing_bytes"]
    assert bytes.fromhex(v["signing_bytes"]) == b"khazana/tx/v1\x00" + bytes.fromhex(v["body"])
    assert body.tx_id.hex() == v["tx_id"]
    assert hashlib.blake2b(bytes.fromhex(v["body"]), digest_size=32).hexdigest() == v["tx_id"]

    tx = sign_tx(body, signers)
    assert tx.raw.hex() == v["signed_tx"]
    for i, sig in enumerate(tx.signatures):
        assert sig.public_key.hex() == v[f"sig_{i}_public_key"]
        assert sig.signature.hex() == v[f"sig_{i}_signature"]
        assert verify_signature(
            bytes.fromhex(v[f"sig_{i}_public_key"]),
            bytes.fromhex(v["signing_bytes"]),
            bytes.fromhex(v[f"sig_{i}_signature"]),
        )
    assert f"sig_{len(tx.signatures)}_public_key" not in v

    decoded = decode_signed_tx(bytes.fromhex(v["signed_tx"]))
    assert decoded == tx
    assert decoded.tx_id.hex() == v["tx_id"]
    verify_tx_signatures(decoded)


def test_state_commitment_vectors():
    from ledger.commitment import StateTree, verify_proof

    (vector,) = [v for v in vectors("commitment") if v["name"] == "alice-bob"]
    for n in ("1", "2"):
        state = {k.encode(): v.encode() for k, v in json.loads(vector[f"state_{n}"]).items()}
        tree = StateTree.from_items(state.items())
        assert tree.root.hex() == vector[f"root_{n}"]
    root = bytes.fromhex(vector["root_2"])
    assert tree.prove(b"alice").to_bytes().hex() == vector["proof_alice"]
    assert tree.prove(b"carol").to_bytes().hex() == vector["proof_carol_absent"]
    assert verify_proof(root, b"alice", b"10", bytes.fromhex(vector["proof_alice"]))
    assert not verify_proof(root, b"alice", b"11", bytes.fromhex(vector["proof_alice"]))
    assert verify_proof(root, b"carol", None, bytes.fromhex(vector["proof_carol_absent"]))


@pytest.mark.parametrize("v", vectors("account"), ids=lambda v: v["name"])
def test_account_record_vector(v):
    """An account record's bytes, its state key, and the institution it belongs to (7.1)."""
    institution = "" if v["institution"] == "(none)" else v["institution"]
    address = address_from_text(v["address"])
    roles = tuple(r.strip() for r in v["roles"].split(","))
    account = Account(address, nonce=int(v["nonce"]), roles=roles, name=institution)
    assert account_key(address).hex() == v["state_key"]
    assert bytes.fromhex(v["state_key"]) == b"a" + address
    assert codec.encode(account.to_map()).hex() == v["record"]
    decoded = Account.from_map(codec.decode(bytes.fromhex(v["record"])))
    assert decoded == account
    assert decoded.institution == institution
    # The record is the canonical map with exactly the eight keys 7.1 lists, in that order.
    assert list(codec.decode(bytes.fromhex(v["record"]))) == [
        "address",
        "frozen",
        "instruments",
        "kyc",
        "name",
        "nonce",
        "public_key",
        "roles",
    ]


def test_the_grant_vector_binds_the_account_to_the_ministry():
    """7.4's grant, executed where key-1 is the ministry's client key and key-3 the
    regulator's: key-2's account (no account yet) joins the ministry with the issuer role."""
    from ledger.execute import apply_transaction
    from ledger.genesis import default_genesis, state_from_genesis
    from ledger.types import BlockContext

    (v,) = [v for v in vectors("tx") if v["name"] == "grant-role-institution"]
    seeds = {"ministry": 1, "regulator": 3, "central-bank": 4, "auditor": 5}
    keys = {name: generate_key(bytes([n]) * 32) for name, n in seeds.items()}
    genesis = default_genesis(
        validators=[("v", generate_key(bytes([9]) * 32).public_key)],
        institutions={name: key.address for name, key in keys.items()},
        chain_id=v["chain"],
    )
    state = state_from_genesis(genesis)
    ministry = state.accounts[keys["ministry"].address]
    state.put_account(ministry.with_nonce(int(v["nonce"])))
    tx = decode_signed_tx(bytes.fromhex(v["signed_tx"]))
    receipt = apply_transaction(state, tx, BlockContext(v["chain"], 1, 0))
    assert receipt.code == Code.OK, receipt.log
    granted = state.accounts[generate_key(bytes([2]) * 32).address]
    assert (granted.institution, granted.roles) == ("ministry", ("issuer",))
    assert receipt.events[0].attributes["institution"] == "ministry"


# ---------------------------------------------------------------------------------------
# Section 7: what a bond pays (schedule, day count, rounding)

_END_OF_MONTH = {"": None, "yes": True, "no": False}


@pytest.mark.parametrize("v", vectors("coupon"), ids=lambda v: v["name"])
def test_coupon_vector(v):
    def day(name: str):
        return date.fromisoformat(v[name]) if name in v else None

    schedule = bondmath.Schedule(
        day("issue_date"),
        day("maturity_date"),
        int(v["coupon_frequency"]),
        day("first_coupon_date"),
        day("penultimate_coupon_date"),
        _END_OF_MONTH[v.get("end_of_month", "")],
    )
    listed = v["coupon_dates"].removesuffix(",...").split(",")
    assert [d.isoformat() for d in schedule.dates()[: len(listed)]] == listed
    assert v["coupon_dates"].endswith(",...") == (len(schedule.dates()) > len(listed))
    per_unit = bondmath.scheduled_coupon(
        int(v["face_value"]),
        bondmath.parse_rate(v["coupon_rate"]),
        bondmath.DayCount(v["day_count"]),
        schedule,
        day("coupon_date"),
    )
    assert str(per_unit) == v["per_unit"]
    paid = bondmath.distribute(per_unit, {b"holder": int(v["units"])})
    assert (str(paid.total), str(paid.residual)) == (v["paid"], v["residual"])


def test_the_document_has_coupon_vectors_for_every_day_count_but_the_money_market_ones():
    covered = {v["day_count"] for v in vectors("coupon")}
    assert covered >= {"ACT/ACT-ICMA", "30/360-US", "30E/360", "ACT/ACT-ISDA"}
    assert any("first_coupon_date" in v for v in vectors("coupon"))
    assert any("penultimate_coupon_date" in v for v in vectors("coupon"))
