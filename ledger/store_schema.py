"""The store's database file: opening it, its schema and migrations, its one connection, meta.

What it owns: `Database`, the SQLite file of one node's store -- the process lock
(`<db>.lock`), the connection with the pragmas every connection must have (`_connect`: WAL,
synchronous=FULL, foreign keys, busy timeout), the schema (created in an empty file, checked
and migrated in an existing one: `_prepare`, `_check_existing`), the lock that serialises every
use of the connection, the write transaction helper, the meta table (chain id, genesis hash,
callers' keys), `backup` and `integrity_check`. The store's parts (ledger/block_log.py,
ledger/state_table.py, ledger/store_indexes.py) share one `Database`; `ledger/store.py`
opens and closes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ledger import supervision_store
from ledger.store_records import (
    MAX_EVENTS_PAGE,
    CorruptDatabaseError,
    ForeignDatabaseError,
    InvalidRecordError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    _check_bytes,
    _store_error,
)

T = TypeVar("T")

# 2: the state log (`state_log` table, `store.state_slices` meta); a version-1 database gains
# the empty table when opened, and its state has one slice until it is resliced.
SCHEMA_VERSION = 2

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


class Database:
    """The open database file of one store: its connection, process lock and the lock that
    serialises every use of the connection (any thread may call; one at a time)."""

    def __init__(
        self, conn: sqlite3.Connection, path: str, lock_file: int, busy_timeout_ms: int
    ) -> None:
        # Use `Database.open`; this only wires up an already validated connection.
        self.conn = conn
        self.path = path
        self._lock_file = lock_file
        self.busy_timeout_ms = busy_timeout_ms
        self.lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        chain_id: str,
        genesis_hash: bytes,
        busy_timeout_ms: int = 5000,
    ) -> Database:
        """Open (creating it if needed) the database of one chain (see `Store.open`)."""
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
        return cls(conn, path, lock_file, busy_timeout_ms)

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
                    Database._check_existing(conn, path, tables, chain_id, genesis_hash)
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
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.conn.close()
            os.close(self._lock_file)

    def check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            self.check_open()
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _store_error(self.path, "a read", exc) from exc

    def read_with(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` under the store's lock: the supervision index's reads
        (ledger/supervision_store.py) without a method here for each."""
        with self.lock:
            self.check_open()
            try:
                return fn(self.conn, *args)
            except sqlite3.Error as exc:
                raise _store_error(self.path, "a read", exc) from exc

    def rollback(self) -> None:
        # A failed COMMIT (disk full, I/O error) may already have rolled back.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def write_transaction(self, doing: str, write: Callable[[sqlite3.Connection], Any]) -> None:
        """`write(connection)` in one BEGIN IMMEDIATE ... COMMIT under the store's lock, rolled
        back on any failure (an SQLite one becomes a StoreError saying what was `doing`)."""
        with self.lock:
            self.check_open()
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                write(self.conn)
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self.rollback()
                raise _store_error(self.path, doing, exc) from exc
            except BaseException:
                self.rollback()
                raise

    def write_meta(self, key: str, value: bytes) -> None:
        self.write_transaction(
            f"writing {key!r}", lambda conn: conn.execute(_UPSERT_META, (key, value))
        )

    @staticmethod
    def meta_rows(meta: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
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

    def chain_id(self) -> str:
        return self.read("SELECT value FROM meta WHERE key = ?", (_META_CHAIN,))[0][0].decode()

    def genesis_hash(self) -> bytes:
        return self.read("SELECT value FROM meta WHERE key = ?", (_META_GENESIS,))[0][0]

    def get_meta(self, key: str) -> bytes | None:
        rows = self.read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def scan_meta(
        self, low: str, high: str, *, limit: int = MAX_EVENTS_PAGE, descending: bool = False
    ) -> list[tuple[str, bytes]]:
        """Meta rows with `low <= key < high`, in key order (or reversed), at most `limit`
        (ledger/validator_history.py keeps one row per validator-set change)."""
        order = "DESC" if descending else "ASC"
        return [
            (key, value)
            for key, value in self.read(
                f"SELECT key, value FROM meta WHERE key >= ? AND key < ? ORDER BY key {order}"
                " LIMIT ?",
                (low, high, limit),
            )
        ]

    # ----------------------------------------------------------------- operations

    def backup(self, dest_path: str | os.PathLike[str]) -> None:
        """Copy the whole database to `dest_path` (which must not exist) with the backup API.

        The copy is taken from its own connection in one read transaction: a consistent
        snapshot, and the writer is not blocked meanwhile (WAL). The result opens as a store.
        """
        dest = os.fspath(dest_path)
        self.check_open()
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
        source = _connect(self.path, self.busy_timeout_ms)
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
            raise StoreError(f"backup of {self.path} to {dest} failed ({exc})") from exc
        finally:
            source.close()

    def integrity_check(self) -> list[str]:
        """SQLite's full integrity check: ["ok"] for a sound database (slow on big ones)."""
        return [row[0] for row in self.read("PRAGMA integrity_check")]
