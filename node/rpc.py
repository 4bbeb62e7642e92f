"""The node's JSON-RPC 2.0 interface over HTTP: a hand-written ASGI app served by hypercorn.

What it owns: the HTTP surface of one node (`POST /` for JSON-RPC, `GET /health`), the
JSON-RPC 2.0 rules (batches, notifications, ids, the standard error codes), the request limits,
and the translation of committed ledger records into JSON (hashes lowercase hex, addresses in
their kz1 text form, transactions base64, heights ints). It asks the running node for
everything through the `NodeApi` protocol (docs/NODE.md) and reads committed state through
`api.store` (an `ledger.store.AsyncStore`), never a pending block.

Errors (JSON-RPC error objects):

    -32700 parse error        the body is not JSON
    -32600 invalid request    not a request object, an empty batch, a batch too large,
                              a body too large (HTTP 413)
    -32601 method not found
    -32602 invalid params     wrong names, types or values of params
    -32603 internal error     a bug or a store failure: logged here, never a traceback out
    -32000 server busy / request timed out     (limits; HTTP 503 when busy)
    -32001 not found          no block / transaction / account / instrument of that name

A rejected transaction is NOT an error: `broadcast_tx_sync` and `check_tx` return a result with
`code != 0`, `codespace` "khazana" and a human `log` (codes from `ledger.codes.Code`).

Limits (`RpcLimits`, the `[rpc]` section of config.toml): body size (larger -> HTTP 413 with
a JSON-RPC error body), calls per batch, `max_connections` counted as HTTP requests being
handled at once (more -> HTTP 503 at once: hypercorn does not expose a connection cap, idle
keep-alive connections cost little and it is the requests in flight that cost store reads),
and a deadline per HTTP request (calls not finished by then answer -32000).
`broadcast_tx_commit` waits up to `commit_timeout_ms` on top of that deadline and answers
-32002 "timed out waiting for commit" (with the hash in `data`) when the tx is not committed.

Verifiable reads (`account` / `tx` with `prove: true`): the result gains a `proof` object
holding the committed header (base64 of its canonical bytes) and its commit certificate
(base64 of the consensus wire encoding) and, for an account, the state proofs of the account
record and of each listed balance against that header's app_hash (base64 of
`Proof.to_bytes()`, with the proven record bytes); for a tx, the Merkle audit path of its raw
bytes to the header's `txs_hash` (`ledger.block.tx_inclusion_proof`). node/verify.py checks them with no network.

WebSocket `/websocket`: node/websocket.py. CORS: `cors_origins` ("*" or exact origins) adds
`Access-Control-Allow-Origin` to answers to an allowed `Origin` and answers preflight
`OPTIONS`; a WebSocket handshake from a browser origin not allowed is refused (HTTP 403).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from consensus.types import Commit
from consensus.wire import WireError, decode_message
from ledger import codec
from ledger.block import decode_block, decode_header, tx_inclusion_proof
from ledger.codes import LedgerError
from ledger.commitment import verify_proof
from ledger.crypto import address_from_text, address_to_text
from ledger.state import (
    INSTRUMENT,
    account_key,
    holders_prefix,
    holding_key,
    instrument_key,
)
from ledger.store import MAX_EVENTS_PAGE, EventRecord, TxRecord
from ledger.types import Account, Holding, Instrument

log = logging.getLogger("khazana.rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_LIMIT = -32000
NOT_FOUND = -32001
COMMIT_TIMEOUT = -32002
PROOF_UNAVAILABLE = -32003

CODESPACE = "khazana"
_PROOF_ATTEMPTS = 3
MAX_PAGE = 100  # rows per page of instruments / holders
_RECORD_MAX_SIZE = 1 << 20
_RECORD_MAX_DEPTH = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RpcLimits:
    """The RPC listener's address and limits; the same names as `node.config.RpcConfig`."""

    listen: str = "127.0.0.1:26657"
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 32
    # Requests handled at once; more get HTTP 503 (see the module docstring).
    max_connections: int = 256
    request_timeout_ms: int = 10_000
    commit_timeout_ms: int = 10_000  # broadcast_tx_commit's wait for inclusion
    cors_origins: tuple[str, ...] = ()  # "*" or exact origins ("https://app.example")
    ws_max_connections: int = 64
    ws_max_subscriptions: int = 16  # per connection
    ws_queue_size: int = 256  # notifications waiting unsent before the client is dropped
    ws_max_message_bytes: int = 64 * 1024

    @classmethod
    def from_config(cls, config: object) -> RpcLimits:
        """The limits of a config object: an `RpcLimits`, a `node.config.RpcConfig`, or a
        `NodeConfig` holding one as `.rpc` (read by attribute name; missing ones default)."""
        if isinstance(config, RpcLimits):
            return config
        section = getattr(config, "rpc", config)
        defaults = cls()
        values = {
            name: getattr(section, name, getattr(defaults, name))
            for name in (
                "max_body_bytes",
                "max_batch",
                "max_connections",
                "request_timeout_ms",
                "commit_timeout_ms",
                "ws_max_connections",
                "ws_max_subscriptions",
                "ws_queue_size",
                "ws_max_message_bytes",
            )
        }
        origins = tuple(getattr(section, "cors_origins", ()) or ())
        return cls(
            listen=str(getattr(section, "listen", defaults.listen)), cors_origins=origins, **values
        )


class RpcError(Exception):
    """A JSON-RPC error object to answer with (never a traceback)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_obj(self) -> dict:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def invalid_params(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, "Invalid params", message)


# --------------------------------------------------------------------------- JSON rendering


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


def _decode_record(raw: bytes) -> Any:
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
    receipt = _decode_record(record.receipt)
    return {
        "code": record.code,
        "codespace": CODESPACE if record.code else "",
        "log": receipt.get("log", ""),
        "events": [to_json(event) for event in receipt.get("events", [])],
    }


def render_event(record: EventRecord) -> dict:
    event = _decode_record(record.data)
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


def _holding_keys(account: Account) -> list[bytes]:
    """The state keys of the account's holdings: its record lists every instrument it holds."""
    return [holding_key(instrument_id, account.address) for instrument_id in account.instruments]


def _balances(account: Account, values: list[bytes | None]) -> list[dict]:
    """`balances[]` of an account result from its holdings' stored records (in the order of
    `account.instruments`); a holding emptied since the account was read is left out."""
    balances = []
    for instrument_id, raw in zip(account.instruments, values, strict=True):
        if raw is None:
            continue
        holding = Holding.from_map(_decode_record(raw))
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


# --------------------------------------------------------------------------- params


def _int_param(name: str, value: Any, low: int, high: int | None = None) -> int:
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise invalid_params(f"{name} must be an integer {bound}, got {value!r:.60}")
    return value


def _str_param(name: str, value: Any, max_len: int = 256) -> str:
    if type(value) is not str or not value or len(value) > max_len:
        raise invalid_params(f"{name} must be a non-empty string of at most {max_len} chars")
    return value


def _tx_param(value: Any) -> bytes:
    if type(value) is not str:
        raise invalid_params("tx must be the base64 text of a signed transaction")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_params("tx is not valid base64") from None
    if not raw:
        raise invalid_params("tx is empty")
    return raw


def _hash_param(value: Any) -> bytes:
    if type(value) is not str or len(value) != 64:
        raise invalid_params("hash must be 64 hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise invalid_params("hash must be 64 hex characters") from None


def _address_param(name: str, value: Any) -> bytes:
    if type(value) is not str:
        raise invalid_params(f"{name} must be a kz1... address")
    try:
        return address_from_text(value)
    except LedgerError as exc:
        raise invalid_params(f"{name}: {exc.message}") from None


def _bool_param(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise invalid_params(f"{name} must be true or false")
    return value


def _instrument_param(value: Any) -> str:
    text = _str_param("id", value, 32)
    if not text.isascii():
        raise invalid_params("id must be ASCII")
    return text


# --------------------------------------------------------------------------- methods


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    handler: Handler
    params: tuple[str, ...]  # accepted names, in positional order
    required: tuple[str, ...] = ()
    extra_time_ms: int = 0  # added to the request deadline (broadcast_tx_commit's own wait)


class RpcMethods:
    """The methods a node answers; each takes keyword params already matched by name."""

    def __init__(self, api: Any, limits: RpcLimits | None = None) -> None:
        self.api = api
        self.limits = limits or RpcLimits()
        self.table: dict[str, Method] = {
            "health": Method(self.health, ()),
            "status": Method(self.status, ()),
            "net_info": Method(self.net_info, ()),
            "genesis": Method(self.genesis, ()),
            "validators": Method(self.validators, ("height",)),
            "block": Method(self.block, ("height",)),
            "commit": Method(self.commit, ("height",)),
            "broadcast_tx_sync": Method(self.broadcast_tx_sync, ("tx",), ("tx",)),
            "broadcast_tx_commit": Method(
                self.broadcast_tx_commit, ("tx",), ("tx",), self.limits.commit_timeout_ms
            ),
            "check_tx": Method(self.check_tx, ("tx",), ("tx",)),
            "tx": Method(self.tx, ("hash", "prove"), ("hash",)),
            "num_unconfirmed_txs": Method(self.num_unconfirmed_txs, ()),
            "account": Method(self.account, ("address", "prove"), ("address",)),
            "instrument": Method(self.instrument, ("id",), ("id",)),
            "instruments": Method(self.instruments, ("after", "limit")),
            "holders": Method(self.holders, ("id", "after", "limit"), ("id",)),
            "events": Method(
                self.events,
                ("account", "instrument", "from_height", "to_height", "page", "per_page"),
            ),
        }

    # -- node

    async def health(self) -> dict:
        return {}

    async def status(self) -> dict:
        return await self.api.status()

    async def net_info(self) -> dict:
        peers = self.api.peers()
        return {"listening": True, "n_peers": len(peers), "peers": peers}

    async def genesis(self) -> dict:
        return {"genesis": self.api.genesis}

    async def validators(self, height: Any = None) -> dict:
        if height is not None:
            height = await self._committed_height(height)
        block_height, validators = await self.api.validators(height)
        return {"block_height": block_height, "validators": validators, "total": len(validators)}

    async def num_unconfirmed_txs(self) -> dict:
        n_txs, total_bytes = self.api.mempool_stats()
        return {"n_txs": n_txs, "total_bytes": total_bytes}

    # -- blocks

    async def _committed_height(self, height: Any) -> int:
        latest = await self.api.store.latest_height() or 0
        if height is None:
            if latest < 1:
                raise RpcError(NOT_FOUND, "Not found", "no block has been committed yet")
            return latest
        height = _int_param("height", height, 1)
        if height > latest:
            raise RpcError(
                NOT_FOUND, "Not found", f"height {height} is after the latest block {latest}"
            )
        return height

    async def block(self, height: Any = None) -> dict:
        height = await self._committed_height(height)
        store = self.api.store
        stored = await store.block(height)
        if stored is None:
            raise RpcError(NOT_FOUND, "Not found", f"no block at height {height}")
        block = decode_block(stored.block)
        last_commit = await store.commit(height - 1) if height > 1 else None
        return {
            "block_id": {"hash": stored.hash.hex()},
            "block": {
                "header": render_header(stored.header),
                "txs": [b64(raw) for raw in block.txs],
                "last_commit": render_commit(last_commit),
            },
        }

    async def commit(self, height: Any = None) -> dict:
        height = await self._committed_height(height)
        store = self.api.store
        stored = await store.block(height)
        certificate = await store.commit(height)
        if stored is None or certificate is None:
            raise RpcError(NOT_FOUND, "Not found", f"no commit at height {height}")
        return {
            "signed_header": {
                "header": render_header(stored.header),
                "commit": render_commit(certificate),
            },
            "block_id": {"hash": stored.hash.hex()},
            "canonical": True,
        }

    # -- transactions

    async def broadcast_tx_sync(self, tx: Any) -> dict:
        return _admission(await self.api.submit_tx(_tx_param(tx)))

    async def broadcast_tx_sync_many(self, raws: list[bytes]) -> list[dict]:
        """`broadcast_tx_sync` of several already-decoded transactions, admitted together in
        this order (consecutive calls of one JSON-RPC batch, see `RpcApp._handle_batch`)."""
        return [_admission(result) for result in await self.api.submit_txs(raws)]

    async def broadcast_tx_commit(self, tx: Any) -> dict:
        """Admission, then wait for the tx to be committed (at most `commit_timeout_ms`).
        A refused tx answers at once with its `check_tx` verdict, `height` 0 and no
        `tx_result`; a tx not committed in time answers COMMIT_TIMEOUT with its hash."""
        admitted = await self.api.submit_tx(_tx_param(tx))
        check = _admission(admitted)
        check_tx = {"code": check["code"], "codespace": check["codespace"], "log": check["log"]}
        if admitted.code != 0:
            return {"hash": check["hash"], "height": 0, "check_tx": check_tx, "tx_result": None}
        record = await self.api.wait_committed(admitted.tx_id, self.limits.commit_timeout_ms / 1000)
        if record is None:
            raise RpcError(
                COMMIT_TIMEOUT,
                "timed out waiting for commit",
                {"hash": admitted.tx_id.hex(), "timeout_ms": self.limits.commit_timeout_ms},
            )
        return {
            "hash": record.tx_id.hex(),
            "height": record.height,
            "index": record.index,
            "check_tx": check_tx,
            "tx_result": render_receipt(record),
        }

    async def check_tx(self, tx: Any) -> dict:
        return _admission(await self.api.check_tx(_tx_param(tx)))

    async def tx(self, hash: Any, prove: Any = False) -> dict:
        tx_id = _hash_param(hash)
        prove = _bool_param("prove", prove)
        store = self.api.store
        record = await store.tx(tx_id)
        if record is None:
            raise RpcError(NOT_FOUND, "Not found", f"no committed transaction {hash}")
        result = {
            "hash": record.tx_id.hex(),
            "height": record.height,
            "index": record.index,
            "tx": b64(record.raw),
            "tx_result": render_receipt(record),
        }
        if prove:
            stored = await store.block(record.height)
            certificate = await store.commit(record.height)
            if stored is None or certificate is None:
                raise RpcError(INTERNAL_ERROR, "Internal error")
            txs = decode_block(stored.block).txs
            result["proof"] = {
                "height": record.height,
                "header": b64(stored.header),
                "commit": b64(certificate),
                # The Merkle audit path of the raw tx to the header's txs_hash (RFC 6962).
                "total": len(txs),
                "path": [h.hex() for h in tx_inclusion_proof(txs, record.index)],
            }
        return result

    # -- state reads (committed)

    async def account(self, address: Any, prove: Any = False) -> dict:
        raw_address = _address_param("address", address)
        prove = _bool_param("prove", prove)
        store = self.api.store
        raw = await store.get_state(account_key(raw_address))
        if prove:
            if raw is None:
                # Absence is provable too: the error carries a proof that no account record
                # is under the certified app_hash (node/verify.py `verify_account_absence`).
                absent = await self._proven_absence(raw_address, address)
                if absent is not None:
                    raise absent
            return await self._proven_account(raw_address)  # (created meanwhile, if absent)
        if raw is None:
            raise RpcError(NOT_FOUND, "Not found", f"no account {address}")
        account = Account.from_map(_decode_record(raw))
        values = [await store.get_state(key) for key in _holding_keys(account)]
        return render_account(account, _balances(account, values))

    async def _proven_absence(self, raw_address: bytes, address: str) -> RpcError | None:
        """The NOT_FOUND error for a missing account, with a proof of its absence at a
        committed height: `data` = {message, address, proof{height, header, commit, proof}}.
        None if the account exists by now (created since the caller's read): the caller
        answers with its proven record instead."""
        key = account_key(raw_address)
        for _ in range(_PROOF_ATTEMPTS):
            certified = await self._prove_committed([key])
            if certified is None:
                continue
            proven, proof = certified
            if not verify_proof(proven.app_hash, key, None, proven.proofs[0]):
                return None  # the account exists by now
            proof["proof"] = b64(proven.proofs[0].to_bytes())
            data = {"message": f"no account {address}", "address": address, "proof": proof}
            return RpcError(NOT_FOUND, "Not found", data)
        raise RpcError(SERVER_LIMIT, "Server busy", "state changed during every proof attempt")

    async def _prove_committed(self, keys: list[bytes]) -> tuple[Any, dict] | None:
        """Proofs of `keys` from the driver and the certified header they are against, as
        the start of a result's `proof` ({height, header, commit}); None when the store does
        not hold that height's block and certificate with the same app_hash (read again)."""
        try:
            proven = await self.api.prove(keys)
        except Exception as exc:  # ProofUnavailable: the driver is stopping or busy
            raise RpcError(PROOF_UNAVAILABLE, "Proof unavailable", str(exc)) from None
        store = self.api.store
        stored = await store.block(proven.height)
        certificate = await store.commit(proven.height)
        if stored is None or certificate is None or stored.app_hash != proven.app_hash:
            return None
        header = {"height": proven.height, "header": b64(stored.header), "commit": b64(certificate)}
        return proven, header

    async def _proven_account(self, raw_address: bytes) -> dict:
        """The account with proofs of its record and of every balance it lists.

        The account record names the instruments it holds (`Account.instruments`), so the
        keys to prove follow from the record; the proofs come from the driver (the state
        tree, committed state only) and the values are read from the store afterwards and
        checked against them here. A block committed in between is noticed (the read is
        redone, at most `_PROOF_ATTEMPTS` times), so the record, the balances and the proofs
        always describe one height, and the balances are all of the account's."""
        store = self.api.store
        key = account_key(raw_address)
        for _ in range(_PROOF_ATTEMPTS):
            raw = await store.get_state(key)
            if raw is None:
                continue  # not there any more (or not yet): read again
            account = Account.from_map(_decode_record(raw))
            keys = [key, *_holding_keys(account)]
            certified = await self._prove_committed(keys)
            if certified is None:
                continue
            proven, proof = certified
            values = [await store.get_state(k) for k in keys]
            if values[0] != raw or None in values:
                continue  # a block changed the account between the reads: read again
            if not all(
                verify_proof(proven.app_hash, k, value, key_proof)
                for k, value, key_proof in zip(keys, values, proven.proofs, strict=True)
            ):
                continue  # a block was committed between the proofs and the reads
            result = render_account(account, _balances(account, values[1:]))
            proof["value"] = b64(raw)
            proof["proof"] = b64(proven.proofs[0].to_bytes())
            proof["balances"] = [
                {"instrument": instrument_id, "value": b64(v), "proof": b64(p.to_bytes())}
                for instrument_id, v, p in zip(
                    account.instruments, values[1:], proven.proofs[1:], strict=True
                )
            ]
            result["proof"] = proof
            return result
        raise RpcError(SERVER_LIMIT, "Server busy", "state changed during every proof attempt")

    async def instrument(self, id: Any) -> dict:
        instrument_id = _instrument_param(id)
        raw = await self.api.store.get_state(instrument_key(instrument_id))
        if raw is None:
            raise RpcError(NOT_FOUND, "Not found", f"no instrument {instrument_id}")
        return render_instrument(Instrument.from_map(_decode_record(raw)))

    async def instruments(self, after: Any = None, limit: Any = MAX_PAGE) -> dict:
        limit = _int_param("limit", limit, 1, MAX_PAGE)
        after_key = None if after is None else instrument_key(_instrument_param(after))
        page = await self.api.store.scan_prefix(INSTRUMENT, limit, after_key)
        items = [render_instrument(Instrument.from_map(_decode_record(raw))) for _, raw in page]
        next_after = items[-1]["id"] if len(items) == limit else None
        return {"instruments": items, "next": next_after}

    async def holders(self, id: Any, after: Any = None, limit: Any = MAX_PAGE) -> dict:
        instrument_id = _instrument_param(id)
        limit = _int_param("limit", limit, 1, MAX_PAGE)
        after_key = None
        if after is not None:
            after_key = holding_key(instrument_id, _address_param("after", after))
        store = self.api.store
        if await store.get_state(instrument_key(instrument_id)) is None:
            raise RpcError(NOT_FOUND, "Not found", f"no instrument {instrument_id}")
        prefix = holders_prefix(instrument_id)
        page = await store.scan_prefix(prefix, limit, after_key)
        holders = []
        for key, raw in page:
            holding = Holding.from_map(_decode_record(raw))
            holders.append(
                {
                    "address": address_to_text(key[len(prefix) :]),
                    "balance": holding.balance,
                    "frozen": holding.frozen,
                }
            )
        next_after = holders[-1]["address"] if len(holders) == limit else None
        return {"instrument": instrument_id, "holders": holders, "next": next_after}

    async def events(
        self,
        account: Any = None,
        instrument: Any = None,
        from_height: Any = None,
        to_height: Any = None,
        page: Any = 1,
        per_page: Any = 30,
    ) -> dict:
        account_bytes = None if account is None else _address_param("account", account)
        instrument_id = None if instrument is None else _instrument_param(instrument)
        low = None if from_height is None else _int_param("from_height", from_height, 0)
        high = None if to_height is None else _int_param("to_height", to_height, 0)
        per_page = _int_param("per_page", per_page, 1, MAX_EVENTS_PAGE)
        page = _int_param("page", page, 1, 1_000_000)
        records = await self.api.store.events(
            account=account_bytes,
            instrument=instrument_id,
            from_height=low,
            to_height=high,
            limit=per_page,
            offset=(page - 1) * per_page,
        )
        return {"events": [render_event(r) for r in records], "page": page, "per_page": per_page}


def _admission(result: Any) -> dict:
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


# --------------------------------------------------------------------------- JSON-RPC


def _error_response(error: RpcError, request_id: Any = None) -> dict:
    return {"jsonrpc": "2.0", "error": error.to_obj(), "id": request_id}


def _valid_id(value: Any) -> bool:
    # JSON-RPC 2.0: String, Number or Null (bool is not a Number in JSON).
    if type(value) is float:
        return math.isfinite(value)
    return value is None or type(value) in (str, int)


def _plain_submit(request: Any) -> bytes | None:
    """The transaction of a well-formed `broadcast_tx_sync` call with an id (`{"tx": ...}`
    or `[tx]`, valid base64), else None: such calls may be admitted together; anything else
    (a notification, bad params) takes the one-call path and gets its own answer or error."""
    if (
        type(request) is not dict
        or request.get("method") != "broadcast_tx_sync"
        or request.get("jsonrpc") != "2.0"
        or "id" not in request
        or not _valid_id(request["id"])
    ):
        return None
    params = request.get("params")
    if type(params) is dict and len(params) == 1:
        tx = params.get("tx")
    elif type(params) is list and len(params) == 1:
        tx = params[0]
    else:
        return None
    try:
        return _tx_param(tx)
    except RpcError:
        return None


def _bind_params(method: Method, params: Any) -> dict:
    if params is None:
        bound: dict = {}
    elif isinstance(params, list):
        if len(params) > len(method.params):
            raise invalid_params(
                f"at most {len(method.params)} positional params {list(method.params)}"
            )
        bound = dict(zip(method.params, params, strict=False))
    else:  # dict, checked by the caller
        unknown = sorted(set(params) - set(method.params))
        if unknown:
            raise invalid_params(f"unknown params {unknown}; accepted: {list(method.params)}")
        bound = dict(params)
    missing = [name for name in method.required if name not in bound]
    if missing:
        raise invalid_params(f"missing params {missing}")
    return bound


class RpcApp:
    """The ASGI application: routes HTTP, applies the limits, runs JSON-RPC calls."""

    def __init__(self, api: Any, limits: RpcLimits | None = None) -> None:
        self.limits = limits or RpcLimits()
        self.methods = RpcMethods(api, self.limits)
        self.api = api
        self._in_flight = trio.CapacityLimiter(self.limits.max_connections)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _websocket(self, scope: dict, receive: Callable, send: Callable) -> None:
        origin = _origin(scope)
        if scope.get("path") != "/websocket" or (
            origin is not None and self._allowed_origin(origin) is None
        ):
            # Closing during the handshake answers HTTP 403.
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        from node.websocket import serve_websocket  # it imports this module's renderers

        await serve_websocket(
            scope,
            receive,
            send,
            bus=getattr(self.api, "events", None),
            handle_body=self.handle_body,
            limits=self.limits,
        )

    def _allowed_origin(self, origin: str) -> str | None:
        """The `Access-Control-Allow-Origin` value for `origin`, None if not allowed."""
        origins = self.limits.cors_origins
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        method, path = scope["method"], scope["path"]
        origin = _origin(scope)
        allow_origin = None if origin is None else self._allowed_origin(origin)
        cors: list[tuple[bytes, bytes]] = []
        if allow_origin is not None:
            cors = [(b"access-control-allow-origin", allow_origin.encode()), (b"vary", b"origin")]
        send = _with_headers(send, cors)
        if path == "/health" and method in ("GET", "HEAD"):
            await _respond(send, 200, b"ok\n", b"text/plain; charset=utf-8")
            return
        if path != "/":
            await _respond(send, 404, b"not found\n", b"text/plain; charset=utf-8")
            return
        if method == "OPTIONS":
            # CORS preflight: the allowed origin gets the methods and headers it may use;
            # any other origin gets no CORS headers, so its browser refuses the call.
            if allow_origin is not None:
                send = _with_headers(
                    send,
                    [
                        (b"access-control-allow-methods", b"POST, GET, OPTIONS"),
                        (b"access-control-allow-headers", b"content-type"),
                        (b"access-control-max-age", b"600"),
                    ],
                )
            await _respond(send, 204, b"", None, allow=b"POST, OPTIONS")
            return
        if method != "POST":
            await _respond(
                send, 405, b"JSON-RPC: POST to /\n", b"text/plain; charset=utf-8", allow=b"POST"
            )
            return
        try:
            self._in_flight.acquire_nowait()
        except trio.WouldBlock:
            busy = RpcError(SERVER_LIMIT, "Server busy", "too many requests in flight")
            await _respond_json(send, 503, _error_response(busy))
            return
        try:
            # A client dribbling its body (slowloris) must not hold a slot: the body has the
            # request's time budget too.
            body = b""
            with trio.move_on_after(self.limits.request_timeout_ms / 1000) as reading:
                body = await _read_body(scope, receive, self.limits.max_body_bytes)
            if reading.cancelled_caught:
                slow = RpcError(SERVER_LIMIT, "Request timed out", "body not received in time")
                await _respond_json(send, 408, _error_response(slow))
                return
            if body is None:
                too_large = RpcError(
                    INVALID_REQUEST,
                    "Invalid Request",
                    f"body larger than {self.limits.max_body_bytes} bytes",
                )
                await _respond_json(send, 413, _error_response(too_large))
                return
            answer = await self.handle_body(body)
            if answer is None:
                await _respond(send, 204, b"", None)
            else:
                await _respond_json(send, 200, answer)
        finally:
            self._in_flight.release()

    async def handle_body(self, body: bytes) -> Any:
        """The JSON answer to one HTTP body (None when nothing is to be answered)."""
        try:
            # Strict UTF-8 first: json.loads(bytes) would let encoded lone surrogates through.
            message = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return _error_response(RpcError(PARSE_ERROR, "Parse error"))
        deadline = trio.current_time() + self.limits.request_timeout_ms / 1000
        if isinstance(message, list):
            if not message:
                return _error_response(RpcError(INVALID_REQUEST, "Invalid Request", "empty batch"))
            if len(message) > self.limits.max_batch:
                return _error_response(
                    RpcError(
                        INVALID_REQUEST,
                        "Invalid Request",
                        f"batch of {len(message)} calls; at most {self.limits.max_batch}",
                    )
                )
            return await self._handle_batch(message, deadline)
        return await self.handle_request(message, deadline)

    async def _handle_batch(self, calls: list, deadline: float) -> list | None:
        """The answers to a batch, in the batch's order (notifications give none).

        The calls run concurrently: a `broadcast_tx_sync` waits in the driver while a block is
        pending (admission checks committed state only), so calls answered one after another
        would admit one transaction per block per connection. Their order is kept where it
        matters, at admission: each call is started only after the previous one has run up to
        its first blocking point (for a transaction: its place in the driver's FIFO inbox --
        nothing before it yields). trio runs a task started with `start_soon` in the next
        scheduling batch, and this task's checkpoint puts it in that same batch, so call i
        always takes its first step before call i + 1 is even started.

        Consecutive well-formed `broadcast_tx_sync` calls (a load generator's or an exchange's
        batch of transfers) go to the node as ONE admission of several transactions, in batch
        order (`_plain_submit`): one task, one inbox item and one wakeup instead of one of each
        per call; their answers are exactly what the calls would get one by one."""
        answers: list[dict | None] = [None] * len(calls)

        async def answer(index: int, request: Any) -> None:
            answers[index] = await self.handle_request(request, deadline)

        async def answer_submits(first: int, raws: list[bytes]) -> None:
            ids = [calls[index]["id"] for index in range(first, first + len(raws))]
            with trio.move_on_at(deadline):
                try:
                    results = await self.methods.broadcast_tx_sync_many(raws)
                except Exception:
                    log.exception("rpc method broadcast_tx_sync failed")
                    error = RpcError(INTERNAL_ERROR, "Internal error")
                    for offset, request_id in enumerate(ids):
                        answers[first + offset] = _error_response(error, request_id)
                    return
                for offset, (request_id, result) in enumerate(zip(ids, results, strict=True)):
                    answers[first + offset] = {"jsonrpc": "2.0", "result": result, "id": request_id}
                return
            timeout = RpcError(
                SERVER_LIMIT, "Request timed out", "broadcast_tx_sync did not finish in time"
            )
            for offset, request_id in enumerate(ids):
                answers[first + offset] = _error_response(timeout, request_id)

        async with trio.open_nursery() as nursery:
            index = 0
            while index < len(calls):
                raws: list[bytes] = []
                while index + len(raws) < len(calls):
                    raw = _plain_submit(calls[index + len(raws)])
                    if raw is None:
                        break
                    raws.append(raw)
                if len(raws) > 1:
                    nursery.start_soon(answer_submits, index, raws)
                    index += len(raws)
                else:
                    nursery.start_soon(answer, index, calls[index])
                    index += 1
                await trio.lowlevel.checkpoint()
        return [a for a in answers if a is not None] or None

    async def handle_request(self, request: Any, deadline: float) -> dict | None:
        """One call: its response object, or None for a valid notification."""
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
            or ("id" in request and not _valid_id(request["id"]))
            or not isinstance(request.get("params", []), (list, dict))
        ):
            request_id = None
            if isinstance(request, dict) and _valid_id(request.get("id")):
                request_id = request.get("id")
            return _error_response(RpcError(INVALID_REQUEST, "Invalid Request"), request_id)
        notification = "id" not in request
        request_id = request.get("id")
        try:
            result = await self._call(request["method"], request.get("params"), deadline)
        except RpcError as error:
            return None if notification else _error_response(error, request_id)
        if notification:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": request_id}

    async def _call(self, name: str, params: Any, deadline: float) -> Any:
        method = self.methods.table.get(name)
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, "Method not found", name[:100])
        bound = _bind_params(method, params)
        with trio.move_on_at(deadline + method.extra_time_ms / 1000):
            try:
                return await method.handler(**bound)
            except RpcError:
                raise
            except Exception:
                # Never a traceback to the client: the operator reads it in the log.
                log.exception("rpc method %s failed", name)
                raise RpcError(INTERNAL_ERROR, "Internal error") from None
        raise RpcError(SERVER_LIMIT, "Request timed out", f"{name} did not finish in time")


def _origin(scope: dict) -> str | None:
    for header, value in scope.get("headers", ()):
        if header.lower() == b"origin":
            return value.decode("latin-1")
    return None


def _with_headers(send: Callable, extra: list[tuple[bytes, bytes]]) -> Callable:
    """`send` adding `extra` headers to the response start (CORS)."""
    if not extra:
        return send

    async def sender(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return sender


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _read_body(scope: dict, receive: Callable, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes."""
    for header, value in scope.get("headers", ()):
        if header.lower() == b"content-length":
            try:
                if int(value) > limit:
                    return None
            except ValueError:
                pass
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(
    send: Callable, status: int, body: bytes, content_type: bytes | None, allow: bytes = b""
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if allow:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Callable, status: int, obj: Any) -> None:
    try:
        # ASCII output: a lone surrogate a client smuggled in as a JSON escape (and that an
        # error message echoes) goes back escaped instead of failing to encode.
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError):
        # A result the node handed over that is not JSON (bytes, a float NaN...): a bug of
        # ours, answered like any other internal error.
        log.exception("rpc result is not JSON")
        text = json.dumps(_error_response(RpcError(INTERNAL_ERROR, "Internal error")))
    body = text.encode("utf-8")
    await _respond(send, status, body, b"application/json")


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# --------------------------------------------------------------------------- serving


async def serve_asgi(
    app: Any,
    listen: str,
    *,
    name: str,
    max_ws_message: int | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` with hypercorn's trio worker on `listen` ("host:port", "[v6]:port");
    reports the bound port (an int) through `task_status`, so port 0 works."""
    config = HypercornConfig()
    config.bind = [listen]
    config.accesslog = None
    config.errorlog = logging.getLogger(f"khazana.{name}.http")
    if max_ws_message is not None:
        config.websocket_max_message_size = max_ws_message
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config))
        port = int(binds[0].rsplit(":", 1)[1])
        log.info("%s listening on %s", name, binds[0])
        task_status.started(port)


async def serve_rpc(api: Any, config: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve JSON-RPC for the node behind `api` until cancelled.

    `config`: `RpcLimits`, or the node's config (its `rpc` section is read by attribute name,
    see `RpcLimits.from_config`). Reports the bound port through `task_status`.
    """
    limits = RpcLimits.from_config(config)
    await serve_asgi(
        RpcApp(api, limits),
        limits.listen,
        name="rpc",
        # hypercorn refuses larger frames itself; ours is checked again per message.
        max_ws_message=limits.ws_max_message_bytes + 1024,
        task_status=task_status,
    )
