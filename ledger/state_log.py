"""The state log: recent state changes held back from the state table, merged one key range a block.

This module owns the schedule that decides, for each block, which state changes the store
writes into its `state` table and which it appends to its `state_log` table instead, and the
in-memory overlay of the changes not yet merged. `ledger/state_table.py` owns the SQL; this
module does no I/O, so its rules are tested on their own (tests/ledger/test_state_log.py).

Why
---
The `state` table is a b-tree ordered by state key. At a million accounts a block of 1,000
transfers changes ~3,000 keys spread over the whole key space: written straight into the
table they dirty ~3,000 scattered 4 KiB pages, each written to the WAL at COMMIT and again at
checkpoint. That was half the block's time at that size (docs/BENCHMARKS.md), and it grows
with the state, not with the block.

How
---
The table's key space is cut into `n` slices: contiguous key ranges whose boundaries are
chosen when the store opens, from the table's own keys, so that each holds about
`rows_per_slice` rows (n = 1 for a small state: then everything below degenerates to writing
every change into the table, as a plain store would). Block `h` *merges* slice
`h * stride mod n`: every held-back change in that range, and the block's own changes in it, go into the table,
sorted, so they land on the few hundred neighbouring pages of that range. The block's other
changes go into ONE new row of `state_log` (height `h`, all of them in one blob), an append at
the end of an integer key, and into the overlay. All of it is in the block's one transaction.

Rules (each is what makes the next one true):

* the state is the overlay's entries (a value, or None for a deleted key) over the table;
* the stride is the integer nearest 0.618 n (the golden ratio's fraction) that is coprime
  with `n`, so consecutive blocks merge slices far apart and any run of blocks visits the
  key space evenly (a state's key regions differ: accounts change at every transfer's
  sender, holdings at both ends), and any `n` consecutive blocks merge every slice once;
* so after block `h` every change
  logged by block `h - n + 1` is in the table (or was overwritten by a later change that is):
  block `h` deletes that log row, and the log never holds more than `n - 1` rows;
* when the store reopens, a logged change of block `g` to a key of slice `s` is still held
  back exactly when `g` is later than the last block (at or before the tip `t`) that merged
  `s`, which is `t - ((t - r) mod n)` with `r = s * stride^-1 mod n`; replaying the log rows
  in height order with that test rebuilds the overlay as it was.

The boundaries are kept in the store's meta table: they must be the same when the log is
replayed as when it was written. Changing them (the state grew or shrank a lot since they
were chosen) first merges everything and empties the log, in one transaction
(`StateTable._reslice`, ledger/state_table.py).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from math import gcd

import msgpack

__all__ = [
    "LogFormatError",
    "MAX_SLICES",
    "ROWS_PER_SLICE",
    "BlockWrites",
    "MergeSchedule",
    "StateOverlay",
    "decode_boundaries",
    "decode_log_row",
    "encode_boundaries",
    "encode_log_row",
    "merge_sorted",
    "merge_stride",
    "slice_count_for",
]

# About 8,192 rows is ~330 pages of this store's state rows: what one block's merge rewrites.
ROWS_PER_SLICE = 8192
# The overlay holds up to n - 1 blocks of changes: at a million accounts ~3,000 keys a block,
# ~120 MB of memory at 256 slices.
MAX_SLICES = 256

_MISSING = object()


class LogFormatError(ValueError):
    """A state-log row or the stored boundaries are not what this module writes."""


def slice_count_for(
    rows: int, rows_per_slice: int = ROWS_PER_SLICE, max_slices: int = MAX_SLICES
) -> int:
    """How many slices a table of `rows` rows is cut into."""
    return max(1, min(max_slices, rows // max(1, rows_per_slice)))


def encode_log_row(changes: Mapping[bytes, bytes | None]) -> bytes:
    """One block's held-back changes as one blob: a msgpack array key, value, key, value..."""
    return _pack_log_row(list(changes), list(changes.values()))


def _pack_log_row(keys: list[bytes], values: list[bytes | None]) -> bytes:
    flat: list[bytes | None] = [None] * (2 * len(keys))
    flat[0::2] = keys
    flat[1::2] = values
    return msgpack.packb(flat, use_bin_type=True)


def decode_log_row(blob: bytes) -> list[tuple[bytes, bytes | None]]:
    try:
        flat = msgpack.unpackb(blob, raw=True, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for bad input
        raise LogFormatError(f"a state-log row is not msgpack ({exc})") from exc
    if type(flat) is not list or len(flat) % 2:
        raise LogFormatError("a state-log row must be an array of key, value pairs")
    pairs = []
    for i in range(0, len(flat), 2):
        key, value = flat[i], flat[i + 1]
        if type(key) is not bytes or not key or (value is not None and type(value) is not bytes):
            raise LogFormatError("a state-log entry must be a non-empty key and bytes or nil")
        pairs.append((key, value))
    return pairs


def encode_boundaries(boundaries: Sequence[bytes]) -> bytes:
    return msgpack.packb(list(boundaries), use_bin_type=True)


def decode_boundaries(blob: bytes) -> tuple[bytes, ...]:
    try:
        boundaries = msgpack.unpackb(blob, raw=True, use_list=True)
    except Exception as exc:
        raise LogFormatError(f"the state slices are not msgpack ({exc})") from exc
    if type(boundaries) is not list or any(type(b) is not bytes for b in boundaries):
        raise LogFormatError("the state slices must be an array of keys")
    if any(boundaries[i] >= boundaries[i + 1] for i in range(len(boundaries) - 1)):
        raise LogFormatError("the state slice boundaries must be strictly increasing")
    return tuple(boundaries)


@dataclass(frozen=True, slots=True)
class BlockWrites:
    """What committing one block writes to the state (see `StateOverlay.plan`).

    `merged`: (key, value or None) in key order, for the state table. `logged`: the changes
    held back, as runs (slice, keys, values), one per slice that has any; `log_row` their blob
    (None: nothing held back, no row). `expired_height`: the log row this block deletes
    (None: none can have expired yet).
    """

    height: int
    merged_slice: int
    merged: list[tuple[bytes, bytes | None]]
    logged: list[tuple[int, list[bytes], list[bytes | None]]]
    log_row: bytes | None
    expired_height: int | None


def merge_stride(slices: int) -> int:
    """The step between the slices merged by consecutive blocks (0 for one slice)."""
    if slices == 1:
        return 0
    stride = max(1, slices * 618 // 1000)
    while gcd(stride, slices) != 1:
        stride += 1
    return stride


class MergeSchedule:
    """Which of `slices` slices each block merges: block h merges h * stride mod slices.
    Shared by the state log and the store's held-back account index (ledger/store_indexes.py)."""

    def __init__(self, slices: int) -> None:
        if slices < 1:
            raise ValueError(f"slices must be at least 1, got {slices}")
        self.slice_count = slices
        self.stride = merge_stride(slices)
        self._inverse = pow(self.stride, -1, slices) if slices > 1 else 0

    def merged_at(self, height: int) -> int:
        """The slice that block `height` merges."""
        return height * self.stride % self.slice_count

    def last_merge(self, tip: int, index: int) -> int:
        """The last height at or before `tip` that merged slice `index` (may be negative:
        none yet)."""
        first = index * self._inverse % self.slice_count  # merged_at(first) == index
        return tip - ((tip - first) % self.slice_count)


class StateOverlay(MergeSchedule):
    """The changes held back from the table, by slice; see the module docstring.

    One dict per slice: merging a slice drops its dict whole, and a lookup finds its slice by
    binary search over the boundaries, then the key in that slice's dict.
    """

    def __init__(self, boundaries: Sequence[bytes] = ()) -> None:
        self.boundaries = tuple(boundaries)
        super().__init__(len(self.boundaries) + 1)
        self._slices: list[dict[bytes, bytes | None]] = [{} for _ in range(self.slice_count)]

    def __len__(self) -> int:
        return sum(map(len, self._slices))

    def slice_of(self, key: bytes) -> int:
        """Slice i holds the keys k with boundaries[i - 1] <= k < boundaries[i]."""
        return bisect_right(self.boundaries, key)

    def lookup(self, key: bytes) -> tuple[bool, bytes | None]:
        """(True, value or None for deleted) when the overlay has the key, else (False, None)."""
        value = self._slices[bisect_right(self.boundaries, key)].get(key, _MISSING)
        if value is _MISSING:
            return False, None
        return True, value  # type: ignore[return-value]

    def plan(self, height: int, changes: Mapping[bytes, bytes | None]) -> BlockWrites:
        """What block `height` writes: the overlay is unchanged until `apply`, so a block whose
        transaction fails leaves it as it was.

        Slices are contiguous key ranges, so in the sorted keys each slice's changes are one
        run, found by binary search at each boundary: no per-key work in Python beyond the
        sort (`take_changes` already gives them sorted, which Timsort checks in one pass)."""
        merging = self.merged_at(height)
        keys = sorted(changes)
        if self.slice_count == 1:
            return BlockWrites(height, 0, [(k, changes[k]) for k in keys], [], None, None)
        values = [changes[key] for key in keys]
        edges = [0, *(bisect_left(keys, b) for b in self.boundaries), len(keys)]
        logged = []
        for index in range(self.slice_count):
            start, stop = edges[index], edges[index + 1]
            if start < stop and index != merging:
                logged.append((index, keys[start:stop], values[start:stop]))
        start, stop = edges[merging], edges[merging + 1]
        merged = dict(self._slices[merging])
        merged.update(zip(keys[start:stop], values[start:stop], strict=True))
        held_keys, held_values = keys[:start] + keys[stop:], values[:start] + values[stop:]
        log_row = _pack_log_row(held_keys, held_values) if held_keys else None
        expired = height - self.slice_count + 1
        return BlockWrites(
            height,
            merging,
            sorted(merged.items()),
            logged,
            log_row,
            expired if expired >= 0 else None,
        )

    def apply(self, writes: BlockWrites) -> None:
        """Record that `writes` committed: its merged slice left the overlay, its logged
        changes joined it (a newer change of a held-back key replaces the older one)."""
        slices = self._slices
        slices[writes.merged_slice] = {}
        for index, keys, values in writes.logged:
            slices[index].update(zip(keys, values, strict=True))

    def replay(self, tip: int, rows: Iterable[tuple[int, bytes]]) -> None:
        """Rebuild the overlay from the log rows (height, blob), in height order, after block
        `tip` committed. Raises LogFormatError for a row that cannot be in the log."""
        n = self.slice_count
        oldest = tip - n + 2
        previous = None
        for height, blob in rows:
            if not oldest <= height <= tip or (previous is not None and height <= previous):
                raise LogFormatError(
                    f"state-log row {height} cannot be in the log of height {tip}"
                    f" with {n} slices (rows {max(oldest, 0)}..{tip} only)"
                )
            previous = height
            for key, value in decode_log_row(blob):
                index = self.slice_of(key)
                if height > self.last_merge(tip, index):
                    self._slices[index][key] = value

    def items(self) -> list[tuple[bytes, bytes | None]]:
        """Every held-back change, in key order."""
        found = [item for held in self._slices for item in held.items()]
        found.sort()
        return found

    def items_in(self, start: bytes, stop: bytes | None) -> list[tuple[bytes, bytes | None]]:
        """The held-back changes with start <= key < stop (stop None: no upper bound), sorted.
        Only the slices that overlap the range are looked at."""
        first = self.slice_of(start)
        last = self.slice_count - 1 if stop is None else bisect_left(self.boundaries, stop)
        found = []
        for held in self._slices[first : min(last, self.slice_count - 1) + 1]:
            for key, value in held.items():
                if key >= start and (stop is None or key < stop):
                    found.append((key, value))
        found.sort()
        return found


def merge_sorted(
    rows: Iterable[tuple[bytes, bytes]], overlay: Sequence[tuple[bytes, bytes | None]]
) -> Iterator[tuple[bytes, bytes]]:
    """The table's rows (key order) with the overlay's changes (key order) applied: an overlay
    value replaces or adds a row, None removes it."""
    position = 0
    count = len(overlay)
    for key, value in rows:
        while position < count and overlay[position][0] < key:
            pending_key, pending = overlay[position]
            position += 1
            if pending is not None:
                yield pending_key, pending
        if position < count and overlay[position][0] == key:
            pending = overlay[position][1]
            position += 1
            if pending is not None:
                yield key, pending
            continue
        yield key, value
    while position < count:
        pending_key, pending = overlay[position]
        position += 1
        if pending is not None:
            yield pending_key, pending
