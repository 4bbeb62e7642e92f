"""Signing, and the file that carries one transaction between institutions.

A transaction that needs several institutions (a forced transfer: regulator + issuer) is
signed by the first one offline, written to a small JSON file, carried to the next one, who
adds its signature (`add_signatures`), and so on; whoever holds the last signature submits it.
The transaction id names the body only (`ledger/tx.py`), so it never changes along the way.

The file (`khazana-signed-tx`, version 1):

    {"type": "khazana-signed-tx", "version": 1,
     "tx": "<base64 of the signed bytes>",           # the only field read back as truth
     "hash": "...", "chain_id": "...", "op": "...", "sender": "kz1...", "nonce": 7,
     "args": {...}, "signers": ["kz1...", ...],
     "policy": {"rule": "forced_transfer", "roles": [...], "min": 2, "source": "..."},
     "signatures_still_needed": 1}

Everything but `tx` is a summary for the human who is asked to sign: it is recomputed from
the bytes each time a file is read or written, never trusted. Signatures are verified when the
file is read. The policy is the default genesis policy unless the caller passes the chain's
genesis (`policy_source`); how many signatures are still needed is a count of signers, not a
verdict: whether they hold the roles and belong to enough distinct institutions (keys of one
institution count once, docs/PROTOCOL.md section 7) is only known to the chain.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ledger.codes import LedgerError
from ledger.crypto import KeyPair, address_from_public_key, address_to_text
from ledger.genesis import DEFAULT_POLICY
from ledger.ops import OPEN_OPERATIONS, POLICY_NAMES
from ledger.tx import SignedTx, TxBody, decode_signed_tx, sign_tx, verify_tx_signatures
from ledger.tx import add_signatures as _ledger_add_signatures
from node.client.errors import SignedTxFileError
from node.client.ops import args_to_json

FILE_TYPE = "khazana-signed-tx"
FILE_VERSION = 1
MAX_FILE_BYTES = 256 * 1024  # a signed transaction is at most 64 KiB; base64 + summary


def sign(body: TxBody, keys: Iterable[KeyPair]) -> SignedTx:
    """`body` signed by every key (the sender's first, by convention; order is irrelevant)."""
    return sign_tx(body, list(keys))


def add_signatures(tx: SignedTx, keys: Iterable[KeyPair]) -> SignedTx:
    """`tx` with signatures by `keys` added (a signer already present keeps its own)."""
    return _ledger_add_signatures(tx, list(keys))


def tx_to_base64(tx: SignedTx) -> str:
    return base64.b64encode(tx.raw).decode("ascii")


def tx_from_base64(text: str) -> SignedTx:
    """A signed transaction from its base64 text; SignedTxFileError if it is not one or a
    signature does not verify."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignedTxFileError("not base64 text of a signed transaction") from None
    try:
        tx = decode_signed_tx(raw)
        verify_tx_signatures(tx)
    except LedgerError as exc:
        raise SignedTxFileError(f"not a valid signed transaction: {exc}") from None
    return tx


@dataclass(frozen=True, slots=True)
class PolicyRule:
    rule: str
    roles: tuple[str, ...]
    min: int
    source: str  # where the rule was read: "default genesis policy" or a genesis file


def policy_rule(op: str, genesis: Mapping | None = None) -> PolicyRule | None:
    """The approval rule of `op` (None for open operations such as transfer)."""
    if op in OPEN_OPERATIONS or op not in POLICY_NAMES:
        return None
    name = POLICY_NAMES[op]
    if genesis is not None and name in genesis.get("policy", {}):
        rule, source = genesis["policy"][name], f"genesis of {genesis.get('chain_id')}"
    else:
        rule, source = DEFAULT_POLICY[name], "default genesis policy"
    return PolicyRule(name, tuple(rule["roles"]), int(rule["min"]), source)


def signer_addresses(tx: SignedTx) -> list[str]:
    return [address_to_text(address_from_public_key(key)) for key in tx.signers]


def summary(tx: SignedTx, genesis: Mapping | None = None) -> dict:
    """The human summary of `tx` (every field of the file but `type`, `version`, `tx`)."""
    body = tx.body
    signers = signer_addresses(tx)
    rule = policy_rule(body.op, genesis)
    obj = {
        "hash": tx.tx_id.hex(),
        "chain_id": body.chain_id,
        "op": body.op,
        "sender": address_to_text(body.sender),
        "nonce": body.nonce,
        "args": args_to_json(body.args),
        "signers": signers,
        "policy": None,
        "signatures_still_needed": 0,
    }
    if rule is not None:
        obj["policy"] = {
            "rule": rule.rule,
            "roles": list(rule.roles),
            "min": rule.min,
            "source": rule.source,
        }
        obj["signatures_still_needed"] = max(0, rule.min - len(signers))
    return obj


def file_document(tx: SignedTx, genesis: Mapping | None = None) -> dict:
    return {"type": FILE_TYPE, "version": FILE_VERSION, "tx": tx_to_base64(tx)} | summary(
        tx, genesis
    )


def write_tx_file(path: str | os.PathLike, tx: SignedTx, genesis: Mapping | None = None) -> dict:
    """Write `tx` to `path` (replacing it atomically); returns the document written."""
    document = file_document(tx, genesis)
    path = os.fspath(path)
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2, sort_keys=False)
        out.write("\n")
    os.replace(temp, path)
    return document


def read_tx_file(path: str | os.PathLike) -> SignedTx:
    """The transaction in a `khazana-signed-tx` file (signatures verified)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as src:
            raw = src.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SignedTxFileError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SignedTxFileError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(raw)
    except ValueError:
        raise SignedTxFileError(f"{path} is not JSON") from None
    if not isinstance(document, dict) or document.get("type") != FILE_TYPE:
        raise SignedTxFileError(f"{path} is not a {FILE_TYPE} file")
    if document.get("version") != FILE_VERSION:
        raise SignedTxFileError(f"{path}: unsupported version {document.get('version')!r}")
    if not isinstance(document.get("tx"), str):
        raise SignedTxFileError(f"{path} has no tx")
    try:
        return tx_from_base64(document["tx"])
    except SignedTxFileError as exc:
        raise SignedTxFileError(f"{path}: {exc}") from None


def load_tx(source: str) -> SignedTx:
    """A transaction from a file path or from base64 text (what `khazana tx submit --in`
    accepts): an existing path is read as a file, anything else is taken as base64."""
    if os.path.exists(source):
        return read_tx_file(source)
    return tx_from_base64(source)
