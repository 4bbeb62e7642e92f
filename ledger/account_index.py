"""The account index's held-back rows: `event_accounts` written one slice of accounts a block.

This module owns which rows of the store's `event_accounts` index (account, position: "this
event concerns this account") a block writes, and the rows it holds back in memory meanwhile.
`ledger/store.py` owns the SQL; this module does no I/O.

Why: the index is keyed by account, and the accounts of a block's events are spread over the
whole key space, so each of a block's ~2,000 rows (sender and recipient of 1,000 transfers)
lands on its own page of a table that grows with the chain's history: measured at 258k
transactions of history, that index cost more per block than the state. Its rows are derived
data -- the `events` table (keyed by position, append-only) holds every event's accounts --
so holding them back loses nothing: they are rebuilt from `events` when the store opens.

How: addresses are hashes, so their first byte is uniform; the accounts are cut into
`slices` slices by it. Block h merges the slice `MergeSchedule(slices).merged_at(h)` (the
state log's schedule, ledger/state_log.py): every held-back row of that slice's accounts, and
the block's own rows in it, are inserted, sorted, so they land on the neighbouring pages of
that slice's range. The block's other rows are held back. An account's rows all fall in one
slice and a merge writes all of them, so an account's held-back rows are always newer (higher
positions) than its rows in the table: a query reads the table, then continues with them.

When the store reopens after block `tip`, a row of block g for a slice s is held back exactly
when g is later than the last merge of s, `last_merge(tip, s)`; only the events of the last
`slices - 1` blocks can hold such rows.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from ledger.state_log import MergeSchedule

__all__ = ["ACCOUNT_INDEX_SLICES", "AccountIndexWrites", "HeldBackAccountIndex"]

# Up to 63 blocks of rows held back: at 2,000 rows a block, ~10 MB of memory.
ACCOUNT_INDEX_SLICES = 64


@dataclass(frozen=True, slots=True)
class AccountIndexWrites:
    """The rows a block inserts (`merged`, sorted) and holds back (`held`, with slices)."""

    merged_slice: int
    merged: list[tuple[bytes, int]]
    held: list[tuple[bytes, int, int]]


class HeldBackAccountIndex(MergeSchedule):
    """The `event_accounts` rows not yet in the table: per slice, account -> positions."""

    def __init__(self, slices: int = ACCOUNT_INDEX_SLICES) -> None:
        if not 1 <= slices <= 256:
            raise ValueError(f"account index slices must be in [1, 256], got {slices}")
        super().__init__(slices)
        self._slices: list[dict[bytes, list[int]]] = [{} for _ in range(slices)]

    def __len__(self) -> int:
        return sum(len(positions) for held in self._slices for positions in held.values())

    def slice_of(self, account: bytes) -> int:
        return account[0] * self.slice_count >> 8

    def plan(self, height: int, rows: Iterable[tuple[bytes, int]]) -> AccountIndexWrites:
        """What block `height` inserts, given its (account, position) rows; nothing changes
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
        return AccountIndexWrites(merging, merged, held)

    def apply(self, writes: AccountIndexWrites) -> None:
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
        """Rebuild from (height, account, position) rows of the last blocks, in position
        order, after block `tip` committed."""
        for height, account, position in rows:
            index = self.slice_of(account)
            if height > self.last_merge(tip, index):
                self._slices[index].setdefault(account, []).append(position)

    def all_rows(self) -> list[tuple[bytes, int]]:
        """Every held-back (account, position) row."""
        return [(a, p) for held in self._slices for a, positions in held.items() for p in positions]

    def positions(self, account: bytes, low: int, high: int) -> list[int]:
        """The account's held-back positions p with low <= p <= high, ascending."""
        held = self._slices[self.slice_of(account)].get(account)
        if not held:
            return []
        return held[bisect_left(held, low) : bisect_right(held, high)]
