#!/usr/bin/env python3
"""Load generator and benchmark for a running localnet (CONTRACT.md, issue 6).

    khazana localnet --home /tmp/net --validators 4 &
    .venv/bin/python scripts/bench.py --localnet /tmp/net --duration 30 --rate 1500 --out acked.jsonl
    .venv/bin/python scripts/bench.py --localnet /tmp/net --duration 40 --plot bench.png  # search

In order:

1. the signature bound of this machine, now: `cores x Ed25519 verifications/s/core /
   validators` (benchlib/measure.py), while the network is idle;
2. `--senders` fresh investors (10,000 by default) are onboarded and funded through the SDK
   (benchlib/funding.py), before anything is timed;
3. every measured transaction is signed before the window: one cash transfer per sender per
   round (transaction k: sender k mod N, nonce k div N, one unit to another sender);
4. the load: open-loop at `--rate` tx/s for `--duration` s. A trio program ticks every 10 ms and
   sends every transaction whose scheduled time has come, as JSON-RPC batches of up to
   `--batch` `broadcast_tx_sync` calls, round-robin over `--lanes` pipelined keep-alive
   connections per validator (benchlib/rpc.py): it never waits for an answer before the next
   send. Without `--rate` it searches the maximum sustainable rate: steps of `--step-s`
   seconds at rates rising by 30 % (`--rate-factor`) until commit lags submission (the
   step's transactions are not all committed within `--lag-s` after its last send, or more
   than 1 % are refused);
5. commit times come from a WebSocket `tm.event='NewBlock'` subscription on the first
   validator (a missed height is fetched with the `block` RPC): a transaction's latency is
   from its scheduled send time to the moment its block's notification arrived here;
6. every transaction seen in a block is written to the acked file (`{"hash", "height"}`).

Progress goes to stderr every second; per-node CPU and memory (/proc/<pid> of the pids in
localnet.json), block size and interval, and disk bytes per committed transfer (database +
WAL growth of each node / committed) are printed to stderr; the last stdout line is the JSON
summary `{"submitted","committed","tps","p50_ms","p99_ms","sig_bound_tps","acked_file",...}`.

A localnet whose RPC is served over TLS (`khazana init --rpc-tls` before `khazana localnet`:
https:// URLs and a `ca_file` in localnet.json) is benchmarked over TLS: every lane, the
watcher and the funding client verify the nodes' certificates against that CA; the summary
says `"rpc_tls": true`.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import trio  # noqa: E402
from benchlib.funding import CASH, fund_localnet_senders, institution_key  # noqa: E402
from benchlib.measure import (  # noqa: E402
    ProcSample,
    cpu_percent,
    disk_bytes,
    percentile,
    plot,
    signature_bound,
)
from benchlib.rpc import BlockWatcher, RpcLanes  # noqa: E402

from ledger.codes import Code  # noqa: E402
from ledger.crypto import KeyPair, address_to_text  # noqa: E402
from node.client import AsyncClient, ClientError, TxBuilder, sign  # noqa: E402

TICK_S = 0.01
RATE_FACTOR = 1.3
REFUSED_LIMIT = 0.01


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ signing


@dataclass(frozen=True, slots=True)
class Presigned:
    """The measured transactions, signed: base64 bodies, hashes, and the JSON of each call."""

    b64: list[str]
    hashes: list[str]
    calls: list[str]


def presign(chain_id: str, senders: tuple[KeyPair, ...], count: int) -> Presigned:
    """Transaction k: sender k mod N at nonce k div N (fresh keys start at nonce 0) sends one
    unit to another sender, so no two transactions of a sender are in the same round."""
    n = len(senders)
    addresses = [address_to_text(k.address) for k in senders]
    b64, hashes, calls = [], [], []
    began = time.monotonic()
    for k in range(count):
        sender, nonce = k % n, k // n
        to = (sender + 1 + nonce % (n - 1)) % n
        operation = TxBuilder.transfer(instrument=CASH, to=addresses[to], amount=1)
        tx = sign(operation.body(chain_id, addresses[sender], nonce), [senders[sender]])
        text = base64.b64encode(tx.raw).decode("ascii")
        b64.append(text)
        hashes.append(tx.tx_id.hex())
        calls.append(
            f'{{"jsonrpc":"2.0","id":{k},"method":"broadcast_tx_sync","params":{{"tx":"{text}"}}}}'
        )
        if k and k % 20_000 == 0:
            log(f"signed {k}/{count} transactions ({k / (time.monotonic() - began):.0f}/s)")
    return Presigned(b64, hashes, calls)


# ------------------------------------------------------------------------------ the load


@dataclass(slots=True)
class Tracker:
    """What happened to each measured transaction, by its index k."""

    presigned: Presigned
    index: dict[str, int]
    sent_at: list[float | None]
    code: list[int | None]
    committed_at: list[float | None]
    height: list[int | None]
    blocks: list[tuple[int, int, float]] = field(default_factory=list)  # height, txs, time

    @classmethod
    def of(cls, presigned: Presigned) -> Tracker:
        n = len(presigned.b64)
        return cls(
            presigned,
            {text: k for k, text in enumerate(presigned.b64)},
            [None] * n,
            [None] * n,
            [None] * n,
            [None] * n,
        )

    def on_block(self, height: int, txs: list[str], received_at: float) -> None:
        self.blocks.append((height, len(txs), received_at))
        for text in txs:
            k = self.index.get(text)
            if k is not None and self.committed_at[k] is None:
                self.committed_at[k] = received_at
                self.height[k] = height

    def on_answer(self, first: int, count: int, body: bytes | None) -> None:
        self.on_answers(range(first, first + count), body)

    def on_answers(self, ks: range | list[int], body: bytes | None) -> None:
        """The answer to the batch of transactions `ks` (their ids are their indexes)."""
        wanted = set(ks)
        replies = None
        if body is not None:
            try:
                replies = json.loads(body)
            except ValueError:
                replies = None
        if isinstance(replies, list):
            for reply in replies:
                k = reply.get("id")
                if isinstance(k, int) and k in wanted:
                    result = reply.get("result")
                    self.code[k] = result.get("code", -1) if isinstance(result, dict) else -1
        for k in ks:
            if self.code[k] is None:
                self.code[k] = -1  # no answer for it: counted as refused


@dataclass(frozen=True, slots=True)
class Step:
    rate: int
    first: int  # index of the step's first transaction
    count: int


async def offer(
    lanes: RpcLanes,
    tracker: Tracker,
    step: Step,
    batch: int,
    progress,
    route: tuple[int, int] | None = None,
) -> float:
    """Send the step's transactions on schedule (open loop); the largest lag behind it (s).

    `route` = (senders, validators): each sender's transactions go to one validator (sender
    s to validator s mod validators, on that validator's lanes), as a client sends through
    its own node; without it, batches of consecutive transactions go round-robin over every
    lane, so one sender's consecutive nonces reach different validators (and each validator
    parks a nonce until the one before it arrives by gossip)."""
    start = trio.current_time() + 0.05
    calls = tracker.presigned.calls
    next_k, end_k = step.first, step.first + step.count
    worst_lag = 0.0
    next_report = start + 1.0
    await trio.sleep_until(start)
    while next_k < end_k:
        now = trio.current_time()
        due = min(end_k, step.first + int((now - start) * step.rate) + 1)
        if due > next_k:
            scheduled = start + (next_k - step.first) / step.rate
            worst_lag = max(worst_lag, now - scheduled)
            for k in range(next_k, due):
                # The scheduled time, not the send time: a late sender must not hide latency.
                tracker.sent_at[k] = start + (k - step.first) / step.rate
            if route is None:
                for first in range(next_k, due, batch):
                    last = min(due, first + batch)
                    body = ("[" + ",".join(calls[first:last]) + "]").encode()
                    await lanes.submit(
                        body, lambda _s, b, f=first, c=last - first: tracker.on_answer(f, c, b)
                    )
            else:
                senders, validators = route
                groups: dict[int, list[int]] = {}
                for k in range(next_k, due):
                    groups.setdefault(k % senders % validators, []).append(k)
                for node, ks in sorted(groups.items()):
                    for at in range(0, len(ks), batch):
                        chunk = ks[at : at + batch]
                        body = ("[" + ",".join(calls[k] for k in chunk) + "]").encode()
                        await lanes.submit_to(
                            node, body, lambda _s, b, c=chunk: tracker.on_answers(c, b)
                        )
            next_k = due
        if now >= next_report:
            progress(step, next_k)
            next_report += 1.0
        await trio.sleep_until(max(trio.current_time(), now + TICK_S))
    return worst_lag


def step_result(tracker: Tracker, step: Step, lag_s: float, lagged: bool) -> dict:
    ks = range(step.first, step.first + step.count)
    sent = [k for k in ks if tracker.sent_at[k] is not None]
    accepted = [k for k in sent if tracker.code[k] == 0]
    committed = [k for k in sent if tracker.committed_at[k] is not None]
    latencies = [(tracker.committed_at[k] - tracker.sent_at[k]) * 1000 for k in committed]
    refused: dict[str, int] = {}
    for k in sent:
        code = tracker.code[k]
        if code not in (0, None):
            name = Code(code).name if code in Code._value2member_map_ else str(code)
            refused[name] = refused.get(name, 0) + 1
    span = step.count / step.rate
    if committed:
        times = [tracker.committed_at[k] for k in committed]
        span = max(span, max(times) - min(times))
    return {
        "offered_tps": step.rate,
        "submitted": len(sent),
        "accepted": len(accepted),
        "committed": len(committed),
        "refused": refused,
        "tps": round(len(committed) / span, 1) if span > 0 else 0.0,
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        "sender_lag_ms": round(lag_s * 1000, 1),
        "lagged": lagged,
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def drain(tracker: Tracker, step: Step, deadline_s: float) -> bool:
    """Wait until every admitted transaction of the step is committed (True) or the deadline."""
    ks = range(step.first, step.first + step.count)
    with trio.move_on_after(deadline_s):
        while True:
            waiting = [
                k for k in ks if tracker.code[k] in (None, 0) and tracker.committed_at[k] is None
            ]
            if not waiting:
                return True
            await trio.sleep(0.05)
    return False


# ------------------------------------------------------------------------------ the run


async def tip_height(urls: list[str], deadline_s: float = 60.0, ca_file: str | None = None) -> int:
    """The highest height the validators report; while none answers (restarting under the
    benchmark), asked again every 0.5 s up to `deadline_s`."""
    with trio.fail_after(deadline_s):
        while True:
            heights = []
            for url in urls:
                try:
                    client = AsyncClient(url, timeout_s=5.0, ca_file=ca_file)
                    heights.append((await client.status()).height)
                except ClientError:
                    continue
            if heights:
                return max(heights)
            await trio.sleep(0.5)


def plan_rates(args: argparse.Namespace, bound: int) -> list[int]:
    if args.rate:
        return [args.rate]
    steps = max(2, int(args.duration // args.step_s))
    start = args.start_rate or max(20, bound // 10)
    return [round(start * args.rate_factor**i) for i in range(steps)]


async def run(args: argparse.Namespace, localnet: dict) -> dict:
    validators = [n for n in localnet["nodes"] if n["role"] == "validator"]
    urls = [n["rpc"] for n in validators]
    key = institution_key(localnet)  # requests are signed as an institution
    # An RPC over TLS (`khazana init --rpc-tls`): https:// URLs and the CA that signed them.
    ca_file = localnet.get("ca_file")
    client = AsyncClient(urls[0], key=key, timeout_s=30.0, ca_file=ca_file)

    log(f"measuring the signature bound ({args.sig_seconds:g} s on every core) ...")
    bound = await trio.to_thread.run_sync(signature_bound, len(validators), args.sig_seconds)
    log(
        f"signature bound: {bound.cores} cores x {bound.per_core} verifications/s / "
        f"{bound.validators} validators = {bound.tps} tx/s"
    )
    rates = plan_rates(args, bound.tps)
    step_s = args.duration if args.rate else args.step_s
    counts = [max(1, round(rate * step_s)) for rate in rates]

    lanes = RpcLanes(urls, lanes_per_url=args.lanes, key=key, ca_file=ca_file)
    async with trio.open_nursery() as nursery:
        await nursery.start(lanes.run)
        # Funding goes over ONE connection: pipelined requests are served in order, so each
        # signer's transactions reach the mempool in nonce order (none is parked).
        setup_lane = RpcLanes(urls[:1], lanes_per_url=1, key=key, ca_file=ca_file)
        await nursery.start(setup_lane.run)
        funded = await fund_localnet_senders(client, setup_lane, localnet, args.senders, log)
        log(f"signing {sum(counts)} transfers before the window ...")
        presigned = await trio.to_thread.run_sync(
            presign, funded.chain_id, funded.senders, sum(counts)
        )
        tracker = Tracker.of(presigned)
        watcher = BlockWatcher(
            urls[0],
            tracker.on_block,
            await tip_height(urls, ca_file=ca_file),
            key=key,
            ca_file=ca_file,
        )
        await nursery.start(watcher.run)

        pids = {n["name"]: n.get("pid") for n in localnet["nodes"]}
        homes = {n["name"]: n["home"] for n in localnet["nodes"]}
        before = {name: ProcSample.read(pid) for name, pid in pids.items() if pid}
        disk_before = {name: disk_bytes(home) for name, home in homes.items()}
        rss_max: dict[str, float] = {}
        window_start = trio.current_time()
        first_block = len(tracker.blocks)

        def progress(step: Step, sent_upto: int) -> None:
            done = sum(1 for k in range(step.first, sent_upto) if tracker.committed_at[k])
            height = tracker.blocks[-1][0] if tracker.blocks else "-"
            for name, pid in pids.items():
                sample = ProcSample.read(pid) if pid else None
                if sample:
                    rss_max[name] = max(rss_max.get(name, 0.0), sample.rss_mb)
            log(
                f"rate {step.rate}/s: sent {sent_upto - step.first}/{step.count}, "
                f"committed {done}, height {height}"
            )

        results, first = [], 0
        for rate, count in zip(rates, counts, strict=True):
            step = Step(rate, first, count)
            first += count
            route = (len(funded.senders), len(urls)) if args.route_by_sender else None
            lag = await offer(lanes, tracker, step, args.batch, progress, route)
            kept_up = await drain(tracker, step, args.lag_s)
            if not kept_up:
                await drain(tracker, step, args.drain_s)
            result = step_result(tracker, step, lag, lagged=False)
            refused = sum(result["refused"].values())
            result["lagged"] = not kept_up or refused > REFUSED_LIMIT * result["submitted"]
            results.append(result)
            log(f"step: {json.dumps(result)}")
            if not args.rate and result["lagged"]:
                break
        window_end = trio.current_time()
        after = {name: ProcSample.read(pid) for name, pid in pids.items() if pid}
        disk_after = {name: disk_bytes(home) for name, home in homes.items()}
        lanes.close()
        setup_lane.close()
        nursery.cancel_scope.cancel()

    # ---- acked file, figures ---------------------------------------------------------------
    acked = Path(args.out) if args.out else Path(args.localnet) / "bench-acked.jsonl"
    with acked.open("w") as out:
        for k, height in enumerate(tracker.height):
            if height is not None:
                out.write(json.dumps({"hash": presigned.hashes[k], "height": height}) + "\n")

    sustained = [r for r in results if not r["lagged"]]
    best = max(sustained, key=lambda r: r["tps"]) if sustained else results[-1]
    chosen = results[-1] if args.rate else best
    window_blocks = tracker.blocks[first_block:]
    sizes = [b[1] for b in window_blocks]
    intervals = [
        (b[2] - a[2]) * 1000 for a, b in zip(window_blocks, window_blocks[1:], strict=False)
    ]
    committed_total = sum(r["committed"] for r in results)
    growth = [disk_after[n] - disk_before[n] for n in homes]
    nodes = {}
    for name in pids:
        cpu = cpu_percent(before.get(name), after.get(name))
        sample = after.get(name)
        nodes[name] = {
            "cpu_pct": None if cpu is None else round(cpu, 1),
            "rss_mb": None if sample is None else round(sample.rss_mb, 1),
            "rss_max_mb": round(max(rss_max.get(name, 0.0), sample.rss_mb if sample else 0), 1),
        }
        log(f"node {name}: cpu {nodes[name]['cpu_pct']} %, rss {nodes[name]['rss_mb']} MB")
    block = {
        "count": len(window_blocks),
        "txs_mean": round(statistics.mean(sizes), 1) if sizes else 0,
        "txs_max": max(sizes, default=0),
        "interval_ms_median": round(statistics.median(intervals), 1) if intervals else None,
    }
    log(f"blocks: {json.dumps(block)}")
    summary = {
        "submitted": chosen["submitted"],
        "committed": chosen["committed"],
        "tps": chosen["tps"],
        "p50_ms": chosen["p50_ms"],
        "p99_ms": chosen["p99_ms"],
        "sig_bound_tps": bound.tps,
        "acked_file": str(acked),
        "offered_tps": chosen["offered_tps"],
        "mode": "fixed-rate" if args.rate else "search",
        "max_sustainable_tps": None if args.rate else (best["tps"] if sustained else None),
        "fraction_of_bound": round(chosen["tps"] / bound.tps, 3) if bound.tps else None,
        "accepted": chosen["accepted"],
        "refused": chosen["refused"],
        "validators": len(validators),
        "senders": args.senders,
        "cores": bound.cores,
        "verify_per_core": bound.per_core,
        "batch": args.batch,
        "lanes": args.lanes * len(urls),
        "commit_time_source": watcher.source,
        "rpc_tls": all(url.startswith("https:") for url in urls),
        "route_by_sender": args.route_by_sender,
        "window_s": round(window_end - window_start, 1),
        "block": block,
        "nodes": nodes,
        "disk_bytes_per_tx": round(sum(growth) / len(growth) / committed_total)
        if committed_total and growth
        else None,
        "steps": results,
        "machine": "shared 2-core VM: other work may run during the measurement",
    }
    if args.plot:
        plot(results, bound.tps, args.plot)
        log(f"chart written to {args.plot}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--localnet", required=True, help="folder holding localnet.json")
    parser.add_argument("--duration", type=float, required=True, help="measured seconds")
    parser.add_argument("--rate", type=int, help="offered tx/s (absent: search the maximum)")
    parser.add_argument("--out", help="acked transactions (default LOCALNET/bench-acked.jsonl)")
    parser.add_argument("--senders", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=16, help="calls per JSON-RPC batch (<= 32)")
    parser.add_argument("--lanes", type=int, default=2, help="connections per validator")
    parser.add_argument("--step-s", type=float, default=5.0, help="search: seconds per rate")
    parser.add_argument("--start-rate", type=int, help="search: first rate (bound / 10)")
    parser.add_argument(
        "--rate-factor",
        type=float,
        default=RATE_FACTOR,
        help="search: each step's rate is the last one's times this (finer steps make an A/B "
        "ratio less coarse)",
    )
    parser.add_argument(
        "--route-by-sender",
        action="store_true",
        help="send each sender's transactions to one validator (as a client does through "
        "its node) instead of spreading consecutive batches over every validator",
    )
    parser.add_argument("--lag-s", type=float, default=2.0, help="commit lag that ends a search")
    parser.add_argument("--drain-s", type=float, default=15.0, help="wait for the last commits")
    parser.add_argument("--sig-seconds", type=float, default=2.0)
    parser.add_argument("--plot", help="write the chart to this PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.senders < 2:
        parser.error("--senders must be at least 2 (a transfer goes to another sender)")
    if not 1 <= args.batch <= 32:
        parser.error("--batch must be 1..32 (the node's default max_batch is 32)")
    if not 1.01 <= args.rate_factor <= 4:
        parser.error("--rate-factor must be 1.01..4")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    localnet = json.loads((Path(args.localnet) / "localnet.json").read_text())
    summary = trio.run(run, args, localnet)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
