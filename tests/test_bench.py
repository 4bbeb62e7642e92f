"""scripts/bench.py against a real one-validator localnet (`khazana localnet`, own process).

Few senders and a short, slow load keep it near 40 s. What is checked is behaviour, not
speed: the last stdout line is the JSON summary with every contract field, committed never
exceeds submitted, and every line of the acked file names a transaction the node's `tx` RPC
finds at exactly that height, as a transfer of the benchmark's cash.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.crypto import read_key_file
from ledger.tx import decode_signed_tx
from tests.node.netsupport import free_base_port, rpc

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_FIELDS = {
    "submitted": int,
    "committed": int,
    "tps": (int, float),
    "sig_bound_tps": int,
    "acked_file": str,
}


def start_localnet(
    home: Path, validators: int = 1, base_port: int | None = None
) -> subprocess.Popen:
    """`khazana localnet` as its own process (initialising `home` unless it holds homes)."""
    if base_port is None:
        base_port = free_base_port(validators)
    log = open(home.parent / "localnet.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "localnet", "--home", str(home), "--validators",
         str(validators), "--base-port", str(base_port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    log.close()
    deadline = time.monotonic() + 30
    while not (home / "localnet.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError((home.parent / "localnet.log").read_text()[-2000:])
        time.sleep(0.2)
    return proc


def stop_localnet(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # localnet stops its nodes
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_bench_on_one_validator(tmp_path):
    home = tmp_path / "net"
    home.mkdir()
    acked = tmp_path / "acked.jsonl"
    proc = start_localnet(home)
    try:
        out = subprocess.run(
            [sys.executable, "scripts/bench.py", "--localnet", str(home), "--duration", "4",
             "--rate", "40", "--senders", "120", "--sig-seconds", "0.5", "--drain-s", "10",
             "--out", str(acked)],
            cwd=ROOT, capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        for name, kind in CONTRACT_FIELDS.items():
            assert isinstance(summary[name], kind), (name, summary)
        for name in ("p50_ms", "p99_ms"):
            assert summary[name] is None or summary[name] >= 0, summary
        assert summary["submitted"] == 160  # 40 tx/s for 4 s, all sent
        assert 0 < summary["committed"] <= summary["submitted"], summary
        assert summary["sig_bound_tps"] > 0 and summary["validators"] == 1
        assert summary["acked_file"] == str(acked)
        assert "ministry" in summary["nodes"]
        assert "rate 40/s: sent" in out.stderr  # the progress line

        lines = acked.read_text().splitlines()
        assert len(lines) == summary["committed"]
        localnet = json.loads((home / "localnet.json").read_text())
        url = localnet["nodes"][0]["rpc"]
        institution = read_key_file(localnet["clients"]["central-bank"])  # reads every tx
        hashes = set()
        for line in lines:
            entry = json.loads(line)
            found = rpc(url, "tx", signer=institution, hash=entry["hash"])
            assert found["height"] == entry["height"], (entry, found)
            tx = decode_signed_tx(base64.b64decode(found["tx"]))
            assert tx.tx_id.hex() == entry["hash"]
            assert tx.body.op == "transfer" and tx.body.args["instrument"] == "BENCH-CASH"
            hashes.add(entry["hash"])
        assert len(hashes) == len(lines)  # no transaction acknowledged twice
    finally:
        stop_localnet(proc)


@pytest.mark.parametrize("values,fraction,expected", [([5, 1, 3, 2, 4], 0.5, 3), ([7], 0.99, 7)])
def test_percentile_nearest_rank(values, fraction, expected):
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchlib.measure import percentile

    assert percentile(values, fraction) == expected
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile([], 0.5) is None
