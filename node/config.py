"""A node's configuration: `NodeConfig`, read from and written to `HOME/config.toml`.

Every field is checked when the file is read; a problem raises `ConfigError` naming the file,
the key (`rpc.max_body_bytes`) and what is wrong. Unknown keys are refused (a typo such as
`timeout_propse_ms` must not fall back to a default), booleans are never integers (TOML `true`
is not `1`), and there are no floats: durations are integer milliseconds, sizes bytes.

Addresses are `host:port` (IPv6 in brackets, `[2001:db8::1]:26656`); a node listening on a
wildcard address must say where its peers reach it (`p2p.external_address`). The file, with
the required keys first (everything else has the default shown by `NodeConfig.to_toml_dict`):

    name = "ministry"              # the node's moniker, also its log name
    role = "validator"             # or "observer"
    chain_id = "khazana-local"
    log_level = "info"             # debug | info | warning | error
    log_format = "text"            # text | json (one JSON object per line)
    data_dir = "data"              # relative to the home folder, or absolute
    allow_plaintext_key = false    # true: a validator may run on a plain key file (tests)

    [p2p]
    listen = "127.0.0.1:26650"
    external_address = "127.0.0.1:26650"
    observers = ["<ed25519 public key hex>"]     # observer keys this node accepts
    allow_ips = ["10.0.0.0/8"]                   # who may connect (CIDR); empty: anyone
    [[p2p.peers]]                                # persistent peers, dialled and kept
    name = "central-bank"
    pub_key = "<ed25519 public key hex>"
    address = "127.0.0.1:26653"

    [consensus]   # consensus.core.CoreConfig fields + block_max_txs, block_max_bytes, heartbeat_ms,
                  # min_block_interval_ms
    [mempool]     # every field of MempoolConfig (docs/OPERATIONS.md)
    [rpc]         # listen (required), max_body_bytes, max_batch, max_connections, ...
    [metrics]     # listen (absent: no metrics endpoint)
    [signer]      # a remote signer holds the validator key (node/signer_client.py)
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from consensus.core import CoreConfig
from ledger.crypto import is_strict_public_key
from ledger.tx import CHAIN_ID_PATTERN, MAX_TX_BYTES
from node.mempool_limits import MempoolLimits

CONFIG_FILE = "config.toml"
GENESIS_FILE = "genesis.json"
NODE_KEY_FILE = "node_key.json"
PID_FILE = "node.pid"
DB_FILE = "node.db"

ROLES = ("validator", "observer")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

# A moniker is used in file names, log lines and metrics labels: keep it plain.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAX_CONFIG_BYTES = 1 << 20
_MIB = 1 << 20


class ConfigError(Exception):
    """A config file that cannot run a node; the message names the file, the key and why."""

    def __init__(self, path: str | os.PathLike[str], key: str, problem: str) -> None:
        self.path = os.fspath(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


# ---------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True, order=True)
class HostPort:
    """`host:port`; `host` is kept without brackets, `str()` adds them back for IPv6."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """Parse `host:port` or `[ipv6]:port`; ValueError says what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"must be a string host:port, got {text!r}")
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"must be host:port, got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
        elif ":" in host:
            raise ValueError(f"an IPv6 host must be in brackets, like [::1]:26656, got {text!r}")
        elif not _is_host(host):
            raise ValueError(f"{host!r} is not an IPv4 address or a host name")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_wildcard(self) -> bool:
        """True for 0.0.0.0 and ::, which a node may listen on but nobody can dial."""
        try:
            return ipaddress.ip_address(self.host).is_unspecified
        except ValueError:
            return False

    def dialable(self) -> HostPort:
        """The address a local client uses for this listen address (a wildcard -> loopback)."""
        if not self.is_wildcard:
            return self
        return HostPort("::1" if ":" in self.host else "127.0.0.1", self.port)


def _is_host(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        return False  # looks like a (bad) IPv4 address, not a name
    return all(_HOST_LABEL.fullmatch(label) for label in labels)


# ---------------------------------------------------------------------- sections


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A persistent peer: the node dials `address` and expects the Ed25519 key `pub_key`."""

    name: str
    pub_key: bytes
    address: HostPort


@dataclass(frozen=True, slots=True)
class P2PConfig:
    listen: HostPort
    external_address: HostPort
    peers: tuple[PeerConfig, ...] = ()
    observers: tuple[bytes, ...] = ()
    """Ed25519 public keys of observers this node accepts links from (beyond genesis)."""
    handshake_timeout_ms: int = 5_000
    first_message_timeout_ms: int = 2_000
    """An accepted connection must deliver its first handshake message this soon
    (an honest node sends it at once); at most `handshake_timeout_ms`."""
    frame_timeout_ms: int = 30_000
    """A peer frame (at most 64 KiB) must be complete this long after its first byte."""
    connect_timeout_ms: int = 5_000
    backoff_base_ms: int = 250
    backoff_cap_ms: int = 30_000
    send_queue_size: int = 256
    max_message_bytes: int = 4 * _MIB
    max_pending_handshakes: int = 32
    """Unfinished inbound handshakes from IPs that are not a configured peer's."""
    reserved_pending_handshakes: int = 16
    """Unfinished inbound handshakes from configured peers' IPs (strangers never use these)."""
    max_pending_per_ip: int = 8
    max_inbound_peers: int = 64
    """Inbound links of keys other than genesis validators and configured peers."""
    max_inbound_per_ip: int = 8
    allow_ips: tuple[str, ...] = ()
    """CIDR networks allowed to connect to the P2P port (normalised); empty: any address."""


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """The consensus core's timeouts (`consensus.core.CoreConfig`) and block production."""

    core: CoreConfig = field(default_factory=CoreConfig)
    block_max_txs: int = 1000
    block_max_bytes: int = 2 * _MIB
    heartbeat_ms: int = 1000
    """A proposer with no transaction waiting proposes an empty block after this long. Kept
    below `core.timeout_propose_ms` (3000 by default) so the other validators never give up
    on a proposer that is only waiting for its heartbeat; a configured heartbeat at or above
    it makes `node.app.driver_config` stretch the propose timeout to heartbeat + timeout."""
    min_block_interval_ms: int = 0
    """A proposer with transactions waiting proposes no sooner than this long after it
    committed the previous block (0: at once). Under load it makes fewer, larger blocks, so
    less of every validator's CPU goes to per-block work (votes, fsyncs, commit); it adds up to
    this much latency. Covered by the propose timeout like the heartbeat."""


# `[mempool]` is the mempool's own limits: one dataclass, its fields, defaults and ranges
# (node/mempool_limits.py); docs/OPERATIONS.md says what each bounds and which metric shows it
# being hit.
MempoolConfig = MempoolLimits


@dataclass(frozen=True, slots=True)
class RpcConfig:
    listen: HostPort
    max_body_bytes: int = _MIB
    max_batch: int = 32
    max_connections: int = 256
    request_timeout_ms: int = 10_000
    cors_origins: tuple[str, ...] = ()
    commit_timeout_ms: int = 10_000
    """How long `broadcast_tx_commit` waits for inclusion (on top of the request deadline)."""
    ws_max_connections: int = 64
    ws_max_subscriptions: int = 16
    """Per WebSocket connection."""
    ws_queue_size: int = 256
    """Notifications waiting unsent before a slow WebSocket client is dropped (close 1008)."""
    ws_max_message_bytes: int = 64 * 1024
    """Largest message a WebSocket client may send (more: close 1009)."""
    anonymous: str = "public"
    """What a client without credentials reads: "public" (the anonymous row) or "none"."""
    auth_window_ms: int = 30_000
    """A credential's timestamp may be this far (either way) from the node's clock."""
    auth_replay_cache_bytes: int = 32 * _MIB
    """Memory for the nonces of credentials accepted inside the window (full: busy)."""
    tls_cert: str = ""
    """PEM certificate (chain) of the RPC listener; relative to the home folder. With
    `tls_key`: the RPC speaks https:// and wss:// only."""
    tls_key: str = ""
    tls_client_ca: str = ""
    """PEM CA: clients must present a certificate it signed (mutual TLS)."""
    # Hostile-client defences: node/rpc/limits.py says what each bounds.
    max_answer_bytes: int = 4 * _MIB
    max_batch_answer_bytes: int = 8 * _MIB
    max_answer_bytes_in_flight: int = 64 * _MIB
    max_events_page: int = 1000
    max_page: int = 100
    max_heavy_reads: int = 4
    max_quotes: int = 2  # `quote` computations at once (worker threads, ledger/quote.py)
    max_requests_per_ip: int = 64
    ws_max_connections_per_ip: int = 16
    keep_alive_timeout_ms: int = 5_000
    send_timeout_ms: int = 10_000
    ws_idle_timeout_ms: int = 60_000
    allowed_hosts: tuple[str, ...] = ()
    """Host headers answered; () = the listen address and localhost names; ["*"] = any."""

    @property
    def url(self) -> str:
        """The URL a client on this machine uses (a wildcard listen address -> loopback)."""
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.listen.dialable()}"


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: HostPort | None = None
    """None: no metrics endpoint."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything `HOME/config.toml` says, checked. `home` is where the file was read."""

    home: Path
    name: str
    role: str
    chain_id: str
    p2p: P2PConfig
    rpc: RpcConfig
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log_level: str = "info"
    log_format: str = "text"
    data_dir: str = "data"
    allow_plaintext_key: bool = False  # a validator may start on a plain key file (tests)
    signer: Mapping[str, Any] | None = None  # [signer] as written; node/signer_client.py checks it

    # -- where things are in the home folder

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def genesis_path(self) -> Path:
        return self.home / GENESIS_FILE

    @property
    def node_key_path(self) -> Path:
        return self.home / NODE_KEY_FILE

    @property
    def pid_path(self) -> Path:
        return self.home / PID_FILE

    @property
    def data_path(self) -> Path:
        return self.home / self.data_dir  # an absolute data_dir replaces the home

    @property
    def db_path(self) -> Path:
        return self.data_path / DB_FILE

    @property
    def is_validator(self) -> bool:
        return self.role == "validator"

    # -- reading and writing

    @classmethod
    def load(cls, home: str | os.PathLike[str]) -> NodeConfig:
        """Read and check `home/config.toml`; ConfigError names the first problem."""
        home = Path(home)
        path = home / CONFIG_FILE
        try:
            with open(path, "rb") as file:
                raw = file.read(_MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(path, "", f"cannot read the config file: {exc.strerror}") from None
        if len(raw) > _MAX_CONFIG_BYTES:
            raise ConfigError(path, "", f"larger than {_MAX_CONFIG_BYTES} bytes")
        try:
            document = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(path, "", f"not valid TOML: {exc}") from None
        return from_dict(document, home=home, path=path)

    def to_toml_dict(self) -> dict[str, Any]:
        """The TOML document for this config (every field, defaults included)."""
        p2p = self.p2p
        document: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "chain_id": self.chain_id,
            "log_level": self.log_level,
            "log_format": self.log_format,
            "data_dir": self.data_dir,
            "allow_plaintext_key": self.allow_plaintext_key,
            "p2p": {
                "listen": str(p2p.listen),
                "external_address": str(p2p.external_address),
                "observers": [key.hex() for key in p2p.observers],
                "allow_ips": list(p2p.allow_ips),
                **{name: getattr(p2p, name) for name in _P2P_INTS},
                "peers": [
                    {"name": peer.name, "pub_key": peer.pub_key.hex(), "address": str(peer.address)}
                    for peer in p2p.peers
                ],
            },
            "consensus": {
                **{f.name: getattr(self.consensus.core, f.name) for f in _CORE_FIELDS},
                **{name: getattr(self.consensus, name) for name in _BLOCK_INTS},
            },
            "mempool": {name: getattr(self.mempool, name) for name in _MEMPOOL_INTS},
            "rpc": {
                "listen": str(self.rpc.listen),
                **{name: getattr(self.rpc, name) for name in _RPC_INTS},
                "cors_origins": list(self.rpc.cors_origins),
                "anonymous": self.rpc.anonymous,
                **{name: getattr(self.rpc, name) for name in _RPC_TLS if getattr(self.rpc, name)},
                "allowed_hosts": list(self.rpc.allowed_hosts),
            },
            "metrics": {} if self.metrics.listen is None else {"listen": str(self.metrics.listen)},
            **({} if self.signer is None else {"signer": dict(self.signer)}),
        }
        return document

    def write(self) -> Path:
        """Write `home/config.toml` (replacing it atomically) and return its path."""
        path = self.config_path
        temporary = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
        with open(temporary, "wb") as file:
            tomli_w.dump(self.to_toml_dict(), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        return path


# ---------------------------------------------------------------------- checking


# (name, default, minimum, maximum) of the integer fields of each section. The minimums keep a
# node usable (a zero-size mempool or a 0 ms timeout is a mistake, not a choice).
_P2P_INTS = {
    "handshake_timeout_ms": (100, 600_000),
    "connect_timeout_ms": (100, 600_000),
    "backoff_base_ms": (1, 600_000),
    "backoff_cap_ms": (1, 3_600_000),
    "send_queue_size": (1, 1_000_000),
    "max_message_bytes": (64 * 1024, 64 * _MIB),
    "first_message_timeout_ms": (100, 600_000),
    "frame_timeout_ms": (100, 600_000),
    "max_pending_handshakes": (1, 100_000),
    "reserved_pending_handshakes": (1, 100_000),
    "max_pending_per_ip": (1, 100_000),
    "max_inbound_peers": (1, 100_000),
    "max_inbound_per_ip": (1, 100_000),
}
_CORE_FIELDS = dataclasses.fields(CoreConfig)
_MAY_BE_ZERO = {f.name for f in _CORE_FIELDS if f.name.endswith("_delta_ms")} | {
    "max_backoff_rounds"
}
_BLOCK_INTS = {
    "block_max_txs": (1, 1 << 24),
    "block_max_bytes": (1024, 64 * _MIB),
    "heartbeat_ms": (10, 3_600_000),
    "min_block_interval_ms": (0, 60_000),
}
_MEMPOOL_INTS = {
    "max_txs": (1, 10_000_000),
    "max_bytes": (1024, 1 << 40),
    "max_tx_bytes": (64, MAX_TX_BYTES),
    "max_tx_decoded_bytes": (4096, 1 << 30),
    "nonce_window": (1, 1 << 20),
    "max_txs_per_sender": (1, 10_000_000),
    "max_bytes_per_sender": (4096, 1 << 40),
    "vasp_share_percent": (1, 100),
    "reserved_percent": (0, 90),
    "max_parked_per_sender": (0, 1 << 20),
    "parked_share_percent": (0, 100),
    "ttl_blocks": (1, 1 << 32),
    "parked_ttl_blocks": (1, 1 << 32),
    "verified_cache": (1, 10_000_000),
    "decode_cache_bytes": (0, 1 << 40),
}
_RPC_INTS = {
    "max_body_bytes": (1024, 64 * _MIB),
    "max_batch": (1, 10_000),
    "max_connections": (1, 100_000),
    "request_timeout_ms": (100, 3_600_000),
    "commit_timeout_ms": (100, 3_600_000),
    "ws_max_connections": (1, 100_000),
    "ws_max_subscriptions": (1, 10_000),
    "ws_queue_size": (1, 1_000_000),
    # Below 1 KiB even a subscribe call with an account and an instrument would not fit.
    "ws_max_message_bytes": (1024, 64 * _MIB),
    "auth_window_ms": (1000, 3_600_000),
    "auth_replay_cache_bytes": (64 * 1024, 1 << 34),
    # Hostile-client defences. An answer budget below 64 KiB would refuse ordinary pages.
    "max_answer_bytes": (64 * 1024, 1024 * _MIB),
    "max_batch_answer_bytes": (64 * 1024, 1024 * _MIB),
    "max_answer_bytes_in_flight": (64 * 1024, 4096 * _MIB),
    "max_events_page": (1, 1000),  # ledger.store.MAX_EVENTS_PAGE
    "max_page": (1, 1000),
    "max_heavy_reads": (1, 1024),
    "max_quotes": (1, 1024),
    "max_requests_per_ip": (1, 100_000),
    "ws_max_connections_per_ip": (1, 100_000),
    "keep_alive_timeout_ms": (100, 3_600_000),
    "send_timeout_ms": (100, 3_600_000),
    "ws_idle_timeout_ms": (1000, 86_400_000),
}
_RPC_TLS = ("tls_cert", "tls_key", "tls_client_ca")


class _Reader:
    """Takes the keys of one TOML table, checks each, and refuses what is left over."""

    def __init__(self, path: Path, prefix: str, table: object, known: list[str]) -> None:
        self.path = path
        self.prefix = prefix
        self.known = tuple(known)
        if not isinstance(table, Mapping):
            raise ConfigError(path, prefix, f"must be a table, got {type(table).__name__}")
        self.rest = dict(table)

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), problem)

    def take(self, name: str, default: object = dataclasses.MISSING) -> Any:
        if name in self.rest:
            return self.rest.pop(name)
        if default is dataclasses.MISSING:
            raise self.error(name, "missing (required)")
        return default

    def text(self, name: str, default: object = dataclasses.MISSING) -> str:
        value = self.take(name, default)
        if type(value) is not str:
            raise self.error(name, f"must be a string, got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: object) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise self.error(name, f"must be one of {list(choices)}, got {value!r}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.take(name, default)
        if type(value) is not int:  # bool is a subclass of int: refuse it too
            raise self.error(name, f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise self.error(name, f"must be from {low} to {high}, got {value}")
        return value

    def address(self, name: str, default: object = dataclasses.MISSING) -> HostPort | None:
        value = self.take(name, default)
        if value is None:
            return None
        try:
            return HostPort.parse(value)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def string_list(self, name: str) -> list[str]:
        value = self.take(name, [])
        if not isinstance(value, list) or not all(type(item) is str for item in value):
            raise self.error(name, f"must be a list of strings, got {value!r}")
        return value

    def finish(self) -> None:
        if self.rest:
            unknown = sorted(self.rest)
            raise ConfigError(
                self.path,
                self.key(unknown[0]),
                f"unknown key (known keys here: {', '.join(sorted(self.known))})",
            )


def _public_key(reader: _Reader, key: str, text: object) -> bytes:
    if type(text) is not str or not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ConfigError(
            reader.path, key, f"must be 64 lowercase hex digits (an Ed25519 key), got {text!r}"
        )
    public_key = bytes.fromhex(text)
    if not is_strict_public_key(public_key):
        raise ConfigError(reader.path, key, f"{text} is not a valid Ed25519 public key")
    return public_key


def from_dict(document: Mapping, *, home: Path, path: Path | None = None) -> NodeConfig:
    """Check a parsed config document; `path` is named in errors (default home/config.toml)."""
    path = path or home / CONFIG_FILE
    top = _Reader(
        path,
        "",
        document,
        ["name", "role", "chain_id", "log_level", "log_format", "data_dir", "allow_plaintext_key"]
        + ["p2p", "consensus", "mempool", "rpc", "metrics", "signer"],
    )
    name = top.text("name")
    if not NAME_PATTERN.fullmatch(name):
        raise top.error("name", f"must be 1-64 of A-Z a-z 0-9 . _ - (not first), got {name!r}")
    role = top.choice("role", ROLES, dataclasses.MISSING)
    chain_id = top.text("chain_id")
    if not CHAIN_ID_PATTERN.fullmatch(chain_id):
        raise top.error("chain_id", f"must be 1-64 printable ASCII characters, got {chain_id!r}")
    log_level = top.choice("log_level", LOG_LEVELS, "info")
    log_format = top.choice("log_format", LOG_FORMATS, "text")
    data_dir = top.text("data_dir", "data")
    if not data_dir or "\x00" in data_dir:
        raise top.error("data_dir", f"must be a folder path, got {data_dir!r}")

    p2p = _p2p(path, top.take("p2p"))
    consensus = _consensus(path, top.take("consensus", {}))
    mempool = _mempool(path, top.take("mempool", {}))
    rpc = _rpc(path, top.take("rpc"))
    metrics_reader = _Reader(path, "metrics", top.take("metrics", {}), ["listen"])
    metrics = MetricsConfig(listen=metrics_reader.address("listen", None))
    metrics_reader.finish()
    if type(allow_plaintext_key := top.take("allow_plaintext_key", False)) is not bool:
        raise top.error("allow_plaintext_key", f"must be a boolean, got {allow_plaintext_key!r}")
    if not isinstance(signer := top.take("signer", None), Mapping | None):
        raise top.error("signer", "must be a table ([signer])")
    top.finish()

    # Checks across sections: a block must fit in one peer message, a transaction in a block.
    if consensus.block_max_bytes > p2p.max_message_bytes - 64 * 1024:
        raise ConfigError(
            path,
            "consensus.block_max_bytes",
            f"{consensus.block_max_bytes} does not fit in a peer message "
            f"(p2p.max_message_bytes {p2p.max_message_bytes} less 64 KiB of overhead)",
        )
    if mempool.max_tx_bytes > consensus.block_max_bytes:
        raise ConfigError(
            path,
            "mempool.max_tx_bytes",
            f"{mempool.max_tx_bytes} is larger than consensus.block_max_bytes "
            f"{consensus.block_max_bytes}: such a transaction could never be included",
        )
    if mempool.max_tx_bytes > mempool.max_bytes:
        raise ConfigError(
            path, "mempool.max_tx_bytes", f"larger than mempool.max_bytes {mempool.max_bytes}"
        )
    # A transaction of max_tx_bytes keeps at least its raw bytes, its body's encoding and
    # its args' bytes (three copies): a smaller decoded bound would refuse legitimate ones.
    if mempool.max_tx_decoded_bytes < 3 * mempool.max_tx_bytes:
        raise ConfigError(
            path,
            "mempool.max_tx_decoded_bytes",
            f"below 3 x mempool.max_tx_bytes ({3 * mempool.max_tx_bytes})",
        )
    if mempool.max_tx_decoded_bytes > mempool.max_bytes:
        raise ConfigError(
            path,
            "mempool.max_tx_decoded_bytes",
            f"larger than mempool.max_bytes {mempool.max_bytes}",
        )
    if p2p.backoff_base_ms > p2p.backoff_cap_ms:
        raise ConfigError(path, "p2p.backoff_base_ms", "larger than p2p.backoff_cap_ms")
    ports = [("p2p.listen", p2p.listen), ("rpc.listen", rpc.listen)]
    if metrics.listen is not None:
        ports.append(("metrics.listen", metrics.listen))
    for index, (key, address) in enumerate(ports):
        for other_key, other in ports[:index]:
            if address.port == other.port and (
                address.host == other.host or address.is_wildcard or other.is_wildcard
            ):
                raise ConfigError(path, key, f"{address} is also {other_key}")
    return NodeConfig(
        home=home,
        name=name,
        role=role,
        chain_id=chain_id,
        p2p=p2p,
        rpc=rpc,
        consensus=consensus,
        mempool=mempool,
        metrics=metrics,
        log_level=log_level,
        log_format=log_format,
        data_dir=data_dir,
        allow_plaintext_key=allow_plaintext_key,
        signer=signer,
    )


def _p2p(path: Path, table: object) -> P2PConfig:
    known = ["listen", "external_address", "peers", "observers", "allow_ips", *_P2P_INTS]
    reader = _Reader(path, "p2p", table, known)
    listen = reader.address("listen")
    external = reader.address("external_address", None)
    if external is None:
        if listen.is_wildcard:
            raise reader.error(
                "external_address",
                f"required when listening on the wildcard address {listen}: "
                "the host:port other nodes dial to reach this one",
            )
        external = listen
    elif external.is_wildcard:
        raise reader.error("external_address", f"{external} cannot be dialled by other nodes")
    ints = {
        name: reader.integer(name, P2PConfig.__dataclass_fields__[name].default, low, high)
        for name, (low, high) in _P2P_INTS.items()
    }
    if ints["first_message_timeout_ms"] > ints["handshake_timeout_ms"]:
        raise reader.error("first_message_timeout_ms", "larger than p2p.handshake_timeout_ms")
    allow_ips = []
    for index, text in enumerate(reader.string_list("allow_ips")):
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ConfigError(
                path, f"p2p.allow_ips[{index}]", f"not a CIDR network: {exc}"
            ) from None
        allow_ips.append(str(network))
    observers = []
    for index, text in enumerate(reader.string_list("observers")):
        key = _public_key(reader, f"p2p.observers[{index}]", text)
        if key in observers:
            raise ConfigError(path, f"p2p.observers[{index}]", f"{text} is listed twice")
        observers.append(key)
    peers_value = reader.take("peers", [])
    if not isinstance(peers_value, list):
        raise reader.error("peers", "must be an array of tables ([[p2p.peers]])")
    peers: list[PeerConfig] = []
    for index, entry in enumerate(peers_value):
        peer = _peer(path, f"p2p.peers[{index}]", entry)
        for earlier in peers:
            if peer.pub_key == earlier.pub_key or peer.name == earlier.name:
                raise ConfigError(
                    path, f"p2p.peers[{index}]", f"same name or key as peer {earlier.name!r}"
                )
        peers.append(peer)
    reader.finish()
    return P2PConfig(
        listen=listen,
        external_address=external,
        peers=tuple(peers),
        observers=tuple(observers),
        allow_ips=tuple(allow_ips),
        **ints,
    )


def _peer(path: Path, prefix: str, entry: object) -> PeerConfig:
    reader = _Reader(path, prefix, entry, ["name", "pub_key", "address"])
    name = reader.text("name")
    if not NAME_PATTERN.fullmatch(name):
        raise reader.error("name", f"must be 1-64 of A-Z a-z 0-9 . _ - (not first), got {name!r}")
    pub_key = _public_key(reader, reader.key("pub_key"), reader.take("pub_key"))
    address = reader.address("address")
    if address.is_wildcard:
        raise reader.error("address", f"{address} cannot be dialled")
    reader.finish()
    return PeerConfig(name=name, pub_key=pub_key, address=address)


def _consensus(path: Path, table: object) -> ConsensusConfig:
    known = [f.name for f in _CORE_FIELDS] + list(_BLOCK_INTS)
    reader = _Reader(path, "consensus", table, known)
    # A timeout delta of 0 (constant timeouts) and no backoff are valid; other zeros are not.
    core_values = {
        f.name: reader.integer(f.name, f.default, 0 if f.name in _MAY_BE_ZERO else 1, 3_600_000)
        for f in _CORE_FIELDS
    }
    block = {
        name: reader.integer(name, ConsensusConfig.__dataclass_fields__[name].default, low, high)
        for name, (low, high) in _BLOCK_INTS.items()
    }
    reader.finish()
    try:
        core = CoreConfig(**core_values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(path, "consensus", str(exc)) from None
    return ConsensusConfig(core=core, **block)


def _mempool(path: Path, table: object) -> MempoolConfig:
    reader = _Reader(path, "mempool", table, list(_MEMPOOL_INTS))
    values = {
        name: reader.integer(name, MempoolConfig.__dataclass_fields__[name].default, low, high)
        for name, (low, high) in _MEMPOOL_INTS.items()
    }
    reader.finish()
    return MempoolConfig(**values)


def _rpc(path: Path, table: object) -> RpcConfig:
    reader = _Reader(
        path,
        "rpc",
        table,
        ["listen", "cors_origins", "allowed_hosts", "anonymous", *_RPC_TLS, *_RPC_INTS],
    )
    listen = reader.address("listen")
    values = {
        name: reader.integer(name, RpcConfig.__dataclass_fields__[name].default, low, high)
        for name, (low, high) in _RPC_INTS.items()
    }
    origins = reader.string_list("cors_origins")
    for index, origin in enumerate(origins):
        # An origin is "*" or scheme://host[:port], exactly what browsers send (no path).
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(
                path,
                f"rpc.cors_origins[{index}]",
                f"must be '*' or http(s)://host[:port], got {origin!r}",
            )
    hosts = reader.string_list("allowed_hosts")
    for index, host in enumerate(hosts):
        # A Host header value: "*", a name or IP, optionally with ":port" ("[v6]:port").
        if host != "*" and not re.fullmatch(
            r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:\d{1,5})?", host
        ):
            raise ConfigError(
                path,
                f"rpc.allowed_hosts[{index}]",
                f"must be '*' or host[:port] as clients send it, got {host!r}",
            )
    anonymous = reader.choice("anonymous", ("public", "none"), "public")
    tls = {name: reader.text(name, "") for name in _RPC_TLS}
    if bool(tls["tls_cert"]) != bool(tls["tls_key"]):
        raise reader.error("tls_cert", "tls_cert and tls_key go together (both or neither)")
    if tls["tls_client_ca"] and not tls["tls_cert"]:
        raise reader.error("tls_client_ca", "client certificates need tls_cert and tls_key")
    for name, value in tls.items():
        if value and not (path.parent / value).is_file():  # relative: the home folder's
            raise reader.error(name, f"no such file: {path.parent / value}")
    reader.finish()
    return RpcConfig(
        listen=listen,
        cors_origins=tuple(origins),
        allowed_hosts=tuple(hosts),
        anonymous=anonymous,
        **tls,
        **values,
    )
