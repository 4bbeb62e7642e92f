"""Held-back index rows: the `event_accounts` and `tx_ids` indexes written one slice a block.

This module owns which rows of the store's two hash-keyed indexes a block writes, and the
rows it holds back in memory meanwhile: `event_accounts` (account, position: "this event
concerns this account") and `tx_ids` (transaction id, position). `ledger/store_indexes.py`
owns the SQL; this module does no I/O.

Why: both indexes are keyed by hashes (an address is a hash of a public key, a transaction id
a hash of the transaction), so a block's ~2,000 account rows and 1,000 id rows are spread over
the whole key space, and each lands on its own page of tables that grow with the chain's
history: measured at 258k transactions of history, the two cost more per block than the
state. Their rows are derived data -- the `events` and `txs` tables (keyed by position,
append-only) hold every event's accounts and every transaction's id -- so holding them back
loses nothing: they are rebuilt from those tables when the store opens.

How: a hash's first byte is uniform, so the keys are cut into `slices` slices by it. Block h
merges the slice `MergeSchedule(slices).merged_at(h)` (the state log's schedule,
ledger/state_log.py): every held-back row of that slice, and the block's own rows in it, are
inserted, sorted, so they land on the neighbouring pages of that slice's range. The block's
other rows are held back. A key's rows all fall in one slice and a merge writes all of them,
so a key's held-back rows are always newer (higher positions) than its rows in the table: a
query reads the table, then continues with them.

When the store reopens after block `tip`, a row of block g for a slice s is held back exactly
when g is later than the last merge of s, `last_merge(tip, s)`; only the rows of the last
`slices - 1` blocks can be.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from ledger.state_log import MergeSchedule

__all__ = ["INDEX_SLICES", "HeldBackIndex", "IndexWrites"]

# Up to 63 blocks of rows held back: at 3,000 rows a block (both indexes), ~20 MB of memory.
INDEX_SLICES = 64


@dataclass(frozen=True, slots=True)
class IndexWrites:
    """The rows a block inserts (`merged`, sorted) and holds back (`held`, with slices)."""

    merged_slice: int
    merged: list[tuple[bytes, int]]
    held: list[tuple[bytes, int, int]]


class HeldBackIndex(MergeSchedule):
    """One index's rows not yet in its table: per slice, key -> positions (ascending)."""

    def __init__(self, slices: int = INDEX_SLICES) -> None:
        if not 1 <= slices <= 256:
            raise ValueError(f"index slices must be in [1, 256], got {slices}")
        super().__init__(slices)
        self._slices: list[dict[bytes, list[int]]] = [{} for _ in range(slices)]

    def __len__(self) -> int:
        return sum(len(positions) for held in self._slices for positions in held.values())

    def slice_of(self, key: bytes) -> int:
        return key[0] * self.slice_count >> 8

    def plan(self, height: int, rows: Iterable[tuple[bytes, int]]) -> IndexWrites:
        """What block `height` inserts, given its (key, position) rows; nothing changes
        until `apply`, so a block whose transaction fails leaves the held-back rows alone."""
        merging = self.merged_at(height)
        merged = [(a, p) for a, positions in self._slices[merging].items() for p in positions]
        held = []
        count = self.slice_count
        for account, position in rows:
            index = account[0] * count >> 8
            if index == merging:
                merged.append((account, position))
            else:
                held.append((account, position, index))
        merged.sort()
        return IndexWrites(merging, merged, held)

    def apply(self, writes: IndexWrites) -> None:
        """Record that `writes` committed."""
        slices = self._slices
        slices[writes.merged_slice] = {}
        for account, position, index in writes.held:
            held = slices[index]
            positions = held.get(account)
            if positions is None:
                held[account] = [position]
            else:
                positions.append(position)

    def replay(self, tip: int, rows: Iterable[tuple[int, bytes, int]]) -> None:
        """Rebuild from (height, key, position) rows of the last blocks, in position
        order, after block `tip` committed."""
        for height, account, position in rows:
            index = self.slice_of(account)
            if height > self.last_merge(tip, index):
                self._slices[index].setdefault(account, []).append(position)

    def all_rows(self) -> list[tuple[bytes, int]]:
        """Every held-back (key, position) row."""
        return [(a, p) for held in self._slices for a, positions in held.items() for p in positions]

    def positions(self, key: bytes, low: int, high: int) -> list[int]:
        """The key's held-back positions p with low <= p <= high, ascending."""
        held = self._slices[self.slice_of(key)].get(key)
        if not held:
            return []
        return held[bisect_left(held, low) : bisect_right(held, high)]
