"""scripts/cpu_per_tx.py reads CPU from /proc stat lines whose command name may hold spaces and
parentheses, and the committed count from the bench's progress lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from cpu_per_tx import cpu_ticks, last_committed  # noqa: E402


def stat_line(comm: str, utime: int, stime: int) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    return f"4242 ({comm}) S 1 4242 4242 0 -1 4194560 10 0 0 0 {utime} {stime} 0 0 20 0 3 0\n"


@pytest.mark.parametrize("comm", ["python", "Trio thread 0", "a) b (c", ") ) )"])
def test_cpu_ticks_counts_fields_after_the_command_name(comm):
    assert cpu_ticks(stat_line(comm, 1234, 56)) == 1290


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_cpu_ticks_of_this_process_grows_with_work():
    before = cpu_ticks(Path(f"/proc/{os.getpid()}/stat").read_text())
    total = 0
    while cpu_ticks(Path(f"/proc/{os.getpid()}/stat").read_text()) == before:
        total += sum(range(10_000))
    assert cpu_ticks(Path(f"/proc/{os.getpid()}/stat").read_text()) > before


def test_last_committed_takes_the_last_progress_line():
    log = (
        "[bench] funding: 4000/4000 onboarding and funding transactions committed\n"
        "[bench] rate 900/s: sent 900/27000, committed 0, height 12\n"
        "[bench] rate 900/s: sent 1800/27000, committed 1000, height 13\n"
    )
    assert last_committed(log) == 1000
    assert last_committed("[bench] funding: 10/4000 committed\n") is None
