"""Tests of the state log (ledger/state_log.py) and of the store reading and writing through it.

The expectation is always a plain dictionary: the state is what the blocks' changes, applied
in order, leave. Whatever the store holds back from its table, every read must give exactly
that dictionary, across reopenings, reslicing and a crash.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.state_log import (
    LogFormatError,
    StateOverlay,
    decode_log_row,
    encode_log_row,
    merge_sorted,
    slice_count_for,
)
from ledger.store import SCHEMA_VERSION, CorruptDatabaseError, Store
from tests.ledger.test_store import CHAIN, GENESIS, genesis_record, h, make_block

# Keys from a small alphabet, so that blocks often change, delete and re-create the same keys.
keys = st.binary(min_size=1, max_size=3).map(lambda k: bytes(b % 5 * 60 for b in k))
changes = st.dictionaries(keys, st.none() | st.binary(max_size=4), max_size=10)


def apply_to(model: dict[bytes, bytes], block: dict[bytes, bytes | None]) -> None:
    for key, value in block.items():
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value


def open_sliced(path: Path, rows_per_slice: int = 1, max_slices: int = 4) -> Store:
    return Store.open(
        path,
        chain_id=CHAIN,
        genesis_hash=GENESIS,
        rows_per_slice=rows_per_slice,
        max_slices=max_slices,
    )


# --------------------------------------------------------------------------- the schedule alone


class LogModel:
    """The store's side of the schedule with dictionaries for tables: what `plan` asks to
    write is written, then `apply` is called, as `Store.commit_block` does."""

    def __init__(self, boundaries: tuple[bytes, ...]) -> None:
        self.overlay = StateOverlay(boundaries)
        self.table: dict[bytes, bytes] = {}
        self.log: dict[int, bytes] = {}

    def commit(self, height: int, block: dict[bytes, bytes | None]) -> None:
        writes = self.overlay.plan(height, dict(sorted(block.items())))
        assert [key for key, _ in writes.merged] == sorted(key for key, _ in writes.merged)
        apply_to(self.table, dict(writes.merged))
        if writes.log_row is not None:
            self.log[height] = writes.log_row
        if writes.expired_height is not None:
            for old in [g for g in self.log if g <= writes.expired_height]:
                del self.log[old]
        self.overlay.apply(writes)

    def state(self) -> dict[bytes, bytes]:
        return dict(merge_sorted(sorted(self.table.items()), self.overlay.items()))


boundary_sets = st.lists(keys, max_size=4, unique=True).map(lambda b: tuple(sorted(b)))


@settings(max_examples=150)
@given(boundaries=boundary_sets, blocks=st.lists(changes, max_size=14))
def test_the_table_with_the_overlay_is_always_the_state_and_replay_rebuilds_the_overlay(
    boundaries, blocks
):
    log = LogModel(boundaries)
    model: dict[bytes, bytes] = {}
    n = len(boundaries) + 1
    for height, block in enumerate(blocks):
        log.commit(height, block)
        apply_to(model, block)
        assert log.state() == model
        # The log keeps at most n - 1 rows, the newest ones.
        assert all(height - n + 2 <= g <= height for g in log.log)
        # What a reopened store rebuilds from the log is the overlay it had.
        replayed = StateOverlay(boundaries)
        replayed.replay(height, sorted(log.log.items()))
        assert replayed.items() == log.overlay.items()
    # n blocks without changes merge every slice: nothing is held back any more.
    start = len(blocks)
    for height in range(start, start + n):
        log.commit(height, {})
    assert log.overlay.items() == [] and log.log == {}
    assert log.table == model


def test_one_slice_writes_every_change_into_the_table_and_logs_nothing():
    overlay = StateOverlay()
    writes = overlay.plan(7, {b"b": b"2", b"a": None})
    assert writes.merged == [(b"a", None), (b"b", b"2")]
    assert writes.log_row is None and writes.expired_height is None and writes.logged == []


def test_a_block_merges_its_own_slice_and_holds_back_the_rest():
    overlay = StateOverlay((b"m",))  # slice 0: keys < b"m"; slice 1: the rest
    writes = overlay.plan(4, {b"a": b"1", b"z": b"2"})  # 4 % 2 == 0: slice 0 merges
    assert writes.merged == [(b"a", b"1")]
    assert decode_log_row(writes.log_row) == [(b"z", b"2")]
    assert writes.expired_height == 3
    overlay.apply(writes)
    assert overlay.lookup(b"z") == (True, b"2") and overlay.lookup(b"a") == (False, None)
    writes = overlay.plan(5, {b"z": None})  # slice 1 merges: the deletion reaches the table
    assert writes.merged == [(b"z", None)] and writes.log_row is None
    overlay.apply(writes)
    assert len(overlay) == 0


def test_replay_keeps_what_no_merge_has_reached_and_items_in_looks_only_at_the_range():
    overlay = StateOverlay((b"c", b"f"))  # three slices: [.., c), [c, f), [f, ..)
    overlay.replay(
        1,
        [
            (0, encode_log_row({b"d": None, b"g": b"3"})),  # block 0 merged slice 0
            (1, encode_log_row({b"a": b"1", b"h": b"4"})),  # block 1 merged slice 1
        ],
    )
    # b"d" (slice 1) reached the table at block 1; slice 2 has not been merged since block 0.
    assert overlay.items() == [(b"a", b"1"), (b"g", b"3"), (b"h", b"4")]
    assert overlay.items_in(b"b", None) == [(b"g", b"3"), (b"h", b"4")]
    assert overlay.items_in(b"a", b"g") == [(b"a", b"1")]
    assert overlay.items_in(b"d", b"g") == []


def test_replay_refuses_rows_that_cannot_be_in_the_log():
    with pytest.raises(LogFormatError, match="cannot be in the log"):
        StateOverlay((b"m",)).replay(10, [(5, encode_log_row({b"a": b"1"}))])
    with pytest.raises(LogFormatError, match="cannot be in the log"):
        StateOverlay().replay(10, [(10, encode_log_row({b"a": b"1"}))])
    for bad in (b"\xc1", encode_log_row({b"a": b"1"})[:-1], b"\x92\x01\x02", b"\x91\xc4\x01a"):
        with pytest.raises(LogFormatError):
            decode_log_row(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 64, 243, 244, 256])
def test_any_n_consecutive_blocks_merge_every_slice_once_far_apart(n):
    overlay = StateOverlay(tuple(bytes([1 + i // 256, i % 256]) for i in range(n - 1)))
    assert overlay.slice_count == n
    for start in (0, 5, 1000):
        merged = [overlay.merged_at(height) for height in range(start, start + n)]
        assert sorted(merged) == list(range(n))
        for index in range(n):
            # last_merge is the schedule read backwards.
            last = overlay.last_merge(start + n - 1, index)
            assert overlay.merged_at(last) == index and start <= last < start + n
    if n >= 64:  # consecutive blocks are at least a quarter of the key space apart
        steps = {abs(overlay.merged_at(h + 1) - overlay.merged_at(h)) for h in range(n)}
        assert min(min(step, n - step) for step in steps) >= n // 4


def test_slice_counts_follow_the_row_count():
    assert slice_count_for(0) == 1
    assert slice_count_for(10_000, rows_per_slice=8192) == 1
    assert slice_count_for(2_000_000, rows_per_slice=8192, max_slices=256) == 244
    assert slice_count_for(10**9, rows_per_slice=8192, max_slices=256) == 256


# --------------------------------------------------------------------------- the store


events = st.lists(st.one_of(changes, st.just("reopen")), min_size=1, max_size=16)


@settings(max_examples=40, deadline=None)
@given(steps=events, prefix=keys | st.just(b""), limit=st.none() | st.integers(0, 5))
def test_every_read_of_a_sliced_store_is_the_state_across_reopenings(steps, prefix, limit):
    model: dict[bytes, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "n.db"
        s = open_sliced(path)
        try:
            s.commit_block(genesis_record({bytes([60 * i]): b"g" for i in range(5)}))
            apply_to(model, {bytes([60 * i]): b"g" for i in range(5)})
            height = 0
            for step in steps:
                if step == "reopen":
                    s.close()
                    s = open_sliced(path)  # reslices when the row count moved enough
                    continue
                height += 1
                s.commit_block(make_block(height, n_txs=1, changes=step))
                apply_to(model, step)
            for key in {k for step in steps if step != "reopen" for k in step} | set(model):
                assert s.state.get_state(key) == model.get(key)
            assert list(s.state.iter_state()) == sorted(model.items())
            expected = sorted((k, v) for k, v in model.items() if k.startswith(prefix))
            paged, after = [], None
            while page := s.state.scan_prefix(prefix, limit=limit or 2, after=after):
                paged.extend(page)
                after = page[-1][0]
            assert paged == expected
            assert s.state.scan_prefix(prefix, limit=limit) == expected[:limit]
            assert s.db.integrity_check() == ["ok"]
        finally:
            s.close()


def test_a_large_state_holds_changes_back_and_the_log_stays_bounded(tmp_path):
    path = tmp_path / "n.db"
    state = {b"k" + h(i)[:6]: h("v", i) for i in range(400)}
    with open_sliced(path, rows_per_slice=50, max_slices=8) as s:
        s.commit_block(genesis_record(state))
        assert s.state.state_slices == 1  # an empty database starts with one slice
    with open_sliced(path, rows_per_slice=50, max_slices=8) as s:
        assert s.state.state_slices == 8
        model = dict(state)
        for height in range(1, 30):
            block = {b"k" + h(height * 7 + i)[:6]: h("w", height, i) for i in range(40)}
            s.commit_block(make_block(height, n_txs=1, changes=block))
            apply_to(model, block)
            assert 0 < s.state.held_back < 8 * 40
            assert list(s.state.iter_state()) == sorted(model.items())
    raw = sqlite3.connect(path)
    log_heights = [g for (g,) in raw.execute("SELECT height FROM state_log ORDER BY height")]
    in_table = dict(raw.execute("SELECT key, value FROM state"))
    raw.close()
    assert log_heights and log_heights[0] >= 29 - 8 + 2 and log_heights[-1] == 29
    assert in_table != model  # some changes really are held back in the log
    # Reopened with a small-state setting, the store merges everything back (one slice).
    with open_sliced(path, rows_per_slice=10_000, max_slices=8) as s:
        assert s.state.state_slices == 1 and s.state.held_back == 0
        assert list(s.state.iter_state()) == sorted(model.items())
    raw = sqlite3.connect(path)
    assert dict(raw.execute("SELECT key, value FROM state")) == model
    assert raw.execute("SELECT count(*) FROM state_log").fetchone() == (0,)
    raw.close()


def test_a_snapshot_sees_held_back_changes_of_its_height_only(tmp_path):
    path = tmp_path / "n.db"
    with open_sliced(path) as s:
        s.commit_block(genesis_record({bytes([i]): b"old" for i in range(1, 40)}))
    with open_sliced(path) as s:
        s.commit_block(make_block(1, changes={bytes([i]): b"mid" for i in range(1, 40)}))
        assert s.state.held_back > 0
        snapshot = s.state.state_snapshot()
        first = snapshot.fetch(5)
        s.commit_block(make_block(2, changes={bytes([i]): b"new" for i in range(1, 40)}))
        rest = []
        while batch := snapshot.fetch(5):
            rest.extend(batch)
        snapshot.close()
        assert first + rest == [(bytes([i]), b"mid") for i in range(1, 40)]
        assert s.state.get_state(b"\x07") == b"new"


def test_a_damaged_log_row_stops_the_store_from_opening(tmp_path):
    path = tmp_path / "n.db"
    with open_sliced(path) as s:
        s.commit_block(genesis_record({bytes([i]): b"v" for i in range(1, 40)}))
    with open_sliced(path) as s:
        s.commit_block(make_block(1, changes={bytes([i]): b"w" for i in range(1, 40)}))
    raw = sqlite3.connect(path)
    assert raw.execute("UPDATE state_log SET changes = x'c1'").rowcount == 1
    raw.commit()
    raw.close()
    with pytest.raises(CorruptDatabaseError, match="state log"):
        open_sliced(path)
    # The refusal released the database: opening again is refused for the same reason, not
    # because the first attempt still holds the lock.
    with pytest.raises(CorruptDatabaseError, match="state log"):
        open_sliced(path)


def test_a_version_1_database_gains_the_state_log(tmp_path):
    path = tmp_path / "n.db"
    with Store.open(path, chain_id=CHAIN, genesis_hash=GENESIS) as s:
        s.commit_block(genesis_record({b"a": b"1"}))
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE state_log")
    raw.execute("UPDATE meta SET value = ? WHERE key = 'store.schema_version'", (b"1",))
    raw.commit()
    raw.close()
    with Store.open(path, chain_id=CHAIN, genesis_hash=GENESIS) as s:
        assert s.state.get_state(b"a") == b"1"
        s.commit_block(make_block(1, changes={b"b": b"2"}))
    raw = sqlite3.connect(path)
    version = raw.execute("SELECT value FROM meta WHERE key = 'store.schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION).encode(),)
    assert raw.execute("SELECT count(*) FROM state_log").fetchone() == (0,)
    raw.close()
