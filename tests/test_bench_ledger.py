"""scripts/bench_ledger.py runs end to end on a small state and reports what it measured.

Speed is not asserted (BENCHMARKS.md holds the figures); this checks that the script still
prepares, measures each round on a fresh copy of the prepared database (a second round on
the same database would find its transfers' nonces used and stop), and that its summary is
the median of the rounds it printed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_ledger.py"


def test_bench_ledger_measures_every_round_on_a_fresh_copy_and_reports_medians():
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--accounts",
            "1000",
            "--blocks",
            "2",
            "--rounds",
            "3",
            "--warm-up",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    runs = summary["tx_per_s_runs"]
    assert len(runs) == 3 and all(rate > 0 for rate in runs)
    assert summary["tx_per_s"] == round(statistics.median(runs))
    assert summary["accounts"] == 1000 and summary["rss_mb"] > 0
    # Each round printed its own measurement (blocks of the same size) to stderr.
    measured = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [m["tx_per_s"] for m in measured] == runs
    assert all(m["blocks"] == 2 for m in measured)


def test_bench_ledger_refuses_zero_rounds():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--accounts", "1000", "--rounds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--rounds" in done.stderr
