"""A block's rows built in bulk, and multi-row INSERTs: the fast path of `Store.commit_block`.

`BlockLog._tx_rows` and `StoreIndexes._event_rows` check every field of every record one at a
time; for a block of transfers (~3 events a transaction) that cost more CPU than SQLite's
inserts. The functions here run the same checks over whole columns and build the same rows,
or answer None so the per-record loop runs and words the error. `insert_rows` writes a table's
rows as multi-row statements. tests/ledger/test_store_bulk_rows.py holds both to a copy of the
per-record loop.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
from typing import Any

from ledger.store_records import (
    _INSTRUMENT_SEPARATOR,
    ADDRESS_SIZE,
    MAX_PER_BLOCK,
    EventColumns,
    EventRecord,
    TxColumns,
    TxRecord,
    _position,
)

_INT64 = (-(1 << 63), (1 << 63) - 1)
_INT32 = (-(1 << 31), (1 << 31) - 1)
_FIRST = operator.itemgetter(0)


def _all_of_type(values: Any, kind: type) -> bool:
    return set(map(type, values)) == {kind}


def _ints_within(values: Any, low: int, high: int) -> bool:
    return _all_of_type(values, int) and low <= min(values) and max(values) <= high


def _index_rows(names: list[tuple[Any, ...]], positions: range) -> list[tuple[Any, int]] | None:
    """(name, position) for each name of each event, sorted as `sorted()` sorts them, or None
    when an event names one twice (the per-event loop indexes it once)."""
    rows = [(name, p) for each, p in zip(names, positions, strict=True) for name in each]
    # By name alone: stable, and the rows of one name are already in position order.
    rows.sort(key=_FIRST)
    if any(map(operator.eq, rows, itertools.islice(rows, 1, None))):
        return None
    return rows


def tx_rows_in_bulk(
    height: int, txs: tuple[Any, ...]
) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]]] | None:
    """`BlockLog._tx_rows(record)` for `record.txs` that pass all its checks, else None."""
    if not txs or not _all_of_type(txs, TxRecord):
        return None
    heights = [tx.height for tx in txs]
    indexes = [tx.index for tx in txs]
    if not (
        _all_of_type(heights, int)
        and set(heights) == {height}
        and _all_of_type(indexes, int)
        and indexes == list(range(len(txs)))
    ):
        return None
    return _tx_rows_of_columns(
        height,
        [tx.tx_id for tx in txs],
        [tx.raw for tx in txs],
        [tx.code for tx in txs],
        [tx.receipt for tx in txs],
    )


def tx_columns_in_bulk(
    height: int, columns: TxColumns
) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]]] | None:
    """`tx_rows_in_bulk(height, columns.records())` without the records: the same checks
    over the same columns, the same rows or None."""
    if type(columns.height) is not int or columns.height != height:
        return None
    parts = (columns.tx_ids, columns.raws, columns.codes, columns.receipts)
    if not _all_of_type(parts, list) or len(set(map(len, parts))) != 1:
        return None
    return _tx_rows_of_columns(height, *parts)


def _tx_rows_of_columns(
    height: int, tx_ids: list[Any], raws: list[Any], codes: list[Any], receipts: list[Any]
) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]]] | None:
    count = len(tx_ids)
    if not (
        0 < count < MAX_PER_BLOCK
        and _all_of_type(tx_ids, bytes)
        and b"" not in tx_ids
        and _all_of_type(raws, bytes)
        and _all_of_type(receipts, bytes)
        and _ints_within(codes, *_INT64)
    ):
        return None
    base = _position(height, 0)
    positions = range(base, base + count)
    tx_rows = list(zip(positions, tx_ids, raws, codes, receipts, strict=True))
    return tx_rows, sorted(zip(tx_ids, positions, strict=True))


def event_rows_in_bulk(
    height: int, events: tuple[Any, ...]
) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]], list[tuple[str, int]]] | None:
    """`StoreIndexes._event_rows(record)` for `record.events` that pass all its checks, are in
    (tx_index, event_index) order already and name no account or instrument twice, else
    None."""
    if not events or not _all_of_type(events, EventRecord):
        return None
    heights = [e.height for e in events]
    if not (_all_of_type(heights, int) and set(heights) == {height}):
        return None
    return _event_rows_of_columns(
        height,
        [e.tx_index for e in events],
        [e.event_index for e in events],
        [e.type for e in events],
        [e.accounts for e in events],
        [e.instruments for e in events],
        [e.data for e in events],
    )


def event_columns_in_bulk(
    height: int, columns: EventColumns
) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]], list[tuple[str, int]]] | None:
    """`event_rows_in_bulk(height, columns.records())` without the records: the same checks
    over the same columns, the same rows or None."""
    if type(columns.height) is not int or columns.height != height:
        return None
    parts = (
        columns.tx_indexes,
        columns.event_indexes,
        columns.types,
        columns.accounts,
        columns.instruments,
        columns.datas,
    )
    if not _all_of_type(parts, list) or len(set(map(len, parts))) != 1 or not parts[0]:
        return None
    return _event_rows_of_columns(height, *parts)


def _event_rows_of_columns(
    height: int,
    tx_indexes: list[Any],
    event_indexes: list[Any],
    types: list[Any],
    accounts: list[Any],
    instruments: list[Any],
    datas: list[Any],
) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]], list[tuple[str, int]]] | None:
    if not (
        _ints_within(tx_indexes, *_INT32)
        and _ints_within(event_indexes, 0, _INT32[1])
        and _all_of_type(types, str)
        and "" not in types
        and _all_of_type(datas, bytes)
        and _all_of_type(accounts, tuple)
        and _all_of_type(instruments, tuple)
    ):
        return None
    where = list(zip(tx_indexes, event_indexes, strict=True))
    if not all(map(operator.lt, where, itertools.islice(where, 1, None))):
        return None  # not strictly increasing: sorted, and repeats refused, one by one
    every_account = list(itertools.chain.from_iterable(accounts))
    if every_account and not (
        _all_of_type(every_account, bytes) and set(map(len, every_account)) == {ADDRESS_SIZE}
    ):
        return None
    every_instrument = list(itertools.chain.from_iterable(instruments))
    if every_instrument and not (
        _all_of_type(every_instrument, str)
        and "" not in every_instrument
        and _INSTRUMENT_SEPARATOR not in "".join(every_instrument)
    ):
        return None
    base = _position(height, 0)
    positions = range(base, base + len(types))
    account_rows = _index_rows(accounts, positions)
    instrument_rows = _index_rows(instruments, positions)
    if account_rows is None or instrument_rows is None:
        return None
    event_rows = list(
        zip(
            positions,
            tx_indexes,
            event_indexes,
            types,
            map(b"".join, accounts),
            map(_INSTRUMENT_SEPARATOR.join, instruments),
            datas,
            strict=True,
        )
    )
    return event_rows, account_rows, instrument_rows


# Rows one multi-row INSERT writes (`insert_rows`): one statement of 64 rows costs about two
# thirds of the CPU of 64 executions of a one-row statement (measured: a block's 768 event
# rows); 64 rows of 7 columns stay far below SQLite's bound-parameter limit (32,766).
ROWS_PER_INSERT = 64


def insert_rows(
    conn: sqlite3.Connection, head: str, marks: str, rows: list[Any], tail: str = ""
) -> None:
    """`conn.executemany(head + marks + tail, rows)`, each full group of `ROWS_PER_INSERT`
    rows as one multi-row statement: the same rows, in the same order, in the caller's
    transaction. One statement text per table and group size, so SQLite's statement cache
    keeps them prepared."""
    full = len(rows) - len(rows) % ROWS_PER_INSERT
    if full:
        sql = head + ",".join([marks] * ROWS_PER_INSERT) + tail
        flatten = itertools.chain.from_iterable
        for start in range(0, full, ROWS_PER_INSERT):
            conn.execute(sql, list(flatten(rows[start : start + ROWS_PER_INSERT])))
    if full < len(rows):
        conn.executemany(head + marks + tail, rows[full:])
