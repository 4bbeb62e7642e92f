#!/usr/bin/env python3
"""Benchmark of the state commitment (ledger/commitment.py).

Prints, for each state size: the bulk build time (`StateTree.from_items`), the median and worst
time of `apply` for blocks of `--changes` changed keys (a 1,000-transfer block changes ~3,000
keys: two balances and a nonce per transfer, mostly updates with some inserts and deletes;
each block is undone afterwards, untimed, so every block meets the same state size), prove
and verify times, proof sizes, and the RSS (whole process, and what building the tree added).
Times are CPU time of this process (robust to other processes on a shared machine) with wall
time alongside; the first line gives a hashing yardstick for the machine's load. The last
line is JSON with the same figures.

    .venv/bin/python scripts/bench_commitment.py [--sizes 1000,1000000] [--changes 3000]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
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


def record(index: int, version: int) -> bytes:
    # About the size of an encoded balance record; deterministic, so a block can be undone
    # without keeping a copy of the state (which would distort the RSS figure).
    return hashlib.blake2b(index.to_bytes(8, "big") + bytes([version]), digest_size=40).digest()


def hash_ns() -> float:
    """CPU ns per BLAKE2b-256 of 64 bytes here and now: a yardstick for the machine's load."""
    data = b"x" * 64
    started = time.process_time()
    for _ in range(100_000):
        hashlib.blake2b(data, digest_size=32).digest()
    return (time.process_time() - started) * 1e4


def make_block(size: int, versions: bytearray, changes: int, rng: random.Random):
    """A block's changes (93% updates, 5% inserts, 2% deletes, as many distinct keys as the
    state allows) and the changes that undo it, so every block meets a state of `size`."""
    block: dict[bytes, bytes | None] = {}
    undo: dict[bytes, bytes | None] = {}
    inserts = deletes = 0
    while len(block) < changes:
        roll = rng.random()
        if roll < 0.05 or len(block) >= size:  # a new account or holding
            index = size + inserts
            inserts += 1
            block[state_key(index)] = record(index, 0)
            undo[state_key(index)] = None
            continue
        index = rng.randrange(size)
        key = state_key(index)
        if key in block:
            continue
        undo[key] = record(index, versions[index])
        if roll < 0.07:  # a holding emptied out
            block[key] = None
            deletes += 1
        else:
            block[key] = record(index, (versions[index] + 1) % 256)
    return block, undo


def bench_size(size: int, changes: int, blocks: int, rng: random.Random) -> dict:
    gc.collect()
    rss_before = rss_mib()
    versions = bytearray(size)
    items = [(state_key(i), record(i, 0)) for i in range(size)]
    cpu = time.process_time()
    wall = time.perf_counter()
    tree = StateTree.from_items(items)
    build_cpu_s = time.process_time() - cpu
    build_wall_s = time.perf_counter() - wall
    del items
    gc.collect()
    rss_after_build = rss_mib()

    apply_cpu_ms = []
    apply_wall_ms = []
    for _ in range(blocks):
        block, undo = make_block(size, versions, changes, rng)
        cpu = time.process_time()
        wall = time.perf_counter()
        tree.apply(block)
        apply_cpu_ms.append((time.process_time() - cpu) * 1000)
        apply_wall_ms.append((time.perf_counter() - wall) * 1000)
        tree.apply(undo)

    # Prove and verify entries of the state (their values are known here: the tree holds
    # only hashes) and as many absent keys (exclusion proofs).
    root = tree.root
    present = [(state_key(i), record(i, 0)) for i in rng.sample(range(size), min(size, 1000))]
    absent = [(state_key(size + 10**9 + i), None) for i in range(len(present))]
    cpu = time.process_time()
    proofs = [(key, value, tree.prove(key)) for key, value in present + absent]
    prove_us = (time.process_time() - cpu) / len(proofs) * 1e6
    cpu = time.process_time()
    verified = all(verify_proof(root, key, value, proof) for key, value, proof in proofs)
    verify_us = (time.process_time() - cpu) / len(proofs) * 1e6
    if not verified:
        raise SystemExit("an honest proof failed to verify")
    levels = statistics.mean(len(proof.levels) for _, _, proof in proofs)
    proof_bytes = statistics.mean(len(proof.to_bytes()) for _, _, proof in proofs)

    return {
        "size": size,
        "from_items_cpu_s": round(build_cpu_s, 2),
        "from_items_wall_s": round(build_wall_s, 2),
        "apply_changes": changes,
        "apply_blocks": blocks,
        "apply_cpu_median_ms": round(statistics.median(apply_cpu_ms), 1),
        "apply_cpu_max_ms": round(max(apply_cpu_ms), 1),
        "apply_wall_median_ms": round(statistics.median(apply_wall_ms), 1),
        "prove_us": round(prove_us, 1),
        "verify_us": round(verify_us, 1),
        "proof_levels_mean": round(levels, 2),
        "proof_bytes_mean": round(proof_bytes),
        "rss_mib": round(rss_mib(), 1),
        "rss_tree_mib": round(rss_after_build - rss_before, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,1000000", help="comma-separated state sizes")
    parser.add_argument("--changes", type=int, default=3000, help="changed keys per block")
    parser.add_argument("--blocks", type=int, default=20, help="blocks applied per size")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    yardstick = round(hash_ns())
    print(f"machine: {yardstick} ns CPU per BLAKE2b-256 of 64 bytes, load {os.getloadavg()[0]:.1f}")
    results = []
    for size in (int(part) for part in args.sizes.split(",")):
        r = bench_size(size, args.changes, args.blocks, rng)
        results.append(r)
        print(
            f"{size:>9,} keys: from_items {r['from_items_cpu_s']:.2f} s CPU "
            f"({r['from_items_wall_s']:.2f} s wall); apply({args.changes}) CPU median "
            f"{r['apply_cpu_median_ms']:.1f} ms, max {r['apply_cpu_max_ms']:.1f} ms (wall median "
            f"{r['apply_wall_median_ms']:.1f} ms); prove {r['prove_us']:.0f} us, verify "
            f"{r['verify_us']:.0f} us, {r['proof_levels_mean']} levels, "
            f"{r['proof_bytes_mean']} bytes; RSS {r['rss_mib']:.0f} MiB "
            f"(tree {r['rss_tree_mib']:.0f} MiB)",
            flush=True,
        )
    print(json.dumps({"hash_ns": yardstick, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
