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

This module owns the file, `NodeConfig`, the small sections and the checks across sections.
`[p2p]` is node/config_p2p.py's, `[rpc]` node/config_rpc.py's, and what every section is
checked with (`ConfigError`, `HostPort`, the table `Reader`) node/config_values.py's; their
names are importable from here too.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from consensus.core import CoreConfig
from ledger.tx import CHAIN_ID_PATTERN, MAX_TX_BYTES

# The sections and checks that live in modules of their own, named here too: callers import
# every config name from node.config.
from node.config_p2p import P2P_INTS, read_p2p
from node.config_p2p import P2PConfig as P2PConfig
from node.config_p2p import PeerConfig as PeerConfig
from node.config_rpc import RPC_INTS, RPC_TLS, read_rpc
from node.config_rpc import RpcConfig as RpcConfig
from node.config_values import MIB, NAME_PATTERN, Reader
from node.config_values import ConfigError as ConfigError
from node.config_values import HostPort as HostPort
from node.mempool_limits import MempoolLimits

CONFIG_FILE = "config.toml"
GENESIS_FILE = "genesis.json"
NODE_KEY_FILE = "node_key.json"
PID_FILE = "node.pid"
DB_FILE = "node.db"

ROLES = ("validator", "observer")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

_MAX_CONFIG_BYTES = 1 << 20


# ---------------------------------------------------------------------- sections


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """The consensus core's timeouts (`consensus.core.CoreConfig`) and block production."""

    core: CoreConfig = field(default_factory=CoreConfig)
    block_max_txs: int = 1000
    block_max_bytes: int = 2 * MIB
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
                **{name: getattr(p2p, name) for name in P2P_INTS},
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
                **{name: getattr(self.rpc, name) for name in RPC_INTS},
                "cors_origins": list(self.rpc.cors_origins),
                "anonymous": self.rpc.anonymous,
                **{name: getattr(self.rpc, name) for name in RPC_TLS if getattr(self.rpc, name)},
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


# name -> (minimum, maximum) of the integer fields of each section (the default is the
# field's; [p2p]'s and [rpc]'s tables are in their modules). The minimums keep a node usable
# (a zero-size mempool or a 0 ms timeout is a mistake, not a choice).
_CORE_FIELDS = dataclasses.fields(CoreConfig)
_MAY_BE_ZERO = {f.name for f in _CORE_FIELDS if f.name.endswith("_delta_ms")} | {
    "max_backoff_rounds"
}
_BLOCK_INTS = {
    "block_max_txs": (1, 1 << 24),
    "block_max_bytes": (1024, 64 * MIB),
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


def from_dict(document: Mapping, *, home: Path, path: Path | None = None) -> NodeConfig:
    """Check a parsed config document; `path` is named in errors (default home/config.toml)."""
    path = path or home / CONFIG_FILE
    top = Reader(
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

    p2p = read_p2p(path, top.take("p2p"))
    consensus = _consensus(path, top.take("consensus", {}))
    mempool = _mempool(path, top.take("mempool", {}))
    rpc = read_rpc(path, top.take("rpc"))
    metrics_reader = Reader(path, "metrics", top.take("metrics", {}), ["listen"])
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


def _consensus(path: Path, table: object) -> ConsensusConfig:
    known = [f.name for f in _CORE_FIELDS] + list(_BLOCK_INTS)
    reader = Reader(path, "consensus", table, known)
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
    reader = Reader(path, "mempool", table, list(_MEMPOOL_INTS))
    values = {
        name: reader.integer(name, MempoolConfig.__dataclass_fields__[name].default, low, high)
        for name, (low, high) in _MEMPOOL_INTS.items()
    }
    reader.finish()
    return MempoolConfig(**values)
