"""The commit path's bulk rows are the rows of the straightforward per-record code.

`Store.commit_block` builds a block's `txs`, `tx_ids`, `events`, `event_accounts` and
`event_instruments` rows from whole columns (`ledger/store_rows.py`) and
writes them with multi-row INSERTs (`insert_rows`); `Chain.commit` makes the event records
without the dataclass constructor. None of it may change what is stored, nor which record is
refused and with what message. The references below are the per-record code as it was before
(commit 9503595), copied here verbatim: the store's answer (rows, or the error's message) must
equal theirs for any records, valid or not (hypothesis), and a scripted chain's stored rows
must be the references' rows of its receipts.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import chain as chain_module
from ledger.block_log import BlockLog
from ledger.chain import Chain
from ledger.codes import Code
from ledger.store_indexes import StoreIndexes
from ledger.store_records import (
    _INSTRUMENT_SEPARATOR,
    ADDRESS_SIZE,
    MAX_PER_BLOCK,
    BlockRecord,
    EventRecord,
    InvalidRecordError,
    TxRecord,
    _check_bytes,
    _check_int,
    _position,
)
from ledger.store_rows import insert_rows
from ledger.types import BALANCE_CHANGE, Event
from tests.ledger.test_chain import Signer, commit_next, genesis, key, setup_txs, transfer

# ------------------------------------------------------------------ the references (verbatim)


def reference_tx_rows(record: BlockRecord) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]]]:
    tx_rows: list[tuple[Any, ...]] = []
    tx_id_rows: list[tuple[bytes, int]] = []
    for expected_index, tx in enumerate(record.txs):
        if not isinstance(tx, TxRecord):
            raise InvalidRecordError(f"txs[{expected_index}] is not a TxRecord")
        if tx.height != record.height or tx.index != expected_index:
            raise InvalidRecordError(
                f"txs[{expected_index}] says height {tx.height} index {tx.index}; expected"
                f" height {record.height} index {expected_index}"
            )
        _check_bytes("tx_id", tx.tx_id)
        if not tx.tx_id:
            raise InvalidRecordError(f"txs[{expected_index}] has an empty tx_id")
        _check_bytes("raw", tx.raw)
        _check_bytes("receipt", tx.receipt)
        _check_int("code", tx.code, -(1 << 63), (1 << 63) - 1)
        position = _position(record.height, expected_index)
        # int(): a result code may be an IntEnum (ledger.codes.Code); store the number.
        tx_rows.append((position, tx.tx_id, tx.raw, int(tx.code), tx.receipt))
        tx_id_rows.append((tx.tx_id, position))
    if len(tx_rows) >= MAX_PER_BLOCK:
        raise InvalidRecordError(
            f"{len(tx_rows)} transactions in one block (max {MAX_PER_BLOCK - 1})"
        )
    # Inserting index rows in key order keeps the b-tree writes local.
    tx_id_rows.sort()
    return tx_rows, tx_id_rows


def reference_event_rows(
    record: BlockRecord,
) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]], list[tuple[str, int]]]:
    if len(record.events) >= MAX_PER_BLOCK:
        raise InvalidRecordError(
            f"{len(record.events)} events in one block (max {MAX_PER_BLOCK - 1})"
        )
    # Events are stored in (tx_index, event_index) order, so reading by position returns
    # them in that order whatever order the executor listed them in (usually already so).
    events = record.events
    for i, event in enumerate(events):
        if type(event) is not EventRecord:
            raise InvalidRecordError(f"events[{i}] is not an EventRecord")
        if event.height != record.height:
            raise InvalidRecordError(
                f"events[{i}] says height {event.height}, the block is {record.height}"
            )
        _check_int("tx_index", event.tx_index, -(1 << 31), (1 << 31) - 1)
        _check_int("event_index", event.event_index, 0, (1 << 31) - 1)
    order = [(e.tx_index, e.event_index) for e in events]
    if any(order[i] >= order[i + 1] for i in range(len(order) - 1)):
        events = sorted(events, key=lambda e: (e.tx_index, e.event_index))
    event_rows: list[tuple[Any, ...]] = []
    account_rows: list[tuple[bytes, int]] = []
    instrument_rows: list[tuple[str, int]] = []
    previous: tuple[int, int] | None = None
    base = _position(record.height, 0)
    for ordinal, event in enumerate(events):
        where = (event.tx_index, event.event_index)
        if where == previous:
            raise InvalidRecordError(
                f"two events at tx_index {event.tx_index} event_index {event.event_index}"
            )
        previous = where
        if type(event.type) is not str or not event.type:
            raise InvalidRecordError(f"event {where} has no type")
        if type(event.data) is not bytes:
            raise InvalidRecordError(f"event {where}: data must be bytes")
        position = base | ordinal
        accounts = event.accounts
        for j, account in enumerate(accounts):
            if type(account) is not bytes or len(account) != ADDRESS_SIZE:
                raise InvalidRecordError(
                    f"event {where}: account {account!r} must be {ADDRESS_SIZE} bytes"
                )
            if accounts.index(account) == j:  # an account named twice is indexed once
                account_rows.append((account, position))
        instruments = event.instruments
        for j, instrument in enumerate(instruments):
            bad = type(instrument) is not str or _INSTRUMENT_SEPARATOR in instrument
            if bad or not instrument:
                raise InvalidRecordError(
                    f"event {where}: instrument id {instrument!r} must be a non-empty str"
                    " without NUL"
                )
            if instruments.index(instrument) == j:
                instrument_rows.append((instrument, position))
        event_rows.append(
            (
                position,
                event.tx_index,
                event.event_index,
                event.type,
                b"".join(accounts),
                _INSTRUMENT_SEPARATOR.join(instruments),
                event.data,
            )
        )
    account_rows.sort()
    instrument_rows.sort()
    return event_rows, account_rows, instrument_rows


def reference_event_records(
    height: int, receipts: Any, block_events: Any = ()
) -> tuple[EventRecord, ...]:
    # Events of the block itself (misbehaviour evidence) have tx_index -1 in the store.
    records = [
        EventRecord(
            height=height,
            tx_index=-1,
            event_index=event_index,
            type=event.type,
            accounts=tuple(event.accounts()),
            instruments=tuple(event.instruments()),
            data=event.encoded,
        )
        for event_index, event in enumerate(block_events)
    ]
    for tx_index, receipt in enumerate(receipts):
        for event_index, event in enumerate(receipt.events):
            if event.type == BALANCE_CHANGE:
                attributes = event.attributes
                accounts = (attributes["account"],)
                instruments = (attributes["instrument"],)
            else:
                accounts = tuple(event.accounts())
                instruments = tuple(event.instruments())
            records.append(
                EventRecord(
                    height=height,
                    tx_index=tx_index,
                    event_index=event_index,
                    type=event.type,
                    accounts=accounts,
                    instruments=instruments,
                    data=event.encoded,
                )
            )
    return tuple(records)


# ------------------------------------------------------------------ records, valid or not

HEIGHT = 7
ADDRESSES = [bytes([n]) * ADDRESS_SIZE for n in (1, 2, 3, 200)]
BAD = st.sampled_from([None, True, 1.0, "x", b"", b"short", 2**31, -(2**31) - 1, 2**64, []])
A0, A1 = ADDRESSES[:2]
# Per field: values the store refuses, and some it accepts that only the per-event loop takes
# (a float height equal to the block's, a list of names, a name twice) or that reorder events.
_EVENT_DEFECTS = {
    "height": [None, True, HEIGHT + 1, float(HEIGHT), str(HEIGHT)],
    "tx_index": [None, True, 2**31, -(2**31) - 1, "1", 9, -1],
    "event_index": [-1, 2**31, True, None, 3, 0],
    "type": ["", None, 5, "other"],
    "accounts": [[A1, A0], (A0, A0), (A0, A1, A0), (b"short",), ("x" * 20,), None, (), [A0]],
    "instruments": [["PKR"], ("PKR", "PKR"), ("A\x00B",), ("",), ("PKR", 5), None, ("Z",)],
    "data": ["text", None, b"", bytearray(b"x")],
}


def _outcome(fn, record: BlockRecord):
    try:
        return "rows", fn(record)
    except Exception as exc:  # the same refusal, worded the same way
        return type(exc).__name__, str(exc)


def _record(txs=(), events=()) -> BlockRecord:
    return BlockRecord(
        height=HEIGHT,
        hash=b"h",
        header=b"",
        block=b"",
        commit=b"",
        app_hash=b"",
        txs=txs,
        events=events,
    )


@st.composite
def _events(draw):
    wheres = sorted(draw(st.sets(st.tuples(st.integers(-1, 4), st.integers(0, 3)), max_size=12)))
    events = [
        EventRecord(
            HEIGHT,
            tx_index,
            event_index,
            draw(st.sampled_from(["transfer", BALANCE_CHANGE, "misbehaviour"])),
            tuple(draw(st.lists(st.sampled_from(ADDRESSES), max_size=3, unique=True))),
            tuple(draw(st.lists(st.sampled_from(["PKR", "BOND-1", "é"]), max_size=2, unique=True))),
            draw(st.binary(max_size=8)),
        )
        for tx_index, event_index in wheres
    ]
    mutations = draw(st.integers(0, 2)) if events else 0
    for _ in range(mutations):
        i = draw(st.integers(0, len(events) - 1))
        event = events[i]
        if type(event) is not EventRecord:
            continue
        field = draw(
            st.sampled_from(
                [
                    "height",
                    "tx_index",
                    "event_index",
                    "type",
                    "accounts",
                    "instruments",
                    "data",
                    "order",
                    "object",
                ]
            )
        )
        if field == "order":  # unsorted, or a repeated (tx_index, event_index)
            events.insert(draw(st.integers(0, len(events))), events[i])
            continue
        if field == "object":
            events[i] = tuple(
                events[i].__getattribute__(f) for f in chain_module._EVENT_RECORD_FIELDS
            )
            continue
        value = draw(st.sampled_from(_EVENT_DEFECTS[field]))
        events[i] = EventRecord(**{**_fields(event), field: value})
    return tuple(events), mutations


def _fields(event: EventRecord) -> dict:
    return {f: getattr(event, f) for f in chain_module._EVENT_RECORD_FIELDS}


@settings(max_examples=200, deadline=None)
@given(_events())
def test_event_rows_are_the_per_event_loops_rows_or_error(drawn):
    events, mutations = drawn
    record = _record(events=events)
    assert _outcome(StoreIndexes._event_rows, record) == _outcome(reference_event_rows, record)
    if events and not mutations:
        # Valid, ordered, no name twice: the bulk path answered (not the fallback).
        from ledger.store_rows import event_rows_in_bulk

        assert event_rows_in_bulk(HEIGHT, events) is not None


@st.composite
def _txs(draw):
    count = draw(st.integers(0, 6))
    txs = [
        TxRecord(
            draw(st.binary(min_size=1, max_size=4)),
            HEIGHT,
            index,
            draw(st.binary(max_size=6)),
            draw(st.integers(0, 300)),
            draw(st.binary(max_size=6)),
        )
        for index in range(count)
    ]
    mutations = draw(st.integers(0, 2)) if txs else 0
    for _ in range(mutations):
        i = draw(st.integers(0, len(txs) - 1))
        if type(txs[i]) is not TxRecord:
            continue
        field = draw(
            st.sampled_from(["tx_id", "height", "index", "raw", "code", "receipt", "object"])
        )
        if field == "object":
            txs[i] = (txs[i].tx_id,)
            continue
        value = draw(st.one_of(BAD, st.just(2**63), st.just(-(2**63) - 1), st.just(2)))
        if field == "code" and draw(st.booleans()):
            from ledger.codes import Code

            value = Code.OK  # an IntEnum: stored as its number
        txs[i] = TxRecord(**{**{f: getattr(txs[i], f) for f in TxRecord.__slots__}, field: value})
    return tuple(txs), mutations


@settings(max_examples=200, deadline=None)
@given(_txs())
def test_tx_rows_are_the_per_tx_loops_rows_or_error(drawn):
    txs, mutations = drawn
    record = _record(txs=txs)
    assert _outcome(BlockLog._tx_rows, record) == _outcome(reference_tx_rows, record)


# ------------------------------------------------------------------ multi-row inserts


@pytest.mark.parametrize("count", [0, 1, 63, 64, 65, 128, 200])
def testinsert_rows_writes_what_executemany_writes(count):
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for table in ("one", "many"):
        conn.execute(f"CREATE TABLE {table} (k BLOB PRIMARY KEY NOT NULL, v INTEGER NOT NULL)")
        conn.executemany(
            f"INSERT INTO {table} VALUES (?, ?)", [(b"%d" % i, -1) for i in range(0, 300, 7)]
        )
    rows = [(b"%d" % i, i) for i in range(count)]
    upsert = " ON CONFLICT (k) DO UPDATE SET v = excluded.v"
    conn.executemany("INSERT INTO one (k, v) VALUES (?, ?)" + upsert, rows)
    insert_rows(conn, "INSERT INTO many (k, v) VALUES ", "(?, ?)", rows, upsert)
    assert (
        conn.execute("SELECT * FROM one ORDER BY rowid").fetchall()
        == conn.execute("SELECT * FROM many ORDER BY rowid").fetchall()
    )
    # A conflicting row inside a multi-row group fails the statement, as executemany would.
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(
            conn,
            "INSERT INTO many (k, v) VALUES ",
            "(?, ?)",
            [(b"x%d" % i, i) for i in range(70)] + [(b"x3", 0)],
        )
    conn.close()


# ------------------------------------------------------------------ a scripted chain


def _stored_rows(chain: Chain, height: int) -> dict[str, list]:
    low, high = _position(height, 0), _position(height, MAX_PER_BLOCK - 1)
    conn = chain.store.db.conn
    held = chain.store.indexes.account_index.all_rows()
    accounts = conn.execute(
        "SELECT account, pos FROM event_accounts WHERE pos BETWEEN ? AND ?", (low, high)
    ).fetchall() + [(a, p) for a, p in held if low <= p <= high]
    return {
        "txs": conn.execute(
            "SELECT pos, tx_id, raw, code, receipt FROM txs WHERE pos BETWEEN ? AND ? ORDER BY pos",
            (low, high),
        ).fetchall(),
        "events": conn.execute(
            "SELECT pos, tx_index, event_index, type, accounts, instruments, data FROM events"
            " WHERE pos BETWEEN ? AND ? ORDER BY pos",
            (low, high),
        ).fetchall(),
        "accounts": sorted(accounts),
        "instruments": conn.execute(
            "SELECT instrument, pos FROM event_instruments WHERE pos BETWEEN ? AND ?"
            " ORDER BY instrument, pos",
            (low, high),
        ).fetchall(),
    }


def _reference_rows(pending) -> dict[str, list]:
    height = pending.header.height
    txs = tuple(
        TxRecord(r.tx_id, height, i, raw, int(r.code), r.encode())
        for i, (raw, r) in enumerate(zip(pending.block.txs, pending.receipts, strict=True))
    )
    events = reference_event_records(height, pending.receipts, pending.evidence_events)
    record = _record(txs=txs, events=events)
    record = BlockRecord(
        **{**{f: getattr(record, f) for f in BlockRecord.__slots__}, "height": height}
    )
    tx_rows, _ = reference_tx_rows(record)
    event_rows, account_rows, instrument_rows = reference_event_rows(record)
    return {
        "txs": tx_rows,
        "events": event_rows,
        "accounts": sorted(account_rows),
        "instruments": instrument_rows,
    }


def test_a_chains_stored_rows_are_the_reference_rows(tmp_path):
    chain = Chain.open(tmp_path / "node.db", genesis())
    signer = Signer()
    blocks = [
        setup_txs(signer),
        [transfer(signer, "alice", "bob", 5), transfer(signer, "bob", "alice", 1)],
        # 130 transfers and a refused one: more than two multi-row groups of each table.
        [transfer(signer, "alice", "bob", 1 + i % 3) for i in range(130)]
        + [transfer(signer, "bob", "alice", 10**9)],
        [transfer(signer, "alice", "alice", 2)],
        [],
    ]
    try:
        pkr = 0
        for day, txs in enumerate(blocks, start=1):
            pending = commit_next(chain, txs, day)
            assert len(pending.receipts) == len(txs)
            reference = _reference_rows(pending)
            assert _stored_rows(chain, pending.header.height) == reference
            pkr += sum(1 for instrument, _ in reference["instruments"] if instrument == "PKR")
        # And read back through the store's query, held-back index rows included.
        assert len(chain.store.indexes.events(instrument="PKR", limit=1000)) == pkr > 390
        assert len(chain.store.indexes.events(account=key("bob").address, limit=1000)) > 260
    finally:
        chain.close()


def test_event_records_are_the_reference_records():
    a, b = key("alice").address, key("bob").address
    block_events = (
        Event("misbehaviour", {"evidence": b"\x09" * 32, "validator": a}),
        Event(BALANCE_CHANGE, {"account": b, "instrument": "PKR", "amount": 1}),
    )

    class _Receipt:
        def __init__(self, events):
            self.events = events

    receipts = [
        _Receipt((Event("transfer", {"from": a, "to": b, "instrument": "PKR", "amount": 3}),)),
        _Receipt(()),
        _Receipt(
            (
                Event(BALANCE_CHANGE, {"account": a, "amount": -3, "instrument": "PKR"}),
                Event("swap", {"asset": "GOLD", "cash": "PKR", "buyer": a, "seller": a}),
            )
        ),
    ]
    made = chain_module._event_records(9, receipts, block_events)
    assert made == reference_event_records(9, receipts, block_events)
    assert all(type(r) is EventRecord for r in made)
    assert made[0].tx_index == -1 and made[-1].instruments == ("GOLD", "PKR")


# ------------------------------------------------------------------ every defect, one at a time

_TX_DEFECTS = {
    "tx_id": [b"", "id", None, bytearray(b"id")],
    "height": [HEIGHT + 1, True, float(HEIGHT), None],
    "index": [5, True, -1, None],
    "raw": ["raw", None, b""],
    "code": [2**63, -(2**63) - 1, True, None, Code.OK, -1],
    "receipt": ["r", None],
}


def _valid_events() -> list[EventRecord]:
    return [
        EventRecord(HEIGHT, -1, 0, "misbehaviour", (A1,), (), b"m"),
        EventRecord(HEIGHT, 0, 0, "transfer", (A0, A1), ("PKR",), b"t"),
        EventRecord(HEIGHT, 0, 1, BALANCE_CHANGE, (A0,), ("PKR",), b"b"),
        EventRecord(HEIGHT, 2, 0, "swap", (A1,), ("BOND-1", "PKR"), b"s"),
    ]


@pytest.mark.parametrize(
    ("field", "value"), [(f, v) for f, values in _EVENT_DEFECTS.items() for v in values]
)
@pytest.mark.parametrize("where", [0, 2, 3])
def test_each_event_defect_gets_the_per_event_answer(field, value, where):
    events = _valid_events()
    events[where] = EventRecord(**{**_fields(events[where]), field: value})
    record = _record(events=tuple(events))
    assert _outcome(StoreIndexes._event_rows, record) == _outcome(reference_event_rows, record)


@pytest.mark.parametrize("change", ["swap", "repeat", "object", "none"])
def test_event_order_and_kind_get_the_per_event_answer(change):
    events = _valid_events()
    if change == "swap":
        events[1], events[2] = events[2], events[1]
    elif change == "repeat":
        events.insert(2, events[1])
    elif change == "object":
        events[1] = tuple(_fields(events[1]).values())
    record = _record(events=tuple(events))
    assert _outcome(StoreIndexes._event_rows, record) == _outcome(reference_event_rows, record)


@pytest.mark.parametrize(
    ("field", "value"), [(f, v) for f, values in _TX_DEFECTS.items() for v in values]
)
def test_each_tx_defect_gets_the_per_tx_answer(field, value):
    txs = [TxRecord(b"id%d" % i, HEIGHT, i, b"raw", 0, b"receipt") for i in range(3)]
    txs[1] = TxRecord(**{**{f: getattr(txs[1], f) for f in TxRecord.__slots__}, field: value})
    record = _record(txs=tuple(txs))
    assert _outcome(BlockLog._tx_rows, record) == _outcome(reference_tx_rows, record)
