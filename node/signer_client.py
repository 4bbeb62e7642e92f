"""The node's side of a remote signer (`[signer]` in config.toml; the signer: node/signer.py).

Design (docs/NODE.md "Remote signer"): the consensus core is sans-IO and calls `hooks.sign`
synchronously, in the middle of a step. The node hands the driver a `RemoteValidatorKey` as
its signing identity; its `sign` is a bounded blocking call:

* The link to the signer lives in its own thread with its own trio loop
  (`SignerConnection`): it dials (Unix socket or TCP), runs the peer links' Noise XX
  handshake (node/p2p/connection.py: the node proves its node key, the signer must prove the
  configured `public_key`), pings, and redials every `retry_ms` after a failure. Dialling and
  handshakes never run on the node's event loop.
* `sign` sends one request over the established link and waits for the answer at most
  `timeout_ms` (a Unix-socket round trip with the signer's fsync: a few milliseconds). No
  link, a timeout, a broken link or a refusal raise `SigningUnavailable` at once: the core
  signs nothing for that message and carries on (consensus/core.py), the node logs the
  change (once per outage) and counts it (`khazana_signer_failures_total{reason}`,
  `khazana_signer_up`). When the link is back, the next message the core signs goes through.
  The event loop is blocked at most `timeout_ms` per outage: after a timeout the link is
  dropped, and until the thread has redialled, `sign` fails without waiting.
* Safety never depends on this side: the signer refuses anything at or below its record.

The node's P2P identity with a signer is its own node key (`node_key.json`, like CometBFT's
node_key.json), not the validator key, which only the signer holds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from consensus.core import SigningUnavailable
from ledger.crypto import address_from_public_key, is_strict_public_key, verify_signature
from node.config import ConfigError, HostPort, NodeConfig
from node.p2p.connection import handshake_initiator
from node.p2p.errors import ConnectionClosed, PeerProtocolError

log = logging.getLogger(__name__)

_LIMITS = {"timeout_ms": (1000, 10, 60_000), "retry_ms": (1000, 50, 60_000)}
_PING_S = 5  # a link that stopped answering is noticed between votes, not at one
_CONNECT_TIMEOUT_S = 5
_MAX_ANSWER_BYTES = 4096


class SignerUnavailable(SigningUnavailable):
    """No answer from the signer (no link, a timeout, a broken link)."""


class SignerRefused(SigningUnavailable):
    """The signer answered with a refusal (`code`: node.signer.SignCode)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True, slots=True)
class SignerLink:
    """`[signer]`: where the signer listens, the keys it must prove and sign with, timings."""

    address: str | HostPort
    public_key: bytes
    validator_key: bytes
    timeout_ms: int = 1000
    retry_ms: int = 1000

    @classmethod
    def from_config(cls, config: NodeConfig) -> SignerLink | None:
        """The checked `[signer]` table, None without one; ConfigError names a bad key."""
        table = config.signer
        if table is None:
            return None
        return cls.from_table(table, config.config_path)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], path: Any) -> SignerLink:
        from node.signer import parse_listen

        known = {"address", "public_key", "validator_key", *_LIMITS}
        for name in sorted(set(table) - known):
            raise ConfigError(path, f"signer.{name}", f"unknown key (known: {sorted(known)})")
        try:
            address = parse_listen(table.get("address", ""))
        except (ValueError, TypeError) as exc:
            raise ConfigError(path, "signer.address", f"unix:PATH or host:port: {exc}") from None
        keys = {}
        for name in ("public_key", "validator_key"):
            text = table.get(name)
            raw = bytes.fromhex(text) if _is_hex64(text) else b""
            if not is_strict_public_key(raw):
                raise ConfigError(path, f"signer.{name}", "64 hex digits of an Ed25519 key")
            keys[name] = raw
        limits = {}
        for name, (default, low, high) in _LIMITS.items():
            value = table.get(name, default)
            if type(value) is not int or not low <= value <= high:
                raise ConfigError(path, f"signer.{name}", f"an integer from {low} to {high}")
            limits[name] = value
        return cls(address, keys["public_key"], keys["validator_key"], **limits)


def _is_hex64(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class RemoteValidatorKey:
    """The driver's signing identity when a signer holds the validator key: `.public_key`,
    `.address` and `.sign(data)` like a `KeyPair`, signing through `call(request) -> answer`
    (a `SignerConnection`, or an in-process stand-in in tests)."""

    def __init__(
        self,
        public_key: bytes,
        call: Callable[[bytes], bytes],
        *,
        name: str = "node",
        metrics: Any | None = None,  # node.metrics.Metrics
    ) -> None:
        self.public_key = public_key
        self.address = address_from_public_key(public_key)
        self._call = call
        self._name = name
        self._metrics = metrics
        self._up: bool | None = None

    def sign(self, data: bytes) -> bytes:
        started = time.perf_counter()
        try:
            raw = self._call(msgpack.packb({"op": "sign", "data": data}, use_bin_type=True))
        except SignerUnavailable as exc:
            self._failed("unavailable", exc)
            raise
        answer = _decode(raw)
        signature = answer.get("signature")
        if answer.get("ok") is True and type(signature) is bytes:
            if verify_signature(self.public_key, data, signature):
                self._set_up(True)
                if self._metrics is not None:
                    self._metrics.signer_signed(time.perf_counter() - started)
                return signature
            refusal = SignerRefused("bad_signature", "the signature does not verify")
        else:
            refusal = SignerRefused(str(answer.get("code", "malformed"))[:32], "refused")
            refusal.args = (f"{refusal.code}: {str(answer.get('error', ''))[:300]}",)
        self._set_up(True)
        self._failed(refusal.code, refusal)
        raise refusal

    def _failed(self, reason: str, exc: Exception) -> None:
        if reason == "unavailable":
            self._set_up(False, exc)
        else:
            log.warning("%s: the signer refused to sign: %s", self._name, exc)
        if self._metrics is not None:
            self._metrics.signer_failed(reason)

    def _set_up(self, up: bool, exc: Exception | None = None) -> None:
        if up == self._up:
            return
        self._up = up
        if self._metrics is not None:
            self._metrics.set_signer_up(up)
        if up:
            log.info("%s: signing through the remote signer", self._name)
        else:
            log.warning("%s: NOT SIGNING: the remote signer is unavailable (%s)", self._name, exc)


def _decode(raw: bytes) -> dict:
    try:
        answer = msgpack.unpackb(raw, raw=False) if len(raw) <= _MAX_ANSWER_BYTES else None
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        answer = None
    return answer if isinstance(answer, dict) else {"ok": False, "code": "malformed"}


class SignerConnection:
    """The link to the signer, kept up by a thread with its own trio loop; `call` is the
    bounded blocking request of `RemoteValidatorKey` (see the module docstring)."""

    def __init__(self, link: SignerLink, node_identity: Any, chain_id: str) -> None:
        self.link = link
        self._identity = node_identity
        self._chain_id = chain_id
        self._token: trio.lowlevel.TrioToken | None = None
        self._conn: Any | None = None  # PeerConnection while up
        self._lock: trio.Lock | None = None
        self._stop: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="signer-link", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def close(self) -> None:
        token, stop = self._token, self._stop
        if token is not None and stop is not None:
            try:
                token.run_sync_soon(stop.cancel)
            except trio.RunFinishedError:
                pass
        self._thread.join(5)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def call(self, request: bytes) -> bytes:
        if self._conn is None or self._token is None:
            raise SignerUnavailable(f"no link to the signer at {self._where}")
        future: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        try:
            self._token.run_sync_soon(self._nursery.start_soon, self._round_trip, request, future)
        except trio.RunFinishedError:
            raise SignerUnavailable("the signer link is closed") from None
        try:
            return future.result(self.link.timeout_ms / 1000)
        except concurrent.futures.TimeoutError:
            self._drop("no answer within signer.timeout_ms")
            raise SignerUnavailable(f"no answer within {self.link.timeout_ms} ms") from None

    @property
    def _where(self) -> str:
        address = self.link.address
        return f"unix:{address}" if isinstance(address, str) else str(address)

    def _main(self) -> None:
        trio.run(self._run)

    async def _run(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._lock = trio.Lock()
        with trio.CancelScope() as self._stop:
            async with trio.open_nursery() as self._nursery:
                self._ready.set()
                while True:
                    try:
                        await self._connect_and_ping()
                    except (OSError, PeerProtocolError, ConnectionClosed, trio.TooSlowError) as exc:
                        log.debug("signer link to %s: %s", self._where, exc)
                    except trio.BrokenResourceError as exc:
                        log.debug("signer link to %s broke: %s", self._where, exc)
                    self._conn = None
                    await trio.sleep(self.link.retry_ms / 1000)

    async def _connect_and_ping(self) -> None:
        address = self.link.address
        with trio.fail_after(_CONNECT_TIMEOUT_S):
            if isinstance(address, HostPort):
                stream = await trio.open_tcp_stream(address.host, address.port)
            else:
                stream = await trio.open_unix_socket(address)
        async with stream:
            conn = await handshake_initiator(
                stream,
                self._identity,
                self._chain_id,
                lambda key: key == self.link.public_key,
                timeout_s=_CONNECT_TIMEOUT_S,
            )
            self._broken = trio.Event()
            answer = await self._exchange(conn, msgpack.packb({"op": "ping"}))
            if _decode(answer).get("public_key") != self.link.validator_key:
                log.error(
                    "the signer at %s does not hold validator key %s: not signing through it",
                    self._where,
                    self.link.validator_key.hex(),
                )
                return
            self._conn = conn
            while not self._broken.is_set():
                with trio.move_on_after(_PING_S):
                    await self._broken.wait()
                if not self._broken.is_set():
                    await self._exchange(conn, msgpack.packb({"op": "ping"}))

    async def _exchange(self, conn: Any, request: bytes) -> bytes:
        assert self._lock is not None
        async with self._lock:
            with trio.fail_after(self.link.timeout_ms / 1000):
                await conn.send(request)
                return await conn.receive()

    async def _round_trip(self, request: bytes, future: concurrent.futures.Future[bytes]) -> None:
        conn = self._conn
        try:
            if conn is None:
                raise SignerUnavailable("the signer link went down")
            future.set_result(await self._exchange(conn, request))
        except (
            SignerUnavailable,
            OSError,
            PeerProtocolError,
            ConnectionClosed,
            trio.TooSlowError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        ) as exc:
            self._drop(str(exc) or type(exc).__name__)
            if not future.done():
                future.set_exception(SignerUnavailable(f"signer link: {exc}"))

    def _drop(self, why: str) -> None:
        """Take the link down (from either thread): the next call fails at once, the thread
        redials. Called after a timeout too, so a late answer is never read as the next one."""
        self._conn = None
        token = self._token
        broken = getattr(self, "_broken", None)
        if token is not None and broken is not None:
            try:
                token.run_sync_soon(broken.set)
            except trio.RunFinishedError:
                pass
        log.debug("signer link dropped: %s", why)
