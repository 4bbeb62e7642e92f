"""A block's transactions and events handed to the store as columns (`TxColumns`,
`EventColumns`) store exactly what the same as records (`TxRecord`s, `EventRecord`s) store,
and are refused exactly as those are.

`Chain.commit` gives the store `_tx_columns(...)` and `_event_columns(...)` instead of tuples
of records (no object per transaction or event); the store checks and builds the rows over
the columns (`tx_columns_in_bulk`, `event_columns_in_bulk`), or falls back to the records and
the per-record loops. So for any values, valid or not, the store's answer (the rows, or the
error and its message) must be its answer for the records; and a chain's columns must be its
records.
"""

from __future__ import annotations

from hypothesis import given, settings

from ledger import chain as chain_module
from ledger.block_log import BlockLog
from ledger.store_indexes import StoreIndexes
from ledger.store_records import (
    BlockRecord,
    EventColumns,
    EventRecord,
    InvalidRecordError,
    TxColumns,
    TxRecord,
)
from ledger.types import BALANCE_CHANGE, Event
from tests.ledger.test_store_bulk_rows import HEIGHT, _events, _outcome, _record, _txs


def _columns(events: tuple[EventRecord, ...], height: int = HEIGHT) -> EventColumns:
    return EventColumns(
        height,
        [e.tx_index for e in events],
        [e.event_index for e in events],
        [e.type for e in events],
        [e.accounts for e in events],
        [e.instruments for e in events],
        [e.data for e in events],
    )


@settings(max_examples=300, deadline=None)
@given(_events())
def test_columns_store_what_records_store_or_fail_alike(drawn):
    events, _mutations = drawn
    if not all(type(e) is EventRecord and type(e.height) is int for e in events):
        return  # a non-record, or a height of another type: columns cannot hold them
    if any(e.height != HEIGHT for e in events):
        return  # one height per block of columns (its own test below)
    as_columns = _record(events=_columns(events))
    assert _outcome(StoreIndexes._event_rows, as_columns) == _outcome(
        StoreIndexes._event_rows, _record(events=events)
    )
    assert _columns(events).records() == events


def test_columns_of_a_wrong_height_fail_like_records():
    event = EventRecord(HEIGHT, 0, 0, "transfer", (), (), b"x")
    for height in (HEIGHT + 1, True, None):
        columns = _columns((event,), height)
        wrong = EventRecord(height, 0, 0, "transfer", (), (), b"x")
        assert _outcome(StoreIndexes._event_rows, _record(events=columns)) == _outcome(
            StoreIndexes._event_rows, _record(events=(wrong,))
        )
        assert _outcome(StoreIndexes._event_rows, _record(events=columns))[0] == (
            "InvalidRecordError"
        )


def test_columns_of_different_lengths_are_refused():
    event = EventRecord(HEIGHT, 0, 0, "transfer", (), (), b"x")
    columns = _columns((event, EventRecord(HEIGHT, 0, 1, "transfer", (), (), b"y")))
    columns.datas.pop()
    kind, message = _outcome(StoreIndexes._event_rows, _record(events=columns))
    assert kind == InvalidRecordError.__name__
    assert "one length" in message
    not_lists = EventColumns(HEIGHT, (0,), (0,), ("transfer",), ((),), ((),), (b"x",))
    # Tuples are not the chain's lists: the records' loop takes them, with the same rows.
    assert _outcome(StoreIndexes._event_rows, _record(events=not_lists)) == _outcome(
        StoreIndexes._event_rows, _record(events=(event,))
    )


def test_no_events_as_columns_store_nothing():
    empty = EventColumns(HEIGHT, [], [], [], [], [], [])
    assert len(empty) == 0
    assert StoreIndexes._event_rows(_record(events=empty)) == ([], [], [])


A = bytes(range(20))
B = bytes(range(1, 21))


def test_chain_columns_are_the_chain_records_of_the_receipts():
    from ledger.types import Receipt

    receipts = [
        Receipt(
            b"t" * 32,
            0,
            "",
            (
                Event("transfer", {"amount": 5, "from": A, "instrument": "PKR", "to": B}),
                Event(
                    BALANCE_CHANGE,
                    {"account": A, "amount": -5, "balance": 1, "cause": "t", "instrument": "PKR"},
                ),
            ),
        ),
        Receipt(b"u" * 32, 7, "refused"),
        Receipt(b"v" * 32, 0, "", (Event("note", {"a": A, "b": A, "asset": "X", "n": 1}),)),
    ]
    block_events = (Event("misbehaviour", {"validator": B, "height": 3}),)
    columns = chain_module._event_columns(9, receipts, block_events)
    records = columns.records()
    assert records == chain_module._event_records(9, receipts, block_events)
    assert [(r.tx_index, r.event_index) for r in records] == [(-1, 0), (0, 0), (0, 1), (2, 0)]
    assert records[1].accounts == (A, B) and records[1].instruments == ("PKR",)
    assert records[2].accounts == (A,) and records[2].instruments == ("PKR",)
    assert records[3].accounts == (A,) and records[3].instruments == ("X",)
    assert [r.data for r in records] == [
        e.encoded for e in (*block_events, *receipts[0].events)
    ] + [receipts[2].events[0].encoded]
    record = BlockRecord(9, b"h", b"", b"", b"", b"", events=columns)
    assert StoreIndexes._event_rows(record) == StoreIndexes._event_rows(
        BlockRecord(9, b"h", b"", b"", b"", b"", events=records)
    )


def _tx_columns(txs: tuple[TxRecord, ...], height: int = HEIGHT) -> TxColumns:
    return TxColumns(
        height,
        [tx.tx_id for tx in txs],
        [tx.raw for tx in txs],
        [tx.code for tx in txs],
        [tx.receipt for tx in txs],
    )


@settings(max_examples=300, deadline=None)
@given(_txs())
def test_tx_columns_store_what_records_store_or_fail_alike(drawn):
    txs, _mutations = drawn
    representable = all(
        type(tx) is TxRecord
        and type(tx.height) is int
        and tx.height == HEIGHT
        and type(tx.index) is int
        and tx.index == i
        for i, tx in enumerate(txs)
    )
    if not representable:
        return  # a non-record, another height or index: columns imply them
    assert _outcome(BlockLog._tx_rows, _record(txs=_tx_columns(txs))) == _outcome(
        BlockLog._tx_rows, _record(txs=txs)
    )
    assert _tx_columns(txs).records() == txs


def test_tx_columns_of_a_wrong_height_or_unequal_length_are_refused():
    tx = TxRecord(b"i", HEIGHT, 0, b"raw", 0, b"receipt")
    for height in (HEIGHT + 1, True, None):
        wrong = TxRecord(b"i", height, 0, b"raw", 0, b"receipt")
        assert _outcome(BlockLog._tx_rows, _record(txs=_tx_columns((tx,), height))) == _outcome(
            BlockLog._tx_rows, _record(txs=(wrong,))
        )
    columns = _tx_columns((tx, TxRecord(b"j", HEIGHT, 1, b"raw", 0, b"receipt")))
    columns.receipts.pop()
    kind, message = _outcome(BlockLog._tx_rows, _record(txs=columns))
    assert kind == InvalidRecordError.__name__ and "one length" in message
    empty = TxColumns(HEIGHT, [], [], [], [])
    assert len(empty) == 0 and BlockLog._tx_rows(_record(txs=empty)) == ([], [])


def test_chain_tx_columns_are_the_chain_records():
    from ledger.codes import Code
    from ledger.types import Receipt

    receipts = [
        Receipt(b"t" * 32, Code.OK, "", (Event("note", {"a": A}),)),
        Receipt(b"u" * 32, Code.INSUFFICIENT_BALANCE, "short"),
    ]
    columns = chain_module._tx_columns(5, [b"raw-t", b"raw-u"], receipts)
    records = columns.records()
    assert records == chain_module._tx_records(5, [b"raw-t", b"raw-u"], receipts)
    assert records == (
        TxRecord(b"t" * 32, 5, 0, b"raw-t", 0, receipts[0].encode()),
        TxRecord(b"u" * 32, 5, 1, b"raw-u", int(Code.INSUFFICIENT_BALANCE), receipts[1].encode()),
    )
    assert all(type(code) is int for code in columns.codes)
    record = BlockRecord(5, b"h", b"", b"", b"", b"", txs=columns)
    assert BlockLog._tx_rows(record) == BlockLog._tx_rows(
        BlockRecord(5, b"h", b"", b"", b"", b"", txs=records)
    )
