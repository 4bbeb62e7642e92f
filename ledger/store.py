"""The node's SQLite store: blocks, commit certificates, transactions, events and the state.

What it owns: `Store`, which opens and closes the database, composes the store's parts, and
writes a block and everything that goes with it in ONE SQLite transaction (`commit_block`),
and the validator's consensus record; `AsyncStore`, the same store from trio, every call on
the store's one worker thread.

One database file per node. The store persists bytes and never interprets them: the executor
hands it a `BlockRecord` (the block, its certificate, its transactions with their receipts, its
events, the state changes and the app hash) and `Store.commit_block` writes all of it in ONE
SQLite transaction, so after a crash the database holds every committed block whole and nothing
of a block that was not committed. Reopening the file gives back the same state items, blocks
and app hashes (`store.state.iter_state` streams the state in key order to rebuild the
in-memory state and the state tree).

The parts, each a module that owns its tables and shares the one connection and its lock:

* `store.db` (ledger/store_schema.py `Database`): the file, its process lock, connection,
  schema and migrations, the meta table, `backup`, `integrity_check`;
* `store.blocks` (ledger/block_log.py `BlockLog`): blocks, commit certificates, app hashes,
  transactions, by height and by hash or id;
* `store.state` (ledger/state_table.py `StateTable`): the state table behind its log
  (`get_state`, `scan_prefix`, `state_snapshot`, `iter_state`);
* `store.indexes` (ledger/store_indexes.py `StoreIndexes`): events by account and instrument,
  the held-back index rows, the supervision history and its rebuild hook;
* the records and errors (ledger/store_records.py), re-exported here.

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
thousands of scattered ones. Every state read (`get_state`, `scan_prefix`, `state_snapshot`)
sees the table with the held-back changes applied: callers never see the difference. The two
hash-keyed indexes, `tx_ids` and `event_accounts`, are written the same way, one slice of keys
a block (`ledger/held_index.py`); their held-back rows are rebuilt from `txs` and `events` at
opening, and `blocks.tx` and `indexes.events` read both.

Height 0 is the genesis record: the first `BlockRecord` written to an empty store has height 0,
hash equal to the store's genesis hash, and carries the genesis state as its changes. Every later
record must have height `blocks.latest_height() + 1`.

`AsyncStore` runs calls on one worker thread through a `run_sync` function supplied by the
caller (in `node/`: node/store_lanes.py over `trio.to_thread.run_sync`), because the ledger
package does not import trio: `await astore.read(lambda s: s.blocks.block(h))`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ledger import supervision_store
from ledger.block_log import BlockLog
from ledger.held_index import INDEX_SLICES
from ledger.state_log import MAX_SLICES, ROWS_PER_SLICE
from ledger.state_table import StateSnapshot, StateTable
from ledger.store_indexes import StoreIndexes
from ledger.store_records import (
    ADDRESS_SIZE,
    MAX_EVENTS_PAGE,
    MAX_HEIGHT,
    MAX_PER_BLOCK,
    MAX_POSITION,
    POSITION_BITS,
    STATE_BATCH,
    BlockRecord,
    CorruptDatabaseError,
    EventColumns,
    EventRecord,
    ForeignDatabaseError,
    HeightError,
    InvalidRecordError,
    SchemaVersionError,
    StoredBlock,
    StoreError,
    StoreLockedError,
    TxColumns,
    TxRecord,
    _check_bytes,
    _store_error,
)
from ledger.store_rows import insert_rows
from ledger.store_schema import _META_CONSENSUS, _UPSERT_META, SCHEMA_VERSION, Database

__all__ = [
    "ADDRESS_SIZE",
    "MAX_EVENTS_PAGE",
    "MAX_HEIGHT",
    "MAX_PER_BLOCK",
    "MAX_POSITION",
    "POSITION_BITS",
    "SCHEMA_VERSION",
    "STATE_BATCH",
    "AsyncStore",
    "BlockLog",
    "BlockRecord",
    "CorruptDatabaseError",
    "Database",
    "EventColumns",
    "EventRecord",
    "ForeignDatabaseError",
    "HeightError",
    "InvalidRecordError",
    "SchemaVersionError",
    "StateSnapshot",
    "StateTable",
    "Store",
    "StoreError",
    "StoreIndexes",
    "StoreLockedError",
    "StoredBlock",
    "TxColumns",
    "TxRecord",
]


class Store:
    """One node's database. Create with `Store.open(path, chain_id=..., genesis_hash=...)`.

    Its parts are `db`, `blocks`, `state` and `indexes` (see the module docstring). All
    methods are safe to call from any thread; one lock (`db.lock`) serialises use of the
    connection.
    """

    def __init__(self, db: Database) -> None:
        # Use `Store.open`; this only wires the parts up around an already validated database.
        self.db = db
        self.state = StateTable(db)
        self.indexes = StoreIndexes(db, self.state)
        self.blocks = BlockLog(db, self.indexes)

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
        db = Database.open(
            path, chain_id=chain_id, genesis_hash=genesis_hash, busy_timeout_ms=busy_timeout_ms
        )
        store = cls(db)
        try:
            store.state.open_log(rows_per_slice, max_slices)
            store.indexes.open(index_slices)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        """Close the connection and release the process lock. Idempotent."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        return self.db.path

    # ----------------------------------------------------------------- writes

    def commit_block(self, record: BlockRecord) -> None:
        """Write one block and everything that goes with it in a single transaction.

        Raises HeightError unless `record.height` is the next height, InvalidRecordError for a
        malformed record (including a transaction id already stored); nothing is written then.
        """
        self.blocks.check_block_fields(record)
        tx_rows, tx_id_rows = self.blocks._tx_rows(record)
        event_rows, account_rows, instrument_rows = self.indexes._event_rows(record)
        self.state.check_state_changes(record.changes)
        meta_rows = self.db.meta_rows(record.meta)
        history, history_rows = self.indexes.history_rows(record)
        with self.db.lock:
            self.db.check_open()
            conn = self.db.conn
            # What the state log merges into the table and holds back; the overlay itself
            # changes only once the transaction has committed.
            writes = self.state.overlay.plan(record.height, record.changes)
            account_writes = self.indexes.account_index.plan(record.height, account_rows)
            tx_id_writes = self.indexes.tx_index.plan(record.height, tx_id_rows)
            history_writes = self.indexes.history_index.plan(record.height, history_rows)
            try:
                conn.execute("BEGIN IMMEDIATE")
                self.blocks.check_next_height(record)
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
                # Multi-row statements (`insert_rows`): the same rows, less CPU per row.
                insert_rows(
                    conn,
                    "INSERT INTO txs (pos, tx_id, raw, code, receipt) VALUES ",
                    "(?, ?, ?, ?, ?)",
                    tx_rows,
                )
                self.blocks.check_new_tx_ids(record.height, tx_id_rows)
                insert_rows(
                    conn, "INSERT INTO tx_ids (tx_id, pos) VALUES ", "(?, ?)", tx_id_writes.merged
                )
                insert_rows(
                    conn,
                    "INSERT INTO events (pos, tx_index, event_index, type, accounts, instruments,"
                    " data) VALUES ",
                    "(?, ?, ?, ?, ?, ?, ?)",
                    event_rows,
                )
                insert_rows(
                    conn,
                    "INSERT INTO event_accounts (account, pos) VALUES ",
                    "(?, ?)",
                    account_writes.merged,
                )
                insert_rows(
                    conn,
                    "INSERT INTO event_instruments (instrument, pos) VALUES ",
                    "(?, ?)",
                    instrument_rows,
                )
                self.state.write_state_log(writes)
                insert_rows(
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
                self.db.rollback()
                raise InvalidRecordError(
                    f"block {record.height} conflicts with stored data ({exc}); a block hash or"
                    " transaction id may already be stored"
                ) from exc
            except sqlite3.Error as exc:
                self.db.rollback()
                raise _store_error(self.db.path, f"writing block {record.height}", exc) from exc
            except BaseException:
                self.db.rollback()
                raise
            self.state.overlay.apply(writes)
            self.indexes.account_index.apply(account_writes)
            self.indexes.tx_index.apply(tx_id_writes)
            self.indexes.history_index.apply(history_writes)

    def save_consensus_record(self, record: bytes) -> None:
        """Durably replace the validator's last-signed record (own transaction, fsynced).

        When this returns the record is on disk (WAL, synchronous=FULL): only then may the vote
        it describes leave the process.
        """
        _check_bytes("consensus record", record)
        self.db.write_meta(_META_CONSENSUS, record)

    def load_consensus_record(self) -> bytes | None:
        return self.db.get_meta(_META_CONSENSUS)


# --------------------------------------------------------------------------- async facade

T = TypeVar("T")
RunSync = Callable[[Callable[[], Any]], Awaitable[Any]]


class AsyncStore:
    """The `Store` from trio: every call runs on a worker thread through `run_sync`.

    `run_sync(fn)` must run `fn()` in a thread and return its result, with at most one call in
    flight; from trio that is

        limiter = trio.CapacityLimiter(1)
        run_sync = functools.partial(trio.to_thread.run_sync, limiter=limiter)

    (`trio.to_thread.run_sync` does not abandon the thread on cancellation by default, so a
    block write that has started always finishes before the caller sees the cancellation.)
    The ledger does not import trio (layering rule), hence the injection.

    There is no coroutine per store method: `read(fn)` runs `fn(store)` for the reads clients
    ask for (blocks, transactions, events, state, heights), `run(fn, *args)` runs `fn(*args)`
    for everything else (block commits through `Chain.commit`, sync serving, backups). The
    store itself is handed out only on the worker thread, so no read runs on the event loop.

    `run_read`, if given, runs the `read` calls and `run_sync` everything else: both must share
    the one thread slot, and a node gives the driver's `run_sync` calls priority over waiting
    reads (node/store_lanes.py), so a flood of reads cannot delay a block commit by more than
    the one read already running. Without it, reads go through `run_sync` too.
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

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(store, *args)` on the store's worker thread in the read lane (behind any
        waiting `run`): `await astore.read(lambda s: s.state.get_state(key))`."""
        store = self.store
        return await self._run_read(lambda: fn(store, *args))

    async def aclose(self) -> None:
        await self.run(self.store.close)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def save_consensus_record(self, record: bytes) -> None:
        await self.run(self.store.save_consensus_record, record)

    async def load_consensus_record(self) -> bytes | None:
        return await self.run(self.store.load_consensus_record)

    async def iter_state(self, batch: int = STATE_BATCH) -> AsyncIterator[tuple[bytes, bytes]]:
        """Async generator of (key, value) in key order, one batch per worker-thread call."""
        snapshot = await self.run(self.store.state.state_snapshot)
        try:
            while items := await self.run(snapshot.fetch, batch):
                for item in items:
                    yield item
        finally:
            # Synchronous on purpose: closing is quick and must happen even when cancelled.
            snapshot.close()
