"""Real processes on loopback: four validators started with `python -m node start`.

One scenario, bounded in time, children always killed: the four commit blocks with
transactions and agree on every block hash and app_hash; one is SIGKILLed under load and the
other three keep committing; restarted, it catches up and agrees; two of four SIGKILLed:
no block is committed and nothing forks; restarted, the chain resumes.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ledger.crypto import read_key_file
from ledger.tx import TxBody, sign_tx

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("ministry", "central-bank", "regulator", "auditor")
CHAIN_ID = "khazana-nettest"
DEADLINE_S = 25  # per wait; the whole scenario stays well under a minute when healthy

try:
    from node.home import init_network
except ImportError:  # pragma: no cover - until node/home.py lands
    init_network = None


def free_base_port() -> int:
    """A base port whose next 12 ports are free (3 per node), found by binding them."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        probe.close()
        if base + 12 >= 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + 12):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range")


def rpc(url: str, method: str, **params):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=3) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer["result"]


class Net:
    def __init__(self, root: Path, base_port: int) -> None:
        self.root = root
        self.network = init_network(
            root, validators=4, chain_id=CHAIN_ID, base_port=base_port, host="127.0.0.1"
        )
        self.urls = {n.name: n.rpc_url for n in self.network.nodes}
        self.procs: dict[str, subprocess.Popen] = {}
        for name in NAMES:
            self._speed_up(root / name / "config.toml")

    @staticmethod
    def _speed_up(path: Path) -> None:
        text = path.read_text()
        for key, value in (
            ("heartbeat_ms", 400),
            ("timeout_propose_ms", 1500),
            ("timeout_prevote_ms", 500),
            ("timeout_precommit_ms", 500),
            ("retransmit_ms", 700),
            ("backoff_cap_ms", 1000),
        ):
            lines = [
                f"{key} = {value}" if line.split("=")[0].strip() == key else line
                for line in text.splitlines()
            ]
            text = "\n".join(lines) + "\n"
        path.write_text(text)

    def start(self, name: str) -> None:
        log = open(self.root / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "node", "start", "--home", str(self.root / name)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(timeout=10)
        self.procs.clear()

    def height(self, name: str) -> int:
        try:
            return rpc(self.urls[name], "status")["sync_info"]["latest_block_height"]
        except OSError:
            return -1

    def wait(self, predicate, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(0.2)
        logs = {n: (self.root / f"{n}.log").read_text()[-1500:] for n in NAMES}
        raise AssertionError(f"timed out waiting for {what}; logs: {logs}")

    def hashes(self, name: str, upto: int) -> list[tuple[str, str]]:
        out = []
        for h in range(1, upto + 1):
            block = rpc(self.urls[name], "block", height=h)
            out.append((block["block_id"]["hash"], block["block"]["header"]["app_hash"]))
        return out

    def submit(self, name: str, nonce: int, ident: str) -> str:
        client = read_key_file(self.root / "clients" / "central-bank.key")
        body = TxBody(
            CHAIN_ID,
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
        result = rpc(self.urls[name], "broadcast_tx_sync", tx=base64.b64encode(raw).decode())
        assert result["code"] == 0, result
        return result["hash"]


@pytest.mark.skipif(init_network is None, reason="node/home.py (khazana init) not available")
def test_four_processes_commit_survive_kills_and_agree(tmp_path):
    net = Net(tmp_path / "net", free_base_port())
    try:
        for name in NAMES:
            net.start(name)
        net.wait(lambda: all(net.height(n) >= 2 for n in NAMES), "first blocks on all four")

        hashes = [net.submit("ministry", i, f"A{i}") for i in range(4)]
        net.wait(
            lambda: all(rpc(net.urls[n], "tx", hash=hashes[-1]) for n in NAMES),
            "transactions committed everywhere",
        )

        # SIGKILL one validator under load: the other three keep committing.
        net.kill("auditor")
        before = max(net.height(n) for n in NAMES[:3])
        more = [net.submit("central-bank", 4 + i, f"B{i}") for i in range(4)]
        net.wait(lambda: all(net.height(n) >= before + 3 for n in NAMES[:3]), "three commit")
        net.wait(lambda: rpc(net.urls["ministry"], "tx", hash=more[-1]), "load committed")

        # Restarted, it catches up and agrees.
        net.start("auditor")
        target = net.height("ministry")
        net.wait(lambda: net.height("auditor") >= target, "auditor catches up")
        top = min(net.height(n) for n in NAMES)
        reference = net.hashes("ministry", top)
        for name in NAMES[1:]:
            assert net.hashes(name, top) == reference, name

        # SIGKILL two of four: no quorum, no block, no fork.
        net.kill("regulator")
        net.kill("auditor")
        time.sleep(1.0)  # a block already decided may still be landing
        stalled = {n: net.height(n) for n in NAMES[:2]}
        time.sleep(3.0)
        assert {n: net.height(n) for n in NAMES[:2]} == stalled

        # Restarted, the chain resumes and everyone agrees.
        net.start("regulator")
        net.start("auditor")
        resume = max(stalled.values())
        net.wait(lambda: all(net.height(n) >= resume + 2 for n in NAMES), "chain resumes")
        top = min(net.height(n) for n in NAMES)
        reference = net.hashes("ministry", top)
        for name in NAMES[1:]:
            assert net.hashes(name, top) == reference, name
    finally:
        net.stop_all()
