"""Real processes on several "hosts": each validator in its own network namespace.

Topology (made here, removed in `finally`): a namespace holding a Linux bridge, and one
namespace per node joined to it by a veth pair (both ends created directly inside the
namespaces, so the host's own network is never touched). Nodes get addresses in SUBNET, which
exists only inside these namespaces; p2p listens and dials on those addresses, so every peer
link crosses the bridge. RPC stays on each namespace's own loopback and the test reaches it
with `ip netns exec NS python -c ...` -- no address outside loopback or these namespaces is
ever used.

Scenario: the four commit blocks with a transaction and agree; one node is partitioned with
blackhole routes on both sides (its traffic to and from the others is dropped silently, like a
cut cable); the other three keep committing while its height stands still; the routes are
removed and it catches up and agrees. Skipped with the reason where the machine cannot make
namespaces (not root, no `ip`, EPERM in a container).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.crypto import read_key_file
from node.rpc.auth import authorization_header
from tests.node.netsupport import (
    DOUBLE_SIGN_LOG,
    NAMES,
    Net,
    check_agreement,
    check_certificates,
    find_double_signs,
    free_base_port,
    init_network,
    signed_votes,
)

SUBNET = "10.213.47"  # a private /24 that exists only inside this test's namespaces
PARTITION_S = 4

_RPC_SCRIPT = """
import json, sys, urllib.request
url, body, authorization = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
headers = {"content-type": "application/json", "authorization": authorization}
req = urllib.request.Request(url, body, headers)
try:
    with urllib.request.urlopen(req, timeout=3) as response:
        sys.stdout.write(response.read().decode())
except OSError as exc:
    sys.stdout.write(json.dumps({"unreachable": str(exc)}))
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Namespaces:
    """A bridge namespace and one namespace per node, with addresses SUBNET.10, .11, ..."""

    def __init__(self, count: int) -> None:
        tag = secrets.token_hex(2)
        self.bridge = f"khz{tag}-br"
        self.nodes = [f"khz{tag}-n{i}" for i in range(count)]
        self.addresses = [f"{SUBNET}.{10 + i}" for i in range(count)]
        self.made: list[str] = []

    def create(self) -> None:
        ip("netns", "add", self.bridge)
        self.made.append(self.bridge)
        ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge, "link", "set", "br0", "up")
        for i, (ns, address) in enumerate(zip(self.nodes, self.addresses, strict=True)):
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}")
            ip("-n", ns, "link", "set", f"v{i}", "netns", self.bridge)
            ip("-n", self.bridge, "link", "set", f"v{i}", "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def partition(self, index: int, cut: bool) -> None:
        """Blackhole routes between node `index` and every other node, both directions."""
        verb = "add" if cut else "del"
        victim = self.addresses[index]
        for j, (ns, address) in enumerate(zip(self.nodes, self.addresses, strict=True)):
            if j != index:
                ip("-n", self.nodes[index], "route", verb, "blackhole", f"{address}/32")
                ip("-n", ns, "route", verb, "blackhole", f"{victim}/32")

    def remove(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        self.made.clear()


def make_namespaces(count: int) -> Namespaces:
    if shutil.which("ip") is None:
        pytest.skip("cannot create network namespaces: no `ip` command")
    if os.geteuid() != 0:
        pytest.skip("cannot create network namespaces: not root")
    spaces = Namespaces(count)
    try:
        spaces.create()
    except subprocess.CalledProcessError as exc:
        spaces.remove()
        pytest.skip(f"cannot create network namespaces: {exc.stderr.decode().strip()}")
    return spaces


class NamespacedNet(Net):
    """Each node runs in its own namespace; p2p addresses are the namespace addresses."""

    def __init__(self, root: Path, base_port: int, spaces: Namespaces) -> None:
        super().__init__(root, base_port, chain_id="khazana-netnstest")
        self.spaces = spaces
        self.index = {name: i for i, name in enumerate(self.names)}
        # p2p ports (base + 3i) move to node i's address, everywhere they appear (listen,
        # external address, peers); rpc and metrics stay on the namespace's own loopback.
        for name in self.names:
            path = root / name / "config.toml"
            text = path.read_text()
            for i, address in enumerate(spaces.addresses):
                text = text.replace(
                    f'"127.0.0.1:{base_port + 3 * i}"', f'"{address}:{base_port + 3 * i}"'
                )
            path.write_text(text)

    def command_prefix(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.spaces.nodes[self.index[name]]]

    def rpc(self, name: str, method: str, **params):
        """A call signed with an institution's key (docs/RPC.md), sent from the node's
        namespace by a plain interpreter: the body and its credential are made here."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        node_id = read_key_file(self.root / name / "node_key.json").public_key.hex()
        authorization = authorization_header(
            self.reader,
            chain_id=self.chain_id,
            node_id=node_id,
            method="POST",
            path="/",
            body=body.encode(),
        )
        done = subprocess.run(
            [
                *self.command_prefix(name),
                sys.executable,
                "-I",
                "-c",
                _RPC_SCRIPT,
                self.urls[name],
                body,
                authorization,
            ],
            capture_output=True,
            timeout=10,
        )
        answer = json.loads(done.stdout)
        if "unreachable" in answer:
            raise OSError(answer["unreachable"])
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]


@pytest.mark.skipif(init_network is None, reason="node/home.py (khazana init) not available")
def test_nodes_in_namespaces_commit_partition_and_heal(tmp_path):
    spaces = make_namespaces(len(NAMES))
    net = None
    try:
        net = NamespacedNet(tmp_path / "net", free_base_port(), spaces)
        config = (tmp_path / "net" / "auditor" / "config.toml").read_text()
        assert f'listen = "{SUBNET}.13:' in config and "127.0.0.1:" in config
        for name in NAMES:
            net.start(name)
        net.wait(lambda: all(net.height(n) >= 2 for n in NAMES), "first blocks across hosts")
        tx = net.submit("ministry", 0, "NS0")
        net.wait(lambda: all(net.rpc(n, "tx", hash=tx) for n in NAMES), "tx committed everywhere")

        # Partition the auditor: the three others keep committing, it stands still.
        victim, others = "auditor", NAMES[:3]
        spaces.partition(NAMES.index(victim), cut=True)
        cut_at = time.monotonic()
        before = max(net.height(n) for n in others)
        during = [net.submit("central-bank", 1, "NS1")]
        net.wait(lambda: all(net.height(n) >= before + 3 for n in others), "three commit alone")
        # Read only now (no fixed settling sleep): a block decided before the cut has landed
        # by the time the others committed three more, and it is the most the victim got.
        frozen = net.height(victim)
        assert frozen <= before + 1, (frozen, before)
        time.sleep(max(0.0, PARTITION_S - (time.monotonic() - cut_at)))  # the cut's length
        assert net.height(victim) == frozen
        tip = min(net.height(n) for n in others)
        blocks_during = tip - before

        # Heal: it catches up and agrees.
        spaces.partition(NAMES.index(victim), cut=False)
        healed = time.monotonic()
        net.wait(lambda: net.height(victim) >= tip, "the partitioned node catches up")
        catch_up_s = time.monotonic() - healed
        net.wait(lambda: net.rpc(victim, "tx", hash=during[0]), "the partition's tx on the victim")
        net.wait(lambda: all(net.height(n) >= tip + 2 for n in NAMES), "all four commit again")
        top = min(net.height(n) for n in NAMES)
        reference = net.hashes("ministry", top)
        for name in NAMES[1:]:
            assert net.hashes(name, top) == reference, name
    finally:
        if net is not None:
            net.stop_all()
        spaces.remove()

    views = {name: net.read_store(name) for name in NAMES}
    for view in views.values():
        check_certificates(view, net.genesis)
    assert check_agreement(views) >= top
    finals = [v.record for v in views.values() if v.record is not None]
    assert find_double_signs(signed_votes(views.values(), finals), net.genesis) == []
    for name in NAMES:
        assert DOUBLE_SIGN_LOG not in net.log(name), name
    print(
        f"partition {PARTITION_S} s: {blocks_during} blocks by the three; "
        f"caught up {catch_up_s:.1f} s after healing"
    )
