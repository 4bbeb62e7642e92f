"""`min_block_interval_ms`: under load a proposer cuts a non-empty block no sooner than this
long after its own last commit, so blocks gather transactions (fewer rounds of votes, fsyncs
and commits per transaction). Driven on trio's MockClock with the four in-process validators
of test_driver.py; block times are the proposers' (mock) clocks."""

from __future__ import annotations

import dataclasses

import trio

import tests.node.test_driver as harness
from ledger.block import decode_header
from ledger.codes import Code
from node.driver import DriverConfig


def block_gaps_under_load(tmp_path, monkeypatch, interval_ms: int) -> list[tuple[int, int]]:
    """(time gap to the previous block, height) of each block while a client submits one
    transaction every 20 ms."""
    monkeypatch.setattr(
        harness, "CONFIG", dataclasses.replace(harness.CONFIG, min_block_interval_ms=interval_ms)
    )
    tmp_path.mkdir()
    hub = harness.Hub()
    nodes = harness.make_nodes(tmp_path, hub)
    txs = [harness.instrument_tx(n, f"GAP{n}") for n in range(30)]

    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                for raw in txs:
                    assert (await nodes[0].driver.submit(raw)).code == Code.OK
                    await trio.sleep(0.02)
                await harness.wait_until(lambda: len(nodes[0].driver.mempool) == 0)
                nursery.cancel_scope.cancel()

    harness.run(main)
    chain = nodes[0].chain
    headers = [
        decode_header(chain.store.blocks.block(h).header) for h in range(1, chain.height + 1)
    ]
    gaps = [(b.time_ms - a.time_ms, b.height) for a, b in zip(headers, headers[1:], strict=False)]
    harness.agree(nodes, min(n.chain.height for n in nodes))
    for node in nodes:
        node.chain.close()
    return gaps


def test_blocks_under_load_are_spaced_by_the_interval(tmp_path, monkeypatch):
    gaps = block_gaps_under_load(tmp_path / "slow", monkeypatch, 200)
    assert gaps and all(gap >= 200 for gap, _ in gaps), gaps


def test_without_an_interval_blocks_follow_each_other_at_once(tmp_path, monkeypatch):
    # The control: the same load makes blocks closer together than 200 ms.
    gaps = block_gaps_under_load(tmp_path / "fast", monkeypatch, 0)
    assert any(gap < 200 for gap, _ in gaps), gaps


def test_the_interval_must_stay_below_the_propose_timeout():
    core = harness.CONFIG.core
    try:
        DriverConfig(core=core, heartbeat_ms=300, min_block_interval_ms=core.timeout_propose_ms)
    except ValueError as exc:
        assert "min_block_interval_ms" in str(exc)
    else:
        raise AssertionError("accepted an interval the others would time out on")
