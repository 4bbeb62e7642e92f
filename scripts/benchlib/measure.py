"""What the benchmark measures besides the load itself.

- `signature_bound`: the machine's own limit, `cores x verifications/s/core / validators`.
  One process per core verifies Ed25519 signatures with `ledger.crypto.verify_signature` for
  `seconds`, all at once (so they compete for the cores as the validators do), each over a
  message the size of a signed transfer; the rates are summed.
- `ProcSample`: CPU seconds and resident memory of a node process, from /proc/<pid>.
- `disk_bytes`: a node's SQLite database plus its WAL.
- `percentile`: nearest-rank percentiles of latencies.
- `plot`: throughput against offered load and latency percentiles (matplotlib, optional).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERIFY_CHILD = """
import json, sys, time
from ledger.crypto import generate_key, verify_signature
key = generate_key(bytes(32))
message = bytes(range(200))  # about the signed bytes of a transfer
signature = key.sign(message)
seconds = float(sys.argv[1])
count, began = 0, time.perf_counter()
while (elapsed := time.perf_counter() - began) < seconds:
    for _ in range(100):
        if not verify_signature(key.public_key, message, signature):
            raise SystemExit("signature did not verify")
    count += 100
print(json.dumps({"per_s": count / elapsed}))
"""


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclass(frozen=True, slots=True)
class SignatureBound:
    cores: int
    per_core: int  # median verifications per second of one core, all cores busy
    validators: int

    @property
    def tps(self) -> int:
        return self.cores * self.per_core // self.validators


def signature_bound(validators: int, seconds: float = 2.0) -> SignatureBound:
    n = cores()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", VERIFY_CHILD, str(seconds)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    rates = []
    try:
        for child in children:
            out, _ = child.communicate(timeout=seconds + 30)
            if child.returncode != 0:
                raise RuntimeError(f"signature-rate child failed (exit {child.returncode})")
            rates.append(json.loads(out.strip().splitlines()[-1])["per_s"])
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    rates.sort()
    return SignatureBound(n, round(rates[len(rates) // 2]), max(1, validators))


@dataclass(frozen=True, slots=True)
class ProcSample:
    cpu_s: float  # user + system CPU seconds so far
    rss_mb: float
    taken_at: float  # time.monotonic()

    @classmethod
    def read(cls, pid: int) -> ProcSample | None:
        """None when the process is gone (or /proc cannot be read)."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu_s = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        rss_kb = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
        return cls(cpu_s, rss_kb / 1024, time.monotonic())


def cpu_percent(before: ProcSample | None, after: ProcSample | None) -> float | None:
    if before is None or after is None or after.taken_at <= before.taken_at:
        return None
    return 100 * (after.cpu_s - before.cpu_s) / (after.taken_at - before.taken_at)


def disk_bytes(home: str | Path) -> int:
    """The node's database and WAL (docs/NODE.md: HOME/data/node.db, -wal)."""
    data = Path(home) / "data"
    return sum(
        (data / name).stat().st_size
        for name in ("node.db", "node.db-wal")
        if (data / name).exists()
    )


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(round(fraction * 1000)) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


def plot(steps: list[dict], sig_bound_tps: int, path: str) -> None:
    """Two panels: committed tx/s against offered tx/s, and p50/p99 latency against offered."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "bench: --plot needs matplotlib, which is an optional extra: "
            "`.venv/bin/pip install matplotlib` (or `pip install -e .[plot]`)"
        ) from None
    offered = [s["offered_tps"] for s in steps]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(offered, [s["tps"] for s in steps], "o-", label="committed")
    left.plot(offered, offered, ":", color="grey", label="offered = committed")
    left.axhline(sig_bound_tps, color="red", linestyle="--", label="signature bound")
    left.set_xlabel("offered load (tx/s)")
    left.set_ylabel("committed throughput (tx/s)")
    left.legend()
    left.grid(alpha=0.3)
    right.plot(offered, [s["p50_ms"] for s in steps], "o-", label="p50")
    right.plot(offered, [s["p99_ms"] for s in steps], "s-", label="p99")
    right.set_xlabel("offered load (tx/s)")
    right.set_ylabel("submit -> commit latency (ms)")
    right.legend()
    right.grid(alpha=0.3)
    figure.suptitle("Khazana: throughput and latency against offered load")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
