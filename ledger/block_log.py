"""The block log: blocks, their commit certificates and app hashes, and their transactions.

What it owns: the `blocks`, `txs` and `tx_ids` tables -- the reads of a block by height or by
hash, its commit certificate and app hash, the tip's height, a transaction by id (through the
`tx_ids` index and its held-back rows, ledger/store_indexes.py) and a block's transactions --
and the checks and rows of a block record's own fields (`check_block_fields`, `_tx_rows`,
`check_next_height`, `check_new_tx_ids`), which `Store.commit_block` runs in the block's
transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ledger.store_indexes import StoreIndexes
from ledger.store_records import (
    MAX_HEIGHT,
    MAX_PER_BLOCK,
    MAX_POSITION,
    BlockRecord,
    HeightError,
    InvalidRecordError,
    StoredBlock,
    TxColumns,
    TxRecord,
    _check_bytes,
    _check_int,
    _height_of,
    _position,
    _storable_height,
    _store_error,
)
from ledger.store_rows import tx_columns_in_bulk, tx_rows_in_bulk
from ledger.store_schema import _META_GENESIS, Database


def _records_of_columns(columns: TxColumns) -> tuple[TxRecord, ...]:
    """The records of columns the bulk path did not take, for the per-record loop to check
    and word its refusal; columns of different lengths are refused here."""
    parts = (columns.tx_ids, columns.raws, columns.codes, columns.receipts)
    try:
        if len(set(map(len, parts))) != 1:
            raise InvalidRecordError("the transaction columns are not all of one length")
    except TypeError as exc:
        raise InvalidRecordError(f"the transaction columns must be lists ({exc})") from exc
    return columns.records()


class BlockLog:
    """The chain's blocks and transactions as stored. Shares the store's `Database`."""

    def __init__(self, db: Database, indexes: StoreIndexes) -> None:
        self._db = db
        self._indexes = indexes

    def latest_height(self) -> int | None:
        """The height of the last committed block (0: genesis only), None when empty."""
        return self._db.read("SELECT max(height) FROM blocks")[0][0]

    def app_hash(self, height: int) -> bytes | None:
        if not _storable_height(height):
            return None
        rows = self._db.read("SELECT app_hash FROM blocks WHERE height = ?", (height,))
        return rows[0][0] if rows else None

    def block(self, height: int) -> StoredBlock | None:
        if not _storable_height(height):
            return None
        rows = self._db.read(
            "SELECT height, hash, header, block, app_hash FROM blocks WHERE height = ?", (height,)
        )
        return StoredBlock(*rows[0]) if rows else None

    def block_by_hash(self, block_hash: bytes) -> StoredBlock | None:
        rows = self._db.read(
            "SELECT height, hash, header, block, app_hash FROM blocks WHERE hash = ?",
            (block_hash,),
        )
        return StoredBlock(*rows[0]) if rows else None

    def commit(self, height: int) -> bytes | None:
        """The commit certificate stored with the block at `height`."""
        if not _storable_height(height):
            return None
        rows = self._db.read("SELECT commit_cert FROM blocks WHERE height = ?", (height,))
        return rows[0][0] if rows else None

    def tx(self, tx_id: bytes) -> TxRecord | None:
        if not isinstance(tx_id, bytes) or not tx_id:
            return None
        with self._db.lock:
            self._db.check_open()
            held = self._indexes.tx_index.positions(tx_id, 0, MAX_POSITION)  # not yet in tx_ids
            try:
                if held:
                    sql = "SELECT pos, tx_id, raw, code, receipt FROM txs WHERE pos = ?"
                    row = self._db.conn.execute(sql, (held[0],)).fetchone()
                else:
                    row = self._db.conn.execute(
                        "SELECT t.pos, t.tx_id, t.raw, t.code, t.receipt"
                        " FROM tx_ids i JOIN txs t ON t.pos = i.pos WHERE i.tx_id = ?",
                        (tx_id,),
                    ).fetchone()
            except sqlite3.Error as exc:
                raise _store_error(self._db.path, "a read", exc) from exc
        return self._tx_from_row(row) if row else None

    def block_txs(self, height: int) -> list[TxRecord]:
        """The transactions of one block with their results, in block order."""
        if not _storable_height(height):
            return []
        rows = self._db.read(
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

    @staticmethod
    def check_block_fields(record: BlockRecord) -> None:
        if not isinstance(record, BlockRecord):
            raise InvalidRecordError(f"expected a BlockRecord, got {type(record).__name__}")
        _check_int("height", record.height, 0, MAX_HEIGHT)
        for name in ("hash", "header", "block", "commit", "app_hash"):
            _check_bytes(name, getattr(record, name))
        if not record.hash:
            raise InvalidRecordError(f"block {record.height} has an empty hash")

    @staticmethod
    def _tx_rows(record: BlockRecord) -> tuple[list[tuple[Any, ...]], list[tuple[bytes, int]]]:
        txs = record.txs
        if type(txs) is TxColumns:
            in_bulk = tx_columns_in_bulk(record.height, txs)
            if in_bulk is not None:
                return in_bulk
            txs = _records_of_columns(txs)
        else:
            in_bulk = tx_rows_in_bulk(record.height, txs)
            if in_bulk is not None:
                return in_bulk
        tx_rows: list[tuple[Any, ...]] = []
        tx_id_rows: list[tuple[bytes, int]] = []
        for expected_index, tx in enumerate(txs):
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

    def check_next_height(self, record: BlockRecord) -> None:
        (latest,) = self._db.conn.execute("SELECT max(height) FROM blocks").fetchone()
        expected = 0 if latest is None else latest + 1
        if record.height != expected:
            raise HeightError(
                f"block height {record.height} is not the next height {expected}"
                f" (latest stored: {latest})"
            )
        if record.height == 0:
            (genesis,) = self._db.conn.execute(
                "SELECT value FROM meta WHERE key = ?", (_META_GENESIS,)
            ).fetchone()
            if record.hash != genesis:
                raise InvalidRecordError(
                    f"the height-0 record must carry the genesis hash {genesis.hex()},"
                    f" not {record.hash.hex()}"
                )

    def check_new_tx_ids(self, height: int, tx_id_rows: list[tuple[bytes, int]]) -> None:
        """Refuse a transaction id that is already stored (held back or in the table) or
        twice in the block: with rows held back, the table's primary key alone would notice
        only when the row is merged, blocks later."""
        ids = [tx_id for tx_id, _ in tx_id_rows]
        repeated = len(set(ids)) != len(ids)
        held = self._indexes.tx_index
        if repeated or any(held.positions(tx_id, 0, MAX_POSITION) for tx_id in ids):
            raise InvalidRecordError(f"block {height}: a transaction id is already stored")
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            if self._db.conn.execute(
                f"SELECT 1 FROM tx_ids WHERE tx_id IN ({marks}) LIMIT 1", chunk
            ).fetchone():
                raise InvalidRecordError(f"block {height}: a transaction id is already stored")
