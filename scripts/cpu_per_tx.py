#!/usr/bin/env python3
"""CPU per committed transaction of a whole localnet, per node process and its main thread.

For each tree in turn (a checkout with its own `.venv`), and `--rounds` times: a fresh
4-validator `khazana localnet` from that tree, its own `scripts/bench.py` at one fixed offered
rate, and two snapshots of `utime + stime` from `/proc` (each node's process, dead threads
included, and its main thread) `--settle` seconds after the measured phase starts and
`--window` seconds later. The CPU in between divided by what the bench saw committed in
between is the network's CPU per transaction (summed over the four nodes); the process less
its main thread is the store thread and trio's worker threads. Linux only (`/proc`).
docs/BENCHMARKS.md "Session 7: the full network" has the figures and why a fixed rate below
both trees' knees compares CPU per transaction where `bench_ab.py` compares maxima.

    .venv/bin/python scripts/cpu_per_tx.py /work/wt/base . --rate 500 --rounds 2

A tree written `PATH:defences-off` runs its localnet without the issue 13/14 defences
(`bench_ab.py --base-defences-off`, scripts/benchlib/defences_off): the same tree with and
without them is `cpu_per_tx.py .:defences-off . --rate 900 --rounds 3`.

The last line is JSON: every run, and per tree the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ab import start_localnet, stop_localnet

BENCH_ARGS = "--senders 2000 --lanes 8 --batch 32 --sig-seconds 2 --duration 30"
_COMMITTED = re.compile(r"sent \d+/\d+, committed (\d+)")


def cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks) of a `/proc/.../stat` line. The command name, in
    parentheses, may hold spaces and parentheses ("Trio thread 0"), so fields are counted
    after its last ')': state is the first there, utime the 12th, stime the 13th."""
    fields = stat_text[stat_text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def last_committed(bench_log: str) -> int | None:
    """The committed count of the bench's last progress line, if any."""
    found = _COMMITTED.findall(bench_log)
    return int(found[-1]) if found else None


def snapshot(pids: list[int], bench_err: Path) -> tuple[dict[int, tuple[int, int]], int | None]:
    """{pid: (process ticks, main thread ticks)} and the bench's committed count now."""
    ticks = {}
    for pid in pids:
        process = cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
        main = cpu_ticks(Path(f"/proc/{pid}/task/{pid}/stat").read_text())
        ticks[pid] = (process, main)
    return ticks, last_committed(bench_err.read_text())


def node_pids(localnet: subprocess.Popen) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(localnet.pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in found.stdout.split()]


OFF_SUFFIX = ":defences-off"


def tree_spec(text: str) -> tuple[Path, bool]:
    """(checkout, without the defences?) of a `PATH` or `PATH:defences-off` argument."""
    if text.endswith(OFF_SUFFIX):
        return Path(text[: -len(OFF_SUFFIX)]).resolve(), True
    return Path(text).resolve(), False


def one_run(tree: Path, home: Path, port: int, args: argparse.Namespace, off: bool) -> dict:
    localnet = start_localnet(tree, home, port, tls=False, defences_off=off)
    bench_err = home.parent / f"{home.name}.bench.log"
    try:
        pids = node_pids(localnet)
        command = [str(tree / ".venv/bin/python"), str(tree / "scripts/bench.py")]
        command += ["--localnet", str(home), *args.bench_args.split(), "--rate", str(args.rate)]
        with open(bench_err, "w") as err:
            bench = subprocess.Popen(
                command, cwd=tree, stdout=subprocess.DEVNULL, stderr=err, text=True
            )
        try:
            phase = f"rate {args.rate}/s: sent"
            deadline = time.monotonic() + 300
            while phase not in bench_err.read_text():
                if bench.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench in {tree} never reached its measured phase")
                time.sleep(0.5)
            time.sleep(args.settle)
            before, committed0 = snapshot(pids, bench_err)
            time.sleep(args.window)
            after, committed1 = snapshot(pids, bench_err)
        finally:
            bench.wait(timeout=600)
    finally:
        stop_localnet(localnet)
        shutil.rmtree(home, ignore_errors=True)  # the databases; the logs stay beside
    hz = os.sysconf("SC_CLK_TCK")
    committed = (committed1 or 0) - (committed0 or 0)
    process = sum(after[p][0] - before[p][0] for p in pids) / hz
    main = sum(after[p][1] - before[p][1] for p in pids) / hz
    per_tx = (lambda s: round(s * 1000 / committed, 3)) if committed > 0 else (lambda s: None)
    return {
        "tree": str(tree) + (OFF_SUFFIX if off else ""),
        "committed": committed,
        "committed_tps": round(committed / args.window, 1),
        "ms_per_tx": per_tx(process),
        "main_thread_ms_per_tx": per_tx(main),
        "other_threads_ms_per_tx": per_tx(process - main),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "trees", nargs="+", help="checkouts, each with its .venv (PATH or PATH:defences-off)"
    )
    parser.add_argument("--rate", type=int, default=500, help="offered tx/s")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--base-port", type=int, default=27500)
    parser.add_argument("--bench-args", default=BENCH_ARGS)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cpu-per-tx-"))
    runs: list[dict] = []
    for r in range(args.rounds):
        for k, spec in enumerate(args.trees):
            home = workdir / f"r{r}-t{k}"
            home.mkdir(parents=True)
            tree, off = tree_spec(spec)
            result = one_run(tree, home, args.base_port, args, off)
            runs.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    medians = {}
    for spec in args.trees:
        tree, off = tree_spec(spec)
        name = str(tree) + (OFF_SUFFIX if off else "")
        mine = [r for r in runs if r["tree"] == name]
        medians[name] = {
            key: statistics.median(v)
            if (v := [r[key] for r in mine if r[key] is not None])
            else None
            for key in (
                "committed_tps",
                "ms_per_tx",
                "main_thread_ms_per_tx",
                "other_threads_ms_per_tx",
            )
        }
    print(json.dumps({"rate": args.rate, "medians": medians, "runs": runs, "logs": str(workdir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
