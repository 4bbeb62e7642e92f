"""The store's records, errors and position encoding: what `ledger/store.py` reads and writes.

What it owns: the values the store's callers hand it and get back (`BlockRecord`, `TxRecord`,
`EventRecord`, `StoredBlock`), the store's errors (`StoreError` and its kinds), the limits of
a record (`MAX_HEIGHT`, `MAX_PER_BLOCK`, ...) and the *position* that keys transactions and
events (`height << POSITION_BITS | ordinal`), with the checks every part of the store uses.
No I/O: `ledger/store.py` re-exports all of it, so callers import from there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from consensus.errors import LocalProtocolError

ADDRESS_SIZE = 20
# Transactions and events are positioned at `height << POSITION_BITS | ordinal`.
POSITION_BITS = 24
MAX_PER_BLOCK = 1 << POSITION_BITS  # transactions (or events) in one block
MAX_HEIGHT = (1 << (63 - POSITION_BITS)) - 1  # so that a position fits a signed 64-bit integer
MAX_POSITION = (1 << 63) - 1
MAX_EVENTS_PAGE = 1000  # the largest `limit` `events()` accepts: pages are bounded
STATE_BATCH = 10_000  # rows fetched at a time when streaming the state

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
class TxColumns:
    """A block's transactions as columns: what its `TxRecord`s say, field by field (the
    transaction at index i is `tx_ids[i]`, `raws[i]`, ...; height and indexes are implied).
    The chain hands them to the store this way, like its events (`EventColumns`)."""

    height: int
    tx_ids: list[bytes]
    raws: list[bytes]
    codes: list[int]
    receipts: list[bytes]

    def __len__(self) -> int:
        return len(self.tx_ids)

    def records(self) -> tuple[TxRecord, ...]:
        """The same transactions as `TxRecord`s, in the same order."""
        height = self.height
        return tuple(
            TxRecord(tx_id, height, index, raw, code, receipt)
            for index, (tx_id, raw, code, receipt) in enumerate(
                zip(self.tx_ids, self.raws, self.codes, self.receipts, strict=True)
            )
        )


@dataclass(frozen=True, slots=True)
class EventColumns:
    """A block's events as columns: what `EventRecord`s of one height say, field by field
    (`tx_indexes[i]`, `event_indexes[i]`, ... are event i's). The chain hands a block's
    events to the store this way (`ledger/chain.py` `_event_columns`): a block of transfers
    has ~3 events a transaction, and the store reads them column by column anyway
    (`ledger/store_rows.py`), so no object per event is made and taken apart again. The
    store checks them exactly as it checks the records (`records()` gives those)."""

    height: int
    tx_indexes: list[int]
    event_indexes: list[int]
    types: list[str]
    accounts: list[tuple[bytes, ...]]
    instruments: list[tuple[str, ...]]
    datas: list[bytes]

    def __len__(self) -> int:
        return len(self.types)

    def records(self) -> tuple[EventRecord, ...]:
        """The same events as `EventRecord`s, in the same order."""
        height = self.height
        return tuple(
            EventRecord(height, tx_index, event_index, type_, accounts, instruments, data)
            for tx_index, event_index, type_, accounts, instruments, data in zip(
                self.tx_indexes,
                self.event_indexes,
                self.types,
                self.accounts,
                self.instruments,
                self.datas,
                strict=True,
            )
        )


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
    # Records, or the same transactions as columns (`TxColumns`, what the chain gives).
    txs: tuple[TxRecord, ...] | TxColumns = ()
    # Records, or the same events as columns (`EventColumns`, what the chain gives).
    events: tuple[EventRecord, ...] | EventColumns = ()
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


def _check_bytes(name: str, value: object, *, size: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise InvalidRecordError(f"{name} must be bytes, not {type(value).__name__}")
    if size is not None and len(value) != size:
        raise InvalidRecordError(f"{name} must be {size} bytes, got {len(value)}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRecordError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _store_error(path: str, doing: str, exc: sqlite3.Error) -> StoreError:
    """The StoreError for an SQLite failure: CorruptDatabaseError when the file is damaged."""
    primary_code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    damaged = primary_code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    kind = CorruptDatabaseError if damaged else StoreError
    return kind(f"{path}: {doing} failed ({exc})")
