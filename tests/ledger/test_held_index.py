"""Tests of the held-back index rows (ledger/held_index.py) and the store's two indexes.

The expectation is the plain index: every (key, position) row of every block. The rows
in the table plus the held-back ones must always be exactly that, the held-back rows of an
account must all be newer than its rows in the table, and replaying the last blocks must
rebuild the held-back rows as they were.
"""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.held_index import HeldBackIndex
from ledger.store import InvalidRecordError, Store, TxRecord
from tests.ledger.test_store import CHAIN, GENESIS, addr, genesis_record, make_block

accounts = st.sampled_from([bytes([first]) + b"\x00" * 19 for first in (0, 1, 70, 128, 200, 255)])
blocks = st.lists(st.lists(accounts, max_size=6, unique=True), max_size=20)


@settings(max_examples=150)
@given(slices=st.integers(1, 8), block_accounts=blocks)
def test_table_plus_held_back_rows_are_the_index_and_replay_rebuilds_them(slices, block_accounts):
    index = HeldBackIndex(slices)
    table: set[tuple[bytes, int]] = set()
    every: list[tuple[int, bytes, int]] = []
    for height, names in enumerate(block_accounts):
        rows = sorted((account, height * 100 + i) for i, account in enumerate(names))
        every += [(height, account, position) for account, position in rows]
        writes = index.plan(height, rows)
        assert writes.merged == sorted(writes.merged)
        table.update(writes.merged)
        index.apply(writes)
        held = set(index.all_rows())
        assert not held & table and held | table == {(a, p) for _, a, p in every}
        for account in {a for a, _ in held}:
            indexed = [p for a, p in table if a == account]
            assert min(index.positions(account, 0, 10**9)) > max(indexed, default=-1)
        replayed = HeldBackIndex(slices)
        replayed.replay(height, [r for r in every if r[0] >= height - slices + 2])
        assert sorted(replayed.all_rows()) == sorted(held)


def test_changing_the_slice_count_indexes_every_held_back_row_first(tmp_path):
    path = tmp_path / "n.db"

    def open_with(slices: int) -> Store:
        return Store.open(path, chain_id=CHAIN, genesis_hash=GENESIS, index_slices=slices)

    with open_with(8) as s:
        s.commit_block(genesis_record())
        for height in range(1, 6):
            s.commit_block(make_block(height, n_txs=4))
        expected = s.indexes.events(account=addr(2), limit=1000)
        assert len(s.indexes.account_index) > 0
    raw = sqlite3.connect(path)
    indexed_before = raw.execute("SELECT count(*) FROM event_accounts").fetchone()[0]
    raw.close()
    with open_with(1) as s:
        assert len(s.indexes.account_index) == 0
        assert s.indexes.events(account=addr(2), limit=1000) == expected
    raw = sqlite3.connect(path)
    # 5 blocks x 4 events x 2 accounts: all in the table now.
    assert raw.execute("SELECT count(*) FROM event_accounts").fetchone()[0] == 40 > indexed_before
    raw.close()
    with open_with(8) as s:
        s.commit_block(make_block(6, n_txs=4))
        assert s.indexes.events(account=addr(2), limit=1000)[: len(expected)] == expected


def test_every_transaction_is_found_by_id_and_a_stored_id_is_refused(tmp_path):
    path = tmp_path / "n.db"

    def open_with(slices: int) -> Store:
        return Store.open(path, chain_id=CHAIN, genesis_hash=GENESIS, index_slices=slices)

    blocks = [make_block(height, n_txs=6) for height in range(1, 12)]
    with open_with(8) as s:
        s.commit_block(genesis_record())
        for block in blocks[:6]:
            s.commit_block(block)
        held = {tx_id for tx_id, _ in s.indexes.tx_index.all_rows()}
        stored = {tx.tx_id for block in blocks[:6] for tx in block.txs}
        assert held and stored - held  # some ids only in memory (and txs), some in tx_ids
        # An id stored in an earlier block, whether its index row is held back or in the
        # table, or an id twice in one block: the block is refused and nothing is written.
        for reused in (min(held), min(stored - held)):
            bad = make_block(7, n_txs=2)
            clash = TxRecord(reused, 7, 1, b"raw", 0, b"receipt")
            bad = dataclasses.replace(bad, txs=(bad.txs[0], clash))
            with pytest.raises(InvalidRecordError, match="already stored"):
                s.commit_block(bad)
        twice = make_block(7, n_txs=2)
        twice = dataclasses.replace(
            twice, txs=(twice.txs[0], dataclasses.replace(twice.txs[0], index=1))
        )
        with pytest.raises(InvalidRecordError, match="already stored"):
            s.commit_block(twice)
        assert s.blocks.latest_height() == 6
    for slices in (8, 8, 1):  # a reopening replays them; a new slice count indexes them all
        with open_with(slices) as s:
            if s.blocks.latest_height() == 6:
                for block in blocks[6:]:
                    s.commit_block(block)
            for block in blocks:
                assert [s.blocks.tx(tx.tx_id) for tx in block.txs] == list(block.txs)
            assert s.blocks.tx(b"\x07" * 32) is None and s.blocks.tx(b"") is None
