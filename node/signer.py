"""The remote signer (`khazana signer --home DIR`): the validator key off the node, and
double-sign protection kept by the signer itself (tmkms, Horcrux; docs/OPERATIONS.md "Keys").

What this module owns:

* `SignRecord`: the signer's durable record (SQLite, `synchronous = FULL`) of what it signed:
  every signed message of the last `HISTORY` slots with its signature; the highest
  (height, round, step) among them is "the last signed". Written and committed before the
  signature leaves the signer.
* `SignerService.handle(request) -> response`: the decision, sans-IO. A request carries the
  exact bytes the consensus core wants signed; the signer parses them (a proposal or a vote
  of ITS chain id, nothing else: a signer never signs arbitrary bytes), then:
    - the identical bytes were signed before: the same signature again (a node that crashed
      after the answer and asks again, or the second node of a failover pair);
    - (height, round, step) at or below the last signed: refused, `double_sign`;
    - else: sign, record (fsync), answer.
  Steps order proposal < prevote < precommit within a round, as the core signs them.
* `serve_signer`: the listener, a Unix socket or TCP, every connection behind the peer
  links' Noise XX handshake (node/p2p/connection.py): the signer proves its own transport
  key, the node proves its node key, and only the configured node keys (`nodes`) are
  admitted. At most `MAX_CONNECTIONS` at once; requests are handled one at a time.
* The signer's home folder (`SignerHome`): `signer.toml`, `signer_key.json` (its transport
  identity, may be plain: it signs no consensus message), the validator key (plain, encrypted
  or, through `key_loader`, any object with `.public_key` and `.sign`, e.g. an HSM key), and
  `signer.db` (the record).

Fail points (`KHAZANA_SIGNER_FAILPOINTS=before_record,after_record`) end the process with
exit status 137 at that point, for the kill-and-restart tests: `before_record` after signing
in memory but before the record is durable (nothing was released), `after_record` once it is
durable but before the answer leaves.

Wire (msgpack maps inside the Noise transport): request `{"op": "sign", "data": bytes}` or
`{"op": "ping"}`; answer `{"ok": true, "signature": bytes}` / `{"ok": true, "public_key":
bytes}` or `{"ok": false, "code": CODE, "error": text}` with CODE one of `SignCode`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import msgpack
import trio

from consensus.types import PROPOSAL_DOMAIN_TAG, PROPOSAL_TYPE_BYTE, VOTE_DOMAIN_TAG, chain_prefix
from ledger.crypto import is_encrypted_key_file, read_key_file, verify_signature
from ledger.tx import CHAIN_ID_PATTERN
from node.config import ConfigError, HostPort
from node.p2p.connection import handshake_responder
from node.p2p.errors import ConnectionClosed, PeerProtocolError

log = logging.getLogger(__name__)

SIGNER_CONFIG_FILE = "signer.toml"
SIGNER_KEY_FILE = "signer_key.json"
VALIDATOR_KEY_FILE = "validator_key.json"
RECORD_FILE = "signer.db"
HISTORY = 64  # signed messages kept for identical re-asks (a few rounds of one height)
MAX_CONNECTIONS = 4  # a node, its failover twin, and room for a reconnect racing a stale link
MAX_REQUEST_BYTES = 4096  # a sign request holds a proposal's or vote's signing bytes only
FAILPOINTS = ("before_record", "after_record")
FAILPOINT_EXIT_CODE = 137
_IDLE_TIMEOUT_S = 3600  # a node pings every few seconds; a silent link this long is dead

# Step of a signed message, in the order the core signs them within one round.
STEP_PROPOSAL, STEP_PREVOTE, STEP_PRECOMMIT = 1, 2, 3
_VOTE_STEPS = {1: STEP_PREVOTE, 2: STEP_PRECOMMIT}  # VoteType -> step
_HEADER = struct.Struct(">BQI")  # type, height, round (consensus/types.py signing bytes)


class SignCode(StrEnum):
    """Stable codes of a signer's refusal (the node logs and counts them)."""

    DOUBLE_SIGN = "double_sign"
    WRONG_CHAIN = "wrong_chain"
    MALFORMED = "malformed"
    INTERNAL = "internal"


class SignRefused(Exception):
    def __init__(self, code: SignCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ValidatorKey(Protocol):
    """`ledger.crypto.KeyPair`, an HSM-held key, anything that signs with Ed25519."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """(height, round, step) of one signed message: the order of the double-sign guard."""

    height: int
    round: int
    step: int


def parse_sign_bytes(data: bytes, chain_id: str) -> Slot:
    """The slot of a proposal's or vote's signing bytes for `chain_id`; SignRefused for any
    other bytes (another chain, another domain, trailing bytes, a nil proposal)."""
    if type(data) is not bytes or len(data) > MAX_REQUEST_BYTES:
        raise SignRefused(SignCode.MALFORMED, "sign data must be bytes of a consensus message")
    for tag, kinds in ((VOTE_DOMAIN_TAG, (1, 2)), (PROPOSAL_DOMAIN_TAG, (PROPOSAL_TYPE_BYTE,))):
        if not data.startswith(tag):
            continue
        prefix = chain_prefix(tag, chain_id)
        if not data.startswith(prefix):
            raise SignRefused(SignCode.WRONG_CHAIN, f"not a message of chain {chain_id!r}")
        rest = data[len(prefix) :]
        if len(rest) < _HEADER.size + 1:
            break
        kind, height, round_ = _HEADER.unpack_from(rest)
        id_length = rest[_HEADER.size]
        tail = rest[_HEADER.size + 1 + id_length :]
        if kind not in kinds or height < 1 or len(rest) < _HEADER.size + 1 + id_length:
            break
        if kind == PROPOSAL_TYPE_BYTE:
            if id_length == 0 or len(tail) != 4:
                break
            return Slot(height, round_, STEP_PROPOSAL)
        if tail:
            break
        return Slot(height, round_, _VOTE_STEPS[kind])
    raise SignRefused(SignCode.MALFORMED, "not the signing bytes of a proposal or a vote")


class SignRecord:
    """The signer's durable memory of what it signed (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = sqlite3.connect(os.fspath(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")  # commit = fsynced
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS signed (height INTEGER NOT NULL, round INTEGER NOT NULL,"
            " step INTEGER NOT NULL, data BLOB NOT NULL UNIQUE, signature BLOB NOT NULL)"
        )

    def last(self) -> Slot | None:
        row = self._db.execute(
            "SELECT height, round, step FROM signed ORDER BY height DESC, round DESC, step DESC"
            " LIMIT 1"
        ).fetchone()
        return None if row is None else Slot(*row)

    def signature_of(self, data: bytes) -> bytes | None:
        row = self._db.execute("SELECT signature FROM signed WHERE data = ?", (data,)).fetchone()
        return None if row is None else bytes(row[0])

    def add(self, slot: Slot, data: bytes, signature: bytes) -> None:
        """Record a signature (committed and fsynced when this returns), keep the last HISTORY."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO signed VALUES (?, ?, ?, ?, ?)",
                (slot.height, slot.round, slot.step, data, signature),
            )
            self._db.execute(
                "DELETE FROM signed WHERE rowid NOT IN (SELECT rowid FROM signed ORDER BY"
                " height DESC, round DESC, step DESC LIMIT ?)",
                (HISTORY,),
            )

    def set_last(self, slot: Slot) -> None:
        """Start the record at `slot` (moving a validator to this signer: its node's last
        signed slot), so nothing at or below it is ever signed here. Never lowers it."""
        last = self.last()
        if last is not None and last >= slot:
            return
        self.add(slot, b"imported:%d/%d/%d" % (slot.height, slot.round, slot.step), b"")

    def slots(self) -> list[tuple[Slot, bytes]]:
        """Every (slot, data) kept, for tests and `khazana signer --status`."""
        rows = self._db.execute("SELECT height, round, step, data FROM signed").fetchall()
        return [(Slot(h, r, s), bytes(d)) for h, r, s, d in rows]

    def close(self) -> None:
        self._db.close()


class SignerService:
    """The sans-IO signer: `handle` one request, answer bytes (module docstring)."""

    def __init__(
        self,
        key: ValidatorKey,
        chain_id: str,
        record: SignRecord,
        *,
        failpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.key = key
        self.chain_id = chain_id
        self.record = record
        self._failpoint = failpoint or (lambda name: None)
        self.signed = 0
        self.refused = 0

    def sign(self, data: bytes) -> bytes:
        """The signature of `data` under the rules, or SignRefused."""
        slot = parse_sign_bytes(data, self.chain_id)
        earlier = self.record.signature_of(data)
        if earlier is not None:
            return earlier
        last = self.record.last()
        if last is not None and slot <= last:
            raise SignRefused(
                SignCode.DOUBLE_SIGN,
                f"already signed at height {last.height} round {last.round} step {last.step}; "
                f"refusing height {slot.height} round {slot.round} step {slot.step}",
            )
        signature = self.key.sign(data)
        if not verify_signature(self.key.public_key, data, signature):
            raise SignRefused(SignCode.INTERNAL, "the key made a signature that does not verify")
        self._failpoint("before_record")
        self.record.add(slot, data, signature)
        self._failpoint("after_record")
        return signature

    def handle(self, raw: bytes) -> bytes:
        """One request's answer; never raises for anything a client sends."""
        try:
            request = msgpack.unpackb(raw, raw=False) if len(raw) <= MAX_REQUEST_BYTES else None
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            request = None
        if not isinstance(request, dict):
            return _error(SignCode.MALFORMED, "a request is a msgpack map")
        if request.get("op") == "ping":
            return _pack({"ok": True, "public_key": self.key.public_key})
        if request.get("op") != "sign":
            return _error(SignCode.MALFORMED, "op must be sign or ping")
        try:
            signature = self.sign(request.get("data"))
        except SignRefused as exc:
            self.refused += 1
            log.warning("signer: refused (%s): %s", exc.code, exc)
            return _error(exc.code, str(exc))
        self.signed += 1
        return _pack({"ok": True, "signature": signature})


def _pack(document: dict[str, Any]) -> bytes:
    return msgpack.packb(document, use_bin_type=True)


def _error(code: SignCode, message: str) -> bytes:
    return _pack({"ok": False, "code": str(code), "error": message})


# ---------------------------------------------------------------------- listener


def parse_listen(text: str) -> str | HostPort:
    """`unix:/path/to.sock` (a path) or `host:port` (TCP); ValueError otherwise."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path or "\x00" in path:
            raise ValueError(f"unix: needs a socket path, got {text!r}")
        return path
    return HostPort.parse(text)


async def open_listener(address: str | HostPort) -> trio.abc.Listener:
    if isinstance(address, HostPort):
        listeners = await trio.open_tcp_listeners(address.port, host=address.host)
        return trio.MultiListener(listeners) if len(listeners) > 1 else listeners[0]
    path = Path(address)
    if path.is_socket():
        path.unlink()  # a stale socket of a previous run (the home lock says none runs)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is the owner's alone (0600)
    try:
        await sock.bind(os.fspath(path))
    finally:
        os.umask(old_umask)
    sock.listen(MAX_CONNECTIONS)
    return trio.SocketListener(sock)


async def serve_signer(
    service: SignerService,
    listener: trio.abc.Listener,
    *,
    identity: ValidatorKey,
    nodes: frozenset[bytes],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept node links (Noise XX, only `nodes` admitted) and answer their requests."""
    lock = trio.Lock()  # one request at a time: check-record-answer is one step
    slots = trio.Semaphore(MAX_CONNECTIONS)

    async def serve_one(stream: trio.abc.Stream) -> None:
        async with stream:
            if slots.value == 0:
                return  # full: drop at once rather than queue behind live links
            async with slots:
                try:
                    link = await handshake_responder(
                        stream, identity, service.chain_id, nodes.__contains__
                    )
                    log.info("signer: node %s connected", link.remote_key.hex()[:16])
                    while True:
                        with trio.fail_after(_IDLE_TIMEOUT_S):
                            request = await link.receive()
                        async with lock:
                            answer = service.handle(request)
                        await link.send(answer)
                except (PeerProtocolError, ConnectionClosed, trio.BrokenResourceError) as exc:
                    log.info("signer: link closed: %s", exc)
                except (trio.TooSlowError, OSError) as exc:
                    log.info("signer: link dropped: %s", exc)

    async with listener:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(serve_one, stream)


# ---------------------------------------------------------------------- home folder


@dataclass(frozen=True, slots=True)
class SignerConfig:
    """`signer.toml`: chain_id, listen ("unix:PATH" or "host:port"), nodes (hex node keys
    admitted), key_file (the validator key, relative to the home; default validator_key.json)."""

    home: Path
    chain_id: str
    listen: str | HostPort
    nodes: frozenset[bytes]
    key_file: str = VALIDATOR_KEY_FILE

    @classmethod
    def load(cls, home: str | os.PathLike[str]) -> SignerConfig:
        home = Path(home)
        path = home / SIGNER_CONFIG_FILE
        try:
            document = tomllib.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(path, "", f"not valid TOML: {exc}") from None
        known = {"chain_id", "listen", "nodes", "key_file"}
        for name in sorted(set(document) - known):
            raise ConfigError(path, name, f"unknown key (known: {', '.join(sorted(known))})")
        chain_id = document.get("chain_id")
        if type(chain_id) is not str or not CHAIN_ID_PATTERN.fullmatch(chain_id):
            raise ConfigError(path, "chain_id", f"must be a chain id, got {chain_id!r}")
        try:
            listen = parse_listen(document.get("listen", ""))
        except (ValueError, TypeError) as exc:
            raise ConfigError(path, "listen", f"unix:PATH or host:port: {exc}") from None
        nodes = document.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            raise ConfigError(path, "nodes", "a list of the node keys it serves (hex)")
        keys = set()
        for index, text in enumerate(nodes):
            if type(text) is not str or len(text) != 64:
                raise ConfigError(path, f"nodes[{index}]", "64 hex digits of a node's key")
            try:
                keys.add(bytes.fromhex(text))
            except ValueError:
                raise ConfigError(path, f"nodes[{index}]", "not hex") from None
        key_file = document.get("key_file", VALIDATOR_KEY_FILE)
        if type(key_file) is not str or not key_file:
            raise ConfigError(path, "key_file", "a file name")
        return cls(home, chain_id, listen, frozenset(keys), key_file)


def failpoint_from_env(environ: dict[str, str] | None = None) -> Callable[[str], None]:
    text = (os.environ if environ is None else environ).get("KHAZANA_SIGNER_FAILPOINTS", "")
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names - set(FAILPOINTS):
        raise ValueError(f"unknown signer fail points {sorted(names - set(FAILPOINTS))}")

    def failpoint(name: str) -> None:
        if name in names:
            log.critical("signer: fail point %s: exiting", name)
            os._exit(FAILPOINT_EXIT_CODE)

    return failpoint


async def run_signer(
    config: SignerConfig, *, key_loader: Callable[[Path], ValidatorKey] = read_key_file
) -> int:
    """`khazana signer --home DIR`: serve until SIGTERM/SIGINT (exit 0)."""
    import signal

    identity = read_key_file(config.home / SIGNER_KEY_FILE)
    key_path = config.home / config.key_file
    if key_path.is_file() and not is_encrypted_key_file(key_path):
        log.warning("signer: %s is not encrypted (khazana key encrypt %s)", key_path, key_path)
    key = key_loader(key_path)
    record = SignRecord(config.home / RECORD_FILE)
    service = SignerService(key, config.chain_id, record, failpoint=failpoint_from_env())
    try:
        listener = await open_listener(config.listen)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: serve_signer(
                        service,
                        listener,
                        identity=identity,
                        nodes=config.nodes,
                        task_status=task_status,
                    )
                )
                log.info(
                    "signer: serving validator %s on %s, last signed %s",
                    key.public_key.hex(),
                    config.listen,
                    record.last(),
                )
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    finally:
        record.close()
    return 0
