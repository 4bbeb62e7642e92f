"""Real processes on loopback: four validators started with `python -m node start`.

One scenario, bounded in time, children always killed: the four commit blocks with
transactions and agree on every block hash and app_hash; one is SIGKILLed under load and the
other three keep committing; restarted, it catches up and agrees; two of four SIGKILLed:
no block is committed and nothing forks; restarted, the chain resumes.
"""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.node.netsupport import NAMES, Net, free_base_port, init_network


@pytest.mark.skipif(init_network is None, reason="node/home.py (khazana init) not available")
def test_four_processes_commit_survive_kills_and_agree(tmp_path):
    base = free_base_port()
    net = Net(tmp_path / "net", base)
    try:
        for name in NAMES:
            net.start(name)
        net.wait(lambda: all(net.height(n) >= 2 for n in NAMES), "first blocks on all four")
        # The driver updates the metrics at every commit (node/home.py: the first node's
        # metrics port is base + 2); a small state has one slice and holds nothing back.
        with urllib.request.urlopen(f"http://127.0.0.1:{base + 2}/metrics", timeout=10) as r:
            exposition = r.read().decode()
        assert "\nkhazana_state_slices 1.0\n" in exposition
        assert "\nkhazana_state_held_back 0.0\n" in exposition

        hashes = [net.submit("ministry", i, f"A{i}") for i in range(4)]
        net.wait(
            lambda: all(net.rpc(n, "tx", hash=hashes[-1]) for n in NAMES),
            "transactions committed everywhere",
        )

        # SIGKILL one validator under load: the other three keep committing.
        net.kill("auditor")
        before = max(net.height(n) for n in NAMES[:3])
        more = [net.submit("central-bank", 4 + i, f"B{i}") for i in range(4)]
        net.wait(lambda: all(net.height(n) >= before + 3 for n in NAMES[:3]), "three commit")
        net.wait(lambda: net.rpc("ministry", "tx", hash=more[-1]), "load committed")

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
