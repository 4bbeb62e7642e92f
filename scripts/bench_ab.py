#!/usr/bin/env python3
"""Interleaved A/B of `scripts/bench.py` on two trees: base, branch, base, branch, ...

Each tree is a checkout with its own `.venv` (an editable install of that checkout). For each
round and each tree, in turn: a fresh 4-validator `khazana localnet` from that tree's venv,
then that tree's `scripts/bench.py` against it, then the localnet is stopped. The same
machine, minutes apart, so the ratio compares like with like on a shared machine whose speed
drifts; the last line is JSON with every run and the medians and ratio (branch / base) of the
maximum sustained rate, of the rate committed at the highest step, and of the median block
interval.

    .venv/bin/python scripts/bench_ab.py --base /work/wt/base --branch . --rounds 2
    .venv/bin/python scripts/bench_ab.py --base /work/wt/base --branch . --branch-tls

`--branch-tls` initialises the branch's network with `khazana init --rpc-tls` (the RPC over
TLS; localnet.json then names the CA) before `khazana localnet`, and its bench speaks TLS;
`--base-tls` the same for tree A. The cost of TLS alone: the same tree twice,
`--base . --branch . --branch-tls`.

`--base-defences-off` (or `--branch-defences-off`) starts that side's localnet with the issue
13/14 defences replaced by pass-throughs (scripts/benchlib/defences_off/sitecustomize.py says
which; the node itself has no such switch): the goals' "with the defences on against without
them, in the same run" is the same tree twice,

    .venv/bin/python scripts/bench_ab.py --base . --branch . --base-defences-off --rounds 3
    .venv/bin/python scripts/bench_ab.py --base . --branch . --base-defences-off --branch-tls

Bench flags (the issue-13/14 comparison): --senders 2000 --lanes 8 --batch 32 --sig-seconds 2
--duration 40 --start-rate 1000; change them with `--bench-args "..."` (each tree runs its
own scripts/bench.py, so use flags both trees know). The search steps by 30 %, so one run's
ratio is coarse (one step lower is 0.77); a fixed offered rate near the knee compares the
committed rate, latency and block interval instead:

    .venv/bin/python scripts/bench_ab.py --base /work/wt/base --branch . --rounds 3 \
        --bench-args "--senders 2000 --lanes 8 --batch 32 --sig-seconds 2 --duration 40 --rate 1500"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH_ARGS = "--senders 2000 --lanes 8 --batch 32 --sig-seconds 2 --duration 40 --start-rate 1000"


DEFENCES_OFF = "scripts/benchlib/defences_off"  # its sitecustomize.py, imported at start


def node_environment(tree: Path, defences_off: bool) -> dict[str, str]:
    """The localnet's environment (its nodes inherit it): with `defences_off`, Python imports
    the harness's sitecustomize.py at start and the switch it reads is set."""
    env = dict(os.environ)
    env.pop("KHAZANA_BENCH_DEFENCES", None)
    if defences_off:
        path = [str(tree / DEFENCES_OFF), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
        env["KHAZANA_BENCH_DEFENCES"] = "off"
    return env


def start_localnet(
    tree: Path, home: Path, base_port: int, tls: bool, defences_off: bool = False
) -> subprocess.Popen:
    log = open(home.parent / f"{home.name}.log", "ab")
    command = [
        str(tree / ".venv/bin/python"),
        "-m",
        "node",
        "localnet",
        "--home",
        str(home),
        "--validators",
        "4",
        "--base-port",
        str(base_port),
    ]
    if tls:  # initialise first: `init --rpc-tls` writes configs that serve the RPC over TLS
        init = [*command[:3], "init", "--home", str(home), "--validators", "4"]
        subprocess.run(
            [*init, "--base-port", str(base_port), "--rpc-tls"], cwd=tree, check=True, stdout=log
        )
    proc = subprocess.Popen(
        command,
        cwd=tree,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=node_environment(tree, defences_off),
    )
    log.close()
    deadline = time.monotonic() + 120
    while not (home / "localnet.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_localnet(proc)
            tail = (home.parent / f"{home.name}.log").read_text()[-3000:]
            raise SystemExit(f"localnet in {tree} did not start:\n{tail}")
        time.sleep(0.5)
    time.sleep(3)  # the first blocks
    return proc


def foreign_host_status(home: Path) -> int:
    """The HTTP status the first node gives a `status` call with a foreign Host header: 403
    with the RPC guard on, 200 with it off -- proof of which side of the comparison ran."""
    manifest = json.loads((home / "localnet.json").read_text())
    url = manifest["nodes"][0]["rpc"]
    ca_file = manifest.get("ca_file")
    context = ssl.create_default_context(cafile=ca_file) if url.startswith("https:") else None
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "status"}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Host": "attacker.example"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code


def stop_localnet(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # localnet stops its nodes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def run_bench(tree: Path, home: Path, bench_args: str) -> dict:
    command = [
        str(tree / ".venv/bin/python"),
        str(tree / "scripts/bench.py"),
        "--localnet",
        str(home),
        *shlex.split(bench_args),
    ]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    (home.parent / f"{home.name}.bench.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"bench in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_run(
    tree: Path, tls: bool, defences_off: bool, workdir: Path, label: str, port: int, bench_args: str
) -> dict:
    home = workdir / label
    home.mkdir(parents=True)
    proc = start_localnet(tree, home, port, tls, defences_off)
    try:
        # Recorded for every run (a tree from before the guard answers 200 too); a side
        # asked to run without the defences must show it, or the ratio would compare like
        # with like and mean nothing.
        host_status = foreign_host_status(home)
        if defences_off and host_status != 200:
            raise SystemExit(
                f"{label}: a foreign Host header got HTTP {host_status}: the defences are on"
            )
        summary = run_bench(tree, home, bench_args)
    finally:
        stop_localnet(proc)
    steps = summary.get("steps") or []
    top = max(steps, key=lambda s: s["offered_tps"]) if steps else {}
    result = {
        "tree": str(tree),
        "tls": tls,
        "defences": "off" if defences_off else "on",
        "foreign_host_status": host_status,
        "max_sustainable_tps": summary.get("max_sustainable_tps"),
        "top_offered_tps": top.get("offered_tps"),
        "top_tps": top.get("tps"),
        "interval_ms_median": summary["block"].get("interval_ms_median"),
        "p50_ms": summary.get("p50_ms"),
        "txs_mean": summary["block"].get("txs_mean"),
        "cpu_pct": [n.get("cpu_pct") for n in (summary.get("nodes") or {}).values()],
    }
    shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="tree A (with .venv)")
    parser.add_argument("--branch", type=Path, required=True, help="tree B (with .venv)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--base-tls", action="store_true", help="tree A's RPC over TLS")
    parser.add_argument("--branch-tls", action="store_true", help="tree B's RPC over TLS")
    parser.add_argument(
        "--base-defences-off", action="store_true", help="tree A's nodes without the defences"
    )
    parser.add_argument(
        "--branch-defences-off", action="store_true", help="tree B's nodes without the defences"
    )
    parser.add_argument("--base-port", type=int, default=27000)
    parser.add_argument("--bench-args", default=BENCH_ARGS)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    sides = (
        ("base", args.base.resolve(), args.base_tls, args.base_defences_off),
        ("branch", args.branch.resolve(), args.branch_tls, args.branch_defences_off),
    )
    runs: dict[str, list[dict]] = {"base": [], "branch": []}
    for r in range(args.rounds):
        for name, tree, tls, off in sides:
            label = f"r{r}-{name}"
            result = one_run(tree, tls, off, workdir, label, args.base_port, args.bench_args)
            runs[name].append(result)
            print(f"round {r + 1} {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    summary: dict[str, object] = {"rounds": args.rounds, "bench_args": args.bench_args}
    for key in ("max_sustainable_tps", "top_tps", "interval_ms_median", "p50_ms"):
        medians = {}
        for name in runs:
            values = [r[key] for r in runs[name] if r[key] is not None]
            medians[name] = statistics.median(values) if values else None
        ratio = (
            round(medians["branch"] / medians["base"], 3)
            if medians["base"] and medians["branch"] is not None
            else None
        )
        summary[key] = {**medians, "ratio": ratio}
    summary["ratios_per_round"] = [
        round(b["max_sustainable_tps"] / a["max_sustainable_tps"], 3)
        if a["max_sustainable_tps"] and b["max_sustainable_tps"]
        else None
        for a, b in zip(runs["base"], runs["branch"], strict=True)
    ]
    summary["runs"] = runs
    summary["logs"] = str(workdir)  # each run's localnet and bench logs
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
