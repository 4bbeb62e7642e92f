#!/usr/bin/env python3
"""Benchmark of the state commitment (ledger/commitment.py).

Prints, for each state size: the bulk build time (`StateTree.from_items`), the median and worst
time of `apply` for blocks of `--changes` changed keys (a 1,000-transfer block changes ~3,000
keys: two balances and a nonce per transfer, mostly updates with some inserts and deletes),
prove and verify times, and the process RSS. The last line is JSON with the same figures.

    .venv/bin/python scripts/bench_commitment.py [--sizes 1000,1000000] [--changes 3000]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.commitment import StateTree, verify_proof


def rss_mib() -> float:
    """Current resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def state_key(index: int) -> bytes:
    # Shaped like the ledger's keys: a short kind prefix and a 20-byte address-sized id.
    return b"bal/" + index.to_bytes(20, "big")


def record(rng: random.Random) -> bytes:
    return rng.randbytes(40)  # about the size of an encoded balance record


def bench_size(size: int, changes: int, blocks: int, rng: random.Random) -> dict:
    rss_before = rss_mib()
    items = [(state_key(i), record(rng)) for i in range(size)]
    started = time.perf_counter()
    tree = StateTree.from_items(items)
    build_s = time.perf_counter() - started
    del items
    gc.collect()
    rss_after_build = rss_mib()

    next_key = size
    live = size
    apply_ms = []
    for _ in range(blocks):
        batch: dict[bytes, bytes | None] = {}
        while len(batch) < changes:
            roll = rng.random()
            if roll < 0.05:  # a new account or holding
                batch[state_key(next_key)] = record(rng)
                next_key += 1
                live += 1
            elif roll < 0.07 and live > changes:  # a holding emptied out
                batch[state_key(rng.randrange(next_key))] = None
            else:
                batch[state_key(rng.randrange(next_key))] = record(rng)
        started = time.perf_counter()
        tree.apply(batch)
        apply_ms.append((time.perf_counter() - started) * 1000)

    # Prove and verify entries the last block wrote (their values are known here: the tree
    # itself holds only hashes) and as many absent keys (exclusion proofs).
    root = tree.root
    present = [(key, value) for key, value in batch.items() if value is not None][:1000]
    absent = [(state_key(next_key + i), None) for i in range(len(present))]
    started = time.perf_counter()
    proofs = [(key, value, tree.prove(key)) for key, value in present + absent]
    prove_us = (time.perf_counter() - started) / len(proofs) * 1e6
    started = time.perf_counter()
    verified = all(verify_proof(root, key, value, proof) for key, value, proof in proofs)
    verify_us = (time.perf_counter() - started) / len(proofs) * 1e6
    if not verified:
        raise SystemExit("an honest proof failed to verify")
    levels = statistics.mean(len(proof.levels) for _, _, proof in proofs)

    return {
        "size": size,
        "from_items_s": round(build_s, 3),
        "apply_changes": changes,
        "apply_blocks": blocks,
        "apply_median_ms": round(statistics.median(apply_ms), 2),
        "apply_max_ms": round(max(apply_ms), 2),
        "prove_us": round(prove_us, 1),
        "verify_us": round(verify_us, 1),
        "proof_levels_mean": round(levels, 2),
        "rss_mib": round(rss_mib(), 1),
        "rss_after_build_mib": round(rss_after_build - rss_before, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,1000000", help="comma-separated state sizes")
    parser.add_argument("--changes", type=int, default=3000, help="changed keys per block")
    parser.add_argument("--blocks", type=int, default=20, help="blocks applied per size")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    results = []
    for size in (int(part) for part in args.sizes.split(",")):
        result = bench_size(size, args.changes, args.blocks, rng)
        results.append(result)
        print(
            f"{size:>9,} keys: from_items {result['from_items_s']:.2f} s, "
            f"apply({args.changes}) median {result['apply_median_ms']:.1f} ms "
            f"max {result['apply_max_ms']:.1f} ms, prove {result['prove_us']:.0f} us, "
            f"verify {result['verify_us']:.0f} us, {result['proof_levels_mean']} levels, "
            f"RSS {result['rss_mib']:.0f} MiB (+{result['rss_after_build_mib']:.0f} MiB after build)",
            flush=True,
        )
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
