"""Tests of the SQLite store (ledger/store.py).

The store never interprets what it stores, so these tests use arbitrary bytes: blocks, records
and state values are derived from (height, index) by hashing, so an expected database can be
recomputed independently of the store and compared with what it reads back.

Run as a script (`python tests/ledger/test_store.py --bench`) to measure commit time per block.
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.codes import Code
from ledger.state_table import _prefix_end
from ledger.store import (
    SCHEMA_VERSION,
    AsyncStore,
    BlockRecord,
    CorruptDatabaseError,
    EventRecord,
    ForeignDatabaseError,
    HeightError,
    InvalidRecordError,
    SchemaVersionError,
    Store,
    StoredBlock,
    StoreError,
    StoreLockedError,
    TxRecord,
)

CHAIN = "khazana-test"
GENESIS = hashlib.blake2b(b"genesis", digest_size=32).digest()
ROOT = Path(__file__).resolve().parents[2]


def h(*parts: object) -> bytes:
    """32 arbitrary but reproducible bytes."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=32).digest()


def addr(n: int) -> bytes:
    return h("account", n)[:20]


def open_store(path: Path) -> Store:
    return Store.open(path, chain_id=CHAIN, genesis_hash=GENESIS)


def genesis_record(changes: dict[bytes, bytes | None] | None = None) -> BlockRecord:
    return BlockRecord(
        height=0,
        hash=GENESIS,
        header=b"",
        block=b"genesis document",
        commit=b"",
        app_hash=h("app", 0),
        changes=changes
        if changes is not None
        else {b"g/" + bytes([i]): h("g", i) for i in range(5)},
    )


def make_block(
    height: int,
    n_txs: int = 3,
    changes: dict[bytes, bytes | None] | None = None,
    events: tuple[EventRecord, ...] | None = None,
    meta: dict[str, bytes] | None = None,
) -> BlockRecord:
    txs = tuple(
        TxRecord(
            tx_id=h("tx", height, i),
            height=height,
            index=i,
            raw=h("raw", height, i) * 6,
            code=i % 3,
            receipt=h("receipt", height, i),
        )
        for i in range(n_txs)
    )
    if events is None:
        events = tuple(
            EventRecord(
                height=height,
                tx_index=i,
                event_index=0,
                type="transfer",
                accounts=(addr(i), addr(i + 1)),
                instruments=("KZT",),
                data=h("event", height, i),
            )
            for i in range(n_txs)
        )
    if changes is None:
        changes = {b"b/" + h(height, i)[:8]: h("v", height, i) for i in range(n_txs)}
    return BlockRecord(
        height=height,
        hash=h("block", height),
        header=h("header", height),
        block=b"".join(tx.raw for tx in txs),
        commit=h("commit", height) * 3,
        app_hash=h("app", height),
        txs=txs,
        events=events,
        changes=changes,
        meta=meta or {},
    )


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "node.db") as s:
        yield s


# --------------------------------------------------------------------------- opening


def test_the_store_parts_stay_small_owners():
    """Issue 19: the store is split into parts, none of them a god object -- no class over 25
    methods, no constructor over 6 parameters, every module under 800 lines with a docstring
    saying what it owns."""
    import ast

    for name in (
        "store",
        "store_records",
        "store_schema",
        "block_log",
        "state_table",
        "store_indexes",
    ):
        path = ROOT / "ledger" / f"{name}.py"
        source = path.read_text()
        assert len(source.splitlines()) < 800, path
        tree = ast.parse(source)
        assert "owns" in (ast.get_docstring(tree) or ""), path
        for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
            methods = [n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
            assert len(methods) <= 25, (path, cls.name, len(methods))
            for init in (m for m in methods if m.name == "__init__"):
                params = len(init.args.args) - 1 + len(init.args.kwonlyargs)
                assert params <= 6, (path, cls.name, params)


def test_every_connection_has_the_durability_pragmas(store):
    conn = store.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    with store.state.state_snapshot() as snapshot:
        assert snapshot._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_a_new_store_is_empty_and_remembers_its_chain(store):
    assert store.blocks.latest_height() is None
    assert store.db.chain_id() == CHAIN
    assert store.db.genesis_hash() == GENESIS
    assert store.blocks.block(0) is None and store.blocks.app_hash(0) is None
    assert list(store.state.iter_state()) == []
    assert store.load_consensus_record() is None


def test_another_chain_id_is_refused_with_both_names(tmp_path):
    open_store(tmp_path / "n.db").close()
    with pytest.raises(ForeignDatabaseError, match="khazana-test.*other-chain"):
        Store.open(tmp_path / "n.db", chain_id="other-chain", genesis_hash=GENESIS)


def test_another_genesis_is_refused(tmp_path):
    open_store(tmp_path / "n.db").close()
    with pytest.raises(ForeignDatabaseError, match=GENESIS.hex()):
        Store.open(tmp_path / "n.db", chain_id=CHAIN, genesis_hash=b"\x02" * 32)
    # The refusal wrote nothing: the right chain still opens.
    open_store(tmp_path / "n.db").close()


def test_a_newer_schema_is_refused(tmp_path):
    open_store(tmp_path / "n.db").close()
    raw = sqlite3.connect(tmp_path / "n.db")
    newer = str(SCHEMA_VERSION + 1).encode()
    raw.execute("UPDATE meta SET value = ? WHERE key = 'store.schema_version'", (newer,))
    raw.commit()
    raw.close()
    with pytest.raises(SchemaVersionError, match="newer"):
        open_store(tmp_path / "n.db")


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "n.db").write_bytes(b"this is not an SQLite file" * 200)
    with pytest.raises(CorruptDatabaseError):
        open_store(tmp_path / "n.db")


def test_an_sqlite_database_of_another_program_is_refused(tmp_path):
    raw = sqlite3.connect(tmp_path / "n.db")
    raw.execute("CREATE TABLE customers (name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(CorruptDatabaseError, match="not a Khazana store"):
        open_store(tmp_path / "n.db")


def test_damaged_pages_are_reported_as_a_corrupt_database(tmp_path):
    path = tmp_path / "n.db"
    with open_store(path) as s:
        s.commit_block(genesis_record({h("k", i): h("v", i) for i in range(2000)}))
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) > 4 * page_size
    # Keep page 1 (the SQLite header and schema) and scribble over every other page.
    data[page_size:] = bytes((i * 7 + 3) % 256 for i in range(len(data) - page_size))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDatabaseError, match="malformed"):
        open_store(path)


def test_a_missing_folder_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot open"):
        open_store(tmp_path / "no such folder" / "n.db")


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path):
    first = open_store(tmp_path / "n.db")
    with pytest.raises(StoreLockedError):
        open_store(tmp_path / "n.db")
    first.close()
    open_store(tmp_path / "n.db").close()


def test_store_errors_are_one_family():
    for cls in (
        CorruptDatabaseError,
        ForeignDatabaseError,
        SchemaVersionError,
        StoreLockedError,
        HeightError,
        InvalidRecordError,
    ):
        assert issubclass(cls, StoreError) and issubclass(StoreError, Exception)


def test_a_closed_store_refuses_calls(tmp_path):
    s = open_store(tmp_path / "n.db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.blocks.latest_height()


# --------------------------------------------------------------------------- writing blocks


def test_a_committed_block_reads_back_whole(store):
    store.commit_block(genesis_record())
    block = make_block(1, n_txs=4, meta={"node.last_block_time": b"\x01\x02"})
    store.commit_block(block)

    assert store.blocks.latest_height() == 1
    expected = StoredBlock(1, block.hash, block.header, block.block, block.app_hash)
    assert store.blocks.block(1) == expected
    assert store.blocks.block_by_hash(block.hash) == expected
    assert store.blocks.block_by_hash(h("no such block")) is None
    assert store.blocks.commit(1) == block.commit
    assert store.blocks.app_hash(1) == block.app_hash
    assert store.blocks.app_hash(0) == h("app", 0)
    assert store.blocks.block(0).block == b"genesis document"
    for tx in block.txs:
        assert store.blocks.tx(tx.tx_id) == tx
    assert store.blocks.tx(h("unknown")) is None
    assert store.blocks.block_txs(1) == list(block.txs)
    assert store.blocks.block_txs(0) == [] and store.blocks.block_txs(2) == []
    assert store.indexes.events(from_height=1, to_height=1) == list(block.events)
    assert store.db.get_meta("node.last_block_time") == b"\x01\x02"
    for key, value in block.changes.items():
        assert store.state.get_state(key) == value


@pytest.mark.parametrize("height", [-1, 2, 2**63, 10**30, "1", None])
def test_reads_at_heights_no_block_has_find_nothing(store, height):
    store.commit_block(genesis_record())
    store.commit_block(make_block(1))
    assert store.blocks.block(height) is None
    assert store.blocks.app_hash(height) is None
    assert store.blocks.commit(height) is None
    assert store.blocks.block_txs(height) == []


@pytest.mark.parametrize(("low", "high"), [(2, None), (10**30, None), (None, -1), (2**62, 2**70)])
def test_event_queries_outside_the_chain_find_nothing(store, low, high):
    store.commit_block(genesis_record())
    store.commit_block(make_block(1))
    assert store.indexes.events(from_height=low, to_height=high) == []
    assert len(store.indexes.events(from_height=0, to_height=10**30)) == 3


def test_state_changes_update_and_delete(store):
    store.commit_block(genesis_record({b"a": b"1", b"b": b"2", b"c": b"3"}))
    store.commit_block(make_block(1, changes={b"a": b"10", b"b": None, b"d": b"4"}))
    assert list(store.state.iter_state()) == [(b"a", b"10"), (b"c", b"3"), (b"d", b"4")]
    # Deleting a key that does not exist is not an error (the executor's view is authoritative).
    store.commit_block(make_block(2, changes={b"zz": None}))
    assert store.state.get_state(b"b") is None and store.state.get_state(b"zz") is None


@pytest.mark.parametrize("height", [0, 2, 5])
def test_a_height_that_is_not_the_next_is_refused_and_nothing_is_written(store, height):
    store.commit_block(genesis_record())
    before = list(store.state.iter_state())
    with pytest.raises(HeightError, match=f"{height} is not the next height 1"):
        store.commit_block(make_block(height))
    assert store.blocks.latest_height() == 0
    assert list(store.state.iter_state()) == before
    assert store.indexes.events() == []


def test_the_first_record_is_the_genesis_at_height_0(store):
    with pytest.raises(HeightError, match="next height 0"):
        store.commit_block(make_block(1))
    wrong = BlockRecord(
        height=0, hash=h("not genesis"), header=b"", block=b"", commit=b"", app_hash=b"x"
    )
    with pytest.raises(InvalidRecordError, match="genesis hash"):
        store.commit_block(wrong)
    assert store.blocks.latest_height() is None


def test_a_stored_tx_id_rolls_the_whole_block_back(store):
    store.commit_block(genesis_record())
    store.commit_block(make_block(1))
    reused = make_block(2)
    clash = TxRecord(h("tx", 1, 0), 2, 1, b"raw", 0, b"")  # tx id of block 1's first tx
    bad = BlockRecord(
        height=2,
        hash=reused.hash,
        header=reused.header,
        block=reused.block,
        commit=reused.commit,
        app_hash=reused.app_hash,
        txs=(reused.txs[0], clash),
        events=reused.events,
        changes={**reused.changes, b"only-in-bad": b"1"},
        meta={"k": b"v"},
    )
    with pytest.raises(InvalidRecordError, match="block 2"):
        store.commit_block(bad)
    assert store.blocks.latest_height() == 1
    assert store.blocks.block(2) is None and store.blocks.block_txs(2) == []
    assert store.blocks.tx(reused.txs[0].tx_id) is None
    assert store.state.get_state(b"only-in-bad") is None and store.db.get_meta("k") is None
    assert store.indexes.events(from_height=2) == []
    # The store is still usable: the good block 2 goes in.
    store.commit_block(reused)
    assert store.blocks.latest_height() == 2


def test_a_stored_block_hash_is_refused(store):
    store.commit_block(genesis_record())
    store.commit_block(make_block(1))
    second = make_block(2)
    dup = BlockRecord(2, make_block(1).hash, b"", b"", b"", b"")
    with pytest.raises(InvalidRecordError):
        store.commit_block(dup)
    store.commit_block(second)


def _replace(record: BlockRecord, **fields) -> BlockRecord:
    values = {name: getattr(record, name) for name in BlockRecord.__slots__}
    values.update(fields)
    return BlockRecord(**values)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"txs": (TxRecord(h("t"), 1, 1, b"", 0, b""),)}, "index 1"),
        ({"txs": (TxRecord(h("t"), 7, 0, b"", 0, b""),)}, "height 7"),
        ({"txs": (TxRecord(b"", 1, 0, b"", 0, b""),)}, "empty tx_id"),
        ({"txs": (TxRecord(h("t"), 1, 0, "text", 0, b""),)}, "raw must be bytes"),
        ({"events": (EventRecord(1, 0, 0, "t", (b"short",), (), b""),)}, "20 bytes"),
        ({"events": (EventRecord(1, 0, 0, "t", (), ("",), b""),)}, "instrument id"),
        ({"events": (EventRecord(1, 0, 0, "", (), (), b""),)}, "no type"),
        ({"events": (EventRecord(2, 0, 0, "t", (), (), b""),)}, "height 2"),
        ({"events": (EventRecord(1, None, 0, "t", (), (), b""),)}, "tx_index"),
        ({"events": (EventRecord(1, 0, 0, "t", (), (), "text"),)}, "data must be bytes"),
        (
            {"events": (EventRecord(1, 0, 0, "a", (), (), b""),) * 2},
            "two events at tx_index 0 event_index 0",
        ),
        ({"changes": {b"": b"1"}}, "empty"),
        ({"changes": {"text": b"1", b"k": b"2"}}, "state key must be bytes"),
        ({"changes": {b"k": 5}}, "must be bytes"),
        ({"meta": {"store.db.chain_id": b"evil"}}, "store."),
        ({"app_hash": None}, "app_hash must be bytes"),
        ({"hash": b""}, "empty hash"),
        ({"txs": (TxRecord(h("t"), 1, 0, b"", True, b""),)}, "code must be"),
        ({"height": -1}, "height must be"),
    ],
)
def test_malformed_records_are_refused_before_writing(store, fields, message):
    store.commit_block(genesis_record())
    with pytest.raises(InvalidRecordError, match=message):
        store.commit_block(_replace(make_block(1), **fields))
    assert store.blocks.latest_height() == 0
    assert store.db.chain_id() == CHAIN


def test_result_codes_may_be_the_ledgers_code_enum(store):
    store.commit_block(genesis_record())
    rejected = TxRecord(h("t"), 1, 0, b"raw", Code.ACCOUNT_FROZEN, b"receipt")
    store.commit_block(_replace(make_block(1, n_txs=0), txs=(rejected,)))
    stored = store.blocks.tx(h("t"))
    assert stored.code == 302 and type(stored.code) is int


def test_events_are_stored_in_transaction_then_event_order(store):
    store.commit_block(genesis_record())
    a, b = addr(1), addr(2)
    given_order = (
        EventRecord(1, 2, 0, "late", (a,), (), b"3"),
        EventRecord(1, -1, 0, "block-level", (), ("GOLD",), b"0"),
        EventRecord(1, 0, 1, "second", (a, b, a), ("KZT", "BOND1"), b"2"),
        EventRecord(1, 0, 0, "first", (), (), b"1"),
    )
    store.commit_block(make_block(1, events=given_order))
    stored = store.indexes.events()
    assert [e.type for e in stored] == ["block-level", "first", "second", "late"]
    assert set(stored) == set(given_order)  # every field round-trips, duplicates included
    # An account named twice in one event is found once.
    assert [e.type for e in store.indexes.events(account=a)] == ["second", "late"]


def test_consensus_record_is_saved_replaced_and_survives_reopen(tmp_path):
    with open_store(tmp_path / "n.db") as s:
        assert s.load_consensus_record() is None
        s.save_consensus_record(b"height 1 round 0 prevote")
        s.save_consensus_record(b"height 1 round 0 precommit")
        assert s.load_consensus_record() == b"height 1 round 0 precommit"
        with pytest.raises(InvalidRecordError):
            s.save_consensus_record("not bytes")
    with open_store(tmp_path / "n.db") as s:
        assert s.load_consensus_record() == b"height 1 round 0 precommit"


# --------------------------------------------------------------------------- reading


def test_prefix_end_is_the_first_key_after_the_range():
    assert _prefix_end(b"h\x03KZT") == b"h\x03KZU"
    assert _prefix_end(b"a\xff\xff") == b"b"
    assert _prefix_end(b"\xff\xff") is None
    assert _prefix_end(b"") is None


keys = st.binary(min_size=1, max_size=4).map(lambda k: bytes(b % 4 * 85 for b in k))
block_changes = st.dictionaries(keys, st.none() | st.binary(max_size=6), max_size=12)


@settings(max_examples=40)
@given(
    blocks=st.lists(block_changes, min_size=1, max_size=5),
    prefix=st.binary(max_size=2).map(lambda k: bytes(b % 4 * 85 for b in k)),
    limit=st.none() | st.integers(0, 6),
    after_index=st.none() | st.integers(0, 20),
)
def test_scans_and_iteration_match_a_dictionary_model(blocks, prefix, limit, after_index):
    # Keys are drawn from bytes {0x00, 0x55, 0xaa, 0xff} so that prefix edges (0xff) are common.
    model: dict[bytes, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "n.db") as s:
        s.commit_block(genesis_record({}))
        for height, changes in enumerate(blocks, start=1):
            s.commit_block(make_block(height, n_txs=0, changes=changes))
            for key, value in changes.items():
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
        expected = sorted((k, v) for k, v in model.items() if k.startswith(prefix))
        after = None
        if after_index is not None:
            after = sorted(model)[after_index] if after_index < len(model) else prefix + b"\x55"
            expected = [(k, v) for k, v in expected if k > after]
        if limit is not None:
            expected = expected[:limit]
        assert s.state.scan_prefix(prefix, limit=limit, after=after) == expected
        assert list(s.state.iter_state()) == sorted(model.items())


def test_scan_prefix_pages_through_one_range(store):
    store.commit_block(
        genesis_record({b"h\x03KZT" + addr(i): bytes([i]) for i in range(10)} | {b"h\x03KZU": b"x"})
    )
    pages, after = [], None
    while page := store.state.scan_prefix(b"h\x03KZT", limit=3, after=after):
        pages.append(page)
        after = page[-1][0]
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [k for p in pages for k, _ in p] == sorted(b"h\x03KZT" + addr(i) for i in range(10))


def _event_world() -> list[BlockRecord]:
    accounts = [addr(i) for i in range(4)]
    instruments = ["KZT", "BOND1", "GOLD"]
    blocks = []
    for height in range(1, 7):
        events = tuple(
            EventRecord(
                height=height,
                tx_index=t,
                event_index=e,
                type=f"ev{height}.{t}.{e}",
                accounts=(accounts[(height + t) % 4], accounts[(height * t + e) % 4]),
                instruments=(instruments[(height + e) % 3],) if (t + e) % 4 else (),
                data=h("e", height, t, e),
            )
            for t in range(3)
            for e in range(2)
        )
        blocks.append(make_block(height, n_txs=3, events=events))
    return blocks


@pytest.mark.parametrize("account", [None, 0, 3])
@pytest.mark.parametrize("instrument", [None, "KZT", "GOLD", "NONE"])
@pytest.mark.parametrize("heights", [(None, None), (2, 4), (5, None), (None, 1), (4, 3)])
@pytest.mark.parametrize("index_slices", [1, 3], ids=["indexed", "held-back"])
def test_event_queries_match_a_filter_over_all_events(
    tmp_path, account, instrument, heights, index_slices
):
    blocks = _event_world()

    def reopen() -> Store:
        # With 3 slices, a block indexes one slice of accounts and holds the other rows back
        # (ledger/held_index.py); reopening rebuilds them from the events.
        return Store.open(
            tmp_path / "n.db",
            chain_id=CHAIN,
            genesis_hash=GENESIS,
            index_slices=index_slices,
        )

    with reopen() as s:
        s.commit_block(genesis_record())
        for block in blocks[:3]:
            s.commit_block(block)
    with reopen() as s:
        for block in blocks[3:]:
            s.commit_block(block)
        from_height, to_height = heights
        who = None if account is None else addr(account)
        expected = [
            e
            for block in blocks
            for e in sorted(block.events, key=lambda e: (e.tx_index, e.event_index))
            if (who is None or who in e.accounts)
            and (instrument is None or instrument in e.instruments)
            and (from_height is None or e.height >= from_height)
            and (to_height is None or e.height <= to_height)
        ]
        query = dict(account=who, instrument=instrument, from_height=from_height)
        query["to_height"] = to_height
        assert s.indexes.events(**query, limit=1000) == expected
        # Paging: consecutive pages of 4 concatenate to the whole answer.
        paged = []
        for offset in range(0, len(expected) + 4, 4):
            paged.extend(s.indexes.events(**query, limit=4, offset=offset))
        assert paged == expected


@pytest.mark.parametrize("instrument", [None, "KZT"])
def test_event_pages_run_from_indexed_into_held_back_rows(tmp_path, instrument):
    """An account whose index rows are partly in the table, partly held back: every page
    size and offset gives the slice of the whole answer, also when the page begins past the
    indexed rows (the store then counts them to know how many held-back ones to skip)."""
    who = addr(0)
    blocks = [
        make_block(
            height,
            n_txs=1,
            events=tuple(
                EventRecord(height, 0, e, "ev", (who,), ("KZT",) if e % 3 else (), h(height, e))
                for e in range(5)
            ),
        )
        for height in range(1, 40)
    ]
    with Store.open(tmp_path / "n.db", chain_id=CHAIN, genesis_hash=GENESIS, index_slices=16) as s:
        s.commit_block(genesis_record())
        for block in blocks:
            s.commit_block(block)
        assert 0 < len(s.indexes.account_index.positions(who, 0, 1 << 62)) < 5 * 39
        expected = [
            e for b in blocks for e in b.events if instrument is None or instrument in e.instruments
        ]
        for limit in (1, 3, 7):
            for offset in range(len(expected) + 2):
                page = s.indexes.events(
                    account=who, instrument=instrument, limit=limit, offset=offset
                )
                assert page == expected[offset : offset + limit], (limit, offset)


def test_event_pages_are_bounded(store):
    with pytest.raises(ValueError, match="limit"):
        store.indexes.events(limit=1001)
    with pytest.raises(ValueError, match="offset"):
        store.indexes.events(offset=-1)


def test_a_state_snapshot_is_consistent_while_blocks_are_committed(store):
    store.commit_block(genesis_record({bytes([i]): b"old" for i in range(1, 50)}))
    snapshot = store.state.state_snapshot()
    first = snapshot.fetch(10)
    store.commit_block(make_block(1, changes={bytes([i]): b"new" for i in range(1, 50)}))
    rest = []
    while batch := snapshot.fetch(10):
        rest.extend(batch)
    snapshot.close()
    assert first + rest == [(bytes([i]), b"old") for i in range(1, 50)]
    assert store.state.get_state(b"\x30") == b"new"


# --------------------------------------------------------------------------- reopen and backup


def _dump(s: Store) -> dict:
    """Everything a store holds, read through its public API."""
    latest = s.blocks.latest_height()
    heights = range(latest + 1) if latest is not None else range(0)
    return {
        "latest": latest,
        "blocks": [s.blocks.block(x) for x in heights],
        "commits": [s.blocks.commit(x) for x in heights],
        "txs": [s.blocks.block_txs(x) for x in heights],
        "events": s.indexes.events(limit=1000),
        "state": list(s.state.iter_state()),
        "consensus": s.load_consensus_record(),
    }


def test_reopening_gives_the_same_blocks_state_and_app_hash(tmp_path):
    path = tmp_path / "n.db"
    with open_store(path) as s:
        s.commit_block(genesis_record())
        for height in range(1, 6):
            s.commit_block(
                make_block(height, changes={b"x": h(height), b"y" + bytes([height]): b"1"})
            )
        s.save_consensus_record(b"last signed")
        before = _dump(s)
        # Committed blocks live in the WAL until a checkpoint; the store leaves it alone.
        assert (path.parent / "n.db-wal").exists()
    with open_store(path) as s:
        after = _dump(s)
        assert s.blocks.app_hash(5) == h("app", 5)
        s.commit_block(make_block(6))  # and the chain continues where it stopped
    assert after == before
    assert before["latest"] == 5 and (b"x", h(5)) in before["state"]


def test_a_backup_is_readable_by_its_owner_only(tmp_path):
    # The copy holds KYC data: 0600 even under a permissive umask, and a half copy of a
    # failed backup is not left behind.
    old = os.umask(0o002)
    try:
        with open_store(tmp_path / "n.db") as s:
            s.commit_block(genesis_record())
            s.db.backup(tmp_path / "copy.db")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "copy.db").st_mode) == 0o600
    with open_store(tmp_path / "copy.db") as copy:  # and it still opens as a store
        assert copy.blocks.latest_height() == 0
    assert stat.S_IMODE(os.stat(tmp_path / "copy.db").st_mode) == 0o600


def test_backup_is_a_store_with_the_same_content(tmp_path):
    with open_store(tmp_path / "n.db") as s:
        s.commit_block(genesis_record())
        for height in range(1, 4):
            s.commit_block(make_block(height))
        s.db.backup(tmp_path / "copy.db")
        with pytest.raises(StoreError, match="exists"):
            s.db.backup(tmp_path / "copy.db")
        s.commit_block(make_block(4))  # the live store moves on; the copy does not
        original = _dump(s)
    with open_store(tmp_path / "copy.db") as copy:
        copied = _dump(copy)
        assert copy.db.integrity_check() == ["ok"]
    assert copied["latest"] == 3
    assert copied["blocks"] == original["blocks"][:4]
    assert copied["txs"] == original["txs"][:4]
    assert copied["state"] == sorted(
        {k: v for k, v in original["state"] if k not in make_block(4).changes}.items()
    )


# --------------------------------------------------------------------------- crash safety

# The child process of the kill test: it commits blocks forever and prints each height once
# its commit has returned. Block content is a function of the height only, so the parent can
# recompute what every committed block must look like.


def kill_test_block(height: int) -> BlockRecord:
    changes: dict[bytes, bytes | None] = {
        b"k" + h(height, i)[:6]: h("v", height, i) for i in range(300)
    }
    changes[b"latest"] = str(height).encode()
    if height >= 2:
        changes.update({b"k" + h(height - 2, i)[:6]: None for i in range(0, 300, 2)})
    return make_block(height, n_txs=50, changes=changes)


def open_for_kill_test(path: Path, sliced: bool) -> Store:
    # Sliced: the state log holds changes back from the first reopening on (a few hundred
    # rows, cut into 8 slices), so a kill also lands while log rows are written and deleted.
    if not sliced:
        return open_store(path)
    return Store.open(path, chain_id=CHAIN, genesis_hash=GENESIS, rows_per_slice=64, max_slices=8)


def kill_test_child(path: str, sliced: bool = False) -> None:
    with open_for_kill_test(Path(path), sliced) as s:
        if s.blocks.latest_height() is None:
            s.commit_block(genesis_record({}))
        height = s.blocks.latest_height()
        while True:
            height += 1
            # As a validator would: the signing record first, durably, then the block.
            s.save_consensus_record(b"signed %d" % height)
            s.commit_block(kill_test_block(height))
            print(height, flush=True)


def _expected_state(latest: int) -> list[tuple[bytes, bytes]]:
    state: dict[bytes, bytes] = {}
    for height in range(1, latest + 1):
        for key, value in kill_test_block(height).changes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    return sorted(state.items())


@pytest.mark.slow
@pytest.mark.parametrize("sliced", [False, True], ids=["one-slice", "state-log"])
def test_sigkill_leaves_every_acknowledged_block_whole_and_nothing_partial(tmp_path, sliced):
    path = tmp_path / "n.db"
    child_code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r});"
        "from tests.ledger.test_store import kill_test_child;"
        f"kill_test_child({str(path)!r}, {sliced!r})"
    )
    acknowledged = 0
    # Four crashes, each after a different number of blocks and at a different moment of the
    # next block (signing record, building, mid-commit); each run resumes the database left by
    # the previous crash.
    for blocks_before_kill, kill_delay in ((3, 0.0), (5, 0.01), (7, 0.03), (9, 0.06)):
        child = subprocess.Popen(
            [sys.executable, "-c", child_code], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        # Safety net: a child that hangs is killed, so readline() returns "" and the test fails
        # instead of hanging the suite.
        watchdog = threading.Timer(60, child.kill)
        watchdog.start()
        try:
            for _ in range(blocks_before_kill):
                line = child.stdout.readline()
                assert line, "the child died before committing"
                acknowledged = int(line)
            time.sleep(kill_delay)  # not a wait for a condition: picks where the kill lands
        finally:
            watchdog.cancel()
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        with open_for_kill_test(path, sliced) as s:
            # From the second run on, the child wrote through the state log, and this opening
            # replayed it (the first one cuts the state into slices).
            assert s.state.state_slices == (8 if sliced else 1)
            latest = s.blocks.latest_height()
            assert latest >= acknowledged  # nothing acknowledged is lost
            last = kill_test_block(latest)
            assert s.blocks.block(latest) == StoredBlock(
                latest, last.hash, last.header, last.block, last.app_hash
            )
            assert s.blocks.commit(latest) == last.commit
            assert s.blocks.block_txs(latest) == list(last.txs)
            assert s.indexes.events(from_height=latest) == list(last.events)
            # Nothing of a block that was not committed: no rows at latest + 1, and the state
            # is exactly the replay of blocks 1..latest.
            assert s.blocks.block(latest + 1) is None and s.blocks.block_txs(latest + 1) == []
            assert all(s.blocks.tx(tx.tx_id) is None for tx in kill_test_block(latest + 1).txs)
            assert list(s.state.iter_state()) == _expected_state(latest)
            # The account index (rows held back and rebuilt from the events at opening).
            for i in (0, 17, 50):
                assert s.indexes.events(account=addr(i), limit=1000) == [
                    e
                    for height in range(1, latest + 1)
                    for e in kill_test_block(height).events
                    if addr(i) in e.accounts
                ]
            # The transaction ids (also held back and rebuilt).
            for height in (1, latest // 2, latest):
                assert [s.blocks.tx(tx.tx_id) for tx in kill_test_block(height).txs] == list(
                    kill_test_block(height).txs
                )
            assert s.db.integrity_check() == ["ok"]
            # The record saved before each block is never older than the last block.
            assert s.load_consensus_record() in (b"signed %d" % latest, b"signed %d" % (latest + 1))
        acknowledged = latest


# --------------------------------------------------------------------------- AsyncStore


def test_async_store_runs_every_call_on_a_worker_thread_one_at_a_time(tmp_path):
    main_thread = threading.get_ident()
    threads: set[int] = set()
    in_flight = 0
    max_in_flight = 0
    limiter = trio.CapacityLimiter(1)

    async def run_sync(fn):
        def tracked():
            nonlocal in_flight, max_in_flight
            threads.add(threading.get_ident())
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            try:
                return fn()
            finally:
                in_flight -= 1

        return await trio.to_thread.run_sync(tracked, limiter=limiter)

    async def main():
        store = await AsyncStore.open(
            tmp_path / "n.db", chain_id=CHAIN, genesis_hash=GENESIS, run_sync=run_sync
        )
        async with store:
            await store.run(store.store.commit_block, genesis_record())
            seen_heights = []

            async def reader():
                # Reads interleave with the writer's blocks; each sees a whole block or none.
                for _ in range(20):
                    latest = await store.read(lambda s: s.blocks.latest_height())
                    if latest:
                        assert (
                            len(await store.read(lambda s, h: s.blocks.block_txs(h), latest)) == 3
                        )
                    seen_heights.append(latest)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                for height in range(1, 11):
                    await store.run(store.store.commit_block, make_block(height))
            assert seen_heights == sorted(seen_heights)
            assert await store.read(lambda s: s.blocks.latest_height()) == 10
            assert await store.read(lambda s: s.blocks.app_hash(10)) == h("app", 10)
            block = make_block(10)
            assert (await store.read(lambda s: s.blocks.block(10))).hash == block.hash
            assert (await store.read(lambda s: s.blocks.block_by_hash(block.hash))).height == 10
            assert await store.read(lambda s: s.blocks.commit(10)) == block.commit
            assert await store.read(lambda s: s.blocks.tx(block.txs[1].tx_id)) == block.txs[1]
            key, value = next(iter(block.changes.items()))
            assert await store.read(lambda s: s.state.get_state(key)) == value
            assert await store.read(
                lambda s: s.state.scan_prefix(b"g/", limit=2)
            ) == store.store.state.scan_prefix(b"g/", 2)
            assert len(await store.read(lambda s: s.indexes.events(from_height=10))) == 3
            await store.save_consensus_record(b"signed")
            assert await store.load_consensus_record() == b"signed"
            streamed = [item async for item in store.iter_state(batch=4)]
            assert streamed == list(store.store.state.iter_state())
            await store.run(store.store.db.backup, tmp_path / "copy.db")
            assert await store.run(store.store.db.integrity_check) == ["ok"]
            assert (
                await store.read(lambda s: s.db.chain_id()),
                await store.read(lambda s: s.db.genesis_hash()),
            ) == (CHAIN, GENESIS)

    trio.run(main)
    assert main_thread not in threads
    assert max_in_flight == 1
    with open_store(tmp_path / "copy.db") as copy:
        assert copy.blocks.latest_height() == 10


def test_async_store_with_the_plain_trio_runner(tmp_path):
    # The wiring node/ uses, verbatim.
    run_sync = functools.partial(trio.to_thread.run_sync, limiter=trio.CapacityLimiter(1))

    async def main():
        async with await AsyncStore.open(
            tmp_path / "n.db", chain_id=CHAIN, genesis_hash=GENESIS, run_sync=run_sync
        ) as store:
            await store.run(store.store.commit_block, genesis_record())
            with pytest.raises(HeightError):
                await store.run(store.store.commit_block, make_block(3))
            return await store.read(lambda s: s.blocks.latest_height())

    assert trio.run(main) == 0


# --------------------------------------------------------------------------- benchmark


def bench(state_rows: int, blocks: int = 20) -> tuple[float, float]:
    """Median (wall, CPU) seconds to commit a block of 1,000 transfers -- 3,000 state changes,
    1,000 transactions, 1,000 events with 2 accounts each -- on a store that already holds
    `state_rows` state rows. Wall time includes the fsync; CPU time is less disturbed by other
    processes on a shared machine."""
    with tempfile.TemporaryDirectory() as tmp:
        with open_store(Path(tmp) / "n.db") as s:
            s.commit_block(genesis_record({}))
            filled = 0
            height = 0
            while filled < state_rows:  # fill in chunks of 100,000 rows
                n = min(100_000, state_rows - filled)
                height += 1
                fill = {h("s", filled + i): h(i)[:16] for i in range(n)}
                s.commit_block(make_block(height, n_txs=0, changes=fill))
                filled += n
            existing = [h("s", i) for i in range(0, state_rows, max(1, state_rows // 2000))]
            wall, cpu = [], []
            for b in range(blocks):
                height += 1
                changes: dict[bytes, bytes | None] = {}
                for i in range(1000):
                    # A transfer touches two holdings (often existing ones) and the sender's nonce.
                    changes[existing[(b * 1000 + i) % len(existing)]] = h("bal", height, i)[:16]
                    changes[h("to", height, i)] = h("bal2", height, i)[:16]
                    changes[h("nonce", i)] = height.to_bytes(8, "big")
                record = make_block(height, n_txs=1000, changes=changes)
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                s.commit_block(record)
                wall.append(time.perf_counter() - start_wall)
                cpu.append(time.process_time() - start_cpu)
            return sorted(wall)[blocks // 2], sorted(cpu)[blocks // 2]


if __name__ == "__main__" and "--bench" in sys.argv:
    for rows in (1_000, 1_000_000):
        wall, cpu = bench(rows)
        print(
            f"{rows:>9} state rows: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU"
            " per 1,000-tx block (median of 20)"
        )
