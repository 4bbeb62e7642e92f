"""Committed ledger records as JSON: what every answer and notification is made of.

Hashes are lowercase hex, addresses their kz1 text form (20-byte values), transactions and
proof bytes base64, heights ints, block times RFC 3339 UTC with milliseconds. Records read from
the store are decoded with bounds (size, depth) even though the node wrote them.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from consensus.types import Commit
from consensus.wire import WireError, decode_message
from ledger import codec
from ledger.block import decode_header
from ledger.crypto import address_to_text
from ledger.state import holding_key
from ledger.store import EventRecord, TxRecord
from ledger.types import Account, Holding, Instrument, ReserveAttestation

CODESPACE = "khazana"
_RECORD_MAX_SIZE = 1 << 20
_RECORD_MAX_DEPTH = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_time(time_ms: int) -> str:
    """Block time as RFC 3339 UTC with milliseconds ("2026-01-01T00:00:00.000Z"); exact."""
    moment = _EPOCH + timedelta(milliseconds=time_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ms % 1000:03d}Z"


def to_json(value: Any) -> Any:
    """A decoded ledger value as JSON: 20-byte values are addresses (kz1 text, as the ledger
    indexes them, see `Event.accounts`), other bytes lowercase hex."""
    if isinstance(value, bytes):
        return address_to_text(value) if len(value) == 20 else value.hex()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_record(raw: bytes) -> Any:
    return codec.decode(raw, max_size=_RECORD_MAX_SIZE, max_depth=_RECORD_MAX_DEPTH)


def render_header(header_bytes: bytes) -> dict:
    header = decode_header(header_bytes)
    return {
        "chain_id": header.chain_id,
        "height": header.height,
        "time": iso_time(header.time_ms),
        "time_ms": header.time_ms,
        "prev_hash": header.prev_hash.hex(),
        "txs_hash": header.txs_hash.hex(),
        "app_hash": header.app_hash.hex(),
        "results_hash": header.results_hash.hex(),
        "proposer": header.proposer.hex(),
        "validators_hash": header.validators_hash.hex(),
    }


def render_commit(certificate: bytes | None) -> dict | None:
    """A stored commit certificate (consensus wire form of a `Commit`) as JSON."""
    if not certificate:
        return None
    try:
        commit = decode_message(certificate)
    except WireError:
        commit = None
    if not isinstance(commit, Commit):
        # Not the consensus wire form: hand the bytes over rather than guess.
        return {"raw": b64(certificate)}
    return {
        "height": commit.height,
        "round": commit.round,
        "block_id": {"hash": commit.value_id.hex()},
        "signatures": [
            {"validator": validator.hex(), "signature": signature.hex()}
            for validator, signature in commit.signatures
        ],
    }


def render_receipt(record: TxRecord) -> dict:
    receipt = decode_record(record.receipt)
    return {
        "code": record.code,
        "codespace": CODESPACE if record.code else "",
        "log": receipt.get("log", ""),
        "events": [to_json(event) for event in receipt.get("events", [])],
    }


def render_event(record: EventRecord) -> dict:
    event = decode_record(record.data)
    return {
        "height": record.height,
        "tx_index": record.tx_index,
        "event_index": record.event_index,
        "type": record.type,
        "attributes": to_json(event.get("attributes", {})),
    }


def render_account(account: Account, balances: list[dict]) -> dict:
    obj = to_json(account.to_map())
    obj["balances"] = balances
    return obj


def holding_keys(account: Account) -> list[bytes]:
    """The state keys of the account's holdings: its record lists every instrument it holds."""
    return [holding_key(instrument_id, account.address) for instrument_id in account.instruments]


def balances(account: Account, values: list[bytes | None]) -> list[dict]:
    """`balances[]` of an account result from its holdings' stored records (in the order of
    `account.instruments`); a holding emptied since the account was read is left out."""
    balances = []
    for instrument_id, raw in zip(account.instruments, values, strict=True):
        if raw is None:
            continue
        holding = Holding.from_map(decode_record(raw))
        balances.append(
            {"instrument": instrument_id, "balance": holding.balance, "frozen": holding.frozen}
        )
    return balances


def render_instrument(instrument: Instrument) -> dict:
    obj = to_json(instrument.to_map())
    obj["status"] = (
        "redeemed" if instrument.redeemed else "paused" if instrument.paused else "active"
    )
    return obj


def render_reserve(raw: bytes) -> dict:
    """A stored reserve attestation of a commodity as JSON."""
    reserve = ReserveAttestation.from_map(decode_record(raw))
    return {
        "quantity": reserve.quantity,
        "document_hash": reserve.document_hash.hex(),
        "custodian": address_to_text(reserve.custodian),
        "time": iso_time(reserve.time_ms),
        "time_ms": reserve.time_ms,
        "height": reserve.height,
    }


def render_admission(result: Any) -> dict:
    """An `AdmissionResult` as JSON. The codespace is always "khazana" for a refusal: codes
    are unique across the ledger's and the node's ranges (`ledger.codes`), so the mempool's
    finer codespace ("ledger" / "mempool") adds nothing a client needs, and one name keeps the
    contract stable. `hash` is null when the bytes were not a transaction at all."""
    code = int(result.code)
    return {
        "code": code,
        "codespace": CODESPACE if code else "",
        "log": result.log,
        "hash": result.tx_id.hex() if result.tx_id else None,
    }
