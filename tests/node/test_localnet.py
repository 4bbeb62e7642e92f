"""`khazana localnet` with fake node programs (tiny HTTP servers answering `health`).

The real node runtime is not needed: `KHAZANA_LOCALNET_NODE_CMD` replaces `python -m node
start`. Every test runs real processes on loopback, bounded in time, and kills what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from node.config import NodeConfig
from node.home import init_network
from node.localnet import NODE_COMMAND_ENV, LocalnetError, prepare_network, rpc_health
from tests.node.netsupport import free_ports

FAKE_NODE = textwrap.dedent(
    """
    import http.server, json, signal, sys, tomllib
    home = sys.argv[sys.argv.index("--home") + 1]
    mode = sys.argv[1]
    if mode == "crash":
        print("boom: the fake node cannot start", flush=True)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(home + "/config.toml", "rb") as f:
        host, _, port = tomllib.load(f)["rpc"]["listen"].rpartition(":")

    class Health(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer = {"jsonrpc": "2.0", "id": request["id"], "result": {}}
            if request["method"] != "health":
                answer = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601}}
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    print("fake node serving", home, flush=True)
    http.server.HTTPServer((host, int(port)), Health).serve_forever()
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Run:
    """A `khazana localnet` process with a fake node command, killed at the end if still up."""

    def __init__(self, tmp_path, mode: str, *extra: str, nodes=(2, 1)) -> None:
        script = tmp_path / "fake_node.py"
        script.write_text(FAKE_NODE)
        self.root = tmp_path / "net"
        validators, observers = nodes
        base = free_ports(3 * (validators + observers))
        env = dict(os.environ)
        env[NODE_COMMAND_ENV] = f"{sys.executable} {script} {mode}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node", "localnet", "--home", str(self.root), "--no-dashboard"]
            + ["--validators", str(validators), "--observers", str(observers)]
            + ["--base-port", str(base), "--health-timeout", "30", *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def localnet_json(self) -> dict:
        path = self.root / "localnet.json"

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"localnet exited: {self.process.communicate()}")
            return path.exists()

        wait_for(ready, 60, "localnet.json")
        return json.loads(path.read_text())

    def stop(self, signum=signal.SIGTERM) -> tuple[int, str, str]:
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_localnet_writes_localnet_json_and_stops_every_node(tmp_path, signum):
    run = Run(tmp_path, "serve")
    pids: list[int] = []
    try:
        document = run.localnet_json()
        pids = [node["pid"] for node in document["nodes"]]
        root = run.root
        genesis = json.loads((root / "ministry" / "genesis.json").read_text())
        assert document["chain_id"] == genesis["chain_id"]
        assert [(n["name"], n["role"]) for n in document["nodes"]] == [
            ("ministry", "validator"),
            ("central-bank", "validator"),
            ("observer-1", "observer"),
        ]
        for node in document["nodes"]:
            config = NodeConfig.load(node["home"])
            assert node["home"] == str(root / node["name"])
            assert node["rpc"] == f"http://127.0.0.1:{config.rpc.listen.port}"
            assert node["p2p"] == str(config.p2p.external_address)
            assert alive(node["pid"])
            assert rpc_health(node["rpc"])
            assert "fake node serving" in (root / node["name"] / "node.log").read_text()
        assert document["clients"] == {
            name: str(root / "clients" / f"{name}.key")
            for name in ("ministry", "central-bank", "regulator", "auditor")
        }
        assert len(set(pids)) == 3 and run.process.pid not in pids
        code, out, _ = run.stop(signum)
        assert code == 0
        assert "ministry" in out and "stopping every node" in out
        for pid in pids:
            assert not alive(pid)
    finally:
        run.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_node_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    run = Run(tmp_path, "stubborn", "--grace", "0.5", nodes=(1, 0))
    pids: list[int] = []
    try:
        pids = [node["pid"] for node in run.localnet_json()["nodes"]]
        started = time.monotonic()
        code, out, _ = run.stop()
        assert code == 0
        assert "did not stop within 0.5 s: SIGKILL" in out
        assert time.monotonic() - started < 30
        assert not alive(pids[0])
    finally:
        run.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_node_that_dies_at_start_fails_clearly_with_its_log(tmp_path):
    run = Run(tmp_path, "crash", nodes=(2, 0))
    try:
        _, err = run.process.communicate(timeout=60)
        assert run.process.returncode == 1
        assert "exited with code 3 before it was healthy" in err
        assert "boom: the fake node cannot start" in err  # the log tail
        assert not (run.root / "localnet.json").exists()
    finally:
        run.kill()


def test_an_existing_network_is_reused_only_when_its_shape_fits(tmp_path):
    first = init_network(tmp_path, validators=4, observers=1, base_port=35000)
    network, created = prepare_network(
        tmp_path, validators=4, observers=1, fresh=False, base_port=1, host="127.0.0.1"
    )
    assert not created and network == first
    with pytest.raises(LocalnetError, match="4 validators and 1 observers.*--fresh"):
        prepare_network(
            tmp_path, validators=3, observers=0, fresh=False, base_port=35000, host="127.0.0.1"
        )
    (tmp_path / "localnet.json").write_text("{}")
    network, created = prepare_network(
        tmp_path, validators=3, observers=0, fresh=True, base_port=35000, host="127.0.0.1"
    )
    assert created and [n.name for n in network.nodes] == ["ministry", "central-bank", "regulator"]
    assert not (tmp_path / "auditor").exists() and not (tmp_path / "localnet.json").exists()
