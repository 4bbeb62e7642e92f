"""The store's indexes: events by account and instrument, the held-back index rows, history.

What it owns: the event tables (`events`, `event_accounts`, `event_instruments`) and the
audit-trail query over them (`events`); the three hash-keyed indexes whose rows are held back
in memory and written one slice a block (ledger/held_index.py) -- `event_accounts`, `tx_ids`
(read by ledger/block_log.py) and the supervision history's `history_keys` -- with their
rebuild when the store opens (`open`); the supervision history reads (`history_at`,
`history_of`, through ledger/supervision_store.py) and the hook that rebuilds the supervision
index from the state at the tip (`rebuild_supervision`). A block's rows are built here
(`_event_rows`, `history_rows`) and written by `Store.commit_block` in the block's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from ledger import supervision_store
from ledger.held_index import HeldBackIndex
from ledger.state_log import LogFormatError
from ledger.state_table import StateTable
from ledger.store_records import (
    _INSTRUMENT_SEPARATOR,
    ADDRESS_SIZE,
    MAX_EVENTS_PAGE,
    MAX_HEIGHT,
    MAX_PER_BLOCK,
    BlockRecord,
    CorruptDatabaseError,
    EventColumns,
    EventRecord,
    InvalidRecordError,
    StoreError,
    _check_int,
    _height_of,
    _position,
    _store_error,
)
from ledger.store_rows import event_columns_in_bulk, event_rows_in_bulk
from ledger.store_schema import _META_INDEX_SLICES, _UPSERT_META, Database


def _event_from_row(row: tuple[Any, ...]) -> EventRecord:
    pos, tx_index, event_index, type_, accounts, instruments, data = row
    return EventRecord(
        height=_height_of(pos),
        tx_index=tx_index,
        event_index=event_index,
        type=type_,
        accounts=tuple(
            accounts[i : i + ADDRESS_SIZE] for i in range(0, len(accounts), ADDRESS_SIZE)
        ),
        instruments=tuple(instruments.split(_INSTRUMENT_SEPARATOR)) if instruments else (),
        data=data,
    )


def _records_of_columns(columns: EventColumns) -> tuple[EventRecord, ...]:
    """The records of columns the bulk path did not take, for the per-event loop to check
    and word its refusal; columns of different lengths are refused here."""
    parts = (
        columns.tx_indexes,
        columns.event_indexes,
        columns.types,
        columns.accounts,
        columns.instruments,
        columns.datas,
    )
    try:
        if len(set(map(len, parts))) != 1:
            raise InvalidRecordError("the event columns are not all of one length")
    except TypeError as exc:
        raise InvalidRecordError(f"the event columns must be lists ({exc})") from exc
    return columns.records()


class StoreIndexes:
    """The held-back index rows and the event and history reads. Shares the store's
    `Database`; reads the state table's overlay only to rebuild the supervision index."""

    def __init__(self, db: Database, state: StateTable) -> None:
        self._db = db
        self._state = state
        # event_accounts and tx_ids rows not yet in their tables (held_index.py); a database
        # without the meta key (new, or written before it existed) has every row in its
        # table: one slice.
        self.account_index = HeldBackIndex(1)
        self.tx_index = HeldBackIndex(1)
        # The supervision history's `history_keys` rows, held back the same way
        # (ledger/supervision_store.py), rebuilt from the last `history_log` rows.
        self.history_index = HeldBackIndex(1)

    def open(self, wanted: int) -> None:
        """Rebuild the two indexes' held-back rows (ledger/held_index.py) from the last blocks'
        events and transactions; when the slice count changes, first insert every held-back
        row (the old slicing must not be replayed with the new one)."""
        conn = self._db.conn
        try:
            stored = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (_META_INDEX_SLICES,)
            ).fetchone()
            slices = int(stored[0]) if stored else 1
            accounts, tx_ids = HeldBackIndex(slices), HeldBackIndex(slices)  # ValueError: range
            history = HeldBackIndex(slices)
            (tip,) = conn.execute("SELECT max(height) FROM blocks").fetchone()
            if tip is not None and slices > 1:
                low = _position(max(0, tip - slices + 2), 0)
                accounts.replay(tip, self._event_accounts_since(low))
                tx_ids.replay(tip, self._tx_ids_since(low))
                since = supervision_store.history_log_since(conn, max(0, tip - slices + 2))
                history.replay(tip, since)
        except LogFormatError as exc:
            raise CorruptDatabaseError(
                f"{self._db.path}: the history log is damaged ({exc})"
            ) from exc
        except ValueError as exc:
            raise CorruptDatabaseError(f"{self._db.path}: bad {_META_INDEX_SLICES}") from exc
        except sqlite3.Error as exc:
            raise _store_error(self._db.path, "reading the recent blocks", exc) from exc
        self.account_index, self.tx_index = accounts, tx_ids
        self.history_index = history
        if slices == wanted:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO event_accounts (account, pos) VALUES (?, ?)",
                sorted(accounts.all_rows()),
            )
            conn.executemany(
                "INSERT INTO tx_ids (tx_id, pos) VALUES (?, ?)", sorted(tx_ids.all_rows())
            )
            conn.executemany(
                "INSERT INTO history_keys (key, height) VALUES (?, ?)",
                sorted(history.all_rows()),
            )
            conn.execute(_UPSERT_META, (_META_INDEX_SLICES, str(wanted).encode()))

        self._db.write_transaction("resizing the indexes", write)
        self.account_index, self.tx_index = HeldBackIndex(wanted), HeldBackIndex(wanted)
        self.history_index = HeldBackIndex(wanted)

    def _tx_ids_since(self, low: int) -> Iterator[tuple[int, bytes, int]]:
        """(height, transaction id, position) of every transaction from position `low` on."""
        for position, tx_id in self._db.conn.execute(
            "SELECT pos, tx_id FROM txs WHERE pos >= ? ORDER BY pos", (low,)
        ):
            yield _height_of(position), tx_id, position

    def _event_accounts_since(self, low: int) -> Iterator[tuple[int, bytes, int]]:
        """(height, account, position) of every event from position `low` on, each account
        once per event (as `_event_rows` indexes them)."""
        for position, accounts in self._db.conn.execute(
            "SELECT pos, accounts FROM events WHERE pos >= ? ORDER BY pos", (low,)
        ):
            seen = set()
            for i in range(0, len(accounts), ADDRESS_SIZE):
                account = accounts[i : i + ADDRESS_SIZE]
                if account not in seen:
                    seen.add(account)
                    yield _height_of(position), account, position

    @staticmethod
    def history_rows(record: BlockRecord) -> tuple[list, list[tuple[bytes, int]]]:
        """The block's state history (ledger/supervision_store.py) and its `history_keys`
        rows; none for a block without the supervision index or one written in bulk."""
        if record.supervision is None:
            return [], []
        history = supervision_store.history_changes(record.changes)
        if len(history) > supervision_store.BULK_HISTORY:
            return history, []
        index_key = supervision_store.index_key
        return history, [(index_key(key), record.height) for key, _ in history]

    @staticmethod
    def _event_rows(
        record: BlockRecord,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]], list[tuple[str, int]]]:
        if len(record.events) >= MAX_PER_BLOCK:
            raise InvalidRecordError(
                f"{len(record.events)} events in one block (max {MAX_PER_BLOCK - 1})"
            )
        events = record.events
        if type(events) is EventColumns:
            in_bulk = event_columns_in_bulk(record.height, events)
            if in_bulk is not None:
                return in_bulk
            events = _records_of_columns(events)
        else:
            in_bulk = event_rows_in_bulk(record.height, events)
            if in_bulk is not None:
                return in_bulk
        # Events are stored in (tx_index, event_index) order, so reading by position returns
        # them in that order whatever order the executor listed them in (usually already so).
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

    def rebuild_supervision(self, height: int, snapshot: Any) -> None:
        """Start the supervision index over from the state at the tip `height`
        (ledger/supervision_store.py `rebuild`), in one transaction."""
        held = self._state.overlay.items()
        self._db.write_transaction(
            "building the supervision index",
            lambda conn: supervision_store.rebuild(conn, height, snapshot, held),
        )
        self.history_index = HeldBackIndex(self.history_index.slice_count)

    def history_at(self, keys: list[bytes], height: int) -> list[bytes | None]:
        """Each key's value as of `height` from the supervision history (None: absent)."""
        values: list[bytes | None] = []
        with self._db.lock:
            self._db.check_open()
            try:
                for key in keys:
                    held = self.history_index.positions(supervision_store.index_key(key), 0, height)
                    found = supervision_store.history_latest(
                        self._db.conn, key, held[-1] if held else None, height
                    )
                    values.append(
                        None
                        if found is None
                        else supervision_store.history_value(self._db.conn, key, *found)
                    )
            except (sqlite3.Error, LogFormatError) as exc:
                raise StoreError(f"{self._db.path}: reading the history failed ({exc})") from exc
        return values

    def history_of(self, key: bytes, limit: int, offset: int) -> list[tuple[int, bytes | None]]:
        """(height, value) of the changes of `key`, latest first, one page."""
        with self._db.lock:
            self._db.check_open()
            try:
                held = self.history_index.positions(supervision_store.index_key(key), 0, MAX_HEIGHT)
                heights = supervision_store.history_heights(self._db.conn, key, held, MAX_HEIGHT)
                return [
                    (h, supervision_store.history_value(self._db.conn, key, h, in_table))
                    for h, in_table in heights[offset : offset + limit]
                ]
            except (sqlite3.Error, LogFormatError) as exc:
                raise StoreError(f"{self._db.path}: reading the history failed ({exc})") from exc

    def events(
        self,
        account: bytes | None = None,
        instrument: str | None = None,
        from_height: int | None = None,
        to_height: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRecord]:
        """The audit trail: events in chain order, filtered by account and/or instrument and a
        height range (inclusive), one page of at most `limit` (<= MAX_EVENTS_PAGE) events."""
        if not 0 <= limit <= MAX_EVENTS_PAGE:
            raise ValueError(f"limit must be in [0, {MAX_EVENTS_PAGE}], got {limit}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        if to_height is not None and to_height < 0:
            return []
        if from_height is not None and from_height > MAX_HEIGHT:
            return []
        low = _position(max(from_height or 0, 0), 0)
        top = MAX_HEIGHT if to_height is None else min(to_height, MAX_HEIGHT)
        high = _position(top, MAX_PER_BLOCK - 1)
        # With a filter, the loop runs over the matching index table's rows, which are already
        # in position order (its primary key is (account or instrument, pos)): a page costs
        # `offset + limit` index steps, never a sort of the account's whole history.
        # CROSS JOIN tells SQLite to keep that table as the outer loop.
        columns = "e.pos, e.tx_index, e.event_index, e.type, e.accounts, e.instruments, e.data"
        params: list[Any] = []
        if account is not None:
            sql = f"SELECT {columns} FROM event_accounts d CROSS JOIN events e ON e.pos = d.pos"
            if instrument is not None:
                sql += " JOIN event_instruments i ON i.pos = d.pos AND i.instrument = ?"
                params.append(instrument)
            sql += " WHERE d.account = ?"
            params.append(account)
        elif instrument is not None:
            sql = f"SELECT {columns} FROM event_instruments d CROSS JOIN events e ON e.pos = d.pos"
            sql += " WHERE d.instrument = ?"
            params.append(instrument)
        else:
            sql = f"SELECT {columns} FROM events e WHERE 1"
        driver = "e" if account is None and instrument is None else "d"
        sql += f" AND {driver}.pos BETWEEN ? AND ?"
        params.extend((low, high))
        if account is None:
            page = f"{sql} ORDER BY {driver}.pos LIMIT ? OFFSET ?"
            return [_event_from_row(row) for row in self._db.read(page, (*params, limit, offset))]
        with self._db.lock:
            self._db.check_open()
            try:
                return self._account_events(account, instrument, sql, params, limit, offset)
            except sqlite3.Error as exc:
                raise _store_error(self._db.path, "a read", exc) from exc

    def _account_events(
        self,
        account: bytes,
        instrument: str | None,
        sql: str,
        params: list[Any],
        limit: int,
        offset: int,
    ) -> list[EventRecord]:
        """One page of an account's events: the indexed ones (`sql`), then the ones whose
        index rows are still held back (ledger/held_index.py), which are all newer."""
        low, high = params[-2], params[-1]
        held = self.account_index.positions(account, low, high)
        conn = self._db.conn
        page = f"{sql} ORDER BY d.pos LIMIT ? OFFSET ?"
        found = [_event_from_row(row) for row in conn.execute(page, (*params, limit, offset))]
        if not held or len(found) == limit:
            return found
        if found:
            skip = 0  # the page began inside the indexed events and ran past their end
        else:
            # The page begins after the indexed events: how many were there to step over?
            count_sql = "SELECT count(*) FROM" + sql.split(" FROM", 1)[1]
            (indexed,) = conn.execute(count_sql, params).fetchone()
            skip = offset - indexed
        if instrument is None:  # every held-back position is a match: step over them here
            held = held[skip : skip + limit - len(found)]
            skip = 0
        columns = "pos, tx_index, event_index, type, accounts, instruments, data"
        for start in range(0, len(held), 500):
            chunk = held[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT {columns} FROM events WHERE pos IN ({marks}) ORDER BY pos", chunk
            )
            for row in rows:
                event = _event_from_row(row)
                if instrument is not None and instrument not in event.instruments:
                    continue
                if skip:
                    skip -= 1
                    continue
                found.append(event)
                if len(found) == limit:
                    return found
        return found
