"""The state table behind its log: state reads and the state log's held-back changes.

What it owns: the `state` and `state_log` tables of the store and, in memory, the state log's
overlay of held-back changes (ledger/state_log.py decides what is held back; this module runs
its SQL): opening the log (`open_log`, reslicing when the state's size moved), a block's state
writes (`write_state_log`, called by `Store.commit_block` inside the block's transaction), and
every read of the state with the held-back changes applied -- `get_state`, `scan_prefix`, and
`state_snapshot` / `iter_state`, which stream the whole state in key order from one consistent
read transaction on a connection of their own (`StateSnapshot`).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

from ledger.state_log import (
    BlockWrites,
    LogFormatError,
    StateOverlay,
    decode_boundaries,
    encode_boundaries,
    merge_sorted,
    slice_count_for,
)
from ledger.store_records import (
    STATE_BATCH,
    CorruptDatabaseError,
    InvalidRecordError,
    StoreError,
    _check_bytes,
    _store_error,
)
from ledger.store_rows import insert_rows
from ledger.store_schema import _META_SLICES, _UPSERT_META, Database, _connect


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no such key)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class StateSnapshot:
    """A consistent, streaming read of the whole state in key order.

    It reads through its own connection inside one read transaction, so in WAL mode it sees the
    state as of its creation even while blocks keep being committed, and it never holds the
    store's write lock between fetches. `held_back` is the state log's overlay at that same
    moment (`StateTable.state_snapshot` takes both under the store's lock), merged into the rows as
    they stream. Close it (or use it as a context manager) when done, and do not keep it open
    for long: SQLite cannot checkpoint the WAL past an open reader, so the `-wal` file grows
    meanwhile.
    """

    def __init__(
        self,
        path: str,
        busy_timeout_ms: int,
        held_back: list[tuple[bytes, bytes | None]] | None = None,
    ) -> None:
        self._path = path
        self._conn = _connect(path, busy_timeout_ms)
        try:
            self._conn.execute("PRAGMA query_only=ON")
            self._conn.execute("BEGIN")
            # execute() runs the first step: the read transaction's snapshot is fixed here.
            self._cursor = self._conn.execute("SELECT key, value FROM state ORDER BY key")
        except sqlite3.Error as exc:
            self._conn.close()
            raise _store_error(path, "starting a state snapshot", exc) from exc
        self._merged = merge_sorted(self._rows(), held_back) if held_back else None

    def _rows(self) -> Iterator[tuple[bytes, bytes]]:
        while batch := self._cursor.fetchmany(STATE_BATCH):
            yield from batch

    def fetch(self, count: int = STATE_BATCH) -> list[tuple[bytes, bytes]]:
        """The next `count` items at most; an empty list at the end."""
        try:
            if self._merged is None:
                return self._cursor.fetchmany(count)
            return list(itertools.islice(self._merged, count))
        except sqlite3.Error as exc:
            raise _store_error(self._path, "streaming the state", exc) from exc

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateSnapshot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class StateTable:
    """The state as the store holds it: the `state` table with the state log's held-back
    changes over it. Shares the store's `Database` (and its lock)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.overlay = StateOverlay()  # the state log's held-back changes (state_log.py)

    def open_log(self, rows_per_slice: int, max_slices: int) -> None:
        """Rebuild the held-back changes from the log, then reslice if the state's size has
        moved far from what the slices were cut for (a factor of 2 up or 4 down, so that a
        state near a threshold does not reslice at every start)."""
        if rows_per_slice < 1 or max_slices < 1:
            raise StoreError("rows_per_slice and max_slices must be at least 1")
        conn = self._db.conn
        try:
            stored = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (_META_SLICES,)
            ).fetchone()
            overlay = StateOverlay(decode_boundaries(stored[0]) if stored else ())
            (tip,) = conn.execute("SELECT max(height) FROM blocks").fetchone()
            rows = conn.execute("SELECT height, changes FROM state_log ORDER BY height")
            overlay.replay(-1 if tip is None else tip, rows)
            (count,) = conn.execute("SELECT count(*) FROM state").fetchone()
        except LogFormatError as exc:
            raise CorruptDatabaseError(
                f"{self._db.path}: the state log is damaged ({exc})"
            ) from exc
        except sqlite3.Error as exc:
            raise _store_error(self._db.path, "reading the state log", exc) from exc
        self.overlay = overlay
        wanted = slice_count_for(count, rows_per_slice, max_slices)
        current = overlay.slice_count
        if wanted >= 2 * current or wanted * 4 <= current:
            self._reslice(wanted)

    def _reslice(self, wanted: int) -> None:
        """Merge every held-back change, empty the log and cut the state into `wanted` slices
        of about equal row counts, in one transaction. The state itself does not change."""
        boundaries: list[bytes] = []

        def write(conn: sqlite3.Connection) -> None:
            self._write_state_rows(self.overlay.items())
            conn.execute("DELETE FROM state_log")
            (count,) = conn.execute("SELECT count(*) FROM state").fetchone()
            step = max(1, count // wanted)
            # Every step-th key, by rank: computed inside SQLite, only the boundaries come
            # back (at two million rows a Python pass over the keys takes a second).
            ranked = conn.execute(
                "SELECT key FROM (SELECT key, row_number() OVER (ORDER BY key) AS rank"
                " FROM state) WHERE rank % ? = 1 AND rank > 1 ORDER BY key",
                (step,),
            )
            boundaries.extend(key for (key,) in ranked)
            del boundaries[wanted - 1 :]
            conn.execute(_UPSERT_META, (_META_SLICES, encode_boundaries(boundaries)))

        self._db.write_transaction("reslicing the state", write)
        self.overlay = StateOverlay(boundaries)

    def _write_state_rows(self, rows: list[tuple[bytes, bytes | None]]) -> None:
        """Upsert or delete (value None) state rows, given in key order."""
        insert_rows(
            self._db.conn,
            "INSERT INTO state (key, value) VALUES ",
            "(?, ?)",
            [row for row in rows if row[1] is not None],
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        self._db.conn.executemany(
            "DELETE FROM state WHERE key = ?", [(key,) for key, value in rows if value is None]
        )

    @property
    def state_slices(self) -> int:
        """How many slices the state log cuts the state into (1: no log, every change is
        written straight into the state table)."""
        return self.overlay.slice_count

    @property
    def held_back(self) -> int:
        """How many state changes the state log holds back from the table right now."""
        return len(self.overlay)

    def write_state_log(self, writes: BlockWrites) -> None:
        """The block's state writes: the merged slice into the table (sorted: neighbouring
        rows share pages), the held-back rest as one log row, and the log row that every
        slice has now been merged past deleted."""
        self._write_state_rows(writes.merged)
        if writes.log_row is not None:
            self._db.conn.execute(
                "INSERT INTO state_log (height, changes) VALUES (?, ?)",
                (writes.height, writes.log_row),
            )
        if writes.expired_height is not None:
            self._db.conn.execute(
                "DELETE FROM state_log WHERE height <= ?", (writes.expired_height,)
            )

    @staticmethod
    def check_state_changes(changes: Mapping[bytes, bytes | None]) -> None:
        for key, value in changes.items():
            # Inline type checks first (a block has thousands of changes); the helpers word
            # the error.
            if type(key) is not bytes or not key:
                _check_bytes("state key", key)
                if not key:
                    raise InvalidRecordError("a state key may not be empty")
            if value is not None and type(value) is not bytes:
                _check_bytes(f"state value of {key.hex()}", value)

    def get_state(self, key: bytes) -> bytes | None:
        with self._db.lock:
            self._db.check_open()
            held, value = self.overlay.lookup(key)
            if held:
                return value
            try:
                row = self._db.conn.execute(
                    "SELECT value FROM state WHERE key = ?", (key,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise _store_error(self._db.path, "a read", exc) from exc
            return row[0] if row else None

    def scan_prefix(
        self, prefix: bytes, limit: int | None = None, after: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        """State items whose key starts with `prefix`, in key order.

        `after` (exclusive) resumes a previous page: pass the last key it returned.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        # The range as [start, stop): the smallest key after `after` is after + b"\x00".
        start = prefix if after is None or after < prefix else after + b"\x00"
        stop = _prefix_end(prefix)
        with self._db.lock:
            self._db.check_open()
            try:
                return self._scan(start, stop, limit)
            except sqlite3.Error as exc:
                raise _store_error(self._db.path, "a read", exc) from exc

    def _scan(
        self, start: bytes, stop: bytes | None, limit: int | None
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` state items with start <= key < stop, the held-back changes applied.

        Page by page: the table's next rows fix how far the page reaches, and only the
        held-back changes up to there are merged in (a deletion among them may leave the page
        short, so the loop reads on). The cost follows the page, not the size of the overlay.
        """
        found: list[tuple[bytes, bytes]] = []
        while limit is None or len(found) < limit:
            need = None if limit is None else limit - len(found)
            sql = "SELECT key, value FROM state WHERE key >= ?"
            params: list[Any] = [start]
            if stop is not None:
                sql += " AND key < ?"
                params.append(stop)
            sql += " ORDER BY key"
            if need is not None:
                sql += " LIMIT ?"
                params.append(need)
            rows = self._db.conn.execute(sql, params).fetchall()
            full = need is not None and len(rows) == need
            # A full page reaches up to its last row (inclusive); a short one to `stop`.
            reach = rows[-1][0] + b"\x00" if full else stop
            held = self.overlay.items_in(start, reach) if len(self.overlay) else []
            found.extend(merge_sorted(rows, held) if held else rows)
            if not full:
                break
            start = reach  # type: ignore[assignment]
        return found if limit is None else found[:limit]

    def state_snapshot(self) -> StateSnapshot:
        """A consistent streaming reader of the whole state (see StateSnapshot)."""
        with self._db.lock:
            # Under the lock: no block commits between the snapshot's read transaction and
            # the copy of the held-back changes, so the two are of the same height.
            self._db.check_open()
            return StateSnapshot(self._db.path, self._db.busy_timeout_ms, self.overlay.items())

    def iter_state(self) -> Iterator[tuple[bytes, bytes]]:
        """Every state item in key order, streamed in batches from one consistent snapshot."""
        with self.state_snapshot() as snapshot:
            while batch := snapshot.fetch():
                yield from batch
