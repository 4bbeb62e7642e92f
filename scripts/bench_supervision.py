#!/usr/bin/env python3
"""Supervision reads at scale: `holdings_summary` latency and what keeping its index costs.

Builds a chain of N funded investors spread over V VASPs, C countries and 3 categories
(`--accounts`, default 100,000; the first `--senders` onboarded and funded by transactions,
the rest written into the state the way scripts/preload_state.py does), reopens it (the
store cuts a large state into slices), then:

* times `holdings_summary` by VASP, by country and by category, now and as of the prepared
  height, through the RPC method itself (node/rpc/supervision_methods.py over an
  `AsyncStore`), `--repeat` times each: median and worst;
* runs `--blocks` blocks of 1,000 transfers, in turn with the index off (no tally, no
  `SupervisionDelta`: what a block cost before), with the aggregates only (no state history)
  and with everything (aggregates, frozen list, state history) -- `--variants` picks some,
  "off" always among them; the order rotates every round, so whatever recurs every few
  blocks (a WAL checkpoint) falls on each in turn -- and reports each variant's median block
  (build + commit) and commit time.

The headline is the index's own CPU, measured inside it (`index_cpu_ms`, its parts in
`index_cpu_parts_ms`, its share of a block without the index in
`index_cpu_pct_of_off_block`): the tally's per-write methods (monotonic clock, less an empty
interval; interrupted calls left out and counted), its delta, `write_block`, the history
rows and, for "full", the merge of the held-back history keys (the median over rounds of a
round's merge work, `history_merge_ms_per_full_block`). Differences of the blocks' process
CPU (`index_cpu_share_pct`, and `index_cpu_paired_pct` within each round) and the time in
the garbage collector per block (`gc_ms_median_mean`) are cross-checks: on a shared machine
they move by several ms a block, and include the timing wrappers' own cost unless
`--plain` (no timing inside the index at all; `--variants off,aggregates --plain` with many
blocks is the cleanest check of the aggregates' whole cost, garbage collection included).

Last line JSON: {"accounts", "groups", "summary_ms", "index_cpu_ms", "index_cpu_parts_ms",
"index_cpu_pct_of_off_block", "history_merge_ms_per_full_block", "gc_ms_median_mean",
"hook_calls_median", "hook_calls_left_out", "clock_ns", "block_ms", "commit_ms",
"block_cpu_ms", "index_share_pct", "index_cpu_share_pct", "index_cpu_paired_pct"}.

    .venv/bin/python scripts/bench_supervision.py --accounts 1000000 --blocks 30
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ledger import supervision_store  # noqa: E402
from ledger.chain import Chain  # noqa: E402
from ledger.codes import Code  # noqa: E402
from ledger.store import AsyncStore, StoreIndexes  # noqa: E402
from ledger.supervision import SupervisionTally  # noqa: E402
from ledger.tx import decode_signed_tx, verify_tx_signatures  # noqa: E402
from ledger.types import Account, Holding, Kyc  # noqa: E402
from node.rpc.supervision_methods import SupervisionMethods  # noqa: E402
from scripts.bench_ledger import (  # noqa: E402
    BLOCK_SIZE,
    CASH,
    FUNDING,
    Wallets,
    bench_genesis,
    commit_blocks,
    seeded_key,
    signed_transfers,
)

CATEGORIES = ("retail", "professional", "institutional")
VARIANTS = ("off", "aggregates", "full")


def log(text: str) -> None:
    print(f"[bench_supervision] {text}", file=sys.stderr, flush=True)


def prepare(path: Path, accounts: int, senders: int, vasps: int, countries: int) -> int:
    chain = Chain.open(path, bench_genesis())
    wallets = Wallets()
    bank, regulator = seeded_key("central-bank"), seeded_key("regulator")
    cash = {
        "id": CASH,
        "kind": "cash",
        "name": "Digital rupee",
        "currency": "PKR",
        "face_value": 1,
        "decimals": 2,
        "cap": 10**17,
    }
    setup = [wallets.sign(bank, "register_instrument", cash)]
    vasp_addresses = [seeded_key(f"vasp-{i}").address for i in range(vasps)]
    for index, address in enumerate(vasp_addresses):
        licence = {"vasp": address, "name": f"VASP {index}"}
        setup.append(wallets.sign(regulator, "license_vasp", licence))
    for index in range(senders):
        address = seeded_key(f"sender-{index}").address
        onboard = {
            "investor": address,
            "country": "PK",
            "category": "retail",
            "kyc_expiry": "2030-01-01",
        }
        setup.append(wallets.sign(regulator, "onboard_investor", onboard))
        setup.append(
            wallets.sign(bank, "issue", {"instrument": CASH, "to": address, "amount": FUNDING})
        )
    commit_blocks(chain, setup, block_ms=1_000)
    state = chain.state
    expiry = state.accounts[seeded_key("sender-0").address].kyc.expiry
    country_codes = [f"{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(countries)]
    rng = random.Random(7)
    extra = accounts - senders
    for index in range(extra):
        kyc = Kyc(
            country_codes[index % countries],
            CATEGORIES[index % 3],
            expiry,
            regulator.address,
            vasp_addresses[index % vasps],
        )
        address = rng.randbytes(20)
        state.put_account(Account(address, kyc=kyc))
        state.put_holding(CASH, address, Holding(FUNDING))
    instrument = state.instruments[CASH]
    state.put_instrument(
        dataclasses.replace(instrument, supply=instrument.supply + extra * FUNDING)
    )
    pending = chain.build_block([], chain.last_time_ms + 1_000, bank.address)
    chain.commit(pending, b"bench-import")
    height = chain.height
    chain.close()
    return height


class _Node:
    """What SupervisionMethods reads of a node: its store and genesis."""

    def __init__(self, chain: Chain) -> None:
        self.genesis = chain.genesis
        limiter = trio.CapacityLimiter(1)
        self.store = AsyncStore(
            chain.store, functools.partial(trio.to_thread.run_sync, limiter=limiter)
        )


def time_summaries(chain: Chain, past: int, repeat: int) -> tuple[dict, int]:
    methods = SupervisionMethods(_Node(chain), None, 100, None)
    timings: dict[str, list[float]] = {}
    groups = 0

    async def run() -> None:
        nonlocal groups
        for _ in range(repeat):
            for by in ("vasp", "country", "category"):
                for label, height in ((by, None), (f"{by}@{past}", past)):
                    began = time.perf_counter()
                    answer = await methods.holdings_summary(by=by, height=height)
                    timings.setdefault(label, []).append(time.perf_counter() - began)
                    groups = max(groups, len(answer["groups"]))

    trio.run(run)
    summary = {
        label: {
            "median": round(statistics.median(values) * 1000, 2),
            "max": round(max(values) * 1000, 2),
        }
        for label, values in timings.items()
    }
    return summary, groups


SPENT: dict[str, float] = {}  # CPU seconds inside the index's own functions, this block
# ns inside the tally's per-write methods this block, their calls, and the calls left out
HOOK_NS = [0, 0, 0]
HOOK_OUTLIER_NS = 50_000  # one call never takes this long unless the process was interrupted


GC = [0.0, 0.0]  # seconds in the garbage collector this block, and when the current pass began


def _gc_timer(phase: str, info: dict) -> None:
    if phase == "start":
        GC[1] = time.process_time()
    else:
        GC[0] += time.process_time() - GC[1]


def _timed(name: str, fn):
    def run(*args):
        began = time.process_time()
        try:
            return fn(*args)
        finally:
            SPENT[name] = SPENT.get(name, 0.0) + time.process_time() - began

    return run


_HOLDING, _ACCOUNT = SupervisionTally.holding, SupervisionTally.account
_SAVEPOINT, _ROLLBACK = SupervisionTally.savepoint, SupervisionTally.rollback


def _hook(spent: int) -> None:
    if spent > HOOK_OUTLIER_NS:
        HOOK_NS[2] += 1  # the process was descheduled (or collected garbage) meanwhile
    else:
        HOOK_NS[0] += spent
        HOOK_NS[1] += 1


class _TimedTally(SupervisionTally):
    """The chain's tally with its own time measured. Its per-write methods run ~3,000 times a
    block for well under a microsecond each, in the middle of the operations: timed with the
    monotonic clock (~40 ns a reading; a CPU-time reading is a system call that costs more
    than the call it would time), less what an empty interval measures (`_clock_ns`); a
    call that seems to take over `HOOK_OUTLIER_NS` was interrupted (another process ran) and
    is left out, and counted. This wrapper's own call is counted in."""

    __slots__ = ()

    def holding(self, instrument_id, address, old, new) -> None:
        began = time.perf_counter_ns()
        _HOLDING(self, instrument_id, address, old, new)
        _hook(time.perf_counter_ns() - began)

    def account(self, address, old, new, balances) -> None:
        began = time.perf_counter_ns()
        _ACCOUNT(self, address, old, new, balances)
        _hook(time.perf_counter_ns() - began)

    def savepoint(self, token, outermost) -> None:
        began = time.perf_counter_ns()
        _SAVEPOINT(self, token, outermost)
        _hook(time.perf_counter_ns() - began)

    def rollback(self, token) -> None:
        began = time.perf_counter_ns()
        _ROLLBACK(self, token)
        _hook(time.perf_counter_ns() - began)

    def delta(self, *args):
        return _timed("delta", super().delta)(*args)


def _clock_ns() -> float:
    """What an empty interval between two `perf_counter_ns` readings measures: the share of
    each hook's figure that is the measurement itself (subtracted). The least of 40 batches'
    means: a batch during which the process was descheduled would overstate it."""
    clock = time.perf_counter_ns
    means = []
    for _ in range(40):
        total = 0
        for _ in range(2_500):
            began = clock()
            total += clock() - began
        means.append(total / 2_500)
    return min(means)


class _TimedConnection:
    """The store's connection, with its inserts of `history_keys` rows timed."""

    def __init__(self, conn) -> None:
        self._conn = conn

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    def executemany(self, sql: str, rows):
        if sql.startswith("INSERT INTO history_keys"):
            return _timed("history_keys", self._conn.executemany)(sql, rows)
        return self._conn.executemany(sql, rows)


class _Off(SupervisionTally):
    """No index: nothing observed, no delta (what a block cost before the index)."""

    __slots__ = ()

    def delta(self, *args):
        return None


def set_variant(chain: Chain, variant: str, timed: SupervisionTally, prefixes) -> None:
    # "off" skips the index's whole computation: the per-write tally and the block's delta.
    tally = _Off(chain.state) if variant == "off" else timed
    chain.supervision_tally = tally
    chain.state.observe(None if variant == "off" else tally)
    supervision_store._PREFIXES = prefixes if variant == "full" else frozenset()


def time_blocks(
    chain: Chain,
    accounts: int,
    senders: int,
    blocks: int,
    variants: tuple[str, ...] = VARIANTS,
    plain: bool = False,
) -> dict:
    """`plain`: no timing wrappers (the index's parts are not measured; the blocks' CPU
    differences are then free of the wrappers' own cost)."""
    txs = signed_transfers(chain, accounts, senders, blocks, seed=11)
    decoded = [decode_signed_tx(raw) for raw in txs]
    for tx in decoded:
        verify_tx_signatures(tx)
    verified = {tx.tx_id for tx in decoded}
    prefixes = supervision_store._PREFIXES
    original = chain.supervision_tally
    timed = original if plain else _TimedTally(chain.state)
    block_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
    commit_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
    # The index's own CPU per block, measured inside it (not a difference of noisy medians):
    # the tally's per-write methods and its delta, and the supervision part of the store's
    # commit (write_block, the history rows, their held-back index and its merged rows).
    inside_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
    left_out: dict[str, list[int]] = {v: [] for v in VARIANTS}
    calls: dict[str, list[int]] = {v: [] for v in VARIANTS}
    rounds: dict[int, dict[str, float]] = {}  # round -> variant -> its block's CPU ms
    parts: dict[str, list[float]] = {}
    write_block = supervision_store.write_block
    history_rows = StoreIndexes.__dict__["history_rows"]  # the staticmethod itself, to put back
    held = chain.store.indexes.history_index
    connection = chain.store.db.conn
    if not plain:
        supervision_store.write_block = _timed("write_block", write_block)
        StoreIndexes.history_rows = staticmethod(_timed("history_rows", history_rows.__func__))
        # The history keys' held-back index (plan, apply) and their rows' insert, in the store.
        held.plan = _timed("history_index", held.plan)
        held.apply = _timed("history_index", held.apply)
        chain.store.db.conn = _TimedConnection(connection)
    proposer = seeded_key("sender-0").address
    clock_ns = _clock_ns()
    # round -> [CPU seconds merging held-back history keys in its blocks, has a full block]
    merges: dict[int, list] = {}
    gc_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
    gc.callbacks.append(_gc_timer)
    try:
        for index, start in enumerate(range(0, len(decoded), BLOCK_SIZE)):
            # Rotated every round (off, aggregates, full; aggregates, full, off; ...): whatever
            # recurs every third block (a WAL checkpoint) falls on each variant in turn.
            variant = variants[(index + index // len(variants)) % len(variants)]
            set_variant(chain, variant, timed, prefixes)
            batch = decoded[start : start + BLOCK_SIZE]
            SPENT.clear()
            HOOK_NS[:] = [0, 0, 0]
            GC[0] = 0.0
            began, began_cpu = time.perf_counter(), time.process_time()
            pending = chain.build_block(
                batch, chain.last_time_ms + 1_000, proposer, verified=verified
            )
            built = time.perf_counter()
            chain.commit(pending, b"bench-certificate")
            done, done_cpu = time.perf_counter(), time.process_time()
            refused = [r for r in pending.receipts if r.code != Code.OK]
            if refused or pending.dropped:
                raise SystemExit(f"a benchmark transfer was refused: {refused[:1]}")
            block_ms[variant].append((done - began) * 1000)
            commit_ms[variant].append((done - built) * 1000)
            cpu_ms[variant].append((done_cpu - began_cpu) * 1000)
            rounds.setdefault(index // len(variants), {})[variant] = (done_cpu - began_cpu) * 1000
            SPENT["hooks"] = HOOK_NS[0] / 1e9
            SPENT["hooks"] -= HOOK_NS[1] * clock_ns / 1e9  # the clock readings themselves
            left_out[variant].append(HOOK_NS[2])
            calls[variant].append(HOOK_NS[1])
            # The held-back history keys are merged one slice a block, whichever variant
            # runs it, and only "full" blocks make them: their whole cost over the run is
            # the full blocks', spread evenly (what a node writing them every block pays).
            round_merge = merges.setdefault(index // len(variants), [0.0, False])
            round_merge[0] += SPENT.get("history_index", 0.0) + SPENT.get("history_keys", 0.0)
            round_merge[1] |= variant == "full"
            gc_ms[variant].append(GC[0] * 1000)
            own = sum(v for k, v in SPENT.items() if k not in ("history_index", "history_keys"))
            inside_ms[variant].append(own * 1000)
            for name, spent in SPENT.items():
                parts.setdefault(f"{variant}:{name}", []).append(spent * 1000)
    finally:
        gc.callbacks.remove(_gc_timer)
        set_variant(chain, "full", original, prefixes)
        supervision_store.write_block = write_block
        StoreIndexes.history_rows = history_rows
        if not plain:
            del held.plan, held.apply
        chain.store.db.conn = connection
    medians = {v: round(statistics.median(block_ms[v]), 1) for v in VARIANTS if block_ms[v]}
    commits = {v: round(statistics.median(commit_ms[v]), 1) for v in VARIANTS if commit_ms[v]}
    cpu = {v: round(statistics.median(cpu_ms[v]), 1) for v in VARIANTS if cpu_ms[v]}

    def share(figures: dict) -> dict:
        return {
            v: round((figures[v] - figures["off"]) / figures["off"] * 100, 1)
            for v in ("aggregates", "full")
            if v in figures and "off" in figures
        }

    # Each round's block with the index against that round's block without: the median of
    # those differences follows the machine's drift less than a difference of two medians.
    paired = {
        v: round(
            statistics.median(r[v] - r["off"] for r in rounds.values() if v in r and "off" in r)
            / cpu["off"]
            * 100,
            1,
        )
        for v in ("aggregates", "full")
        if v in variants and "off" in variants and cpu_ms[v]
    }
    inside = {v: statistics.median(inside_ms[v]) for v in VARIANTS if inside_ms[v]}
    # A round's merges carry the history keys of its one full block (what a node writing
    # them every block merges a block): the median over rounds, added to the full variant.
    full_rounds = [spent for spent, has_full in merges.values() if has_full]
    merge_ms = statistics.median(full_rounds) * 1000 if full_rounds else 0.0
    if inside_ms["full"]:
        inside["full"] += merge_ms
    inside = {v: round(ms, 1) for v, ms in inside.items()}
    gc_figures = {
        v: (round(statistics.median(ms), 2), round(statistics.mean(ms), 2))
        for v, ms in gc_ms.items()
        if ms
    }
    measured_inside = {
        "index_cpu_ms": inside,
        "history_merge_ms_per_full_block": round(merge_ms, 2),
        "hook_calls_median": {v: statistics.median(n) for v, n in calls.items() if n},
        "hook_calls_left_out": {v: sum(n) for v, n in left_out.items()},
        "clock_ns": round(clock_ns, 1),
        "index_cpu_parts_ms": {k: round(statistics.median(v), 1) for k, v in parts.items()},
        "index_cpu_pct_of_off_block": {
            v: round(inside[v] / cpu["off"] * 100, 1) for v in ("aggregates", "full") if v in inside
        },
    }
    return {
        **({} if plain else measured_inside),
        "gc_ms_median_mean": gc_figures,
        "block_ms": medians,
        "commit_ms": commits,
        "block_cpu_ms": cpu,
        "index_share_pct": share(medians),
        "index_cpu_share_pct": share(cpu),
        "index_cpu_paired_pct": paired,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--senders", type=int, default=2_000)
    parser.add_argument("--vasps", type=int, default=25)
    parser.add_argument("--countries", type=int, default=60)
    parser.add_argument("--blocks", type=int, default=30, help="measured blocks (3 variants)")
    parser.add_argument("--warm-up", type=int, default=6, help="blocks before measuring")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="which of off,aggregates,full to run, in turn (default: all three)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="no timing inside the index: only the blocks' CPU with and without it",
    )
    parser.add_argument("--workdir", help="folder for the database (default: a temp folder)")
    args = parser.parse_args(argv)
    variants = tuple(args.variants.split(","))
    if "off" not in variants or any(v not in VARIANTS for v in variants):
        parser.error(f"--variants: names among {','.join(VARIANTS)}, off included")
    if len(set(variants)) < len(variants):
        parser.error("--variants: each name once")
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        path = Path(folder) / "bench.db"
        began = time.perf_counter()
        past = prepare(path, args.accounts, args.senders, args.vasps, args.countries)
        log(f"prepared {args.accounts:,} accounts in {time.perf_counter() - began:.0f} s")
        began = time.perf_counter()
        chain = Chain.open(path, bench_genesis())
        log(
            f"reopened in {time.perf_counter() - began:.0f} s ({chain.store.state.state_slices} slices)"
        )
        try:
            if args.warm_up:
                time_blocks(chain, args.accounts, args.senders, args.warm_up)
            blocks = time_blocks(
                chain, args.accounts, args.senders, args.blocks, variants, args.plain
            )
            summary, groups = time_summaries(chain, past, args.repeat)
        finally:
            chain.close()
    result = {"accounts": args.accounts, "groups": groups, "summary_ms": summary, **blocks}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
