"""A block's events handed to the store as columns (`EventColumns`) store exactly what the
same events as records (`EventRecord`s) store, and are refused exactly as those are.

`Chain.commit` gives the store `_event_columns(...)` instead of a tuple of records (no object
per event); the store checks and builds the rows over the columns (`event_columns_in_bulk`),
or falls back to the records and the per-event loop. So for any events, valid or not, the
store's answer (the rows, or the error and its message) must be its answer for the records;
and a chain's stored events must read back as the records of its receipts.
"""

from __future__ import annotations

from hypothesis import given, settings

from ledger import chain as chain_module
from ledger.store_indexes import StoreIndexes
from ledger.store_records import BlockRecord, EventColumns, EventRecord, InvalidRecordError
from ledger.types import BALANCE_CHANGE, Event
from tests.ledger.test_store_bulk_rows import HEIGHT, _events, _outcome, _record


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
