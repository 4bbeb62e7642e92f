"""The node's SQLite store: blocks, commit certificates, transactions, events and the state.

One database file per node. The store persists bytes and never interprets them: the executor
hands it a `BlockRecord` (the block, its certificate, its transactions with their receipts, its
events, the state changes and the app hash) and `Store.commit_block` writes all of it in ONE
SQLite transaction, so after a crash the database holds every committed block whole and nothing
of a block that was not committed. Reopening the file gives back the same state items, blocks
and app hashes (`iter_state` streams the state in key order to rebuild the in-memory state and
the state tree).

Durability rules (see TESTPLAN.md, "SQLite facts that matter"):

* every connection sets `journal_mode=WAL`, `synchronous=FULL`, `foreign_keys=ON` and a busy
  timeout (these pragmas are per connection);
* there is one writer: the `Store` object, guarded by a lock, and an advisory `flock` on
  `<db>.lock` so that a second process (say, a second validator started on the same home, which
  could double-sign) cannot open the same database;
* every write is an explicit `BEGIN IMMEDIATE ... COMMIT`; with `synchronous=FULL` a commit has
  reached the disk when the call returns. `save_consensus_record` relies on that: a validator's
  last-signed state is on disk before its vote leaves the process;
* the `-wal` and `-shm` files belong to SQLite and are never deleted; `backup` uses the SQLite
  backup API.

Layout (schema version 2). Transactions and events are keyed by a *position*, an integer
`height << 24 | ordinal`, so that a block's rows are one contiguous, append-only range of an
integer primary key (cheap to insert, cheap to range-scan by height) and no extra index on the
height is needed. Lookups by transaction id, account or instrument go through small
`WITHOUT ROWID` index tables whose rows are a few dozen bytes. The state is a `WITHOUT ROWID`
table keyed by the state key, so a prefix scan (all holders of one instrument) is one b-tree
range. Once the state is large, a block's state changes do not all go into that table at once:
the state log (`ledger/state_log.py`) merges one key range per block and holds the rest back in
a `state_log` row and in memory, so a block rewrites a few hundred neighbouring pages instead of
thousands of scattered ones. Every read here (`get_state`, `scan_prefix`, `state_snapshot`)
sees the table with the held-back changes applied: callers never see the difference. The two
hash-keyed indexes, `tx_ids` and `event_accounts`, are written the same way, one slice of keys
a block (`ledger/held_index.py`); their held-back rows are rebuilt from `txs` and `events` at
opening, and `tx` and `events` read both.

Height 0 is the genesis record: the first `BlockRecord` written to an empty store has height 0,
hash equal to the store's genesis hash, and carries the genesis state as its changes. Every later
record must have height `latest_height() + 1`.

`AsyncStore` offers the same calls as coroutines; it runs them on one worker thread through a
`run_sync` function supplied by the caller (in `node/`: `trio.to_thread.run_sync` with a
`trio.CapacityLimiter(1)`), because the ledger package does not import trio.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import operator
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from consensus.errors import LocalProtocolError
from ledger import supervision_store
from ledger.held_index import INDEX_SLICES, HeldBackIndex
from ledger.state_log import (
    MAX_SLICES,
    ROWS_PER_SLICE,
    BlockWrites,
    LogFormatError,
    StateOverlay,
    decode_boundaries,
    encode_boundaries,
    merge_sorted,
    slice_count_for,
)

# 2: the state log (`state_log` table, `store.state_slices` meta); a version-1 database gains
# the empty table when opened, and its state has one slice until it is resliced.
SCHEMA_VERSION = 2

ADDRESS_SIZE = 20
# Transactions and events are positioned at `height << POSITION_BITS | ordinal`.
POSITION_BITS = 24
MAX_PER_BLOCK = 1 << POSITION_BITS  # transactions (or events) in one block
MAX_HEIGHT = (1 << (63 - POSITION_BITS)) - 1  # so that a position fits a signed 64-bit integer
MAX_POSITION = (1 << 63) - 1
MAX_EVENTS_PAGE = 1000  # the largest `limit` `events()` accepts: pages are bounded
STATE_BATCH = 10_000  # rows fetched at a time when streaming the state
WRITER_CACHE_KIB = 64 * 1024  # page cache of the writing connection
# SQLite's default, stated because it only applies to a new file. 1 KiB pages write fewer bytes
# per randomly updated row but measured no faster per block (more CPU, deeper trees).
PAGE_SIZE = 4096
WAL_AUTOCHECKPOINT_PAGES = 16_384  # about 64 MiB of WAL at 4 KiB pages

# Keys of the meta table that belong to the store itself; callers' meta keys may not use them.
_RESERVED_PREFIX = "store."
_META_SCHEMA = "store.schema_version"
_META_CHAIN = "store.chain_id"
_META_GENESIS = "store.genesis_hash"
_META_CONSENSUS = "store.consensus_record"
_META_SLICES = "store.state_slices"
_META_INDEX_SLICES = "store.index_slices"

_UPSERT_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE blocks (
    height      INTEGER PRIMARY KEY NOT NULL CHECK (height >= 0),
    hash        BLOB NOT NULL UNIQUE,
    header      BLOB NOT NULL,
    block       BLOB NOT NULL,
    commit_cert BLOB NOT NULL,
    app_hash    BLOB NOT NULL
);

CREATE TABLE txs (
    pos     INTEGER PRIMARY KEY NOT NULL,
    tx_id   BLOB NOT NULL,
    raw     BLOB NOT NULL,
    code    INTEGER NOT NULL,
    receipt BLOB NOT NULL
);

CREATE TABLE tx_ids (
    tx_id BLOB PRIMARY KEY NOT NULL,
    pos   INTEGER NOT NULL REFERENCES txs (pos)
) WITHOUT ROWID;

CREATE TABLE events (
    pos         INTEGER PRIMARY KEY NOT NULL,
    tx_index    INTEGER NOT NULL,
    event_index INTEGER NOT NULL,
    type        TEXT NOT NULL,
    accounts    BLOB NOT NULL,
    instruments TEXT NOT NULL,
    data        BLOB NOT NULL
);

CREATE TABLE event_accounts (
    account BLOB NOT NULL,
    pos     INTEGER NOT NULL,
    PRIMARY KEY (account, pos)
) WITHOUT ROWID;

CREATE TABLE event_instruments (
    instrument TEXT NOT NULL,
    pos        INTEGER NOT NULL,
    PRIMARY KEY (instrument, pos)
) WITHOUT ROWID;

CREATE TABLE state (
    key   BLOB PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""
# Added by schema version 2 (a version-1 database gains it when opened): see state_log.py.
_STATE_LOG_TABLE = """
CREATE TABLE state_log (
    height  INTEGER PRIMARY KEY NOT NULL,
    changes BLOB NOT NULL
)"""
_SCHEMA += _STATE_LOG_TABLE + ";"
_TABLES = frozenset(
    {
        "meta",
        "blocks",
        "txs",
        "tx_ids",
        "events",
        "event_accounts",
        "event_instruments",
        "state",
        "state_log",
    }
)

_INSTRUMENT_SEPARATOR = "\x00"  # packs an event's instrument ids into one TEXT column


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """The store cannot do what was asked; the message says why and names the values."""


class CorruptDatabaseError(StoreError):
    """The file is not a readable SQLite database, or not a Khazana store."""


class ForeignDatabaseError(StoreError):
    """The database belongs to another chain (another chain id or genesis hash)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer (or unknown) version of the store."""


class StoreLockedError(StoreError):
    """Another process (or another `Store` in this one) already has the database open."""


class HeightError(StoreError, LocalProtocolError):
    """A block record whose height is not the next one (`latest_height() + 1`)."""


class InvalidRecordError(StoreError, LocalProtocolError):
    """A record whose fields break the store's rules (sizes, ordinals, duplicates)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class TxRecord:
    """One transaction of a block and its result. `code` 0 is success; `receipt` is opaque."""

    tx_id: bytes
    height: int
    index: int
    raw: bytes
    code: int
    receipt: bytes


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event of a block, indexed by the accounts and instruments it concerns.

    `tx_index` is the index of the transaction that emitted it (the ledger may use a negative
    index for events of the block itself); (`tx_index`, `event_index`) is unique in a block.
    `accounts` are 20-byte addresses and `instruments` instrument ids; `data` is opaque.
    """

    height: int
    tx_index: int
    event_index: int
    type: str
    accounts: tuple[bytes, ...]
    instruments: tuple[str, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """Everything `Store.commit_block` writes for one height, in one transaction.

    `changes` maps state keys to their new value bytes, or to None to delete the key.
    `meta` holds extra key/values of the caller's (names may not start with "store.").
    """

    height: int
    hash: bytes
    header: bytes
    block: bytes
    commit: bytes
    app_hash: bytes
    txs: tuple[TxRecord, ...] = ()
    events: tuple[EventRecord, ...] = ()
    changes: Mapping[bytes, bytes | None] = field(default_factory=dict)
    meta: Mapping[str, bytes] = field(default_factory=dict)
    # The block's change to the supervision index (`ledger.supervision.SupervisionDelta`,
    # written by ledger/supervision_store.py in this same transaction); None: no index.
    supervision: Any = None


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """A block as read back: its bytes and the app hash after executing it."""

    height: int
    hash: bytes
    header: bytes
    block: bytes
    app_hash: bytes


# --------------------------------------------------------------------------- helpers


def _position(height: int, ordinal: int) -> int:
    return (height << POSITION_BITS) | ordinal


def _storable_height(height: object) -> bool:
    # Reads answer "nothing there" for any height no block can have (negative, or too big
    # for SQLite's integers) instead of failing: heights often come from clients.
    return type(height) is int and 0 <= height <= MAX_HEIGHT


def _height_of(position: int) -> int:
    return position >> POSITION_BITS


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no such key)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _check_bytes(name: str, value: object, *, size: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise InvalidRecordError(f"{name} must be bytes, not {type(value).__name__}")
    if size is not None and len(value) != size:
        raise InvalidRecordError(f"{name} must be {size} bytes, got {len(value)}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRecordError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


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


# ----------------------------------------------- a block's rows in bulk (`Store.commit_block`)

# A block of transfers has ~3 events per transaction; `Store._tx_rows` and `Store._event_rows`
# check every field of every record one at a time, which cost a 256-transfer block more CPU
# than SQLite's inserts. The two functions below run the same checks over whole columns at C
# speed and build the same rows; when a check fails (or an input is not of the exact common
# type), they answer None and the per-record loop runs, which words the error (or accepts
# what only it accepts: an int subclass, a list of accounts, an account named twice).
# tests/ledger/test_store_bulk_rows.py holds both to a copy of the per-record loop.
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


def _tx_rows_in_bulk(
    height: int, txs: tuple[Any, ...]
) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]]] | None:
    """`Store._tx_rows(record)` for `record.txs` that pass all its checks, else None."""
    count = len(txs)
    if not count or count >= MAX_PER_BLOCK or not _all_of_type(txs, TxRecord):
        return None
    heights = [tx.height for tx in txs]
    indexes = [tx.index for tx in txs]
    tx_ids = [tx.tx_id for tx in txs]
    raws = [tx.raw for tx in txs]
    codes = [tx.code for tx in txs]
    receipts = [tx.receipt for tx in txs]
    if not (
        _all_of_type(heights, int)
        and set(heights) == {height}
        and _all_of_type(indexes, int)
        and indexes == list(range(count))
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


def _event_rows_in_bulk(
    height: int, events: tuple[Any, ...]
) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]], list[tuple[str, int]]] | None:
    """`Store._event_rows(record)` for `record.events` that pass all its checks, are in
    (tx_index, event_index) order already and name no account or instrument twice, else
    None."""
    if not events or not _all_of_type(events, EventRecord):
        return None
    heights = [e.height for e in events]
    tx_indexes = [e.tx_index for e in events]
    event_indexes = [e.event_index for e in events]
    types = [e.type for e in events]
    accounts = [e.accounts for e in events]
    instruments = [e.instruments for e in events]
    datas = [e.data for e in events]
    if not (
        _all_of_type(heights, int)
        and set(heights) == {height}
        and _ints_within(tx_indexes, *_INT32)
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
    positions = range(base, base + len(events))
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


# Rows one multi-row INSERT writes (`_insert_rows`): one statement of 64 rows costs about two
# thirds of the CPU of 64 executions of a one-row statement (measured: a block's 768 event
# rows); 64 rows of 7 columns stay far below SQLite's bound-parameter limit (32,766).
_ROWS_PER_INSERT = 64


def _insert_rows(
    conn: sqlite3.Connection, head: str, marks: str, rows: list[Any], tail: str = ""
) -> None:
    """`conn.executemany(head + marks + tail, rows)`, each full group of `_ROWS_PER_INSERT`
    rows as one multi-row statement: the same rows, in the same order, in the caller's
    transaction. One statement text per table and group size, so SQLite's statement cache
    keeps them prepared."""
    full = len(rows) - len(rows) % _ROWS_PER_INSERT
    if full:
        sql = head + ",".join([marks] * _ROWS_PER_INSERT) + tail
        flatten = itertools.chain.from_iterable
        for start in range(0, full, _ROWS_PER_INSERT):
            conn.execute(sql, list(flatten(rows[start : start + _ROWS_PER_INSERT])))
    if full < len(rows):
        conn.executemany(head + marks + tail, rows[full:])


def _store_error(path: str, doing: str, exc: sqlite3.Error) -> StoreError:
    """The StoreError for an SQLite failure: CorruptDatabaseError when the file is damaged."""
    primary_code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    damaged = primary_code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    kind = CorruptDatabaseError if damaged else StoreError
    return kind(f"{path}: {doing} failed ({exc})")


def _connect(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection with the pragmas every connection to a store must have.

    `isolation_level=None`: Python's sqlite3 then starts no transaction behind our back; every
    write is our own explicit `BEGIN IMMEDIATE`. `check_same_thread=False`: the connection may
    be used from the worker thread of `AsyncStore`; the `Store` lock serialises all use.
    """
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
    )
    try:
        # Only takes effect on a new, empty file (before WAL mode is set); see PAGE_SIZE.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{path}: SQLite refused WAL mode (journal_mode is {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        # A block at a million accounts rewrites ~3,000 scattered pages; with SQLite's default
        # (1,000 pages) every commit would also copy the WAL back into the database. A larger
        # threshold checkpoints every few blocks instead; durability is unchanged (a commit is
        # durable once its WAL frames are synced, whatever the checkpoint does).
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise CorruptDatabaseError(f"{path}: not a readable SQLite database ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


# --------------------------------------------------------------------------- the store


class StateSnapshot:
    """A consistent, streaming read of the whole state in key order.

    It reads through its own connection inside one read transaction, so in WAL mode it sees the
    state as of its creation even while blocks keep being committed, and it never holds the
    store's write lock between fetches. `held_back` is the state log's overlay at that same
    moment (`Store.state_snapshot` takes both under the store's lock), merged into the rows as
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


class Store:
    """One node's database. Create with `Store.open(path, chain_id=..., genesis_hash=...)`.

    All methods are safe to call from any thread; a lock serialises use of the connection.
    """

    def __init__(
        self, conn: sqlite3.Connection, path: str, lock_file: int, busy_timeout_ms: int
    ) -> None:
        # Use `Store.open`; this only wires up an already validated connection.
        self._conn = conn
        self._path = path
        self._lock_file = lock_file
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._closed = False
        self._overlay = StateOverlay()  # the state log's held-back changes (state_log.py)
        # event_accounts and tx_ids rows not yet in their tables (held_index.py); a database
        # without the meta key (new, or written before it existed) has every row in its
        # table: one slice.
        self._account_index = HeldBackIndex(1)
        self._tx_index = HeldBackIndex(1)
        # The supervision history's `history_keys` rows, held back the same way
        # (ledger/supervision_store.py), rebuilt from the last `history_log` rows.
        self._history_index = HeldBackIndex(1)

    # ----------------------------------------------------------------- open / close

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        chain_id: str,
        genesis_hash: bytes,
        busy_timeout_ms: int = 5000,
        rows_per_slice: int = ROWS_PER_SLICE,
        max_slices: int = MAX_SLICES,
        index_slices: int = INDEX_SLICES,
    ) -> Store:
        """Open (creating it if needed) the store of one chain.

        A new database records `chain_id` and `genesis_hash`; an existing one must hold the same
        values (ForeignDatabaseError otherwise) and a schema this code knows
        (SchemaVersionError). A file that is not a store raises CorruptDatabaseError; a database
        already open elsewhere raises StoreLockedError.

        `rows_per_slice` and `max_slices` size the state log's slices (ledger/state_log.py),
        `index_slices` the account index's (ledger/held_index.py); the defaults
        suit a node, tests pass small ones to exercise both on small databases.
        """
        if not isinstance(chain_id, str) or not chain_id:
            raise StoreError(f"chain_id must be a non-empty str, got {chain_id!r}")
        if not isinstance(genesis_hash, bytes) or not genesis_hash:
            raise StoreError(f"genesis_hash must be non-empty bytes, got {genesis_hash!r}")
        path = os.fspath(path)
        lock_file = cls._take_process_lock(path)
        try:
            conn = _connect(path, busy_timeout_ms)
            try:
                # A bounded page cache (64 MiB) big enough to keep the upper levels of the state
                # and index b-trees in memory with millions of rows; SQLite's default is 2 MiB.
                conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
                cls._prepare(conn, path, chain_id, genesis_hash)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            os.close(lock_file)
            raise
        store = cls(conn, path, lock_file, busy_timeout_ms)
        try:
            store._open_state_log(rows_per_slice, max_slices)
            store._open_indexes(index_slices)
        except BaseException:
            store.close()
            raise
        return store

    def _open_state_log(self, rows_per_slice: int, max_slices: int) -> None:
        """Rebuild the held-back changes from the log, then reslice if the state's size has
        moved far from what the slices were cut for (a factor of 2 up or 4 down, so that a
        state near a threshold does not reslice at every start)."""
        if rows_per_slice < 1 or max_slices < 1:
            raise StoreError("rows_per_slice and max_slices must be at least 1")
        conn = self._conn
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
            raise CorruptDatabaseError(f"{self._path}: the state log is damaged ({exc})") from exc
        except sqlite3.Error as exc:
            raise _store_error(self._path, "reading the state log", exc) from exc
        self._overlay = overlay
        wanted = slice_count_for(count, rows_per_slice, max_slices)
        current = overlay.slice_count
        if wanted >= 2 * current or wanted * 4 <= current:
            self._reslice(wanted)

    def _reslice(self, wanted: int) -> None:
        """Merge every held-back change, empty the log and cut the state into `wanted` slices
        of about equal row counts, in one transaction. The state itself does not change."""
        boundaries: list[bytes] = []

        def write(conn: sqlite3.Connection) -> None:
            self._write_state_rows(self._overlay.items())
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

        self._write_transaction("reslicing the state", write)
        self._overlay = StateOverlay(boundaries)

    def _open_indexes(self, wanted: int) -> None:
        """Rebuild the two indexes' held-back rows (ledger/held_index.py) from the last blocks'
        events and transactions; when the slice count changes, first insert every held-back
        row (the old slicing must not be replayed with the new one)."""
        conn = self._conn
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
            raise CorruptDatabaseError(f"{self._path}: the history log is damaged ({exc})") from exc
        except ValueError as exc:
            raise CorruptDatabaseError(f"{self._path}: bad {_META_INDEX_SLICES}") from exc
        except sqlite3.Error as exc:
            raise _store_error(self._path, "reading the recent blocks", exc) from exc
        self._account_index, self._tx_index = accounts, tx_ids
        self._history_index = history
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

        self._write_transaction("resizing the indexes", write)
        self._account_index, self._tx_index = HeldBackIndex(wanted), HeldBackIndex(wanted)
        self._history_index = HeldBackIndex(wanted)

    def _tx_ids_since(self, low: int) -> Iterator[tuple[int, bytes, int]]:
        """(height, transaction id, position) of every transaction from position `low` on."""
        for position, tx_id in self._conn.execute(
            "SELECT pos, tx_id FROM txs WHERE pos >= ? ORDER BY pos", (low,)
        ):
            yield _height_of(position), tx_id, position

    def _event_accounts_since(self, low: int) -> Iterator[tuple[int, bytes, int]]:
        """(height, account, position) of every event from position `low` on, each account
        once per event (as `_event_rows` indexes them)."""
        for position, accounts in self._conn.execute(
            "SELECT pos, accounts FROM events WHERE pos >= ? ORDER BY pos", (low,)
        ):
            seen = set()
            for i in range(0, len(accounts), ADDRESS_SIZE):
                account = accounts[i : i + ADDRESS_SIZE]
                if account not in seen:
                    seen.add(account)
                    yield _height_of(position), account, position

    def _write_state_rows(self, rows: list[tuple[bytes, bytes | None]]) -> None:
        """Upsert or delete (value None) state rows, given in key order."""
        _insert_rows(
            self._conn,
            "INSERT INTO state (key, value) VALUES ",
            "(?, ?)",
            [row for row in rows if row[1] is not None],
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        self._conn.executemany(
            "DELETE FROM state WHERE key = ?", [(key,) for key, value in rows if value is None]
        )

    @property
    def state_slices(self) -> int:
        """How many slices the state log cuts the state into (1: no log, every change is
        written straight into the state table)."""
        return self._overlay.slice_count

    @property
    def held_back(self) -> int:
        """How many state changes the state log holds back from the table right now."""
        return len(self._overlay)

    @staticmethod
    def _take_process_lock(path: str) -> int:
        # One writer per database: a second node process on the same home must not run, since
        # two validators with one key can double-sign. The lock dies with the process.
        try:
            fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"{path} is already open by another store or process") from None
        return fd

    @staticmethod
    def _prepare(conn: sqlite3.Connection, path: str, chain_id: str, genesis_hash: bytes) -> None:
        """Create the schema in an empty database, or check an existing one is ours."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {
                    name
                    for (name,) in conn.execute(
                        "SELECT name FROM sqlite_schema WHERE type = 'table'"
                    )
                }
                if not tables:
                    # Statement by statement: executescript() would COMMIT our transaction.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        [
                            (_META_SCHEMA, str(SCHEMA_VERSION).encode()),
                            (_META_CHAIN, chain_id.encode()),
                            (_META_GENESIS, genesis_hash),
                        ],
                    )
                else:
                    Store._check_existing(conn, path, tables, chain_id, genesis_hash)
                supervision_store.ensure_tables(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabaseError(f"{path}: not a readable SQLite database ({exc})") from exc

    @staticmethod
    def _check_existing(
        conn: sqlite3.Connection, path: str, tables: set[str], chain_id: str, genesis_hash: bytes
    ) -> None:
        if "meta" not in tables:
            raise CorruptDatabaseError(f"{path}: an SQLite database, but not a Khazana store")
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'store.%'"))
        raw_version = meta.get(_META_SCHEMA)
        try:
            version = int(raw_version.decode()) if isinstance(raw_version, bytes) else None
        except ValueError:
            version = None
        if version is None:
            raise CorruptDatabaseError(f"{path}: the store's schema version is missing")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path}: schema version {version} is newer than this node's {SCHEMA_VERSION};"
                " upgrade the node"
            )
        if version < 1:
            raise SchemaVersionError(f"{path}: schema version {version} has no migration")
        if version == 1:
            # 1 -> 2: the state log. Inside _prepare's transaction: all or nothing.
            conn.execute(_STATE_LOG_TABLE)
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = ?",
                (str(SCHEMA_VERSION).encode(), _META_SCHEMA),
            )
            tables = tables | {"state_log"}
        missing = _TABLES - tables
        if missing:
            raise CorruptDatabaseError(f"{path}: tables missing: {sorted(missing)}")
        stored_chain = meta.get(_META_CHAIN, b"").decode(errors="replace")
        stored_genesis = meta.get(_META_GENESIS, b"")
        if stored_chain != chain_id or stored_genesis != genesis_hash:
            raise ForeignDatabaseError(
                f"{path} belongs to chain {stored_chain!r} with genesis {stored_genesis.hex()},"
                f" not to chain {chain_id!r} with genesis {genesis_hash.hex()}"
            )

    def close(self) -> None:
        """Close the connection and release the process lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
            os.close(self._lock_file)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        return self._path

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            self._check_open()
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _store_error(self._path, "a read", exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._path}: the store is closed")

    # ----------------------------------------------------------------- writes

    def commit_block(self, record: BlockRecord) -> None:
        """Write one block and everything that goes with it in a single transaction.

        Raises HeightError unless `record.height` is the next height, InvalidRecordError for a
        malformed record (including a transaction id already stored); nothing is written then.
        """
        self._check_block_fields(record)
        tx_rows, tx_id_rows = self._tx_rows(record)
        event_rows, account_rows, instrument_rows = self._event_rows(record)
        self._check_state_changes(record.changes)
        meta_rows = self._meta_rows(record.meta)
        history, history_rows = self._history_rows(record)
        with self._lock:
            self._check_open()
            conn = self._conn
            # What the state log merges into the table and holds back; the overlay itself
            # changes only once the transaction has committed.
            writes = self._overlay.plan(record.height, record.changes)
            account_writes = self._account_index.plan(record.height, account_rows)
            tx_id_writes = self._tx_index.plan(record.height, tx_id_rows)
            history_writes = self._history_index.plan(record.height, history_rows)
            try:
                conn.execute("BEGIN IMMEDIATE")
                self._check_next_height(record)
                conn.execute(
                    "INSERT INTO blocks (height, hash, header, block, commit_cert, app_hash)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        record.height,
                        record.hash,
                        record.header,
                        record.block,
                        record.commit,
                        record.app_hash,
                    ),
                )
                # Multi-row statements (`_insert_rows`): the same rows, less CPU per row.
                _insert_rows(
                    conn,
                    "INSERT INTO txs (pos, tx_id, raw, code, receipt) VALUES ",
                    "(?, ?, ?, ?, ?)",
                    tx_rows,
                )
                self._check_new_tx_ids(record.height, tx_id_rows)
                _insert_rows(
                    conn, "INSERT INTO tx_ids (tx_id, pos) VALUES ", "(?, ?)", tx_id_writes.merged
                )
                _insert_rows(
                    conn,
                    "INSERT INTO events (pos, tx_index, event_index, type, accounts, instruments,"
                    " data) VALUES ",
                    "(?, ?, ?, ?, ?, ?, ?)",
                    event_rows,
                )
                _insert_rows(
                    conn,
                    "INSERT INTO event_accounts (account, pos) VALUES ",
                    "(?, ?)",
                    account_writes.merged,
                )
                _insert_rows(
                    conn,
                    "INSERT INTO event_instruments (instrument, pos) VALUES ",
                    "(?, ?)",
                    instrument_rows,
                )
                self._write_state_log(writes)
                _insert_rows(
                    conn,
                    "INSERT INTO history_keys (key, height) VALUES ",
                    "(?, ?)",
                    history_writes.merged,
                )
                if record.supervision is not None:
                    supervision_store.write_block(conn, record.height, record.supervision, history)
                conn.executemany(_UPSERT_META, meta_rows)
                conn.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._rollback()
                raise InvalidRecordError(
                    f"block {record.height} conflicts with stored data ({exc}); a block hash or"
                    " transaction id may already be stored"
                ) from exc
            except sqlite3.Error as exc:
                self._rollback()
                raise _store_error(self._path, f"writing block {record.height}", exc) from exc
            except BaseException:
                self._rollback()
                raise
            self._overlay.apply(writes)
            self._account_index.apply(account_writes)
            self._tx_index.apply(tx_id_writes)
            self._history_index.apply(history_writes)

    @staticmethod
    def _history_rows(record: BlockRecord) -> tuple[list, list[tuple[bytes, int]]]:
        """The block's state history (ledger/supervision_store.py) and its `history_keys`
        rows; none for a block without the supervision index or one written in bulk."""
        if record.supervision is None:
            return [], []
        history = supervision_store.history_changes(record.changes)
        if len(history) > supervision_store.BULK_HISTORY:
            return history, []
        index_key = supervision_store.index_key
        return history, [(index_key(key), record.height) for key, _ in history]

    def _check_new_tx_ids(self, height: int, tx_id_rows: list[tuple[bytes, int]]) -> None:
        """Refuse a transaction id that is already stored (held back or in the table) or
        twice in the block: with rows held back, the table's primary key alone would notice
        only when the row is merged, blocks later."""
        ids = [tx_id for tx_id, _ in tx_id_rows]
        repeated = len(set(ids)) != len(ids)
        held = self._tx_index
        if repeated or any(held.positions(tx_id, 0, MAX_POSITION) for tx_id in ids):
            raise InvalidRecordError(f"block {height}: a transaction id is already stored")
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            if self._conn.execute(
                f"SELECT 1 FROM tx_ids WHERE tx_id IN ({marks}) LIMIT 1", chunk
            ).fetchone():
                raise InvalidRecordError(f"block {height}: a transaction id is already stored")

    def _write_state_log(self, writes: BlockWrites) -> None:
        """The block's state writes: the merged slice into the table (sorted: neighbouring
        rows share pages), the held-back rest as one log row, and the log row that every
        slice has now been merged past deleted."""
        self._write_state_rows(writes.merged)
        if writes.log_row is not None:
            self._conn.execute(
                "INSERT INTO state_log (height, changes) VALUES (?, ?)",
                (writes.height, writes.log_row),
            )
        if writes.expired_height is not None:
            self._conn.execute("DELETE FROM state_log WHERE height <= ?", (writes.expired_height,))

    def _rollback(self) -> None:
        # A failed COMMIT (disk full, I/O error) may already have rolled back.
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _check_next_height(self, record: BlockRecord) -> None:
        (latest,) = self._conn.execute("SELECT max(height) FROM blocks").fetchone()
        expected = 0 if latest is None else latest + 1
        if record.height != expected:
            raise HeightError(
                f"block height {record.height} is not the next height {expected}"
                f" (latest stored: {latest})"
            )
        if record.height == 0:
            (genesis,) = self._conn.execute(
                "SELECT value FROM meta WHERE key = ?", (_META_GENESIS,)
            ).fetchone()
            if record.hash != genesis:
                raise InvalidRecordError(
                    f"the height-0 record must carry the genesis hash {genesis.hex()},"
                    f" not {record.hash.hex()}"
                )

    @staticmethod
    def _check_block_fields(record: BlockRecord) -> None:
        if not isinstance(record, BlockRecord):
            raise InvalidRecordError(f"expected a BlockRecord, got {type(record).__name__}")
        _check_int("height", record.height, 0, MAX_HEIGHT)
        for name in ("hash", "header", "block", "commit", "app_hash"):
            _check_bytes(name, getattr(record, name))
        if not record.hash:
            raise InvalidRecordError(f"block {record.height} has an empty hash")

    @staticmethod
    def _tx_rows(record: BlockRecord) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]]]:
        in_bulk = _tx_rows_in_bulk(record.height, record.txs)
        if in_bulk is not None:
            return in_bulk
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

    @staticmethod
    def _event_rows(
        record: BlockRecord,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]], list[tuple[str, int]]]:
        if len(record.events) >= MAX_PER_BLOCK:
            raise InvalidRecordError(
                f"{len(record.events)} events in one block (max {MAX_PER_BLOCK - 1})"
            )
        in_bulk = _event_rows_in_bulk(record.height, record.events)
        if in_bulk is not None:
            return in_bulk
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

    @staticmethod
    def _check_state_changes(changes: Mapping[bytes, bytes | None]) -> None:
        for key, value in changes.items():
            # Inline type checks first (a block has thousands of changes); the helpers word
            # the error.
            if type(key) is not bytes or not key:
                _check_bytes("state key", key)
                if not key:
                    raise InvalidRecordError("a state key may not be empty")
            if value is not None and type(value) is not bytes:
                _check_bytes(f"state value of {key.hex()}", value)

    @staticmethod
    def _meta_rows(meta: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
        rows = []
        for key in sorted(meta):
            if not isinstance(key, str) or not key or key.startswith(_RESERVED_PREFIX):
                raise InvalidRecordError(
                    f"meta key {key!r} must be a non-empty str not starting with"
                    f" {_RESERVED_PREFIX!r}"
                )
            _check_bytes(f"meta value of {key!r}", meta[key])
            rows.append((key, meta[key]))
        return rows

    def save_consensus_record(self, record: bytes) -> None:
        """Durably replace the validator's last-signed record (own transaction, fsynced).

        When this returns the record is on disk (WAL, synchronous=FULL): only then may the vote
        it describes leave the process.
        """
        _check_bytes("consensus record", record)
        self._write_meta(_META_CONSENSUS, record)

    def _write_meta(self, key: str, value: bytes) -> None:
        self._write_transaction(
            f"writing {key!r}", lambda conn: conn.execute(_UPSERT_META, (key, value))
        )

    def _write_transaction(self, doing: str, write: Callable[[sqlite3.Connection], Any]) -> None:
        """`write(connection)` in one BEGIN IMMEDIATE ... COMMIT under the store's lock, rolled
        back on any failure (an SQLite one becomes a StoreError saying what was `doing`)."""
        with self._lock:
            self._check_open()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                write(self._conn)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise _store_error(self._path, doing, exc) from exc
            except BaseException:
                self._rollback()
                raise

    def load_consensus_record(self) -> bytes | None:
        return self.get_meta(_META_CONSENSUS)

    def rebuild_supervision(self, height: int, snapshot: Any) -> None:
        """Start the supervision index over from the state at the tip `height`
        (ledger/supervision_store.py `rebuild`), in one transaction."""
        held = self._overlay.items()
        self._write_transaction(
            "building the supervision index",
            lambda conn: supervision_store.rebuild(conn, height, snapshot, held),
        )
        self._history_index = HeldBackIndex(self._history_index.slice_count)

    def history_at(self, keys: list[bytes], height: int) -> list[bytes | None]:
        """Each key's value as of `height` from the supervision history (None: absent)."""
        values: list[bytes | None] = []
        with self._lock:
            self._check_open()
            try:
                for key in keys:
                    held = self._history_index.positions(
                        supervision_store.index_key(key), 0, height
                    )
                    found = supervision_store.history_latest(
                        self._conn, key, held[-1] if held else None, height
                    )
                    values.append(
                        None
                        if found is None
                        else supervision_store.history_value(self._conn, key, *found)
                    )
            except (sqlite3.Error, LogFormatError) as exc:
                raise StoreError(f"{self._path}: reading the history failed ({exc})") from exc
        return values

    def history_of(self, key: bytes, limit: int, offset: int) -> list[tuple[int, bytes | None]]:
        """(height, value) of the changes of `key`, latest first, one page."""
        with self._lock:
            self._check_open()
            try:
                held = self._history_index.positions(
                    supervision_store.index_key(key), 0, MAX_HEIGHT
                )
                heights = supervision_store.history_heights(self._conn, key, held, MAX_HEIGHT)
                return [
                    (h, supervision_store.history_value(self._conn, key, h, in_table))
                    for h, in_table in heights[offset : offset + limit]
                ]
            except (sqlite3.Error, LogFormatError) as exc:
                raise StoreError(f"{self._path}: reading the history failed ({exc})") from exc

    def read_with(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` under the store's lock: the supervision index's reads
        (ledger/supervision_store.py) without a method here for each."""
        with self._lock:
            self._check_open()
            try:
                return fn(self._conn, *args)
            except sqlite3.Error as exc:
                raise _store_error(self._path, "a read", exc) from exc

    # ----------------------------------------------------------------- reads

    def latest_height(self) -> int | None:
        """The height of the last committed block (0: genesis only), None when empty."""
        return self._read("SELECT max(height) FROM blocks")[0][0]

    def chain_id(self) -> str:
        return self._read("SELECT value FROM meta WHERE key = ?", (_META_CHAIN,))[0][0].decode()

    def genesis_hash(self) -> bytes:
        return self._read("SELECT value FROM meta WHERE key = ?", (_META_GENESIS,))[0][0]

    def get_meta(self, key: str) -> bytes | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def scan_meta(
        self, low: str, high: str, *, limit: int = MAX_EVENTS_PAGE, descending: bool = False
    ) -> list[tuple[str, bytes]]:
        """Meta rows with `low <= key < high`, in key order (or reversed), at most `limit`
        (ledger/validator_history.py keeps one row per validator-set change)."""
        order = "DESC" if descending else "ASC"
        return [
            (key, value)
            for key, value in self._read(
                f"SELECT key, value FROM meta WHERE key >= ? AND key < ? ORDER BY key {order}"
                " LIMIT ?",
                (low, high, limit),
            )
        ]

    def app_hash(self, height: int) -> bytes | None:
        if not _storable_height(height):
            return None
        rows = self._read("SELECT app_hash FROM blocks WHERE height = ?", (height,))
        return rows[0][0] if rows else None

    def block(self, height: int) -> StoredBlock | None:
        if not _storable_height(height):
            return None
        rows = self._read(
            "SELECT height, hash, header, block, app_hash FROM blocks WHERE height = ?", (height,)
        )
        return StoredBlock(*rows[0]) if rows else None

    def block_by_hash(self, block_hash: bytes) -> StoredBlock | None:
        rows = self._read(
            "SELECT height, hash, header, block, app_hash FROM blocks WHERE hash = ?",
            (block_hash,),
        )
        return StoredBlock(*rows[0]) if rows else None

    def commit(self, height: int) -> bytes | None:
        """The commit certificate stored with the block at `height`."""
        if not _storable_height(height):
            return None
        rows = self._read("SELECT commit_cert FROM blocks WHERE height = ?", (height,))
        return rows[0][0] if rows else None

    def tx(self, tx_id: bytes) -> TxRecord | None:
        if not isinstance(tx_id, bytes) or not tx_id:
            return None
        with self._lock:
            self._check_open()
            held = self._tx_index.positions(tx_id, 0, MAX_POSITION)  # not yet in tx_ids
            try:
                if held:
                    sql = "SELECT pos, tx_id, raw, code, receipt FROM txs WHERE pos = ?"
                    row = self._conn.execute(sql, (held[0],)).fetchone()
                else:
                    row = self._conn.execute(
                        "SELECT t.pos, t.tx_id, t.raw, t.code, t.receipt"
                        " FROM tx_ids i JOIN txs t ON t.pos = i.pos WHERE i.tx_id = ?",
                        (tx_id,),
                    ).fetchone()
            except sqlite3.Error as exc:
                raise _store_error(self._path, "a read", exc) from exc
        return self._tx_from_row(row) if row else None

    def block_txs(self, height: int) -> list[TxRecord]:
        """The transactions of one block with their results, in block order."""
        if not _storable_height(height):
            return []
        rows = self._read(
            "SELECT pos, tx_id, raw, code, receipt FROM txs WHERE pos BETWEEN ? AND ? ORDER BY pos",
            (_position(height, 0), _position(height, MAX_PER_BLOCK - 1)),
        )
        return [self._tx_from_row(row) for row in rows]

    @staticmethod
    def _tx_from_row(row: tuple[Any, ...]) -> TxRecord:
        pos, tx_id, raw, code, receipt = row
        return TxRecord(
            tx_id=tx_id,
            height=_height_of(pos),
            index=pos & (MAX_PER_BLOCK - 1),
            raw=raw,
            code=code,
            receipt=receipt,
        )

    def get_state(self, key: bytes) -> bytes | None:
        with self._lock:
            self._check_open()
            held, value = self._overlay.lookup(key)
            if held:
                return value
            try:
                row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                raise _store_error(self._path, "a read", exc) from exc
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
        with self._lock:
            self._check_open()
            try:
                return self._scan(start, stop, limit)
            except sqlite3.Error as exc:
                raise _store_error(self._path, "a read", exc) from exc

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
            rows = self._conn.execute(sql, params).fetchall()
            full = need is not None and len(rows) == need
            # A full page reaches up to its last row (inclusive); a short one to `stop`.
            reach = rows[-1][0] + b"\x00" if full else stop
            held = self._overlay.items_in(start, reach) if len(self._overlay) else []
            found.extend(merge_sorted(rows, held) if held else rows)
            if not full:
                break
            start = reach  # type: ignore[assignment]
        return found if limit is None else found[:limit]

    def state_snapshot(self) -> StateSnapshot:
        """A consistent streaming reader of the whole state (see StateSnapshot)."""
        with self._lock:
            # Under the lock: no block commits between the snapshot's read transaction and
            # the copy of the held-back changes, so the two are of the same height.
            self._check_open()
            return StateSnapshot(self._path, self._busy_timeout_ms, self._overlay.items())

    def iter_state(self) -> Iterator[tuple[bytes, bytes]]:
        """Every state item in key order, streamed in batches from one consistent snapshot."""
        with self.state_snapshot() as snapshot:
            while batch := snapshot.fetch():
                yield from batch

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
            return [_event_from_row(row) for row in self._read(page, (*params, limit, offset))]
        with self._lock:
            self._check_open()
            try:
                return self._account_events(account, instrument, sql, params, limit, offset)
            except sqlite3.Error as exc:
                raise _store_error(self._path, "a read", exc) from exc

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
        held = self._account_index.positions(account, low, high)
        conn = self._conn
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

    # ----------------------------------------------------------------- operations

    def backup(self, dest_path: str | os.PathLike[str]) -> None:
        """Copy the whole database to `dest_path` (which must not exist) with the backup API.

        The copy is taken from its own connection in one read transaction: a consistent
        snapshot, and the writer is not blocked meanwhile (WAL). The result opens as a store.
        """
        dest = os.fspath(dest_path)
        self._check_open()
        # The copy holds investors' KYC data: created here, owner-only (0600) whatever the
        # umask, and exclusively (a file that appeared meanwhile is not overwritten either).
        # SQLite opens the empty file as a new database; its -wal/-shm files, if any, take
        # the same permissions.
        try:
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise StoreError(
                f"backup destination {dest} already exists; refusing to overwrite"
            ) from None
        except OSError as exc:
            raise StoreError(f"backup destination {dest}: {exc.strerror}") from exc
        os.chmod(dest, 0o600)  # O_CREAT's mode is masked by the umask; 0600 is never wider
        source = _connect(self._path, self._busy_timeout_ms)
        try:
            target = sqlite3.connect(dest, isolation_level=None)
            try:
                # FULL: the copy is on disk when this returns. It inherits WAL mode from the
                # source's header, and Store.open sets every pragma again on each connection.
                target.execute("PRAGMA synchronous=FULL")
                source.backup(target)  # pages=-1: the whole database in one step
            finally:
                target.close()
        except sqlite3.Error as exc:
            with contextlib.suppress(OSError):
                os.unlink(dest)  # no half copy left behind
            raise StoreError(f"backup of {self._path} to {dest} failed ({exc})") from exc
        finally:
            source.close()

    def integrity_check(self) -> list[str]:
        """SQLite's full integrity check: ["ok"] for a sound database (slow on big ones)."""
        return [row[0] for row in self._read("PRAGMA integrity_check")]


# --------------------------------------------------------------------------- async facade

T = TypeVar("T")
RunSync = Callable[[Callable[[], Any]], Awaitable[Any]]


class AsyncStore:
    """The `Store` API as coroutines, each call run on a worker thread by `run_sync`.

    `run_sync(fn)` must run `fn()` in a thread and return its result, with at most one call in
    flight; from trio that is

        limiter = trio.CapacityLimiter(1)
        run_sync = functools.partial(trio.to_thread.run_sync, limiter=limiter)

    (`trio.to_thread.run_sync` does not abandon the thread on cancellation by default, so a
    block write that has started always finishes before the caller sees the cancellation.)
    The ledger does not import trio (layering rule), hence the injection.

    `run_read`, if given, runs the reads clients ask for (blocks, transactions, events, state,
    heights) and `run_sync` everything else (block commits, the consensus record, `run`): both
    must share the one thread slot, and a node gives the driver's `run_sync` calls priority over
    waiting reads (node/store_lanes.py), so a flood of reads cannot delay a block commit by more
    than the one read already running. Without it, reads go through `run_sync` too.
    """

    def __init__(self, store: Store, run_sync: RunSync, run_read: RunSync | None = None) -> None:
        self.store = store
        self._run_sync = run_sync
        self._run_read = run_read or run_sync

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        chain_id: str,
        genesis_hash: bytes,
        run_sync: RunSync,
        busy_timeout_ms: int = 5000,
    ) -> AsyncStore:
        store = await run_sync(
            lambda: Store.open(
                path, chain_id=chain_id, genesis_hash=genesis_hash, busy_timeout_ms=busy_timeout_ms
            )
        )
        return cls(store, run_sync)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the store's worker thread (one call at a time, never abandoned once
        started): for work that must not race the store's other calls, such as a block
        commit through `Chain.commit` or reading blocks for a peer's sync request."""
        return await self._run_sync(lambda: fn(*args))

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._run_sync(lambda: fn(*args, **kwargs))

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run_read(lambda: fn(*args))

    async def aclose(self) -> None:
        await self._call(self.store.close)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def commit_block(self, record: BlockRecord) -> None:
        await self._call(self.store.commit_block, record)

    async def save_consensus_record(self, record: bytes) -> None:
        await self._call(self.store.save_consensus_record, record)

    async def load_consensus_record(self) -> bytes | None:
        return await self._call(self.store.load_consensus_record)

    async def latest_height(self) -> int | None:
        return await self._read(self.store.latest_height)

    async def chain_id(self) -> str:
        return await self._call(self.store.chain_id)

    async def genesis_hash(self) -> bytes:
        return await self._call(self.store.genesis_hash)

    async def get_meta(self, key: str) -> bytes | None:
        return await self._call(self.store.get_meta, key)

    async def scan_meta(
        self, low: str, high: str, *, limit: int = MAX_EVENTS_PAGE, descending: bool = False
    ) -> list[tuple[str, bytes]]:
        return await self._read(
            lambda: self.store.scan_meta(low, high, limit=limit, descending=descending)
        )

    async def app_hash(self, height: int) -> bytes | None:
        return await self._read(self.store.app_hash, height)

    async def block(self, height: int) -> StoredBlock | None:
        return await self._read(self.store.block, height)

    async def block_by_hash(self, block_hash: bytes) -> StoredBlock | None:
        return await self._read(self.store.block_by_hash, block_hash)

    async def commit(self, height: int) -> bytes | None:
        return await self._read(self.store.commit, height)

    async def tx(self, tx_id: bytes) -> TxRecord | None:
        return await self._read(self.store.tx, tx_id)

    async def block_txs(self, height: int) -> list[TxRecord]:
        return await self._read(self.store.block_txs, height)

    async def read_with(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._read(self.store.read_with, fn, *args)

    async def history_at(self, keys: list[bytes], height: int) -> list[bytes | None]:
        return await self._read(self.store.history_at, keys, height)

    async def history_of(
        self, key: bytes, limit: int, offset: int
    ) -> list[tuple[int, bytes | None]]:
        return await self._read(self.store.history_of, key, limit, offset)

    async def get_state(self, key: bytes) -> bytes | None:
        return await self._read(self.store.get_state, key)

    async def scan_prefix(
        self, prefix: bytes, limit: int | None = None, after: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        return await self._read(self.store.scan_prefix, prefix, limit, after)

    async def events(
        self,
        account: bytes | None = None,
        instrument: str | None = None,
        from_height: int | None = None,
        to_height: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRecord]:
        return await self._read(
            self.store.events, account, instrument, from_height, to_height, limit, offset
        )

    async def iter_state(self, batch: int = STATE_BATCH) -> AsyncIterator[tuple[bytes, bytes]]:
        """Async generator of (key, value) in key order, one batch per worker-thread call."""
        snapshot = await self._call(self.store.state_snapshot)
        try:
            while items := await self._call(snapshot.fetch, batch):
                for item in items:
                    yield item
        finally:
            # Synchronous on purpose: closing is quick and must happen even when cancelled.
            snapshot.close()

    async def backup(self, dest_path: str | os.PathLike[str]) -> None:
        await self._call(self.store.backup, dest_path)

    async def integrity_check(self) -> list[str]:
        return await self._call(self.store.integrity_check)
