"""Shared helpers for the real-process network tests (`python -m node start` children).

`Net` makes a network with `khazana init` (`node.home.init_network`), shortens its timeouts,
starts, stops and kills node processes (always bounded in time; `stop_all` belongs in a
`finally`), talks JSON-RPC to them and submits signed transactions. The inspection helpers at
the bottom read a stopped node's SQLite store directly -- blocks, commit certificates and the
durable consensus record -- so the tests can check agreement, certificates and double signing
against the data itself rather than against what the node says about it.

Subclasses change how a node is launched and reached (`command_prefix`, `rpc`): the network
namespace test runs each node under `ip netns exec` and queries it from inside its namespace.
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from consensus.types import (
    Commit,
    DurableState,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
    verify_commit,
    vote_signing_bytes,
)
from consensus.wire import decode_message
from ledger.crypto import KeyPair, address_from_public_key, read_key_file, verify_signature
from ledger.genesis import genesis_hash
from ledger.store import Store
from ledger.tx import TxBody, sign_tx
from node.rpc.auth import authorization_header

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("ministry", "central-bank", "regulator", "auditor")
DEADLINE_S = 25  # per wait; a healthy network answers every wait in a few seconds
STOP_GRACE_S = 20  # SIGTERM to SIGKILL in `Net.stop` (see there)
DOUBLE_SIGN_LOG = "evidence of double signing"
FAST_TIMEOUTS = (
    ("heartbeat_ms", 400),
    ("timeout_propose_ms", 1500),
    ("timeout_prevote_ms", 500),
    ("timeout_precommit_ms", 500),
    ("retransmit_ms", 700),
    ("backoff_cap_ms", 1000),
)

try:
    from node.home import init_network
except ImportError:  # pragma: no cover - until node/home.py lands
    init_network = None


PORT_BLOCK = 16  # ports are reserved across processes in aligned blocks of this many
LOWEST_TEST_PORT = 20000  # below: the well-known and registered services (5432, 8080, ...)
# The fixed defaults of `khazana localnet` (node/home.py, 26650) and of the benchmark scripts
# (27000..28000), which may run on the same machine: never given to a test.
PROJECT_PORTS = range(26000, 29000)
_RESERVATIONS: list[int] = []  # lock-file descriptors: held until this process ends


def _test_port_ranges() -> list[range]:
    """Loopback ports no outgoing connection can be given: those outside the kernel's
    ephemeral range. A port inside it that is free at one moment is handed to the next
    `connect()` on the machine as its source port, and a restarted node's listener cannot
    bind it while that connection (or its TIME_WAIT) lives -- SO_REUSEADDR does not help
    against a socket that lacks it. Nor the project's fixed default ports (`PROJECT_PORTS`):
    a localnet or benchmark on the machine may be restarting on them. Not Linux: assume
    32768..65535 as ephemeral (Linux's default, and it covers the BSDs')."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(part) for part in text.split())
    except (OSError, ValueError):
        low, high = 32768, 65535
    ranges = [
        range(LOWEST_TEST_PORT, min(low, PROJECT_PORTS.start)),
        range(max(LOWEST_TEST_PORT, PROJECT_PORTS.stop), low),
        range(high + 1, 65536),
    ]
    usable = [r for r in ranges if len(r) >= 4 * PORT_BLOCK]
    return usable or [range(LOWEST_TEST_PORT, 65536)]  # everything ephemeral: do our best


def _lock_block(directory: Path, block: int) -> int | None:
    """An exclusive lock on one block of ports for this process (its descriptor), or None
    when another process (another test run on this machine) holds it."""
    fd = os.open(directory / str(block), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports reserved for this process: outside the
    ephemeral range (see `_test_port_ranges`), locked against every other process that uses
    this function (a lock file per block, released when the process ends, so a node that is
    down between a kill and its restart keeps its ports), and free now (probed by binding).
    Never handed out twice in one process either."""
    blocks = -(-count // PORT_BLOCK)
    directory = Path(tempfile.gettempdir()) / f"khazana-test-ports-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    starts = [
        start
        for r in _test_port_ranges()
        for start in range(-(-r.start // PORT_BLOCK) * PORT_BLOCK, r.stop, PORT_BLOCK)
        if start + blocks * PORT_BLOCK <= r.stop
    ]
    for base in random.sample(starts, min(len(starts), 200)):
        held = []
        for block in range(base, base + blocks * PORT_BLOCK, PORT_BLOCK):
            fd = _lock_block(directory, block)
            if fd is None:
                break
            held.append(fd)
        if len(held) == blocks and _all_free(base, count):
            _RESERVATIONS.extend(held)
            return base
        for fd in held:
            os.close(fd)
    raise RuntimeError(f"no {count} free test ports")


def _all_free(base: int, count: int) -> bool:
    sockets = []
    try:
        for port in range(base, base + count):
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in sockets:
            s.close()


def free_base_port(nodes: int = 4) -> int:
    """A base port for `nodes` nodes (3 ports each, node/home.py), reserved by `free_ports`."""
    return free_ports(3 * nodes)


_NODE_IDS: dict[str, tuple[str, str]] = {}  # url -> (chain id, node id): what to sign over


def rpc(url: str, method: str, *, signer: KeyPair | None = None, **params):
    """One JSON-RPC call; a JSON-RPC error raises RuntimeError, a dead node OSError (also one
    that died in the middle of its answer: http.client's IncompleteRead is not an OSError;
    refused credentials: urllib's HTTPError 401, an OSError too).
    `signer`: the key whose credentials the call carries (docs/RPC.md); None: anonymous.

    What a signed call signs over (the node's chain id and node id) is remembered per URL for
    the whole process; a URL may since serve another node (another test's network on the
    same port). Its 401 refusal names the ids it wants (docs/RPC.md): signed again for those,
    once -- as the SDK does (node/client/core.py `Credentials.learn_refusal`)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    if signer is None:
        return _post(url, method, body, None)
    if url not in _NODE_IDS:
        status = rpc(url, "status")
        _NODE_IDS[url] = (status["node_info"]["network"], status["node_info"]["id"])
    try:
        return _post(url, method, body, _signed(url, signer, body))
    except urllib.error.HTTPError as refused:
        if refused.code != 401 or not _learn_refusal(url, refused):
            raise
    return _post(url, method, body, _signed(url, signer, body))


def _signed(url: str, signer: KeyPair, body: bytes) -> str:
    chain_id, node_id = _NODE_IDS[url]
    path = urllib.parse.urlsplit(url).path or "/"
    return authorization_header(
        signer, chain_id=chain_id, node_id=node_id, method="POST", path=path, body=body
    )


def _learn_refusal(url: str, refused: urllib.error.HTTPError) -> bool:
    """True if the 401 names other ids than those we signed for (now remembered)."""
    try:
        data = json.loads(refused.read())["error"]["data"]
        ids = (data["chain_id"], data["node_id"])
    except (ValueError, KeyError, TypeError, OSError):
        return False
    if not all(isinstance(part, str) for part in ids) or ids == _NODE_IDS.get(url):
        return False
    _NODE_IDS[url] = ids
    return True


def _post(url: str, method: str, body: bytes, authorization: str | None):
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    request = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            answer = json.loads(response.read())
    except http.client.HTTPException as exc:
        raise ConnectionError(f"{url}: the answer to {method} broke off ({exc!r})") from exc
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer["result"]


def set_config_values(path: Path, values: Iterable[tuple[str, object]]) -> None:
    """Rewrite `key = value` lines of a node's config.toml (every section holding the key)."""
    text = path.read_text()
    for key, value in values:
        lines = [
            f"{key} = {value}" if line.split("=")[0].strip() == key else line
            for line in text.splitlines()
        ]
        text = "\n".join(lines) + "\n"
    path.write_text(text)


class Net:
    """A network of node processes under `root`, made by `khazana init`."""

    def __init__(
        self,
        root: Path,
        base_port: int,
        *,
        chain_id: str = "khazana-nettest",
        validators: int = 4,
        observers: int = 0,
    ) -> None:
        self.root = root
        self.chain_id = chain_id
        self.network = init_network(
            root,
            validators=validators,
            observers=observers,
            chain_id=chain_id,
            base_port=base_port,
            host="127.0.0.1",
        )
        self.names = tuple(n.name for n in self.network.nodes)
        self.validators = tuple(n.name for n in self.network.nodes if n.role == "validator")
        self.urls = {n.name: n.rpc_url for n in self.network.nodes}
        self.reader = read_key_file(dict(self.network.clients)["ministry"])
        self.procs: dict[str, subprocess.Popen] = {}
        self.genesis = json.loads((root / self.names[0] / "genesis.json").read_text())
        for name in self.names:
            set_config_values(root / name / "config.toml", FAST_TIMEOUTS)

    # ---- processes --------------------------------------------------------------------

    def command_prefix(self, name: str) -> list[str]:
        """What runs before `python -m node start` (nothing on loopback)."""
        return []

    def start(self, name: str, env: dict[str, str] | None = None) -> None:
        log = open(self.root / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [
                *self.command_prefix(name),
                sys.executable,
                "-m",
                "node",
                "start",
                "--home",
                str(self.root / name),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
        log.close()  # the child holds its own descriptor

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self, name: str) -> int:
        """SIGTERM (graceful: the current commit finishes), SIGKILL after STOP_GRACE_S; the
        exit code. The grace exceeds the node's own wait for its driver (node/app.py
        DRIVER_STOP_WAIT_S, 10 s), as a process supervisor's must: on a loaded 2-core CI
        machine a commit or a sync batch in progress can take seconds."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)

    def wait_exit(self, name: str, what: str) -> int:
        """Wait (bounded) for a node to end by itself; its exit code."""
        try:
            code = self.procs[name].wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"timed out waiting for {what}: {self.log(name)[-1500:]}"
            ) from None
        del self.procs[name]
        return code

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(timeout=10)
        self.procs.clear()

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- RPC --------------------------------------------------------------------------

    def rpc(self, name: str, method: str, **params):
        """A call signed with an institution's key (it reads and submits everything)."""
        return rpc(self.urls[name], method, signer=self.reader, **params)

    def status(self, name: str) -> dict:
        return self.rpc(name, "status")

    def height(self, name: str) -> int:
        """The node's committed height, or -1 while it does not answer."""
        try:
            return self.status(name)["sync_info"]["latest_block_height"]
        except (OSError, RuntimeError):
            return -1

    def first_height(self, name: str) -> int:
        """The first height a (re)started node answers, polled within the deadline; an RPC
        that times out under CPU load counts as no answer, never as height -1."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            height = self.height(name)
            if height >= 0:
                return height
            time.sleep(0.1)
        raise AssertionError(f"{name} never answered: {self.log(name)[-1500:]}")

    def wait(self, predicate: Callable[[], object], what: str, deadline_s: float = DEADLINE_S):
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(0.2)
        logs = {n: self.log(n)[-1500:] for n in self.names}
        raise AssertionError(f"timed out waiting for {what}; logs: {logs}")

    def hashes(self, name: str, upto: int, start: int = 1) -> list[tuple[str, str]]:
        """(block hash, app_hash) of heights start..upto as the node's RPC serves them."""
        out = []
        for h in range(start, upto + 1):
            block = self.rpc(name, "block", height=h)
            out.append((block["block_id"]["hash"], block["block"]["header"]["app_hash"]))
        return out

    def submit(self, name: str, nonce: int, ident: str) -> str:
        """Broadcast a central-bank `register_instrument` through `name`; its tx hash."""
        client = read_key_file(self.root / "clients" / "central-bank.key")
        body = TxBody(
            self.chain_id,
            client.address,
            nonce,
            "register_instrument",
            {
                "id": ident,
                "kind": "cash",
                "name": f"Cash {ident}",
                "currency": "PKR",
                "face_value": 1,
                "decimals": 2,
                "cap": 10**12,
            },
        )
        raw = sign_tx(body, [client]).raw
        result = self.rpc(name, "broadcast_tx_sync", tx=base64.b64encode(raw).decode())
        assert result["code"] == 0, result
        return result["hash"]

    # ---- stores (read only while the node is stopped) ---------------------------------

    def node_public_key(self, name: str) -> bytes:
        return read_key_file(self.root / name / "node_key.json").public_key

    def read_store(self, name: str) -> StoreView:
        return read_store(self.root / name / "data" / "node.db", self.genesis)


# ---------------------------------------------------------------------- store inspection


@dataclass(frozen=True, slots=True)
class StoredEntry:
    height: int
    block_hash: bytes
    app_hash: bytes
    commit: Commit


@dataclass(frozen=True, slots=True)
class StoreView:
    """What a stopped node holds: its blocks with certificates and its consensus record."""

    blocks: tuple[StoredEntry, ...]
    record: DurableState | None

    @property
    def height(self) -> int:
        return self.blocks[-1].height if self.blocks else 0


def read_store(path: Path, genesis: dict) -> StoreView:
    store = Store.open(path, chain_id=genesis["chain_id"], genesis_hash=genesis_hash(genesis))
    try:
        blocks = []
        for height in range(1, (store.blocks.latest_height() or 0) + 1):
            stored = store.blocks.block(height)
            commit = decode_message(store.blocks.commit(height))
            assert isinstance(commit, Commit), (height, commit)
            blocks.append(StoredEntry(height, stored.hash, stored.app_hash, commit))
        raw = store.load_consensus_record()
        record = None if raw is None else DurableState.from_bytes(raw)
    finally:
        store.close()
    return StoreView(tuple(blocks), record)


def genesis_validator_set(genesis: dict) -> ValidatorSet:
    return ValidatorSet.of(
        Validator(
            address_from_public_key(bytes.fromhex(v["public_key"])),
            bytes.fromhex(v["public_key"]),
            v["power"],
        )
        for v in genesis["validators"]
    )


def check_certificates(view: StoreView, genesis: dict) -> None:
    """Every stored block has a certificate for its own hash at its height, signed by > 2/3 of
    the genesis validators (the tests make no validator-set change)."""
    valset = genesis_validator_set(genesis)
    for entry in view.blocks:
        commit = entry.commit
        assert commit.height == entry.height, entry
        assert commit.value_id == entry.block_hash, f"certificate of {entry.height} is for another"
        assert verify_commit(valset, genesis["chain_id"], commit, verify_signature), entry.height


def check_agreement(views: dict[str, StoreView]) -> int:
    """Every pair of nodes holds the same block and app hash at every height both have;
    returns the lowest tip."""
    top = min(v.height for v in views.values())
    reference_name, reference = next(iter(views.items()))
    for name, view in views.items():
        for mine, theirs in zip(view.blocks[:top], reference.blocks[:top], strict=True):
            assert (mine.block_hash, mine.app_hash) == (theirs.block_hash, theirs.app_hash), (
                f"{name} and {reference_name} disagree at height {mine.height}"
            )
    return top


def signed_votes(views: Iterable[StoreView], records: Iterable[DurableState]) -> list[Vote]:
    """Every vote signature we can observe: the precommits in every stored certificate and the
    last prevote/precommit of every durable consensus record (including records read right
    after a crash). Only signatures that verify are returned."""
    out: list[Vote] = []
    for view in views:
        for entry in view.blocks:
            c = entry.commit
            for validator, signature in c.signatures:
                out.append(
                    Vote(VoteType.PRECOMMIT, c.height, c.round, c.value_id, validator, signature)
                )
    for record in records:
        for vote in (record.last_prevote, record.last_precommit):
            if vote is not None:
                out.append(vote)
    return out


def find_double_signs(votes: Iterable[Vote], genesis: dict) -> list[tuple[Vote, Vote]]:
    """Pairs of validly signed votes by one validator for one (type, height, round) and two
    different values: a double sign."""
    valset = genesis_validator_set(genesis)
    chain_id = genesis["chain_id"]
    seen: dict[tuple[bytes, int, int, int], Vote] = {}
    conflicts = []
    for vote in votes:
        member = valset.get(vote.validator)
        assert member is not None, f"vote by a non-validator {vote.validator.hex()}"
        data = vote_signing_bytes(chain_id, vote.vote_type, vote.height, vote.round, vote.value_id)
        assert verify_signature(member.pub_key, data, vote.signature), f"bad signature {vote}"
        key = (vote.validator, int(vote.vote_type), vote.height, vote.round)
        first = seen.setdefault(key, vote)
        if first.value_id != vote.value_id:
            conflicts.append((first, vote))
    return conflicts
