"""Client-side verification of the node's verifiable reads: no network, no trust in the node.

What it owns: checking an `account` or `tx` result fetched with `prove: true` (node/rpc/)
against a validator set the client trusts. Each check is, in order:

1. the commit certificate (consensus wire encoding of a `Commit`) is for this header's hash
   and height and carries precommit signatures of more than 2/3 of the trusted set's power on
   `chain_id` (`consensus.types.verify_commit`, Ed25519 via `ledger.crypto.verify_signature`);
2. the header is the canonical encoding of a header of `chain_id` at the result's height;
3. for an account: the record bytes and each balance's holding bytes are proven under the
   header's `app_hash` (`ledger.commitment.verify_proof`), and what the result displays equals
   what the proven bytes say; for a tx: its bytes hash to its id and their Merkle audit path
   leads from its index to the header's `txs_hash` (`ledger.block.verify_tx_inclusion`).

Anything else raises `ProofError` with the reason. Limits of what is proven: balances the
node left out of an account result are not proven absent, and a tx's `tx_result` is not
proven (the header's `results_hash` is one hash over every receipt of the block).

    state = verify_account_proof(result, validators, "khazana-1")   # -> AccountState
    included = verify_tx_proof(result, validators, "khazana-1")    # -> TxInclusion

`validators` is a `consensus.types.ValidatorSet`, or the `validators` list of the RPC method
of that name (`[{"pub_key": hex, "voting_power": int}, ...]`), or `(pub_key, power)` pairs.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from consensus.types import Commit, ConsensusError, Validator, ValidatorSet, verify_commit
from consensus.wire import WireError, decode_message
from ledger import codec
from ledger.block import Header, decode_header, verify_tx_inclusion
from ledger.codes import LedgerError
from ledger.commitment import verify_proof
from ledger.crypto import (
    address_from_public_key,
    address_from_text,
    address_to_text,
    verify_signature,
)
from ledger.state import account_key, holding_key
from ledger.tx import decode_signed_tx
from ledger.types import Account, Holding

_RECORD_MAX_SIZE = 1 << 20
_RECORD_MAX_DEPTH = 8


class ProofError(Exception):
    """A verifiable read that does not verify (forged, altered, or from another chain/set)."""


@dataclass(frozen=True, slots=True)
class AccountState:
    """An account as proven at `height` (the certified header's app_hash)."""

    address: bytes
    account: Account
    balances: tuple[tuple[str, Holding], ...]  # (instrument id, holding), as listed
    height: int
    app_hash: bytes


@dataclass(frozen=True, slots=True)
class AccountAbsence:
    """No account at `address` in the state of `height` (the certified header's app_hash)."""

    address: bytes
    height: int
    app_hash: bytes


@dataclass(frozen=True, slots=True)
class TxInclusion:
    """A transaction proven to be at `index` of the certified block at `height`."""

    hash: bytes
    height: int
    index: int
    raw: bytes
    block_hash: bytes


def trusted_set(validators: Any) -> ValidatorSet:
    """A `ValidatorSet` from what a client holds (see the module docstring)."""
    if isinstance(validators, ValidatorSet):
        return validators
    members = []
    for entry in validators:
        if isinstance(entry, dict):
            pub_key, power = bytes.fromhex(entry["pub_key"]), entry["voting_power"]
        else:
            pub_key, power = entry
        members.append(Validator(address_from_public_key(pub_key), pub_key, power))
    try:
        return ValidatorSet.of(members)
    except ConsensusError as exc:
        raise ProofError(f"not a usable validator set: {exc}") from None


def verify_account_proof(
    result: dict, trusted_validators: Any, chain_id: str, *, address: str | None = None
) -> AccountState:
    """The proven account of an `account {prove: true}` result; `ProofError` if anything does
    not verify. With `address`, the result must also be that account's."""
    proof = _field(result, "proof", dict)
    header = verify_certified_header(proof, trusted_validators, chain_id)
    try:
        raw_address = address_from_text(_field(result, "address", str))
    except LedgerError as exc:
        raise ProofError(f"result address: {exc.message}") from None
    if address is not None and _field(result, "address", str) != address:
        raise ProofError(f"the result is for {result['address']}, not {address}")
    value = _b64(proof, "value")
    if not verify_proof(header.app_hash, account_key(raw_address), value, _b64(proof, "proof")):
        raise ProofError("the account record is not proven under the header's app_hash")
    account = _typed(Account.from_map, value)
    if account.address != raw_address:
        raise ProofError("the proven record is another account's")
    for name, shown in _to_json(account.to_map()).items():
        if result.get(name) != shown:
            raise ProofError(f"the result's {name!r} differs from the proven record")
    balances = []
    proven_balances = _field(proof, "balances", list)
    shown_balances = _field(result, "balances", list)
    if len(proven_balances) != len(shown_balances):
        raise ProofError("the result lists balances without proofs")
    # The proven record names every instrument the account holds: the balances must be
    # exactly those, so a node can neither leave a holding out nor add one.
    if [_field(entry, "instrument", str) for entry in proven_balances] != list(account.instruments):
        raise ProofError(
            "the balances are not the instruments the proven account record lists "
            f"({list(account.instruments)})"
        )
    for entry, shown in zip(proven_balances, shown_balances, strict=True):
        instrument = _field(entry, "instrument", str)
        value = _b64(entry, "value")
        key = holding_key(instrument, raw_address)
        if not verify_proof(header.app_hash, key, value, _b64(entry, "proof")):
            raise ProofError(f"the {instrument} balance is not proven under the app_hash")
        holding = _typed(Holding.from_map, value)
        expected = {"instrument": instrument, "balance": holding.balance, "frozen": holding.frozen}
        if shown != expected:
            raise ProofError(f"the result's {instrument} balance differs from the proven one")
        balances.append((instrument, holding))
    return AccountState(raw_address, account, tuple(balances), header.height, header.app_hash)


def verify_account_absence(
    data: dict, trusted_validators: Any, chain_id: str, *, address: str | None = None
) -> AccountAbsence:
    """The proven absence of an account: `data` is the `data` of the NOT_FOUND error that
    `account {prove: true}` answers for an address with no account. `ProofError` if it does
    not verify (a node cannot claim "no such account" for one that exists). With `address`,
    the error must also be about that address."""
    proof = _field(data, "proof", dict)
    header = verify_certified_header(proof, trusted_validators, chain_id)
    shown = _field(data, "address", str)
    if address is not None and shown != address:
        raise ProofError(f"the error is about {shown}, not {address}")
    try:
        raw_address = address_from_text(shown)
    except LedgerError as exc:
        raise ProofError(f"error address: {exc.message}") from None
    if not verify_proof(header.app_hash, account_key(raw_address), None, _b64(proof, "proof")):
        raise ProofError("the account's absence is not proven under the header's app_hash")
    return AccountAbsence(raw_address, header.height, header.app_hash)


def verify_tx_proof(
    result: dict, trusted_validators: Any, chain_id: str, *, tx_hash: str | None = None
) -> TxInclusion:
    """The proven inclusion of a `tx {prove: true}` result; `ProofError` if it does not
    verify. With `tx_hash`, the result must also be that transaction's."""
    proof = _field(result, "proof", dict)
    header = verify_certified_header(proof, trusted_validators, chain_id)
    raw = _b64(result, "tx")
    try:
        tx_id = decode_signed_tx(raw).tx_id
    except LedgerError as exc:
        raise ProofError(f"the result's tx does not decode: {exc.message}") from None
    if _field(result, "hash", str) != tx_id.hex() or (
        tx_hash is not None and tx_hash.lower() != tx_id.hex()
    ):
        raise ProofError("the result's tx bytes do not hash to the transaction asked for")
    if _field(result, "height", int) != header.height:
        raise ProofError("the result's height is not the certified header's")
    try:
        path = [bytes.fromhex(text) for text in _field(proof, "path", list)]
    except (TypeError, ValueError):
        raise ProofError("proof.path must be hex hashes") from None
    index = _field(result, "index", int)
    total = _field(proof, "total", int)
    if not verify_tx_inclusion(header.txs_hash, raw, index, total, path):
        raise ProofError("the tx is not proven at its index under the header's txs_hash")
    return TxInclusion(tx_id, header.height, index, raw, header.hash)


def verify_certified_header(proof: dict, trusted_validators: Any, chain_id: str) -> Header:
    """The header of `proof` once its commit certificate verified against the trusted set."""
    header_bytes = _b64(proof, "header")
    try:
        header = decode_header(header_bytes)
    except LedgerError as exc:
        raise ProofError(f"the header does not decode: {exc.message}") from None
    if header.encoded != header_bytes:
        raise ProofError("the header is not in its canonical encoding")
    if header.chain_id != chain_id:
        raise ProofError(f"the header is of chain {header.chain_id!r}, not {chain_id!r}")
    if _field(proof, "height", int) != header.height:
        raise ProofError("the proof's height is not the header's")
    try:
        commit = decode_message(_b64(proof, "commit"))
    except WireError as exc:
        raise ProofError(f"the commit certificate does not decode: {exc}") from None
    if not isinstance(commit, Commit):
        raise ProofError("the commit certificate is not a Commit")
    if commit.height != header.height or commit.value_id != header.hash:
        raise ProofError("the commit certificate is for another block")
    if not verify_commit(trusted_set(trusted_validators), chain_id, commit, verify_signature):
        raise ProofError(
            "the commit certificate lacks valid signatures of more than 2/3 of the trusted "
            "validators' power"
        )
    return header


# ---- helpers --------------------------------------------------------------------------


def _field(obj: Any, name: str, kind: type) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise ProofError(f"missing field {name!r}")
    value = obj[name]
    if type(value) is not kind:
        raise ProofError(f"field {name!r} must be a {kind.__name__}")
    return value


def _b64(obj: Any, name: str) -> bytes:
    try:
        return base64.b64decode(_field(obj, name, str), validate=True)
    except (binascii.Error, ValueError):
        raise ProofError(f"field {name!r} is not base64") from None


def _decode_record(raw: bytes) -> dict:
    try:
        record = codec.decode(raw, max_size=_RECORD_MAX_SIZE, max_depth=_RECORD_MAX_DEPTH)
    except LedgerError as exc:
        raise ProofError(f"a proven record does not decode: {exc.message}") from None
    if not isinstance(record, dict):
        raise ProofError("a proven record is not a map")
    return record


def _typed(from_map: Any, raw: bytes) -> Any:
    try:
        return from_map(_decode_record(raw))
    except (LedgerError, KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"a proven record is malformed: {exc}") from None


def _to_json(value: Any) -> Any:
    # The RPC's JSON form (node/rpc/ `to_json`), kept here so this module needs no server.
    if isinstance(value, bytes):
        return address_to_text(value) if len(value) == 20 else value.hex()
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value
