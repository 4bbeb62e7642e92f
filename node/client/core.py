"""The SDK's sans-IO core: every RPC method as a *plan*, and the bytes of JSON-RPC and HTTP.

A plan is a generator that yields what it needs done -- a `Call` (one JSON-RPC call) or a
`Sleep` -- and receives the call's result (or has the call's `RpcError` thrown into it), and
finally returns its value. The plans never touch a socket or a clock, so the sync client
(`node/client/sync.py`, over `http.client`) and the trio client (`node/client/aio.py`, over
`trio.open_tcp_stream`) run the very same plans and differ only in how they carry bytes and
how they sleep. Everything that can be decided without I/O is here: request encoding,
response checking, error mapping, result typing, nonce lookup, commit waiting.

Also here, for the trio transport: HTTP/1.1 request bytes and a bounded response parser
(`Content-Length` or `Connection: close` bodies, and chunked bodies).
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ledger.crypto import KeyPair, address_to_text
from ledger.tx import SignedTx
from node.client.errors import (
    CommitTimeout,
    ProtocolError,
    RpcError,
    TxRejected,
)
from node.client.ops import Operation, to_address
from node.client.signing import sign, tx_to_base64
from node.home import DEFAULT_BASE_PORT, DEFAULT_HOST
from node.rpc.auth import authorization_header

METHOD_NOT_FOUND = -32601
NOT_FOUND = -32001
COMMIT_TIMEOUT = -32002  # broadcast_tx_commit: admitted, not committed within the node's wait
ALREADY_COMMITTED = 408  # ledger.codes.Code.ALREADY_COMMITTED: sent again after its commit
ACCESS_DENIED = -32004  # unauthorized (no or bad credentials) / forbidden (not yours to read)
# Where `khazana init` puts the first node's JSON-RPC (node/home.py: node k listens on
# base + 3k + 1), so that the CLI and SDK reach a fresh local network without --rpc.
DEFAULT_RPC = f"http://{DEFAULT_HOST}:{DEFAULT_BASE_PORT + 1}"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # a block of many transactions fits; nothing bigger
POLL_INTERVAL_S = 0.2  # while waiting for a commit without broadcast_tx_commit

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Plan = Generator[Call | Sleep, Any, T]


# --------------------------------------------------------------------------- JSON-RPC


def encode_request(call: Call, request_id: int) -> bytes:
    params = {name: value for name, value in call.params.items() if value is not None}
    message = {"jsonrpc": "2.0", "id": request_id, "method": call.method, "params": params}
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def decode_response(status: int, body: bytes, request_id: int) -> Any:
    """The result of one call from its HTTP status and body; RpcError for an error object,
    ProtocolError for anything that is not JSON-RPC 2.0."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"HTTP {status}: the answer is not JSON ({body[:80]!r})") from None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise ProtocolError(f"HTTP {status}: the answer is not a JSON-RPC 2.0 response")
    error = message.get("error")
    if error is not None:
        if not isinstance(error, dict) or type(error.get("code")) is not int:
            raise ProtocolError(f"HTTP {status}: malformed JSON-RPC error object")
        raise RpcError(error["code"], str(error.get("message", "")), error.get("data"))
    # An id of null answers a request the node could not read at all (-32600/-32700 above).
    if message.get("id") != request_id:
        raise ProtocolError(f"answer for id {message.get('id')!r}, expected {request_id}")
    if "result" not in message:
        raise ProtocolError("JSON-RPC response with neither result nor error")
    return message["result"]


# --------------------------------------------------------------------------- HTTP/1.1


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a node's JSON-RPC listens, from its URL (`http(s)://host:port[/path]`)."""

    url: str
    host: str
    port: int
    path: str
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"RPC URL must be http(s)://HOST:PORT, got {url!r}")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError:
            raise ValueError(f"RPC URL has a bad port: {url!r}") from None
        return cls(url, parts.hostname, port, parts.path or "/", tls)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"


def tls_context(
    ca_file: str | None = None, client_cert: tuple[str, str] | None = None
) -> ssl.SSLContext:
    """A client TLS context that verifies the node's certificate (against `ca_file`, else the
    system's CAs) and its host name; `client_cert` (cert, key) for a node that asks for one."""
    context = ssl.create_default_context(cafile=ca_file)
    if client_cert is not None:
        context.load_cert_chain(*client_cert)
    return context


class Credentials:
    """Signs each request with the client's key (docs/RPC.md, "Authentication").

    What it signs over -- the node's chain id and node id -- is learnt from the node: from an
    unsigned `status` (`learn_status`) or, when the node answers no one without credentials,
    from the `data` of its -32004 `unauthorized` refusal (`learn_refusal`), which also carries
    the node's clock, so a client whose clock is off still signs a timestamp the node takes."""

    def __init__(self, key: KeyPair) -> None:
        self.key = key
        self.chain_id: str | None = None
        self.node_id: str | None = None
        self.offset_ms = 0

    @property
    def ready(self) -> bool:
        return self.chain_id is not None and self.node_id is not None

    def learn_status(self, result: dict) -> None:
        self.chain_id = str(result["node_info"]["network"])
        self.node_id = str(result["node_info"]["id"])

    def learn_refusal(self, exc: RpcError) -> bool:
        """True if the refusal taught something new (sign again and retry once)."""
        data = exc.data
        if exc.code != ACCESS_DENIED or exc.message != "unauthorized" or not isinstance(data, dict):
            return False
        learnt = False
        if isinstance(data.get("chain_id"), str) and isinstance(data.get("node_id"), str):
            learnt = (data["chain_id"], data["node_id"]) != (self.chain_id, self.node_id)
            self.chain_id, self.node_id = data["chain_id"], data["node_id"]
        if data.get("rule") == "auth.timestamp" and type(data.get("time_ms")) is int:
            self.offset_ms = data["time_ms"] - time.time_ns() // 1_000_000
            learnt = True
        return learnt

    def header(self, method: str, path: str, body: bytes) -> str:
        """The `Authorization` header value for one request."""
        return authorization_header(
            self.key,
            chain_id=self.chain_id or "",
            node_id=self.node_id or "",
            method=method,
            path=path,
            body=body,
            timestamp_ms=time.time_ns() // 1_000_000 + self.offset_ms,
        )


def http_request(endpoint: Endpoint, body: bytes, authorization: str | None = None) -> bytes:
    """One HTTP/1.1 POST; `Connection: close` so the body ends at the latest with the stream."""
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    head = (
        f"POST {endpoint.path} HTTP/1.1\r\n"
        f"Host: {endpoint.host_header}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"{auth}"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class HttpResponseParser:
    """Feed it the bytes of one HTTP/1.1 response; `result()` is (status, body) once complete.

    Bounded: more than `limit` bytes is a ProtocolError, never an ever-growing buffer.
    """

    def __init__(self, limit: int = MAX_RESPONSE_BYTES) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._eof = False

    def feed(self, data: bytes) -> None:
        if not data:
            self._eof = True
            return
        self._buffer += data
        if len(self._buffer) > self.limit:
            raise ProtocolError(f"response larger than {self.limit} bytes")

    def result(self) -> tuple[int, bytes] | None:
        """(status, body) when the response is complete, None while more is needed."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if self._eof:
                raise ProtocolError("connection closed before the HTTP headers ended")
            return None
        status, headers = _parse_head(bytes(self._buffer[:end]))
        rest = bytes(self._buffer[end + 4 :])
        if status in (204, 304) or 100 <= status < 200:
            return status, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = _dechunk(rest, self._eof)
            return None if body is None else (status, body)
        length = headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length!r}") from None
            if len(rest) >= size:
                return status, rest[:size]
            if self._eof:
                raise ProtocolError(f"connection closed after {len(rest)} of {size} body bytes")
            return None
        return (status, rest) if self._eof else None


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _dechunk(data: bytes, eof: bool) -> bytes | None:
    body = bytearray()
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            break
        try:
            size = int(data[position:line_end].split(b";")[0], 16)
        except ValueError:
            raise ProtocolError("bad chunk size in a chunked response") from None
        start = line_end + 2
        if size == 0:
            return bytes(body)
        if len(data) < start + size + 2:
            break
        body += data[start : start + size]
        position = start + size + 2
    if eof:
        raise ProtocolError("connection closed in the middle of a chunked body")
    return None


# --------------------------------------------------------------------------- typed results


@dataclass(frozen=True, slots=True)
class Status:
    chain_id: str
    moniker: str
    role: str
    height: int
    block_hash: str
    app_hash: str
    block_time_ms: int
    catching_up: bool
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_result(cls, result: dict) -> Status:
        node, sync = result["node_info"], result["sync_info"]
        return cls(
            chain_id=node["network"],
            moniker=node["moniker"],
            role=node.get("role", ""),
            height=sync["latest_block_height"],
            block_hash=sync["latest_block_hash"],
            app_hash=sync["latest_app_hash"],
            block_time_ms=sync["latest_block_time"],
            catching_up=sync["catching_up"],
            raw=result,
        )


@dataclass(frozen=True, slots=True)
class Admission:
    """`broadcast_tx_sync` / `check_tx`: code 0 means admitted (or would be)."""

    code: int
    log: str
    hash: str | None
    codespace: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    @classmethod
    def from_result(cls, result: dict) -> Admission:
        return cls(
            result["code"], result.get("log", ""), result.get("hash"), result.get("codespace", "")
        )


@dataclass(frozen=True, slots=True)
class Committed:
    """A transaction in a block with its verdict (`code` 0: applied)."""

    hash: str
    height: int
    code: int
    log: str
    events: tuple = ()
    index: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0

    @classmethod
    def from_tx_result(cls, result: dict) -> Committed:
        outcome = result["tx_result"]
        return cls(
            hash=result["hash"],
            height=result["height"],
            code=outcome["code"],
            log=outcome.get("log", ""),
            events=tuple(outcome.get("events", ())),
            index=result.get("index"),
        )


# --------------------------------------------------------------------------- plans


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class Plans:
    """Every client operation, written once as a plan. Both clients run these.

    State: whether the node answers `broadcast_tx_commit` (learnt at the first -32601, so a
    node without it costs one extra call once, then the client polls `tx`).
    """

    def __init__(self) -> None:
        self.commit_supported = True

    # -- node

    def health(self) -> Plan[dict]:
        return (yield Call("health"))

    def status(self) -> Plan[Status]:
        return Status.from_result((yield Call("status")))

    def net_info(self) -> Plan[dict]:
        return (yield Call("net_info"))

    def genesis(self) -> Plan[dict]:
        result = yield Call("genesis")
        return result["genesis"]

    def validators(self, height: int | None = None) -> Plan[dict]:
        return (yield Call("validators", {"height": height}))

    def num_unconfirmed_txs(self) -> Plan[dict]:
        return (yield Call("num_unconfirmed_txs"))

    # -- blocks

    def block(self, height: int | None = None) -> Plan[dict]:
        return (yield Call("block", {"height": height}))

    def commit(self, height: int | None = None) -> Plan[dict]:
        return (yield Call("commit", {"height": height}))

    # -- state

    def account(self, address: str, prove: bool = False) -> Plan[dict]:
        params = {"address": address, "prove": True if prove else None}
        return (yield Call("account", params))

    def instrument(self, instrument_id: str) -> Plan[dict]:
        return (yield Call("instrument", {"id": instrument_id}))

    def quote(
        self,
        instrument: str,
        settlement: str,
        *,
        price: str | None = None,
        yield_: str | None = None,
    ) -> Plan[dict]:
        """Yield, clean and dirty price and accrued interest of a bond for `settlement`
        (YYYY-MM-DD), from a clean price per 100 of face or a yield (decimal text)."""
        params = {"instrument": instrument, "settlement": settlement, "price": price}
        return (yield Call("quote", {**params, "yield": yield_}))

    def instruments(self) -> Plan[list[dict]]:
        """Every instrument (follows the node's pages)."""
        items: list[dict] = []
        after = None
        while True:
            page = yield Call("instruments", {"after": after})
            items.extend(page["instruments"])
            after = page.get("next")
            if not after:
                return items

    def holders(self, instrument_id: str) -> Plan[list[dict]]:
        """Every holder of an instrument (follows the node's pages)."""
        items: list[dict] = []
        after = None
        while True:
            page = yield Call("holders", {"id": instrument_id, "after": after})
            items.extend(page["holders"])
            after = page.get("next")
            if not after:
                return items

    def events(
        self,
        account: str | None = None,
        instrument: str | None = None,
        from_height: int | None = None,
        to_height: int | None = None,
        page: int | None = None,
        per_page: int | None = None,
    ) -> Plan[list[dict]]:
        params = {
            "account": account,
            "instrument": instrument,
            "from_height": from_height,
            "to_height": to_height,
            "page": page,
            "per_page": per_page,
        }
        result = yield Call("events", params)
        return result["events"]

    def tx(self, tx_hash: str, prove: bool = False) -> Plan[dict]:
        return (yield Call("tx", {"hash": tx_hash, "prove": True if prove else None}))

    # -- transactions

    def next_nonce(self, address: str | bytes) -> Plan[int]:
        """The nonce the next transaction of `address` must carry (0 for an account the
        chain does not know yet: its transaction will be refused with a clear code)."""
        text = address if isinstance(address, str) else address_to_text(address)
        try:
            account = yield Call("account", {"address": text})
        except RpcError as exc:
            if exc.code == NOT_FOUND:
                return 0
            raise
        return account["nonce"]

    def prepare(
        self,
        operation: Operation,
        keys: Iterable[KeyPair],
        *,
        sender: str | bytes | None = None,
        nonce: int | None = None,
        chain_id: str | None = None,
    ) -> Plan[SignedTx]:
        """`operation` as a transaction signed by every key. The sender is the first key's
        account unless given; the nonce and chain id are asked of the node unless given."""
        keys = list(keys)
        if not keys:
            raise ValueError("at least one key signs a transaction")
        sender_address = keys[0].address if sender is None else to_address(sender, "sender")
        if chain_id is None:
            chain_id = (yield from self.status()).chain_id
        if nonce is None:
            nonce = yield from self.next_nonce(sender_address)
        return sign(operation.body(chain_id, sender_address, nonce), keys)

    def check_tx(self, tx: SignedTx | bytes) -> Plan[Admission]:
        return Admission.from_result((yield Call("check_tx", {"tx": _raw_b64(tx)})))

    def broadcast(self, tx: SignedTx | bytes) -> Plan[Admission]:
        """`broadcast_tx_sync`; TxRejected if the node refuses it at admission."""
        result = Admission.from_result((yield Call("broadcast_tx_sync", {"tx": _raw_b64(tx)})))
        if not result.ok:
            raise TxRejected(result.code, result.log, result.hash)
        return result

    def broadcast_commit(self, tx: SignedTx | bytes, timeout_s: float = 30.0) -> Plan[Committed]:
        """Submit and wait until the transaction is in a block; TxRejected if refused at
        admission or by execution (`height` says which), CommitTimeout if not in time."""
        encoded = _raw_b64(tx)
        if self.commit_supported:
            try:
                result = yield Call("broadcast_tx_commit", {"tx": encoded})
            except RpcError as exc:
                if exc.code == COMMIT_TIMEOUT and isinstance(exc.data, dict):
                    # The node's own wait is over; ours may not be: keep asking for it.
                    committed = yield from self.wait_for_tx(str(exc.data["hash"]), timeout_s)
                    return _committed_or_raise(committed)
                if exc.code != METHOD_NOT_FOUND:
                    raise
                self.commit_supported = False
            else:
                check = result.get("check_tx", {})
                if check.get("code") == ALREADY_COMMITTED and result.get("tx_result"):
                    # A retry of a transaction that made it: its committed result.
                    return _committed_or_raise(Committed.from_tx_result(result))
                if check.get("code", 0) != 0:
                    raise TxRejected(check["code"], check.get("log", ""), result.get("hash"))
                return _committed_or_raise(Committed.from_tx_result(result))
        admitted = yield from self.broadcast(tx)
        committed = yield from self.wait_for_tx(admitted.hash, timeout_s)
        return _committed_or_raise(committed)

    def wait_for_tx(self, tx_hash: str, timeout_s: float = 30.0) -> Plan[Committed]:
        """Poll `tx` until the transaction is in a block (counted in polls, not clock time)."""
        polls = max(1, int(timeout_s / POLL_INTERVAL_S))
        for _ in range(polls):
            try:
                result = yield Call("tx", {"hash": tx_hash})
            except RpcError as exc:
                if exc.code != NOT_FOUND:
                    raise
            else:
                return Committed.from_tx_result(result)
            yield Sleep(POLL_INTERVAL_S)
        raise CommitTimeout(tx_hash, timeout_s)

    def send(
        self,
        operation: Operation,
        keys: Iterable[KeyPair],
        *,
        wait: bool = True,
        sender: str | bytes | None = None,
        nonce: int | None = None,
        timeout_s: float = 30.0,
    ) -> Plan[Committed | Admission]:
        """Build, sign, submit; wait for the block unless `wait` is false."""
        tx = yield from self.prepare(operation, keys, sender=sender, nonce=nonce)
        if wait:
            return (yield from self.broadcast_commit(tx, timeout_s))
        return (yield from self.broadcast(tx))


def _raw_b64(tx: SignedTx | bytes) -> str:
    return tx_to_base64(tx) if isinstance(tx, SignedTx) else _b64(tx)


def _committed_or_raise(committed: Committed) -> Committed:
    if not committed.ok:
        raise TxRejected(committed.code, committed.log, committed.hash, committed.height)
    return committed


# Methods of `Plans` that the clients expose, each wrapped once for sync and once for trio.
PLAN_METHODS = (
    "health",
    "status",
    "net_info",
    "genesis",
    "validators",
    "num_unconfirmed_txs",
    "block",
    "commit",
    "account",
    "instrument",
    "instruments",
    "quote",
    "holders",
    "events",
    "tx",
    "next_nonce",
    "prepare",
    "check_tx",
    "broadcast",
    "broadcast_commit",
    "wait_for_tx",
    "send",
)
