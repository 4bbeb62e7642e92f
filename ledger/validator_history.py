"""The validator-set history: which validators were in force at each past height, kept locally.

The state holds only the set in force now (and the changes pending); the node needs past sets
too: to verify evidence about a height up to `MAX_EVIDENCE_AGE` below the tip after a
restart (docs/RELIABILITY.md, defect 5) and to answer the `validators` RPC for a past height.
Replaying blocks to find them would scan the chain; instead `Chain.commit` writes a *change
point* into the store's meta table in the block's own transaction whenever the block brought
a new set into force:

    meta key "ledger.validators.<height, 20 digits>"  ->  codec [[name, public_key, power], ...]

meaning "from block <height> on, these validators" (the set the header's `validators_hash`
names). Genesis writes the point of height 1. The keys sort by height, so "the set in force at
h" is one range read (the last key at or below h) and "the points the evidence window needs"
is another; neither reads a block.

This is node-local bookkeeping, not state: it is not in the app hash, and two nodes with the
same chain write the same points. A store written before this module existed has no points;
`Chain.open` then writes one for its tip (the set in force there is the state's) and heights
below it stay unknown to that node -- see "Unknowable sets" in node/driver.py for what the node
does with evidence about them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger import codec
from ledger.ops.governance import MAX_VALIDATORS
from ledger.store import Store
from ledger.types import Validator

PREFIX = "ledger.validators."
_END = "ledger.validators/"  # "/" sorts right after ".": the end of the prefix's key range
_DIGITS = 20  # every height fits (they are < 2**63 < 10**19)
_MAX_SET_BYTES = 64 + MAX_VALIDATORS * 256  # names are short; generous


class UnknownValidatorSet(LookupError):
    """This store holds no validator set for the height (it predates the history)."""

    def __init__(self, height: int) -> None:
        super().__init__(
            f"the validator set of height {height} is not known to this node: its store "
            "predates the validator-set history"
        )
        self.height = height


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """From block `height` on (until the next point), `validators` were in force."""

    height: int
    validators: tuple[Validator, ...]


def point_key(height: int) -> str:
    return f"{PREFIX}{height:0{_DIGITS}d}"


def encode_set(validators: Sequence[Validator]) -> bytes:
    return codec.encode([[v.name, v.public_key, v.power] for v in validators])


def decode_point(key: str, raw: bytes) -> ChangePoint:
    """The point stored under `key`; `ValueError` if it is not one we wrote."""
    digits = key[len(PREFIX) :]
    if not key.startswith(PREFIX) or len(digits) != _DIGITS or not digits.isdigit():
        raise ValueError(f"{key!r} is not a validator-set change point key")
    rows = codec.decode(raw, max_size=_MAX_SET_BYTES, max_depth=2)
    if type(rows) is not list:
        raise ValueError(f"{key}: a change point is a list of validators")
    validators = []
    for row in rows:
        if type(row) is not list or len(row) != 3:
            raise ValueError(f"{key}: a validator is [name, public_key, power]")
        name, public_key, power = row
        if type(name) is not str or type(public_key) is not bytes or type(power) is not int:
            raise ValueError(f"{key}: a validator is [str, bytes, int]")
        validators.append(Validator(name, public_key, power))
    return ChangePoint(int(digits), tuple(validators))


def points_since(store: Store, height: int, limit: int) -> list[ChangePoint]:
    """The points that cover every height from `height` on, oldest first: the last point at
    or below `height` (if any) and at most `limit` later ones. Two bounded range reads of the
    meta table (on the store's thread)."""
    before = store.db.scan_meta(PREFIX, point_key(height + 1), limit=1, descending=True)
    after = store.db.scan_meta(point_key(height + 1), _END, limit=limit)
    return [decode_point(key, raw) for key, raw in (*before, *after)]


def in_force_range(height: int) -> tuple[str, str]:
    """The meta key range whose LAST row is the point in force at `height` (heights below 1
    read as 1: the genesis set is the set before any block). Read it with
    `scan_meta(*in_force_range(h), limit=1, descending=True)`; no row: this store does not
    know the set of `height` (below its first point)."""
    return PREFIX, point_key(max(height, 1) + 1)


def set_at(store: Store, height: int) -> ChangePoint | None:
    """The point in force at `height` (its `height` is when that set came in), or None when
    this store does not know the set of `height`."""
    rows = store.db.scan_meta(*in_force_range(height), limit=1, descending=True)
    return decode_point(*rows[0]) if rows else None


def first_point(store: Store) -> ChangePoint | None:
    """The oldest point this store holds (None: a store written before the history existed)."""
    rows = store.db.scan_meta(PREFIX, _END, limit=1)
    return decode_point(*rows[0]) if rows else None
