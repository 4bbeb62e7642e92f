#!/usr/bin/env python3
"""Ledger benchmark: apply and commit transfer transactions in blocks of 1,000.

What is timed: for each block, `Chain.build_block` (decode every transaction, every rule of
the transfer, the state writes, the state-tree update, the header) and `Chain.commit` (one
SQLite transaction with WAL and synchronous=FULL: block, certificate, transactions,
receipts, events and state changes). Signatures are verified before the timed part, as a
node's mempool does once on admission; that rate is reported separately as
`verify_per_s`.

Two states are measured, each in its own process so that `rss_mb` is that node's memory:
1,000 funded accounts, and 1,000,000. In the second, the senders are funded through real
transactions and the other accounts are written straight into the state as onboarded,
funded investors (the same records an `onboard_investor` and an `issue` would write). Both
sizes then run `--warm-up` blocks of the same transfers (default 258), so that the measured
node is one that has been running: the store's state log is in its steady state (a large
state is cut into up to 256 slices, and the log holds a block of held-back changes per
slice), and both sizes have histories of the same length. Then the database is closed and
reopened the way a restarting node would: the timed transfers run on a state reloaded from
SQLite.

Each size is prepared once and then measured `--rounds` times (default 3) on fresh copies,
the two sizes alternating, so that the ratio compares medians measured side by side on this
shared machine, whose speed drifts by tens of percent within an hour.

    .venv/bin/python scripts/bench_ledger.py            # both sizes, last line JSON
    .venv/bin/python scripts/bench_ledger.py --accounts 1000 --blocks 10 --rounds 1

Last line: {"tx_per_s": ..., "tx_per_s_1m": ..., "verify_per_s": ..., "rss_mb_1m": ...,
"ratio_1m": ..., "rounds": ..., "tx_per_s_runs": [...], "tx_per_s_1m_runs": [...]} (rates are
medians over the rounds; memory is the largest of them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.chain import Chain
from ledger.codes import Code
from ledger.crypto import KeyPair, generate_key
from ledger.genesis import default_genesis
from ledger.state_log import MAX_SLICES
from ledger.tx import TxBody, decode_signed_tx, sign_tx, verify_tx_signatures
from ledger.types import Account, Holding, Kyc

CHAIN_ID = "khazana-bench"
GENESIS_MS = 1_767_225_600_000  # 2026-01-01
BLOCK_SIZE = 1_000
INSTITUTIONS = ("ministry", "central-bank", "regulator", "auditor")
CASH = "PKR"
FUNDING = 1_000_000_000  # minor units given to every account
# Blocks run before measuring (see warm_up): at least the store's largest slice count + 2.
WARM_UP_BLOCKS = MAX_SLICES + 2


def seeded_key(label: str) -> KeyPair:
    return generate_key(label.encode().ljust(32, b"\x00")[:32])


def bench_genesis() -> dict:
    return default_genesis(
        validators=[(n, seeded_key("validator-" + n).public_key) for n in INSTITUTIONS],
        institutions={n: seeded_key(n).address for n in INSTITUTIONS},
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
    )


class Wallets:
    """Signs with the next nonce of each sender (from `chain`'s state when given)."""

    def __init__(self, chain: Chain | None = None) -> None:
        self.nonces: dict[bytes, int] = {}
        # A sender's first nonce is read from the state when it first signs (a million
        # accounts, ten thousand senders: no copy of every account's nonce).
        self.accounts = chain.state.accounts if chain is not None else {}

    def sign(self, key: KeyPair, op: str, args: dict) -> bytes:
        nonce = self.nonces.get(key.address)
        if nonce is None:
            account = self.accounts.get(key.address)
            nonce = 0 if account is None else account.nonce
        self.nonces[key.address] = nonce + 1
        return sign_tx(TxBody(CHAIN_ID, key.address, nonce, op, args), [key]).raw


def commit_blocks(chain: Chain, txs: list[bytes], block_ms: int) -> None:
    """Commit `txs` in blocks of BLOCK_SIZE, failing loudly on any refusal (set-up only)."""
    for start in range(0, len(txs), BLOCK_SIZE):
        pending = chain.build_block(
            txs[start : start + BLOCK_SIZE],
            chain.last_time_ms + block_ms,
            seeded_key("validator-ministry").address,
        )
        bad = [r for r in pending.receipts if r.code != Code.OK] + list(pending.dropped)
        if bad:
            raise SystemExit(f"set-up transaction refused: {Code(bad[0].code).name} {bad[0].log}")
        chain.commit(pending, b"bench-certificate")


def prepare(path: Path, accounts: int, senders: int, warm_up_blocks: int) -> None:
    """Create a database with `accounts` funded investors, the first `senders` of them with keys."""
    chain = Chain.open(path, bench_genesis())
    wallets = Wallets()
    bank, regulator = seeded_key("central-bank"), seeded_key("regulator")
    setup = [
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
    for index in range(senders):
        address = seeded_key(f"sender-{index}").address
        setup.append(
            wallets.sign(
                regulator,
                "onboard_investor",
                {
                    "investor": address,
                    "country": "PK",
                    "category": "retail",
                    "kyc_expiry": "2030-01-01",
                },
            )
        )
        setup.append(
            wallets.sign(bank, "issue", {"instrument": CASH, "to": address, "amount": FUNDING})
        )
    commit_blocks(chain, setup, block_ms=1_000)

    extra = accounts - senders
    if extra > 0:
        # Investors with no keys of ours: they only receive. The records are those that
        # onboarding and issuance write; the instrument's supply grows by what they hold.
        state = chain.state
        kyc = Kyc(
            "PK",
            "retail",
            state.accounts[seeded_key("sender-0").address].kyc.expiry,
            regulator.address,
            None,
        )
        rng = random.Random(7)
        for _ in range(extra):
            address = rng.randbytes(20)
            state.put_account(Account(address, kyc=kyc))
            state.put_holding(CASH, address, Holding(FUNDING))
        instrument = state.instruments[CASH]
        state.put_instrument(
            dataclasses.replace(instrument, supply=instrument.supply + extra * FUNDING)
        )
        pending = chain.build_block([], chain.last_time_ms + 1_000, bank.address)
        chain.commit(pending, b"bench-import")
    chain.close()
    slices = warm_up(path, accounts, senders, warm_up_blocks)
    print(
        f"ran {warm_up_blocks} warm-up blocks; the state is cut into {slices} slices",
        file=sys.stderr,
        flush=True,
    )


def signed_transfers(
    chain: Chain, accounts: int, senders: int, blocks: int, seed: int
) -> list[bytes]:
    """`blocks` blocks of transfers: the senders in turn, each to a random holder."""
    rng = random.Random(seed)
    keys = [seeded_key(f"sender-{index}") for index in range(senders)]
    recipients = [key.address for key in keys]
    if accounts > senders:
        recipients = list(chain.state.holdings[CASH].keys())
    wallets = Wallets(chain)
    per_sender = -(-blocks * BLOCK_SIZE // senders)
    txs: list[bytes] = []
    for round_ in range(per_sender):
        for key in keys:
            to = rng.choice(recipients)
            while to == key.address:  # a transfer to oneself is refused
                to = rng.choice(recipients)
            txs.append(
                wallets.sign(key, "transfer", {"instrument": CASH, "to": to, "amount": 1 + round_})
            )
    return txs[: blocks * BLOCK_SIZE]


def warm_up(path: Path, accounts: int, senders: int, blocks: int) -> int:
    """Run the prepared node for `blocks` blocks of transfers first, as a node that has
    been running: reopening cuts a large state into slices, and the state log then holds the
    blocks of held-back changes it holds in its steady state (one block per slice), so
    every measured block merges a slice that has been filling. Both sizes run the same
    blocks, so that their histories (the transaction and event tables and indexes) are of
    the same length. Returns the number of slices."""
    chain = Chain.open(path, bench_genesis())
    slices = chain.store.state.state_slices
    if slices > 1 and slices + 2 > blocks:
        raise SystemExit(f"{slices} slices need at least {slices + 2} warm-up blocks")
    txs = signed_transfers(chain, accounts, senders, blocks, seed=5)
    commit_blocks(chain, txs, block_ms=1_000)
    chain.close()
    return slices


def measure(path: Path, accounts: int, senders: int, blocks: int) -> dict:
    """Reopen the prepared database and time `blocks` blocks of transfers."""
    started = time.perf_counter()
    chain = Chain.open(path, bench_genesis())
    reopen_s = time.perf_counter() - started
    keys = [seeded_key(f"sender-{index}") for index in range(senders)]
    txs = signed_transfers(chain, accounts, senders, blocks, seed=11)

    # Signatures: verified once, outside the timed part (the mempool's job).
    started = time.perf_counter()
    decoded = [decode_signed_tx(raw) for raw in txs]
    decode_per_s = len(decoded) / (time.perf_counter() - started)
    started = time.perf_counter()
    for tx in decoded:
        verify_tx_signatures(tx)
    verify_per_s = len(decoded) / (time.perf_counter() - started)
    verified = {tx.tx_id for tx in decoded}

    # The mempool hands the proposer decoded transactions; decoding is timed in
    # `decode_per_s` below, not here.
    # CPU time of the whole process (every thread) next to the wall time: where the two
    # differ, the block waited (fsync, or other processes on a shared machine).
    block_seconds = []
    block_cpu_seconds = []
    for start in range(0, len(decoded), BLOCK_SIZE):
        batch = decoded[start : start + BLOCK_SIZE]
        began, began_cpu = time.perf_counter(), time.process_time()
        pending = chain.build_block(
            batch, chain.last_time_ms + 1_000, keys[0].address, verified=verified
        )
        chain.commit(pending, b"bench-certificate")
        block_seconds.append(time.perf_counter() - began)
        block_cpu_seconds.append(time.process_time() - began_cpu)
        refused = [r for r in pending.receipts if r.code != Code.OK]
        if refused or pending.dropped or len(pending.receipts) != len(batch):
            raise SystemExit(f"benchmark transfer refused: {refused[:1] or pending.dropped[:1]}")
    slices, held_back = chain.store.state.state_slices, chain.store.state.held_back
    closing = time.process_time()
    chain.close()  # checkpoints what is left in the WAL: that CPU counts towards the mean
    block_cpu_seconds[-1] += time.process_time() - closing
    median = statistics.median(block_seconds)
    return {
        "accounts": accounts,
        "blocks": len(block_seconds),
        "tx_per_s": round(BLOCK_SIZE / median),
        "tx_per_s_mean": round(len(txs) / sum(block_seconds)),
        "block_ms_median": round(median * 1000, 1),
        "block_ms_mean": round(sum(block_seconds) / len(block_seconds) * 1000, 1),
        "cpu_ms_median": round(statistics.median(block_cpu_seconds) * 1000, 1),
        "cpu_ms_mean": round(sum(block_cpu_seconds) / len(block_cpu_seconds) * 1000, 1),
        "verify_per_s": round(verify_per_s),
        "decode_per_s": round(decode_per_s),
        "reopen_s": round(reopen_s, 2),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "state_slices": slices,
        "held_back": held_back,
        "db_mb": round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20),
    }


def _command(path: Path, accounts: int, blocks: int, phase: str, warm_up: int = 0) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--db",
        str(path),
        "--accounts",
        str(accounts),
        "--senders",
        str(min(accounts, 10_000)),
        "--blocks",
        str(blocks),
        "--phase",
        phase,
        "--warm-up",
        str(warm_up),
    ]


def prepare_size(accounts: int, blocks: int, warm_up: int, workdir: Path) -> Path:
    """Prepare one size in a fresh process; returns the closed database, kept pristine."""
    path = workdir / f"prepared-{accounts}.db"
    print(f"preparing {accounts:,} funded accounts ...", file=sys.stderr, flush=True)
    subprocess.run(_command(path, accounts, blocks, "prepare", warm_up), check=True)
    return path


def measure_size(prepared: Path, accounts: int, blocks: int, workdir: Path) -> dict:
    """Measure one size in a fresh process (clean RSS, real reopen) on a copy of the
    prepared database: the measurement commits blocks, so each round starts from the same
    state."""
    path = workdir / f"bench-{accounts}.db"
    for leftover in workdir.glob(path.name + "*"):
        leftover.unlink()
    for part in ("", "-wal"):  # a cleanly closed database has an empty WAL, if any
        if Path(f"{prepared}{part}").exists():
            shutil.copyfile(f"{prepared}{part}", f"{path}{part}")
    print(f"measuring {blocks} blocks of {BLOCK_SIZE} transfers ...", file=sys.stderr, flush=True)
    out = subprocess.run(
        _command(path, accounts, blocks, "measure"), check=True, stdout=subprocess.PIPE, text=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=20, help="timed blocks per size")
    parser.add_argument("--accounts", type=int, help="one size only (default: 1,000 and 1,000,000)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measurements per size, the sizes alternating; medians are reported",
    )
    parser.add_argument(
        "--warm-up",
        type=int,
        default=WARM_UP_BLOCKS,
        help="blocks of transfers run after preparing, before measuring (both sizes)",
    )
    parser.add_argument("--phase", choices=["prepare", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--senders", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.blocks < 1 or args.warm_up < 0:
        parser.error("--rounds and --blocks must be at least 1, --warm-up at least 0")
    if args.phase == "prepare":
        prepare(Path(args.db), args.accounts, args.senders, args.warm_up)
        return 0
    if args.phase == "measure":
        print(json.dumps(measure(Path(args.db), args.accounts, args.senders, args.blocks)))
        return 0
    sizes = [args.accounts] if args.accounts else [1_000, 1_000_000]
    with tempfile.TemporaryDirectory(prefix="khazana-bench-") as tmp:
        workdir = Path(tmp)
        prepared = {size: prepare_size(size, args.blocks, args.warm_up, workdir) for size in sizes}
        # The sizes alternate round by round, so a slow spell of this shared machine falls on
        # both rather than on one: the ratio is of medians measured side by side.
        runs: dict[int, list[dict]] = {size: [] for size in sizes}
        for round_ in range(args.rounds):
            print(f"round {round_ + 1} of {args.rounds}", file=sys.stderr, flush=True)
            for size in sizes:
                runs[size].append(measure_size(prepared[size], size, args.blocks, workdir))
    if args.accounts:
        print(json.dumps(summarise(runs[args.accounts])))
        return 0
    small, large = summarise(runs[1_000]), summarise(runs[1_000_000])
    summary = {
        "tx_per_s": small["tx_per_s"],
        "tx_per_s_1m": large["tx_per_s"],
        "ratio_1m": round(large["tx_per_s"] / small["tx_per_s"], 2),
        "verify_per_s": small["verify_per_s"],
        "rss_mb_1m": large["rss_mb"],
        "rss_mb": small["rss_mb"],
        "reopen_s_1m": large["reopen_s"],
        "db_mb_1m": large["db_mb"],
        "rounds": args.rounds,
        "tx_per_s_runs": small["tx_per_s_runs"],
        "tx_per_s_1m_runs": large["tx_per_s_runs"],
    }
    print(json.dumps(summary))
    return 0


def summarise(results: list[dict]) -> dict:
    """One size's rounds: the median of each rate, the largest memory, every run's rate."""

    def median(key: str) -> float:
        return statistics.median(result[key] for result in results)

    return {
        "accounts": results[0]["accounts"],
        "tx_per_s": round(median("tx_per_s")),
        "tx_per_s_runs": [result["tx_per_s"] for result in results],
        "verify_per_s": round(median("verify_per_s")),
        "reopen_s": round(median("reopen_s"), 2),
        "rss_mb": max(result["rss_mb"] for result in results),
        "db_mb": max(result["db_mb"] for result in results),
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
