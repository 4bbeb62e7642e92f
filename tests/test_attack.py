"""scripts/attack.py, briefly: two cheap attacks on a network of its own, then its numbers
checked against the chain the nodes left on disk.

This does not ask whether today's node resists the attacks (the defences are measured by the
full run, docs/RELIABILITY.md); it asks whether the tool measures what it says: the JSON
summary has the contract's shape, every count adds up, every committed institution
transaction is in every node's store at the height the tool reported, and each attack's
longest block gap is the one recomputed here from the stored block headers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.block import decode_header
from ledger.genesis import genesis_hash
from ledger.store import Store

ROOT = Path(__file__).resolve().parents[1]
NODES = ("ministry", "central-bank", "regulator", "auditor")


def stored_chain(home: Path, genesis: dict) -> tuple[dict[int, int], dict[str, int]]:
    """A stopped node's block times (height -> ms) and where each transaction is."""
    store = Store.open(
        home / "data" / "node.db", chain_id=genesis["chain_id"], genesis_hash=genesis_hash(genesis)
    )
    try:
        times, where = {}, {}
        for height in range(1, (store.blocks.latest_height() or 0) + 1):
            times[height] = decode_header(store.blocks.block(height).header).time_ms
            for record in store.blocks.block_txs(height):
                where[record.tx_id.hex()] = height
        return times, where
    finally:
        store.close()


def longest_gap(times: dict[int, int], begin: int, end: int) -> int:
    ordered = [times[h] for h in sorted(times)]
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False) if b > begin and a < end]
    return max(gaps, default=0)


@pytest.mark.slow
def test_attack_summary_is_measured(tmp_path):
    net = tmp_path / "net"
    out = subprocess.run(
        [sys.executable, "scripts/attack.py", "--localnet", str(net), "--duration", "10",
         "--attacks", "foreign_host,forged_envelopes", "--idle-s", "3",
         "--institution-interval-s", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ok"] == (out.returncode == 0)
    for key, kind in (
        ("attacks", list),
        ("max_rss_mb", dict),
        ("longest_block_gap_s", (int, float)),
        ("institution_txs", dict),
        ("crashes", int),
        ("ok", bool),
    ):
        assert isinstance(summary[key], kind), (key, summary)
    assert [a["name"] for a in summary["attacks"]] == ["foreign_host", "forged_envelopes"]
    assert set(summary["max_rss_mb"]) == set(NODES)
    assert all(10 < mb < summary["memory_budget_mb"] * 10 for mb in summary["max_rss_mb"].values())
    assert summary["crashes"] == len(summary["crash_details"])

    # Every request is counted once, under one outcome.
    foreign, forged = summary["attacks"]
    assert foreign["sent"]["requests"] == sum(foreign["answers"].values()) == 80
    for kind, counts in foreign["by_kind"].items():
        assert foreign["answered"][kind] == counts.get("ok", 0)
    assert forged["sent"]["requests"] == sum(forged["answers"].values()) > 0
    assert sum(sum(c.values()) for c in forged["by_kind"].values()) == forged["sent"]["requests"]
    assert "ok" not in forged["answers"]  # no forged envelope is ever admitted
    assert all(60_000 < size <= 65_536 for size in forged["envelope_bytes"].values())

    # The institutions' transactions: every one the tool calls committed is in every node's
    # store, exactly where it said; none is counted twice.
    localnet = json.loads((net / "localnet.json").read_text())
    assert set(localnet["clients"]) >= {"central-bank", "regulator"}
    genesis = json.loads((net / "ministry" / "genesis.json").read_text())
    institutions = summary["institution_txs"]
    lines = [json.loads(x) for x in Path(institutions["file"]).read_text().splitlines()]
    assert len(lines) == institutions["committed"] <= institutions["sent"]
    assert institutions["sent"] >= 10  # 0.5 s apart over the attacks and the pauses
    assert len({line["hash"] for line in lines}) == len(lines)
    assert institutions["failed"] == sum(1 for line in lines if line["code"] != 0)
    chains = {name: stored_chain(net / name, genesis) for name in NODES}
    for line in lines:
        for name, (_, where) in chains.items():
            assert where.get(line["hash"]) == line["height"], (name, line)
    per_attack = sum(a["institution_txs"]["sent"] for a in summary["attacks"])
    assert per_attack <= institutions["sent"]

    # Block gaps: recomputed from the stored headers (the proposer's clock), per attack.
    times, _ = chains["ministry"]
    assert summary["heights"] <= len(times)
    longest = 0
    for attack in summary["attacks"]:
        begin, end = attack["window_ms"]
        gap = longest_gap(times, begin, end)
        assert attack["longest_block_gap_s"] == round(gap / 1000, 2), attack
        assert attack["blocks"] == sum(1 for t in times.values() if begin <= t <= end)
        assert attack["recovery_s"] is None or 0 <= attack["recovery_s"] <= 10
        longest = max(longest, gap)
    assert summary["longest_block_gap_s"] == round(longest / 1000, 2)
    assert summary["gap_bound_s"] == pytest.approx(3 * summary["idle_interval_s"], abs=0.01)
    assert 0.2 < summary["idle_interval_s"] < 5  # the heartbeat (1 s) on an idle network
