"""`khazana localnet`: a whole network on one machine, every node its own OS process.

`run_localnet(root, ...)`:

1. makes the network with `node.home.init_network` unless `root` already holds one of the
   asked shape (`fresh=True` wipes it first; a network of another shape is refused, so a
   different `--validators` never silently mixes two genesis files);
2. starts each node as `python -m node start --home ROOT/NAME` (the command prefix can be
   replaced, see `NODE_COMMAND_ENV`, which is how the tests run tiny fake nodes), in its own
   session, with stdout and stderr appended to `ROOT/NAME/node.log`;
3. waits until every node answers the JSON-RPC `health` method on its RPC address (bounded;
   on failure it says which node, why, and shows the end of its log);
4. starts the supervision dashboard (`khazana dashboard`, node/dashboard/) on the first node
   with the regulator's client key, unless `dashboard=False`; its log is ROOT/dashboard.log;
5. writes `ROOT/localnet.json` (CONTRACT.md; plus `dashboard`: the address to open, with its
   access token), prints a summary and the dashboard's address, runs `scripts/demo.py` once
   when asked, and waits;
6. on SIGTERM or SIGINT (or any failure) stops the dashboard and every node it started: SIGTERM, then SIGKILL
   for those still running after a grace period; then exits 0.

Waiting on other processes is done by polling at a short interval: a child's HTTP server
cannot wake us up, and this is the supervisor, not the node.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from node.home import (
    DEFAULT_BASE_PORT,
    DEFAULT_HOST,
    HomeError,
    Network,
    NodeEntry,
    existing_homes,
    init_network,
    read_network,
    wipe_network,
)

NODE_COMMAND_ENV = "KHAZANA_LOCALNET_NODE_CMD"
"""A shell-quoted command that replaces `python -m node start`; `--home DIR` is appended."""
LOCALNET_FILE = "localnet.json"
LOG_FILE = "node.log"
DASHBOARD_LOG = "dashboard.log"
DASHBOARD_START_S = 15.0  # for the dashboard to print its address
DASHBOARD_KEY = "regulator"  # the client key it reads with (else the first institution's)
POLL_S = 0.2
HEALTH_REQUEST_TIMEOUT_S = 2.0
LOG_TAIL_LINES = 20
DEMO_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"
DEMO_TIME_STEP_MS = 86_400_000
"""A new network made for the demo: one chain day per block, so a T-bill matures in minutes."""


class LocalnetError(Exception):
    """The network could not be made or started; the message says which node and why."""


@dataclass(slots=True)
class _Child:
    node: NodeEntry
    process: subprocess.Popen
    exit_reported: bool = False

    @property
    def log_path(self) -> Path:
        return self.node.home / LOG_FILE


def default_node_command() -> list[str]:
    override = os.environ.get(NODE_COMMAND_ENV)
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "node", "start"]


def rpc_health(
    url: str, timeout_s: float = HEALTH_REQUEST_TIMEOUT_S, ca_file: Path | None = None
) -> bool:
    """True when the node at `url` answers JSON-RPC `health` with a result (not an error);
    an https:// node is verified against `ca_file` (`init --rpc-tls`'s CA)."""
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "health"}).encode()
    request = urllib.request.Request(
        url + "/", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            if response.status != 200:
                return False
            answer = json.loads(response.read(1 << 16))
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return isinstance(answer, dict) and "result" in answer and "error" not in answer


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.fstat(file.fileno()).st_size - 64 * 1024))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else f"    (empty log {path})"


def prepare_network(
    root: Path,
    *,
    validators: int,
    observers: int,
    fresh: bool,
    base_port: int,
    host: str,
    time_step_ms: int | None = None,
) -> tuple[Network, bool]:
    """The network to run: the existing one under `root` or a new one. Returns (network,
    created)."""
    if fresh:
        wipe_network(root)
    if existing_homes(root):
        network = read_network(root)
        have = (
            sum(node.role == "validator" for node in network.nodes),
            sum(node.role == "observer" for node in network.nodes),
        )
        if have != (validators, observers):
            raise LocalnetError(
                f"{root} holds a network of {have[0]} validators and {have[1]} observers, "
                f"not {validators} and {observers}; use --fresh to replace it"
            )
        return network, False
    network = init_network(
        root,
        validators=validators,
        observers=observers,
        base_port=base_port,
        host=host,
        time_step_ms=time_step_ms,
    )
    return network, True


def localnet_document(network: Network, pids: dict[str, int]) -> dict:
    """The `localnet.json` document of CONTRACT.md."""
    return {
        "chain_id": network.chain_id,
        "nodes": [
            {
                "name": node.name,
                "role": node.role,
                "home": str(node.home),
                "rpc": node.rpc_url,
                "p2p": str(node.p2p),
                "pid": pids[node.name],
            }
            for node in network.nodes
        ],
        "clients": {name: str(path) for name, path in network.clients},
        # With `init --rpc-tls`: the CA that signed the nodes' RPC certificates (an extension
        # of CONTRACT.md's document; absent for plain HTTP).
        **({"ca_file": str(network.ca_file)} if network.ca_file is not None else {}),
    }


def _write_json(path: Path, document: dict) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class Localnet:
    """Starts, watches and stops the node processes of one network."""

    def __init__(
        self,
        network: Network,
        *,
        node_command: Sequence[str],
        stop: threading.Event,
        out: TextIO,
        grace_s: float,
    ) -> None:
        self.network = network
        self.node_command = list(node_command)
        self.stop = stop
        self.out = out
        self.grace_s = grace_s
        self.children: list[_Child] = []
        self.dashboard: subprocess.Popen | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start_all(self) -> None:
        for node in self.network.nodes:
            with open(node.home / LOG_FILE, "ab") as log:
                # Own session: a Ctrl-C in the terminal reaches only us, and we stop the nodes
                # in order (SIGTERM, grace, SIGKILL) instead of all dying mid-write at once.
                process = subprocess.Popen(
                    [*self.node_command, "--home", str(node.home)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.children.append(_Child(node, process))

    def wait_healthy(self, timeout_s: float) -> bool:
        """True once every node answers `health`; False if asked to stop meanwhile.
        LocalnetError when a node exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        waiting = list(self.children)
        while waiting:
            for child in list(waiting):
                code = child.process.poll()
                if code is not None:
                    child.exit_reported = True
                    raise LocalnetError(
                        f"node {child.node.name} exited with code {code} before it was "
                        f"healthy; the end of {child.log_path}:\n{log_tail(child.log_path)}"
                    )
                if rpc_health(child.node.rpc_url, ca_file=self.network.ca_file):
                    waiting.remove(child)
            if not waiting:
                break
            if time.monotonic() > deadline:
                names = ", ".join(child.node.name for child in waiting)
                child = waiting[0]
                raise LocalnetError(
                    f"no answer to health within {timeout_s:g} s from {names}; "
                    f"the end of {child.log_path}:\n{log_tail(child.log_path)}"
                )
            if self.stop.wait(POLL_S):
                return False
        return True

    def start_dashboard(self) -> str | None:
        """Start `khazana dashboard` on the first node; the address it prints (with its access
        token), or None (said why) if it did not come up. The network runs either way."""
        clients = dict(self.network.clients)
        key = clients.get(DASHBOARD_KEY) or next(iter(clients.values()), None)
        if key is None or not self.network.nodes:
            return None
        log_path = self.network.root / DASHBOARD_LOG
        command = [
            sys.executable, "-m", "node", "dashboard", "--rpc", self.network.nodes[0].rpc_url,
            "--key", str(key), "--listen", f"{self.network.nodes[0].p2p.host}:0",
        ]  # fmt: skip
        if self.network.ca_file is not None:
            command += ["--ca-file", str(self.network.ca_file)]
        with open(log_path, "ab") as log:
            start = log.tell()
            self.dashboard = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + DASHBOARD_START_S
        while time.monotonic() < deadline and self.dashboard.poll() is None:
            with open(log_path, "rb") as log:
                log.seek(start)
                for line in log.read().decode(errors="replace").splitlines():
                    if ": open http" in line:
                        return line.rsplit(" ", 1)[1]
            if self.stop.wait(POLL_S):
                return None
        self.say(f"the dashboard did not start; see {log_path}")
        return None

    def report_exits(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None and not child.exit_reported:
                child.exit_reported = True
                self.say(
                    f"node {child.node.name} (pid {child.process.pid}) exited with code {code}; "
                    f"see {child.log_path}"
                )

    def stop_all(self) -> None:
        """SIGTERM every running node, SIGKILL those still running after the grace period."""
        if self.dashboard is not None and self.dashboard.poll() is None:
            _signal(self.dashboard, signal.SIGTERM)
            try:
                self.dashboard.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                _signal(self.dashboard, signal.SIGKILL)
                self.dashboard.wait()
        running = [child for child in self.children if child.process.poll() is None]
        for child in running:
            _signal(child.process, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for child in running:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"node {child.node.name} did not stop within {self.grace_s:g} s: SIGKILL")
                _signal(child.process, signal.SIGKILL)
                child.process.wait()

    def run_demo(self) -> int | None:
        """Run scripts/demo.py against the network; its exit code, None if asked to stop."""
        if not DEMO_SCRIPT.is_file():
            self.say(f"the demo ({DEMO_SCRIPT}) is not built yet; the network keeps running")
            return None
        self.say(f"running {DEMO_SCRIPT} --localnet {self.network.root}")
        demo = subprocess.Popen(
            [sys.executable, str(DEMO_SCRIPT), "--localnet", str(self.network.root)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            while demo.poll() is None:
                if self.stop.wait(POLL_S):
                    return None
            return demo.returncode
        finally:
            if demo.poll() is None:
                _signal(demo, signal.SIGTERM)
                try:
                    demo.wait(timeout=self.grace_s)
                except subprocess.TimeoutExpired:
                    _signal(demo, signal.SIGKILL)
                    demo.wait()


def _signal(process: subprocess.Popen, signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass  # it exited between poll() and now


def run_localnet(
    root: str | os.PathLike[str],
    *,
    validators: int = 4,
    observers: int = 0,
    fresh: bool = False,
    demo: bool = False,
    dashboard: bool = True,
    base_port: int = DEFAULT_BASE_PORT,
    host: str = DEFAULT_HOST,
    time_step_ms: int | None = None,
    node_command: Sequence[str] | None = None,
    health_timeout_s: float = 60.0,
    grace_s: float = 10.0,
    out: TextIO = sys.stdout,
) -> int:
    """The `khazana localnet` command. Returns the process exit code (0 after a clean stop)."""
    root = Path(root).resolve()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    localnet: Localnet | None = None
    try:
        try:
            network, created = prepare_network(
                root,
                validators=validators,
                observers=observers,
                fresh=fresh,
                base_port=base_port,
                host=host,
                time_step_ms=DEMO_TIME_STEP_MS if demo and time_step_ms is None else time_step_ms,
            )
        except (HomeError, OSError, ValueError) as exc:
            print(f"khazana localnet: {exc}", file=sys.stderr)
            return 1
        print(
            f"{'created' if created else 'reusing'} network {network.chain_id} in {root}",
            file=out,
            flush=True,
        )
        localnet = Localnet(
            network,
            node_command=node_command or default_node_command(),
            stop=stop,
            out=out,
            grace_s=grace_s,
        )
        localnet.start_all()
        try:
            healthy = localnet.wait_healthy(health_timeout_s)
        except LocalnetError as exc:
            print(f"khazana localnet: {exc}", file=sys.stderr)
            return 1
        if not healthy:
            return 0
        pids = {child.node.name: child.process.pid for child in localnet.children}
        dashboard_url = localnet.start_dashboard() if dashboard else None
        document = localnet_document(network, pids)
        if dashboard_url is not None:
            document["dashboard"] = dashboard_url  # an extension of CONTRACT.md's document
        _write_json(root / LOCALNET_FILE, document)
        _print_summary(localnet, root, out)
        if dashboard_url is not None:
            localnet.say(f"supervision dashboard: {dashboard_url}")
        if demo:
            code = localnet.run_demo()
            if code is not None:
                verdict = "passed" if code == 0 else f"FAILED (exit code {code})"
                localnet.say(f"demo {verdict}; the network keeps running")
        while not stop.wait(1.0):
            localnet.report_exits()
        localnet.say("stopping every node")
        return 0
    finally:
        if localnet is not None:
            localnet.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_summary(localnet: Localnet, root: Path, out: TextIO) -> None:
    lines = [f"{'node':<14} {'role':<10} {'pid':>7}  {'rpc':<26} p2p"]
    for child in localnet.children:
        node = child.node
        lines.append(
            f"{node.name:<14} {node.role:<10} {child.process.pid:>7}  {node.rpc_url:<26} {node.p2p}"
        )
    lines.append(f"wrote {root / LOCALNET_FILE}; node logs in {root}/<name>/{LOG_FILE}")
    lines.append("Ctrl-C (SIGINT) or SIGTERM stops every node")
    print("\n".join(lines), file=out, flush=True)
