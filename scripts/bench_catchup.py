#!/usr/bin/env python3
"""Catch-up benchmark: how fast a restarted validator syncs the history it missed (issue 6).

    .venv/bin/python scripts/bench_catchup.py --home /tmp/catchup-net --base-port 28000 \\
        --txs 100000 --rate 400 --senders 2000
    .venv/bin/python scripts/bench_catchup.py --localnet DIR --txs 20000 --rate 400  # running net

In order:

1. without `--localnet` it starts `khazana localnet --home HOME --validators 4 --base-port P`
   (a fresh network, own process) and waits for `localnet.json`; with `--localnet DIR` it
   uses that running network;
2. it stops one validator cleanly (`--node`, the last one by default): SIGTERM to its pid,
   then it waits until the process is gone (localnet does not restart a node). The other
   three hold more than 2/3 of the power and keep committing;
3. it loads `--txs` presigned transfers into the three at a fixed `--rate` with the load
   generator of `scripts/bench.py` (benchlib: funding of `--senders` through the SDK, then
   open-loop JSON-RPC batches over pipelined lanes to the running nodes only) and waits until
   they are committed. A `NewBlock` watcher on a running node counts the transactions of
   every block the stopped node misses (funding included: it is history too);
4. it restarts the stopped node as its own process (`python -m node start --home
   HOME/<name>`, output appended to its `node.log`), takes the others' tip height T at that
   moment, and polls the node's `status` every `--poll-s` until its height reaches T:
   seconds from process start, blocks and transactions synced, tx/s of history, the same
   from the first synced block on (start-up excluded: reopening the database, peer
   handshakes), the node's CPU seconds and peak RSS (/proc VmHWM); and it checks that its
   `app_hash` at T equals a running node's (`block` RPC at T on both).

Progress goes to stderr; the last stdout line is the JSON summary
`{"txs_synced","blocks_synced","seconds","tx_per_s","tx_per_s_after_start","startup_s",
"app_hash_match","rss_mb",...}`. Every process this script started is stopped at the end
(the localnet it started, with its nodes, and the restarted node). With `--localnet` the
restarted node is left running, as a member of the network again (its pid is in the JSON;
localnet.json still names the old pid).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import trio  # noqa: E402
from bench import Step, Tracker, drain, offer, presign  # noqa: E402
from benchlib.funding import fund_localnet_senders, institution_key  # noqa: E402
from benchlib.measure import ProcSample  # noqa: E402
from benchlib.rpc import BlockWatcher, RpcLanes  # noqa: E402

from ledger.crypto import KeyPair  # noqa: E402
from node.client import AsyncClient, ClientError  # noqa: E402

LOCALNET_WAIT_S = 90.0
STOP_WAIT_S = 30.0
RUNNING_AT = re.compile(rb": running \([a-z]+\) at height (\d+)")


def log(text: str) -> None:
    print(f"[catchup] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ processes


def start_localnet(home: Path, base_port: int) -> subprocess.Popen:
    """`khazana localnet` for a fresh 4-validator network in `home`, running once
    localnet.json is written (localnet writes it after every node answered `health`)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "localnet.json").unlink(missing_ok=True)
    with open(home.parent / f"{home.name}-localnet.log", "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "node", "localnet", "--home", str(home), "--validators", "4",
             "--base-port", str(base_port), "--fresh"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    deadline = time.monotonic() + LOCALNET_WAIT_S
    while not (home / "localnet.json").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process, "localnet")
            tail = (home.parent / f"{home.name}-localnet.log").read_text()[-2000:]
            raise SystemExit(f"bench_catchup: the localnet did not start:\n{tail}")
        time.sleep(0.2)
    return process


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def stop_pid(pid: int, name: str, wait_s: float = STOP_WAIT_S) -> None:
    """SIGTERM `pid` (not our child) and wait until it is gone; SIGKILL after `wait_s`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait_s
    while alive(pid):
        if time.monotonic() > deadline:
            log(f"{name} (pid {pid}) did not stop within {wait_s:g} s: SIGKILL")
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + wait_s
        time.sleep(0.05)


def stop_process(process: subprocess.Popen, name: str, wait_s: float = STOP_WAIT_S) -> None:
    """SIGTERM our child (its own session), then SIGKILL its group after `wait_s`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {process.pid}) did not stop within {wait_s:g} s: SIGKILL")
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=wait_s)


def start_node(home: Path) -> subprocess.Popen:
    with open(home / "node.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "node", "start", "--home", str(home)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the process's peak resident memory so far."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one) of the process's main thread
    (the event loop, which executes the synced blocks): the second shows how much a busy
    machine delayed it."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    except OSError:
        return None
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9


def start_height_from_log(log_path: Path, offset: int) -> int | None:
    """The height the node reported at start ("running (...) at height N"), from the log
    written after `offset`."""
    try:
        with open(log_path, "rb") as file:
            file.seek(offset)
            found = RUNNING_AT.search(file.read())
    except OSError:
        return None
    return int(found.group(1)) if found else None


# ------------------------------------------------------------------------------ the phases


async def height_of(url: str) -> int | None:
    try:
        return (await AsyncClient(url, timeout_s=2.0).status()).height
    except (ClientError, OSError):
        return None


async def tip(urls: list[str]) -> int:
    heights = [h for h in [await height_of(u) for u in urls] if h is not None]
    if not heights:
        raise SystemExit("bench_catchup: no running node answers status")
    return max(heights)


async def load(
    args: argparse.Namespace, localnet: dict, urls: list[str], counts: dict[int, int]
) -> dict:
    """Fund the senders and offer `args.txs` transfers at `args.rate` to `urls`; returns
    what happened. `counts` receives height -> number of txs of each block the watcher saw
    (from the end of the funding to the end of the load)."""
    key = institution_key(localnet)  # requests are signed as an institution
    client = AsyncClient(urls[0], key=key, timeout_s=30.0)
    lanes = RpcLanes(urls, lanes_per_url=args.lanes, key=key)
    async with trio.open_nursery() as nursery:
        await nursery.start(lanes.run)
        setup_lane = RpcLanes(urls[:1], lanes_per_url=1, key=key)  # nonce order for the funding
        await nursery.start(setup_lane.run)
        funded = await fund_localnet_senders(client, setup_lane, localnet, args.senders, log)
        presigned = await trio.to_thread.run_sync(
            presign, funded.chain_id, funded.senders, args.txs
        )
        tracker = Tracker.of(presigned)
        watcher = BlockWatcher(urls[0], tracker.on_block, (await client.status()).height, key=key)
        await nursery.start(watcher.run)

        def progress(step: Step, sent_upto: int) -> None:
            if (sent_upto // step.rate) % 5 == 0 or sent_upto >= step.first + step.count:
                done = sum(1 for k in range(step.first, sent_upto) if tracker.committed_at[k])
                log(f"load: sent {sent_upto}/{step.count}, committed {done}")

        step = Step(args.rate, 0, args.txs)
        began = time.monotonic()
        await offer(lanes, tracker, step, args.batch, progress)
        if not await drain(tracker, step, args.drain_s):
            log(f"load: not every admitted transaction committed within {args.drain_s:g} s")
        load_s = time.monotonic() - began
        lanes.close()
        setup_lane.close()
        nursery.cancel_scope.cancel()
    counts.update((height, txs) for height, txs, _ in tracker.blocks)
    committed = sum(1 for t in tracker.committed_at if t is not None)
    refused = sum(1 for c in tracker.code if c not in (0, None))
    log(f"load: {committed}/{args.txs} committed in {load_s:.1f} s ({refused} refused)")
    return {"committed": committed, "refused": refused, "load_s": round(load_s, 1)}


async def count_txs(
    url: str, since: int, upto: int, counts: dict[int, int], key: KeyPair | None
) -> None:
    """Fill `counts` (height -> txs) for heights (since, upto] not seen by the watcher (block
    bodies: read with an institution's `key`)."""
    client = AsyncClient(url, key=key, timeout_s=30.0)
    for height in range(since + 1, upto + 1):
        if height not in counts:
            block = await client.block(height)
            counts[height] = len(block["block"]["txs"])


async def measure_restart(
    home: Path,
    others: list[str],
    own_url: str,
    poll_s: float,
    timeout_s: float,
    profile: str | None = None,
) -> dict:
    log_path = home / "node.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    target = await tip(others)
    began = time.monotonic()
    process = start_node(home)
    log(f"restarted {home.name} (pid {process.pid}); the others' tip is {target}")
    spy = None
    if profile:
        spy = subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking",
             "--format", "raw" if profile.endswith(".txt") else "flamegraph",
             "-o", profile, "--pid", str(process.pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=sys.stderr,
        )  # fmt: skip
    first_height: int | None = None  # the first height status showed
    first_synced_at: float | None = None
    start_height: int | None = None
    rss_seen = 0.0
    last_report = began
    height = None
    try:
        with trio.fail_after(timeout_s):
            while True:
                if process.poll() is not None:
                    raise SystemExit(
                        f"bench_catchup: the restarted node exited with code {process.returncode}"
                        f"; see {log_path}"
                    )
                height = await height_of(own_url)
                now = time.monotonic()
                sample = ProcSample.read(process.pid)
                if sample is not None:
                    rss_seen = max(rss_seen, sample.rss_mb)
                if height is not None:
                    if start_height is None:
                        start_height = start_height_from_log(log_path, offset)
                    if first_height is None:
                        first_height = height
                    base = start_height if start_height is not None else first_height
                    if first_synced_at is None and height > base:
                        first_synced_at = now
                    if height >= target:
                        done_at, sample = time.monotonic(), ProcSample.read(process.pid)
                        rss_peak = peak_rss_mb(process.pid)
                        sched = schedstat(process.pid)
                        break
                if now - last_report >= 2.0:
                    last_report = now
                    log(f"sync: height {height} of {target} after {now - began:.1f} s")
                await trio.sleep(poll_s)
    except trio.TooSlowError:
        stop_process(process, "restarted node")
        raise SystemExit(
            f"bench_catchup: no catch-up within {timeout_s:g} s (height {height} of {target})"
        ) from None
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
    rss_peak = rss_peak or max(rss_seen, sample.rss_mb if sample else 0.0)
    if start_height is None:
        start_height = start_height_from_log(log_path, offset)
    if start_height is None:
        start_height = first_height or 0
        log("no start line in the node's log: the start height is the first status height")
    return {
        "process": process,
        "target": target,
        "start_height": start_height,
        "seconds": done_at - began,
        "after_first_s": None if first_synced_at is None else done_at - first_synced_at,
        "startup_s": None if first_synced_at is None else first_synced_at - began,
        "cpu_s": None if sample is None else sample.cpu_s,
        "rss_mb": rss_peak,
        "sched": sched,
    }


async def app_hash_at(url: str, height: int) -> str:
    block = await AsyncClient(url, timeout_s=10.0).block(height)
    return block["block"]["header"]["app_hash"]


async def run(args: argparse.Namespace, localnet: dict) -> dict:
    validators = [n for n in localnet["nodes"] if n["role"] == "validator"]
    if len(validators) < 4:
        raise SystemExit("bench_catchup: needs a network of at least 4 validators")
    names = [n["name"] for n in validators]
    victim = next((n for n in validators if n["name"] == (args.node or names[-1])), None)
    if victim is None:
        raise SystemExit(f"bench_catchup: no validator {args.node!r} (have {', '.join(names)})")
    others = [n["rpc"] for n in validators if n is not victim]
    home = Path(victim["home"])

    stopped_at = await height_of(victim["rpc"])
    log(f"stopping {victim['name']} (pid {victim['pid']}) at height {stopped_at}")
    await trio.to_thread.run_sync(stop_pid, victim["pid"], victim["name"])
    counts: dict[int, int] = {}
    loaded = await load(args, localnet, others, counts)
    if args.settle_s:
        await trio.sleep(args.settle_s)

    restart = await measure_restart(
        home, others, victim["rpc"], args.poll_s, args.timeout_s, args.profile
    )
    process = restart["process"]
    try:
        start, target = restart["start_height"], restart["target"]
        await count_txs(others[0], start, target, counts, institution_key(localnet))
        txs = sum(counts[h] for h in range(start + 1, target + 1))
        blocks = target - start
        theirs = await app_hash_at(others[0], target)
        ours = await app_hash_at(victim["rpc"], target)
        seconds = restart["seconds"]
        sched = restart["sched"]
        after = restart["after_first_s"]
        summary = {
            "txs_synced": txs,
            "blocks_synced": blocks,
            "seconds": round(seconds, 2),
            "tx_per_s": round(txs / seconds, 1) if seconds > 0 else None,
            "tx_per_s_after_start": round(txs / after, 1) if after else None,
            "blocks_per_s": round(blocks / seconds, 1) if seconds > 0 else None,
            "startup_s": None if restart["startup_s"] is None else round(restart["startup_s"], 2),
            "app_hash_match": ours == theirs,
            "app_hash": ours,
            "height": target,
            "from_height": start,
            "cpu_s": None if restart["cpu_s"] is None else round(restart["cpu_s"], 2),
            "cpu_pct": round(100 * restart["cpu_s"] / seconds, 1)
            if restart["cpu_s"] is not None and seconds > 0
            else None,
            "rss_mb": round(restart["rss_mb"], 1),
            "main_thread_cpu_s": None if sched is None else round(sched[0], 2),
            "main_thread_runq_wait_s": None if sched is None else round(sched[1], 2),
            "node": victim["name"],
            "loaded": {"txs": args.txs, "rate": args.rate, "senders": args.senders, **loaded},
            "load_avg": list(os.getloadavg()),
            "machine": "shared 2-core VM: other work may run during the measurement",
        }
    except BaseException:
        stop_process(process, "restarted node")
        raise
    if args.localnet:
        summary["restarted_pid"] = process.pid
    else:
        stop_process(process, "restarted node")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--localnet", help="a running network: the folder of localnet.json")
    where.add_argument("--home", help="start a fresh 4-validator localnet in this folder")
    parser.add_argument("--base-port", type=int, default=28000, help="with --home")
    parser.add_argument("--node", help="the validator to stop and restart (default: the last)")
    parser.add_argument("--txs", type=int, default=100_000, help="transfers loaded meanwhile")
    parser.add_argument("--rate", type=int, default=400, help="offered tx/s during the load")
    parser.add_argument("--senders", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32, help="calls per JSON-RPC batch (<= 32)")
    parser.add_argument("--lanes", type=int, default=4, help="connections per running node")
    parser.add_argument("--drain-s", type=float, default=60.0, help="wait for the last commits")
    parser.add_argument("--settle-s", type=float, default=0.0, help="pause before the restart")
    parser.add_argument("--poll-s", type=float, default=0.1, help="status poll interval")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="give up the catch-up")
    parser.add_argument(
        "--profile", help="py-spy the restarted node into this file (.svg flamegraph, .txt raw)"
    )
    args = parser.parse_args(argv)
    if args.senders < 2:
        parser.error("--senders must be at least 2 (a transfer goes to another sender)")
    if not 1 <= args.batch <= 32:
        parser.error("--batch must be 1..32 (the node's default max_batch is 32)")
    if args.txs <= 0 or args.rate <= 0:
        parser.error("--txs and --rate must be positive")
    localnet_process = None
    try:
        if args.home:
            home = Path(args.home).resolve()
            log(f"starting a 4-validator localnet in {home} (base port {args.base_port})")
            localnet_process = start_localnet(home, args.base_port)
            root = home
        else:
            root = Path(args.localnet)
        localnet = json.loads((root / "localnet.json").read_text())
        summary = trio.run(run, args, localnet)
    finally:
        if localnet_process is not None:
            log("stopping the localnet")
            stop_process(localnet_process, "localnet")
    log(
        f"{summary['txs_synced']} txs in {summary['blocks_synced']} blocks synced in "
        f"{summary['seconds']} s: {summary['tx_per_s']} tx/s "
        f"({summary['tx_per_s_after_start']} after start-up), app_hash match "
        f"{summary['app_hash_match']}"
    )
    print(json.dumps(summary), flush=True)
    return 0 if summary["app_hash_match"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
