#!/usr/bin/env python3
"""Block-path micro-benchmark: one validator's work per block, phase by phase, in one process.

What a validator does between two blocks, the parts that do not wait for the network, each
timed alone (wall time, medians over `--blocks` blocks):

- `admit`: the block's transactions admitted to the mempool (client path; per block);
- `gossip`: the same transactions admitted by a second pool as a peer's gossip
  (`Mempool.add_gossiped`: three of a network's four validators take each this way);
- `build`: `Mempool.reap` + `Chain.build_block` (the proposer's transition: every rule, the
  conservation check, the state-tree update, the header);
- `execute`: `Chain.abandon` + `Chain.execute_block` of the same block (what the other
  validators do with a proposal; the proposer's pending block is abandoned first);
- `commit`: `Chain.commit` through the store's worker thread, as the driver calls it (wall
  time, fsync included); `commit_cpu`: the CPU time of the process meanwhile (the worker
  thread's work: SQLite, encoding), which the disk's contention does not inflate;
- `record`: three consensus-record writes (proposal, prevote, precommit: each vote is made
  durable before it is sent), through the worker thread;
- `hop`: one empty call through the worker thread (the cost of the thread hop itself);
- `recheck`: `Mempool.remove_committed` (drop the block's transactions, recheck the
  senders, expiry);
- `block`: build + commit + record + recheck (one proposer's block, end to end).

The CPU-only phases (admit, gossip, build, execute, recheck) are timed in process CPU time
(`time.process_time`: nothing else runs in the process meanwhile), so that other work on a
shared machine disturbs them far less than wall time would; the phases that wait on the
worker thread and fsync (commit, record, hop) are wall time.

The pool holds `--backlog` transactions per sender beyond the block, the way a loaded node's
pool does (every sender has the next ones waiting).

It runs against whichever tree its interpreter imports (the venv's editable install), so the
same file compares two trees:

    /work/wt/base/.venv/bin/python scripts/bench_block_path.py --json
    .venv/bin/python scripts/bench_block_path.py --json

`--ab BASE_PYTHON` does it for you: the two trees alternate `--rounds` times (A B A B ...)
and the last line is JSON with each phase's median per tree and the ratio branch/base.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

cpu = time.process_time

CHAIN_ID = "khazana-bench"
GENESIS_MS = 1_767_225_600_000  # 2026-01-01
INSTITUTIONS = ("ministry", "central-bank", "regulator", "auditor")
CASH = "PKR"
FUNDING = 1_000_000_000
PHASES = (
    "admit",
    "gossip",
    "build",
    "execute",
    "commit",
    "commit_cpu",
    "record",
    "hop",
    "recheck",
    "block",
)


def _seeded_key(label: str):
    from ledger.crypto import generate_key

    return generate_key(label.encode().ljust(32, b"\x00")[:32])


def _genesis() -> dict:
    from ledger.genesis import default_genesis

    return default_genesis(
        validators=[(n, _seeded_key("validator-" + n).public_key) for n in INSTITUTIONS],
        institutions={n: _seeded_key(n).address for n in INSTITUTIONS},
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
    )


class _Wallets:
    def __init__(self) -> None:
        self.nonces: dict[bytes, int] = {}

    def sign(self, key, op: str, args: dict) -> bytes:
        from ledger.tx import TxBody, sign_tx

        nonce = self.nonces.get(key.address, 0)
        self.nonces[key.address] = nonce + 1
        return sign_tx(TxBody(CHAIN_ID, key.address, nonce, op, args), [key]).raw


def _setup(
    chain, senders: int, wallets: _Wallets, certificate: bytes = b"bench-certificate"
) -> list:
    """Register the cash instrument, onboard and fund `senders` investors (blocks of 1,000)."""
    from ledger.codes import Code

    bank, regulator = _seeded_key("central-bank"), _seeded_key("regulator")
    txs = [
        wallets.sign(
            bank,
            "register_instrument",
            {
                "id": CASH,
                "kind": "cash",
                "name": "Digital rupee",
                "currency": "PKR",
                "face_value": 1,
                "decimals": 2,
                "cap": 10**17,
            },
        )
    ]
    keys = [_seeded_key(f"sender-{i}") for i in range(senders)]
    for key in keys:
        onboard = {
            "investor": key.address,
            "country": "PK",
            "category": "retail",
            "kyc_expiry": "2030-01-01",
        }
        txs.append(wallets.sign(regulator, "onboard_investor", onboard))
        txs.append(
            wallets.sign(bank, "issue", {"instrument": CASH, "to": key.address, "amount": FUNDING})
        )
    for start in range(0, len(txs), 1000):
        pending = chain.build_block(
            txs[start : start + 1000], chain.last_time_ms + 1000, bank.address
        )
        bad = [r for r in pending.receipts if r.code != Code.OK] + list(pending.dropped)
        if bad:
            raise SystemExit(f"set-up transaction refused: {bad[0]}")
        chain.commit(pending, certificate)
    return keys


def _transfers(keys: list, wallets: _Wallets, rounds: int) -> list[list[bytes]]:
    """`rounds` lists: in each, one transfer per sender (to the next sender)."""
    out = []
    for r in range(rounds):
        batch = []
        for i, key in enumerate(keys):
            to = keys[(i + 1 + r) % len(keys)].address
            batch.append(
                wallets.sign(key, "transfer", {"instrument": CASH, "to": to, "amount": 1 + r})
            )
        out.append(batch)
    return out


def _runner():
    """The node's way of reaching the store's worker thread in this tree."""
    import trio

    try:
        from node.store_lanes import StoreLanes
    except ImportError:  # the tree before store lanes: one CapacityLimiter(1)
        limiter = trio.CapacityLimiter(1)
        return functools.partial(trio.to_thread.run_sync, limiter=limiter), "limiter"
    return StoreLanes().run_write, "store_lanes"


def measure(args: argparse.Namespace) -> dict:
    import trio

    from ledger.chain import Chain
    from ledger.store import AsyncStore
    from node.mempool import AdmissionView, Mempool, MempoolLimits

    tmp = Path(tempfile.mkdtemp(prefix="bench-block-path-"))
    chain = Chain.open(tmp / "node.db", _genesis())
    wallets = _Wallets()
    keys = _setup(chain, args.senders, wallets)
    per_block = args.txs
    # Senders take turns: block b holds senders [b*per_block, (b+1)*per_block) mod senders.
    rounds_needed = (args.blocks + args.warm) * per_block // args.senders + args.backlog + 2
    waves = _transfers(keys, wallets, rounds_needed)
    stream = [raw for wave in waves for raw in wave]  # nonce order per sender
    mempool = Mempool(MempoolLimits(), CHAIN_ID)
    peer_pool = Mempool(MempoolLimits(), CHAIN_ID)  # a validator that hears them as gossip
    proposer = _seeded_key("validator-ministry").address
    record = b"\x01" * 200

    def view():
        return AdmissionView(chain.state, chain.context(chain.height + 1, chain.last_time_ms + 100))

    timings: dict[str, list[float]] = {p: [] for p in PHASES}
    # As the tree's driver calls it: with the block's changes where the pool takes them.
    scoped_recheck = "changes" in inspect.signature(Mempool.remove_committed).parameters

    async def main() -> str:
        run_sync, kind = _runner()
        store = AsyncStore(chain.store, run_sync)
        cursor = 0
        # Fill the pool: the backlog of every sender, then keep it topped up per block.
        fill = args.senders * args.backlog
        v = view()
        for raw in stream[cursor : cursor + fill]:
            result = mempool.admit(raw, v)
            if not result.ok:
                raise SystemExit(f"admission refused: {result}")
            peer_pool.add_gossiped(raw, v)
        cursor += fill
        for b in range(args.blocks + args.warm):
            v = view()
            t0 = cpu()
            for raw in stream[cursor : cursor + per_block]:
                result = mempool.admit(raw, v)
                if not result.ok:
                    raise SystemExit(f"admission refused: {result}")
            t1 = cpu()
            for raw in stream[cursor : cursor + per_block]:
                result = peer_pool.add_gossiped(raw, v)
                if not result.ok:
                    raise SystemExit(f"gossip refused: {result}")
            cursor += per_block
            gossip_s = cpu() - t1
            t1 = cpu()
            txs = mempool.reap(per_block, 4 * 1024 * 1024)
            pending = chain.build_block(
                txs,
                chain.last_time_ms + 100,
                proposer,
                verified=mempool.verified_for(tx.raw for tx in txs),
            )
            t2 = cpu()
            if len(pending.block.txs) != per_block or pending.dropped:
                raise SystemExit(f"block {b}: {len(pending.block.txs)} txs, {pending.dropped[:1]}")
            block = pending.block
            chain.abandon()
            t3 = cpu()
            pending = chain.execute_block(block, verified=mempool.verified_for(block.txs))
            t4 = cpu()
            w4 = time.perf_counter()
            for _ in range(3):
                await store.save_consensus_record(record)
            w5, c5 = time.perf_counter(), cpu()
            await store.run(chain.commit, pending, b"bench-certificate")
            w6, c6 = time.perf_counter(), cpu()
            await store.run(lambda: None)
            w7 = time.perf_counter()
            t7 = cpu()
            after = view()
            scoped = {"changes": pending.changes} if scoped_recheck else {}
            mempool.remove_committed((r.tx_id for r in pending.receipts), after, **scoped)
            t8 = cpu()
            peer_pool.remove_committed((r.tx_id for r in pending.receipts), after, **scoped)
            if b < args.warm:
                continue
            timings["admit"].append(t1 - t0 - gossip_s)
            timings["gossip"].append(gossip_s)
            timings["build"].append(t2 - t1)
            timings["execute"].append(t4 - t3)
            timings["record"].append(w5 - w4)
            timings["commit"].append(w6 - w5)
            timings["commit_cpu"].append(c6 - c5)
            timings["hop"].append(w7 - w6)
            timings["recheck"].append(t8 - t7)
            timings["block"].append((t2 - t1) + (w6 - w4) + (t8 - t7))
        return kind

    kind = trio.run(main)
    chain.close()
    return {
        "tree": str(Path(sys.modules["ledger"].__file__).resolve().parent.parent),
        "store_call": kind,
        "txs": per_block,
        "senders": args.senders,
        "pool": len(mempool),
        **{f"{p}_ms": round(statistics.median(v) * 1000, 3) for p, v in timings.items()},
    }


def _one(python: str, args: argparse.Namespace) -> dict:
    command = [
        python,
        __file__,
        "--json",
        "--txs",
        str(args.txs),
        "--senders",
        str(args.senders),
        "--blocks",
        str(args.blocks),
        "--backlog",
        str(args.backlog),
        "--warm",
        str(args.warm),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ab(args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {"base": [], "branch": []}
    for r in range(args.rounds):
        for name, python in (("base", args.ab), ("branch", sys.executable)):
            result = _one(python, args)
            runs[name].append(result)
            print(f"round {r + 1} {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    summary: dict[str, object] = {"rounds": args.rounds, "txs": args.txs, "senders": args.senders}
    for phase in PHASES:
        key = f"{phase}_ms"
        base = statistics.median(r[key] for r in runs["base"])
        branch = statistics.median(r[key] for r in runs["branch"])
        summary[phase] = {
            "base": round(base, 3),
            "branch": round(branch, 3),
            "ratio": round(branch / base, 2) if base else None,
        }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--txs", type=int, default=100, help="transactions per block")
    parser.add_argument("--senders", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=40, help="timed blocks")
    parser.add_argument("--warm", type=int, default=5, help="untimed blocks first")
    parser.add_argument("--backlog", type=int, default=2, help="waiting txs per sender")
    parser.add_argument("--json", action="store_true", help="one JSON line only")
    parser.add_argument("--ab", metavar="BASE_PYTHON", help="alternate with this interpreter")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (with --ab)")
    args = parser.parse_args()
    result = ab(args) if args.ab else measure(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
