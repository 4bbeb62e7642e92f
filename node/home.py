"""Node home folders: `khazana init` (genesis, homes, keys) and the checks `khazana start` makes.

Layout written by `init_network(root, validators=N, observers=M)`:

    ROOT/<name>/config.toml      NodeConfig (node/config.py)
    ROOT/<name>/genesis.json     the genesis document, the same bytes in every home
    ROOT/<name>/node_key.json    the node's Ed25519 key (0600): its validator key and p2p identity
    ROOT/<name>/data/            the SQLite database, created by the node on first start
    ROOT/clients/<name>.key      the institutions' client keys (0600), separate from node keys
    ROOT/tls/ca.pem, ca.key      with `rpc_tls`: the CA of the nodes' RPC certificates (clients
                                 verify the nodes with ca.pem: `Client(url, ca_file=...)`)
    ROOT/<name>/rpc-cert.pem, rpc-key.pem   with `rpc_tls`: the node's RPC certificate and key

Validators are named ministry, central-bank, regulator, auditor, validator-5, ...; observers
observer-1, ... Genesis comes from `ledger.genesis.default_genesis`: every validator with its
node key, and as institutions the four founding ones (always, whatever N is: the policy needs
them) plus one validator operator per validator beyond the fourth, each with its client key.

Each node gets three ports from `base_port`, in node order: p2p = base + 3i, rpc = base + 3i + 1,
metrics = base + 3i + 2. A validator's peers are all other validators (and it accepts every
observer's key); an observer's peers are all validators.

`prepare_start(home)` is everything `khazana start` checks before the node runtime runs: the
config, the genesis file (and that its chain id is the config's), the node key (and that it is
in the validator set when role = validator), the single-instance lock on `HOME/node.pid`, and
that an existing database belongs to this genesis.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ledger.crypto import (
    KeyPair,
    address_from_public_key,
    address_to_text,
    generate_key,
    is_encrypted_key_file,
    read_key_file,
    write_key_file,
)
from ledger.genesis import (
    DEFAULT_CHAIN_ID,
    DEFAULT_ROLES,
    GenesisError,
    default_genesis,
    genesis_hash,
    validate_genesis,
)
from node.config import (
    CONFIG_FILE,
    GENESIS_FILE,
    NODE_KEY_FILE,
    PID_FILE,
    ConfigError,
    HostPort,
    MetricsConfig,
    NodeConfig,
    P2PConfig,
    PeerConfig,
    RpcConfig,
)
from node.rpc.tls import CA_CERT, make_ca, make_server_cert
from node.signer_client import SignerLink

INSTITUTIONS = tuple(DEFAULT_ROLES)  # ministry, central-bank, regulator, auditor
CLIENTS_DIR = "clients"
TLS_DIR = "tls"
DEFAULT_BASE_PORT = 26650
DEFAULT_HOST = "127.0.0.1"
PORTS_PER_NODE = 3
MAX_VALIDATORS = 100
MAX_OBSERVERS = 100
_MAX_GENESIS_BYTES = 16 << 20


class HomeError(Exception):
    """A home folder that cannot be created or started; the message says which and why."""


class HomeExistsError(HomeError):
    """`init` would overwrite an existing network (use `--force`)."""


class HomeLockedError(HomeError):
    """Another process runs a node on this home folder."""


class PlaintextKeyError(HomeError):
    """A validator's key file is not encrypted and its config does not allow that
    (`allow_plaintext_key`): `khazana start` exits with EXIT_PLAINTEXT_KEY."""


def refuse_plaintext_validator_key(path: Path, *, where: str) -> None:
    """PlaintextKeyError unless the key file at `path` is sealed under a passphrase."""
    if not is_encrypted_key_file(path):
        raise PlaintextKeyError(
            f"{path} is a plain (unencrypted) validator key: encrypt it "
            f"(khazana key encrypt {path}), move it to a remote signer ([signer]), or, for a "
            f"test network only, {where}"
        )


def validator_names(count: int) -> list[str]:
    return [*INSTITUTIONS[:count], *(f"validator-{i}" for i in range(5, count + 1))]


def observer_names(count: int) -> list[str]:
    return [f"observer-{i}" for i in range(1, count + 1)]


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node of a network made by `init_network`, as `localnet` needs it."""

    name: str
    role: str
    home: Path
    p2p: HostPort
    rpc_url: str


@dataclass(frozen=True, slots=True)
class Network:
    root: Path
    chain_id: str
    nodes: tuple[NodeEntry, ...]
    clients: tuple[tuple[str, Path], ...]
    """(institution name, client key file) in genesis order."""
    ca_file: Path | None = None
    """The CA of the nodes' RPC certificates (`init --rpc-tls`), None for plain HTTP."""


# ---------------------------------------------------------------------- init

DAY_MS = 86_400_000


def init_network(
    root: str | os.PathLike[str],
    *,
    validators: int,
    observers: int = 0,
    chain_id: str = DEFAULT_CHAIN_ID,
    base_port: int = DEFAULT_BASE_PORT,
    host: str = DEFAULT_HOST,
    force: bool = False,
    genesis_time_ms: int = 0,
    time_step_ms: int | None = None,
    rpc_tls: bool = False,
) -> Network:
    """Write a new network's genesis, node homes and client keys under `root`.

    `time_step_ms` makes a test network whose block times advance by exactly that step
    (genesis `parameters.block_time_step_ms`, docs/NODE.md "Chain time"); its chain time
    then starts at `genesis_time_ms`, or at today's midnight UTC when that is 0 (init is not
    consensus: reading the clock once here is what fixes the genesis every node shares).

    Refuses (HomeExistsError) when `root` already holds node homes or client keys, unless
    `force`, which first removes them (and only them: other files in `root` are left alone).

    `rpc_tls`: the RPC listeners serve TLS with certificates of a new CA (ROOT/tls/ca.pem,
    made with the `openssl` command, node/rpc/tls.py); the URLs are https://.
    """
    root = Path(root)
    if not 1 <= validators <= MAX_VALIDATORS:
        raise HomeError(f"--validators must be from 1 to {MAX_VALIDATORS}, got {validators}")
    if not 0 <= observers <= MAX_OBSERVERS:
        raise HomeError(f"--observers must be from 0 to {MAX_OBSERVERS}, got {observers}")
    bare = host.removeprefix("[").removesuffix("]")
    try:
        address = HostPort.parse(f"[{bare}]:1" if ":" in bare else f"{bare}:1")
    except ValueError as exc:
        raise HomeError(f"--host: {exc}") from None
    if address.is_wildcard:
        raise HomeError(
            f"--host {host} is a wildcard: give the address other nodes dial "
            "(edit listen in config.toml afterwards to listen on every interface)"
        )
    names = validator_names(validators) + observer_names(observers)
    last_port = base_port + PORTS_PER_NODE * len(names) - 1
    if not 1 <= base_port or last_port > 65535:
        raise HomeError(
            f"--base-port {base_port}: {len(names)} nodes need ports {base_port}..{last_port}, "
            "which must lie within 1..65535"
        )
    existing = existing_homes(root)
    if existing or (root / CLIENTS_DIR).exists():
        if not force:
            found = [str(home) for home in existing] or [str(root / CLIENTS_DIR)]
            raise HomeExistsError(
                f"{root} already holds a network ({', '.join(found)}); "
                "refusing to overwrite it (use --force to replace it)"
            )
        wipe_network(root)

    root.mkdir(parents=True, exist_ok=True)
    ca = make_ca(root / TLS_DIR) if rpc_tls else None
    node_keys = {name: generate_key() for name in names}
    client_names = list(INSTITUTIONS) + validator_names(validators)[len(INSTITUTIONS) :]
    client_keys = {name: generate_key() for name in client_names}
    if time_step_ms is not None and genesis_time_ms == 0:
        genesis_time_ms = (time.time_ns() // 1_000_000) // DAY_MS * DAY_MS
    genesis = default_genesis(
        validators=[(name, node_keys[name].public_key) for name in names[:validators]],
        institutions={name: key.address for name, key in client_keys.items()},
        chain_id=chain_id,
        genesis_time_ms=genesis_time_ms,
        block_time_step_ms=time_step_ms,
    )
    genesis_bytes = genesis_document_bytes(genesis)

    def addresses(index: int) -> tuple[HostPort, HostPort, HostPort]:
        port = base_port + PORTS_PER_NODE * index
        return (
            HostPort(address.host, port),
            HostPort(address.host, port + 1),
            HostPort(address.host, port + 2),
        )

    entries: list[NodeEntry] = []
    observer_keys = tuple(node_keys[name].public_key for name in names[validators:])
    validator_peers = [
        PeerConfig(name=name, pub_key=node_keys[name].public_key, address=addresses(i)[0])
        for i, name in enumerate(names[:validators])
    ]
    for index, name in enumerate(names):
        role = "validator" if index < validators else "observer"
        p2p, rpc, metrics = addresses(index)
        home = root / name
        home.mkdir(mode=0o700)
        tls = {}
        if ca is not None:
            cert, key = make_server_cert(ca, home, name, [rpc.host])
            tls = {"tls_cert": cert.name, "tls_key": key.name}  # relative: the home's
        config = NodeConfig(
            home=home,
            name=name,
            role=role,
            chain_id=chain_id,
            p2p=P2PConfig(
                listen=p2p,
                external_address=p2p,
                peers=tuple(peer for peer in validator_peers if peer.name != name),
                observers=observer_keys if role == "validator" else (),
            ),
            rpc=RpcConfig(listen=rpc, **tls),
            metrics=MetricsConfig(listen=metrics),
            allow_plaintext_key=True,  # a test network: every key is in this one folder anyway
        )
        config.write()
        _write_file(home / GENESIS_FILE, genesis_bytes)
        write_key_file(home / NODE_KEY_FILE, node_keys[name])
        entries.append(NodeEntry(name, role, home, p2p, config.rpc.url))

    clients_dir = root / CLIENTS_DIR
    clients_dir.mkdir(mode=0o700)
    clients = []
    for name, key in client_keys.items():
        write_key_file(clients_dir / f"{name}.key", key)
        clients.append((name, clients_dir / f"{name}.key"))
    ca_file = None if ca is None else ca[0]
    return Network(
        root=root, chain_id=chain_id, nodes=tuple(entries), clients=tuple(clients), ca_file=ca_file
    )


def genesis_document_bytes(genesis: Mapping) -> bytes:
    """The genesis file's bytes: sorted keys, so every home (and every re-run) agrees."""
    return (json.dumps(genesis, indent=2, sort_keys=True) + "\n").encode()


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def existing_homes(root: Path) -> list[Path]:
    """Sub-folders of `root` that are node homes (hold a config.toml), sorted by name."""
    if not root.is_dir():
        return []
    return sorted(entry for entry in root.iterdir() if (entry / CONFIG_FILE).is_file())


def wipe_network(root: Path) -> None:
    """Remove the node homes, client keys and localnet.json under `root`, nothing else."""
    for home in existing_homes(root):
        shutil.rmtree(home)
    shutil.rmtree(root / CLIENTS_DIR, ignore_errors=True)
    shutil.rmtree(root / TLS_DIR, ignore_errors=True)
    (root / "localnet.json").unlink(missing_ok=True)


def read_network(root: str | os.PathLike[str]) -> Network:
    """The network `init_network` wrote under `root`, read back from its homes.

    Nodes come in genesis order (validators), then observers by name; every home must hold
    the same genesis. ConfigError / HomeError name what does not fit.
    """
    root = Path(root)
    homes = existing_homes(root)
    if not homes:
        raise HomeError(f"{root} holds no node homes (run khazana init)")
    configs = [NodeConfig.load(home) for home in homes]
    genesis_bytes = {home: (home / GENESIS_FILE).read_bytes() for home in homes}
    if len(set(genesis_bytes.values())) != 1:
        raise HomeError(f"the homes under {root} do not all hold the same {GENESIS_FILE}")
    genesis = load_genesis(homes[0] / GENESIS_FILE)
    order = {v["name"]: i for i, v in enumerate(genesis["validators"])}
    configs.sort(key=lambda c: (c.role != "validator", order.get(c.name, 0), c.name))
    nodes = tuple(
        NodeEntry(c.name, c.role, c.home, c.p2p.external_address, c.rpc.url) for c in configs
    )
    clients = tuple(
        (institution["name"], root / CLIENTS_DIR / f"{institution['name']}.key")
        for institution in genesis["institutions"]
        if (root / CLIENTS_DIR / f"{institution['name']}.key").is_file()
    )
    ca_file = root / TLS_DIR / CA_CERT
    return Network(
        root=root,
        chain_id=genesis["chain_id"],
        nodes=nodes,
        clients=clients,
        ca_file=ca_file if ca_file.is_file() else None,
    )


# ---------------------------------------------------------------------- genesis file


def load_genesis(path: str | os.PathLike[str]) -> dict:
    """Read and validate a genesis file; ConfigError names the file and the problem."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            raw = file.read(_MAX_GENESIS_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the genesis file: {exc.strerror}") from None
    if len(raw) > _MAX_GENESIS_BYTES:
        raise ConfigError(path, "", f"larger than {_MAX_GENESIS_BYTES} bytes")

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        document = dict(pairs)
        if len(document) != len(pairs):
            raise ValueError(f"duplicate key among {[key for key, _ in pairs]}")
        return document

    def no_constant(name: str) -> object:
        raise ValueError(f"{name} is not a JSON number")

    try:
        genesis = json.loads(
            raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constant
        )
        validate_genesis(genesis)
    except GenesisError as exc:
        raise ConfigError(path, "", f"not a usable genesis: {exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(path, "", f"not valid JSON: {exc}") from None
    return genesis


# ---------------------------------------------------------------------- single instance


class HomeLock:
    """An exclusive `flock` on `HOME/node.pid`, which holds the owner's pid while it runs.

    The kernel drops the lock when the process dies, so a crash never leaves a stale lock; the
    pid in the file is only there to name the running process in the refusal. The file is not
    deleted on release (deleting a lock file races with a process that just opened it).
    Within one process, `acquire_home_lock` hands out the same lock again (counted), so the
    node runtime may take it even though `khazana start` already holds it.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._users = 1

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        self._users -= 1
        if self._users > 0 or self._fd is None:
            return
        _HELD.pop(str(self.path), None)
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


_HELD: dict[str, HomeLock] = {}


def acquire_home_lock(home: str | os.PathLike[str]) -> HomeLock:
    """Lock `home` for this process or raise HomeLockedError naming the running pid."""
    path = Path(home).resolve() / PID_FILE
    held = _HELD.get(str(path))
    if held is not None:
        held._users += 1
        return held
    try:
        # Not O_TRUNC: the file may hold the pid of a running node, which the refusal shows.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise HomeError(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise HomeLockedError(
            f"a node is already running on {path.parent} (pid {holder}, lock {path}); "
            "refusing to start a second one on the same home"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    lock = HomeLock(path, fd)
    _HELD[str(path)] = lock
    return lock


# ---------------------------------------------------------------------- start checks


@dataclass(frozen=True, slots=True)
class StartPlan:
    """What `prepare_start` checked and holds: release `lock` when the node stops."""

    config: NodeConfig
    genesis: dict
    key: KeyPair
    lock: HomeLock


def prepare_start(home: str | os.PathLike[str]) -> StartPlan:
    """Every check `khazana start` makes before the node runtime runs, in this order: config,
    single-instance lock, genesis (and its chain id), node key (and its place in the validator
    set), the database's chain. Raises ConfigError, HomeError, KeyFileError or a StoreError."""
    from ledger.store import Store  # the store pulls in SQLite; only `start` needs it

    config = NodeConfig.load(home)
    lock = acquire_home_lock(config.home)
    try:
        genesis = load_genesis(config.genesis_path)
        if genesis["chain_id"] != config.chain_id:
            raise ConfigError(
                config.config_path,
                "chain_id",
                f"{config.chain_id!r} but {config.genesis_path} is for {genesis['chain_id']!r}",
            )
        link = SignerLink.from_config(config)
        if config.is_validator and link is None and not config.allow_plaintext_key:
            refuse_plaintext_validator_key(
                config.node_key_path, where=f"set allow_plaintext_key = true in {CONFIG_FILE}"
            )
        key = read_key_file(config.node_key_path)
        if link is not None and key.public_key == link.validator_key:
            raise HomeError(
                f"{config.node_key_path} is the validator key that [signer] names: with a "
                "remote signer the node holds its own node key (khazana keygen) and no "
                "validator key at all (docs/OPERATIONS.md, 'Remote signer')"
            )
        for index, peer in enumerate(config.p2p.peers):
            if peer.pub_key == key.public_key:
                raise ConfigError(
                    config.config_path, f"p2p.peers[{index}]", "is this node's own key"
                )
        if config.is_validator:
            names = {bytes.fromhex(v["public_key"]): v["name"] for v in genesis["validators"]}
            # With a remote signer the node key is only the P2P identity; the signer's
            # validator key is the one the genesis must name.
            validator_key = key.public_key if link is None else link.validator_key
            where = config.node_key_path if link is None else f"{CONFIG_FILE} [signer]"
            if validator_key not in names:
                raise HomeError(
                    f"{where} (public key {validator_key.hex()}, address "
                    f"{address_to_text(address_from_public_key(validator_key))}) is not in "
                    "the genesis validator set "
                    f"{sorted(names.values())}: a validator must use its own validator key "
                    '(set role = "observer" to follow the chain without voting)'
                )
        if config.db_path.exists():
            # The database must be this genesis' chain: the store compares chain id and genesis
            # hash (ForeignDatabaseError) and its schema before anything else touches it.
            Store.open(
                config.db_path, chain_id=genesis["chain_id"], genesis_hash=genesis_hash(genesis)
            ).close()
        return StartPlan(config=config, genesis=genesis, key=key, lock=lock)
    except BaseException:
        lock.release()
        raise
