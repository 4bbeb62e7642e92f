"""scripts/bench_catchup.py end to end on a real 4-validator localnet it starts itself.

Tiny numbers (300 transfers from 30 senders) keep it near 20 s. What is checked is behaviour,
not speed: the last stdout line is the JSON summary with its fields, the restarted node
caught up to the tip with the same app_hash, the transactions it synced include every loaded
transfer, and no process of the run is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.node.netsupport import free_base_port

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {
    "txs_synced": int,
    "blocks_synced": int,
    "seconds": (int, float),
    "tx_per_s": (int, float),
    "startup_s": (int, float),
    "app_hash_match": bool,
    "rss_mb": (int, float),
    "cpu_s": (int, float),
}


def _pids_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_bench_catchup_on_four_validators(tmp_path):
    home = tmp_path / "net"
    out = subprocess.run(
        [sys.executable, "scripts/bench_catchup.py", "--home", str(home),
         "--base-port", str(free_base_port(4)), "--txs", "300", "--rate", "100",
         "--senders", "30", "--drain-s", "20", "--timeout-s", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    for name, kind in FIELDS.items():
        assert isinstance(summary[name], kind), (name, summary)
    assert summary["app_hash_match"] is True
    assert summary["loaded"]["committed"] == 300, summary
    # The funding (licences, issues, onboardings, transfers) is history too.
    assert summary["txs_synced"] >= 300 + 2 * 30, summary
    assert summary["blocks_synced"] >= 1 and summary["height"] > summary["from_height"]
    assert summary["seconds"] > 0 and summary["tx_per_s"] > 0
    assert summary["node"] == "auditor"
    assert "restarted auditor" in out.stderr  # the progress lines
    assert _pids_with(str(home)) == [], "a process of the run is still running"
