"""scripts/demo.py against a real 4-validator localnet (every node its own OS process).

The network is made with a one-day chain-time step (genesis `block_time_step_ms`), the way
`khazana localnet --demo` makes it; the demo runs with a shorter story budget
(`--story-blocks`), the same steps, so the coupon falls due sooner. The demo itself checks
every step against the chain and its own model; here we check it said so and exited 0, and
that the chain-time rule is visible in the committed headers: each block's time is exactly
the previous block's + one day.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.genesis import GenesisError, validate_genesis
from tests.node.netsupport import free_base_port, rpc

ROOT = Path(__file__).resolve().parent.parent
DAY_MS = 86_400_000


def test_genesis_time_step_is_checked(tmp_path: Path) -> None:
    from node.home import init_network

    network = init_network(tmp_path, validators=4, base_port=free_base_port(), time_step_ms=DAY_MS)
    genesis = json.loads((network.nodes[0].home / "genesis.json").read_text())
    assert genesis["parameters"]["block_time_step_ms"] == DAY_MS
    assert genesis["genesis_time_ms"] > 0 and genesis["genesis_time_ms"] % DAY_MS == 0
    for bad in (0, -1, "86400000", 10**15):
        genesis["parameters"]["block_time_step_ms"] = bad
        with pytest.raises(GenesisError, match="block_time_step_ms"):
            validate_genesis(genesis)
    del genesis["parameters"]["block_time_step_ms"]
    validate_genesis(genesis)  # absent: block time is the proposer's clock


def test_demo_on_a_real_localnet(tmp_path: Path) -> None:
    home = tmp_path / "net"
    base = free_base_port()
    command = [
        sys.executable, "-m", "node", "localnet", "--home", str(home), "--validators", "4",
        "--base-port", str(base), "--time-step-ms", str(DAY_MS), "--grace", "5",
    ]  # fmt: skip
    localnet = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (home / "localnet.json").exists():
            assert localnet.poll() is None, localnet.stdout.read().decode()
            assert time.monotonic() < deadline, "localnet not healthy within 60 s"
            time.sleep(0.2)
        demo = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--localnet", str(home),
             "--story-blocks", "30"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "The demo passed" in demo.stdout
        assert "FAILED" not in demo.stdout
        # It ends with the regulator's report (node/client/report.py's tables).
        report = demo.stdout.split("The regulator's report", 1)[1]
        assert "Programme at height" in report and "Holdings by vasp" in report
        assert "Binance Pakistan" in report and "HTX Pakistan" in report
        for code in ("PROGRAMME_CAP", "ACCOUNT_FROZEN", "RESERVE_EXCEEDED", "VASP_SUSPENDED"):
            assert f"refused at admission with {code}" in demo.stdout
        # The chain-time rule, read from the committed headers of one node.
        url = json.loads((home / "localnet.json").read_text())["nodes"][1]["rpc"]
        times = [rpc(url, "block", height=h)["block"]["header"]["time_ms"] for h in (1, 2, 3)]
        assert times[1] - times[0] == DAY_MS and times[2] - times[1] == DAY_MS
        # Run again on the same chain: refused clearly (exit 2), nothing half-done.
        again = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--localnet", str(home)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert again.returncode == 2 and "--fresh" in again.stderr
    finally:
        if localnet.poll() is None:
            os.killpg(localnet.pid, signal.SIGTERM)
            try:
                localnet.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(localnet.pid, signal.SIGKILL)
                localnet.wait()
