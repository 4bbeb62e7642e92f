"""The authenticated state commitment: a 16-ary sparse Merkle tree over the state map.

This module owns `app_hash`. The ledger's state, as the store and the commitment see it, is a
flat map of state keys (bytes) to canonical record bytes (see docs/ARCHITECTURE.md). After each
block the executor hands the block's changes to `StateTree.apply`, which returns the new root;
`StateTree.prove(key)` gives a proof of a key's entry (or of its absence) against that root,
and the standalone `verify_proof(root, key, value, proof)` checks one with no tree at hand.

Theory of operation
-------------------
Every entry lives at `path = H(key)`, read as 64 nibbles (4-bit digits, high nibble of each
byte first). The tree is the 16-ary trie of those paths, compressed at the leaves:

* a subtree that holds no entry is empty (it has no hash of its own: its slot is simply
  absent from its parent's bitmap);
* a subtree that holds exactly one entry is that entry's *leaf*, wherever it sits;
* a subtree that holds two or more entries is an *internal node* with 16 child slots, slot
  `i` holding the entries whose next nibble is `i` (even if all of them share that nibble --
  there are no extension nodes; with hashed keys such chains are short).

Hashes (H = BLAKE2b-256, the same function as `ledger.crypto.hash256`):

    leaf_hash     = H(0x00 || path || H(value))                       65-byte preimage
    internal_hash = H(0x01 || bitmap || hash(child) for each non-empty child, in nibble order)
    bitmap        = 2 bytes big-endian; bit i (value 2**i) is set when child i is non-empty
    root          = hash of the top subtree; 32 zero bytes for the empty tree

The first byte separates leaves from internal nodes, so no node can pass for the other kind.
Because the shape is a pure function of the set of paths (the trie of the paths with one-entry
subtrees cut to leaves), the root depends only on the key/value set: never on insertion order
or batch boundaries. A leaf's hash does not depend on its depth, so when a deletion leaves an
internal node with a single leaf, that leaf moves up without being rehashed.

A proof lists, from the root down, each internal node on the key's path as (bitmap, hashes of
the non-empty children other than the one on the path, in nibble order), then a terminal:
the key's own leaf (inclusion: the verifier recomputes it from key and value), an empty slot
(exclusion: the key's nibble is absent from the last bitmap, or the tree is empty), or another
leaf whose path agrees with the key's path down to that slot and then differs (exclusion: the
slot's one entry is not the key). The verifier recomputes the root from the bottom up.

Layout and cost
---------------
The tree is kept in memory as nested Python lists, one per internal node, with no per-node
class (a 1M-entry state has about 360,000 internal nodes):

    node[0:16]   the children: None (empty), a leaf (bytes: path || H(value), 64 bytes),
                 or an internal node (list)
    node[16]     the node's hash preimage, a bytearray patched in place:
                 0x01 || bitmap (2 bytes) || the non-empty children's hashes in nibble order
    node[17]     where each child's hash sits in the preimage: a tuple of 16 offsets, shared
                 by all nodes with the same bitmap (valid for the non-empty slots)

A node's own hash lives only in its parent's preimage (the root's in the tree), so there is
no separate object per hash: a changed child is one 32-byte slice assignment at offset
3 + 32 * (number of non-empty slots before it), and rehashing reads one contiguous buffer.
`apply` sorts the changes by path and walks the tree once, splitting the batch by nibble at
every node, so each touched node is updated and rehashed exactly once per batch and untouched
subtrees are never visited: the cost is O(changes x depth), depth ~ log16(entries).
`from_items` sorts all leaves once and builds the tree in one recursive pass, cutting long
runs by binary search. `scripts/bench_commitment.py` measures both.

The tree holds the current state only: proofs are against the latest root. A proof for an
older height needs the state of that height (e.g. a node that keeps a tree per served height).
"""

from __future__ import annotations

import functools
import gc
import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger import codec
from ledger.codes import DecodeError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_DEPTH",
    "MAX_PROOF_BYTES",
    "TERMINAL_EMPTY",
    "TERMINAL_LEAF",
    "TERMINAL_OTHER_LEAF",
    "Proof",
    "ProofLevel",
    "StateTree",
    "leaf_hash",
    "verify_proof",
]

HASH_SIZE = 32
EMPTY_ROOT = bytes(HASH_SIZE)
MAX_DEPTH = 2 * HASH_SIZE  # a path has 64 nibbles, so a proof has at most 64 levels
# 64 levels of 15 siblings (3 bytes of msgpack header each) and bitmaps: about 36 KiB.
MAX_PROOF_BYTES = 64 * 1024

TERMINAL_LEAF = 0  # the key's own leaf: inclusion
TERMINAL_EMPTY = 1  # an empty slot (or the empty tree): exclusion
TERMINAL_OTHER_LEAF = 2  # another key's leaf sits where the key would be: exclusion

_LEAF_TAG = b"\x00"

# Pre-initialised hashers, copied per use: creating a fresh blake2b object with a digest size
# costs about twice as much as copying one (parameter parsing), and hashing dominates `apply`.
# `_LEAF_HASHER` already holds the 0x00 tag, so hashing `path || H(value)` with a copy of it
# yields H(0x00 || path || H(value)).
_PLAIN_HASHER = hashlib.blake2b(digest_size=HASH_SIZE)
_LEAF_HASHER = hashlib.blake2b(_LEAF_TAG, digest_size=HASH_SIZE)

# Maps the ASCII hex digits of `bytes.hex()` to nibble values, so a path becomes a 64-byte
# string with one nibble per byte: `nibbles[d]` is then the slot index at depth d.
_HEX_TO_NIBBLE = bytes.maketrans(b"0123456789abcdef", bytes(range(16)))

# Changes travel through the tree as "items", plain bytes that sort by path: a leaf
# (path || H(value), `_LEAF_SIZE` bytes) inserts or overwrites; a bare path (`HASH_SIZE`
# bytes) deletes. A list of items is sorted and holds each path at most once.
_LEAF_SIZE = 2 * HASH_SIZE
_PREIMAGE = 16  # index of the preimage bytearray in a node (see the module docstring)
_OFFSETS = 17  # index of the offsets tuple in a node
_NODE_SIZE = 18
_BISECT_ABOVE = 48  # runs of items longer than this are split by binary search

_Subtree = tuple["bytes | list | None", "bytes | None"]  # (node, its hash); (None, None) = empty


def _hash(data: bytes) -> bytes:
    hasher = _PLAIN_HASHER.copy()
    hasher.update(data)
    return hasher.digest()


def _nibbles(path: bytes) -> bytes:
    return path.hex().encode("ascii").translate(_HEX_TO_NIBBLE)


def leaf_hash(path: bytes, value_hash: bytes) -> bytes:
    """H(0x00 || path || value_hash): the hash of the leaf holding one entry."""
    hasher = _LEAF_HASHER.copy()
    hasher.update(path)
    hasher.update(value_hash)
    return hasher.digest()


def _tagged_bitmap(bitmap: int) -> bytes:
    # 0x01 followed by the 2-byte bitmap is the 3-byte big-endian integer 0x01_0000 | bitmap.
    return (0x10000 | bitmap).to_bytes(3, "big")


def _bitmap_of(preimage: bytearray) -> int:
    return preimage[1] << 8 | preimage[2]


def _internal_hash(bitmap: int, child_hashes: Iterable[bytes]) -> bytes:
    """H(0x01 || bitmap || the non-empty children's hashes in nibble order)."""
    hasher = _PLAIN_HASHER.copy()
    hasher.update(_tagged_bitmap(bitmap))
    hasher.update(b"".join(child_hashes))
    return hasher.digest()


@functools.cache
def _offsets(bitmap: int) -> tuple[int, ...]:
    """For each nibble, where its child's hash starts in a preimage with this bitmap:
    after the 3-byte tag and bitmap, one hash per non-empty slot before it. Cached: at most
    65,536 tuples (~12 MiB), about 37,000 for a 1M-entry tree, shared by all nodes."""
    return tuple(3 + HASH_SIZE * (bitmap & ((1 << nibble) - 1)).bit_count() for nibble in range(16))


def _put_child_hash(node: list, nibble: int, child_hash: bytes | None) -> None:
    """Write, insert or (with None) remove child `nibble`'s hash in a node's preimage, and
    keep the bitmap and the offsets in step."""
    preimage = node[_PREIMAGE]
    bitmap = preimage[1] << 8 | preimage[2]
    bit = 1 << nibble
    offset = node[_OFFSETS][nibble]
    if bitmap & bit:
        if child_hash is not None:
            preimage[offset : offset + HASH_SIZE] = child_hash
            return
        del preimage[offset : offset + HASH_SIZE]
        bitmap ^= bit
    elif child_hash is None:
        return
    else:
        preimage[offset:offset] = child_hash
        bitmap |= bit
    preimage[1] = bitmap >> 8
    preimage[2] = bitmap & 0xFF
    node[_OFFSETS] = _offsets(bitmap)


def _split(items: list[bytes], depth: int) -> list[tuple[int, int, int]]:
    """(nibble, start, end) for each run of `items` sharing the nibble at `depth`, in order.

    All items share their first `depth` nibbles (they fall into one node), so each run is one
    child slot. Long runs (top of a big tree, bulk builds) are cut by binary search; short
    ones by a linear scan.
    """
    index = depth >> 1
    shift = 0 if depth & 1 else 4  # even depths read a byte's high nibble
    count = len(items)
    runs = []
    start = 0
    while start < count:
        nibble = (items[start][index] >> shift) & 15
        if count - start > _BISECT_ABOVE:
            end = _run_end_by_bisect(items, start, index, shift, nibble)
        else:
            end = start + 1
            while end < count and (items[end][index] >> shift) & 15 == nibble:
                end += 1
        runs.append((nibble, start, end))
        start = end
    return runs


def _run_end_by_bisect(items: list[bytes], start: int, index: int, shift: int, nibble: int) -> int:
    """The end of the run of items from `start` whose nibble (byte `index`, `shift`) is
    `nibble`: binary search for the smallest possible item of the next slot."""
    if nibble == 15:
        return len(items)
    first = items[start]
    high = first[index] & 0xF0 if shift == 0 else 0
    bound = first[:index] + bytes([high | ((nibble + 1) << shift)])
    return bisect_left(items, bound, start + 1)


def _build(leaves: list[bytes], depth: int) -> _Subtree:
    """The subtree at `depth` holding exactly `leaves` (sorted, distinct paths)."""
    count = len(leaves)
    if count <= 1:
        if not leaves:
            return None, None
        hasher = _LEAF_HASHER.copy()
        hasher.update(leaves[0])
        return leaves[0], hasher.digest()
    if depth == MAX_DEPTH:
        raise ValueError(f"duplicate state key (path {leaves[0][:HASH_SIZE].hex()})")
    node: list = [None] * _NODE_SIZE
    child_hashes = []
    bitmap = 0
    # The same split as `_split`, inlined: a bulk build creates ~0.36 nodes per entry, most of
    # them near the bottom with two or three leaves, where a call and a list per node show.
    index = depth >> 1
    shift = 0 if depth & 1 else 4
    start = 0
    while start < count:
        first = leaves[start]
        nibble = (first[index] >> shift) & 15
        if count - start > _BISECT_ABOVE:
            end = _run_end_by_bisect(leaves, start, index, shift, nibble)
        else:
            end = start + 1
            while end < count and (leaves[end][index] >> shift) & 15 == nibble:
                end += 1
        if end - start == 1:
            node[nibble] = first
            hasher = _LEAF_HASHER.copy()
            hasher.update(first)
            child_hashes.append(hasher.digest())
        else:
            node[nibble], child_hash = _build(leaves[start:end], depth + 1)
            child_hashes.append(child_hash)
        bitmap |= 1 << nibble
        start = end
    preimage = bytearray(_tagged_bitmap(bitmap))
    preimage += b"".join(child_hashes)
    node[_PREIMAGE] = preimage
    node[_OFFSETS] = _offsets(bitmap)
    hasher = _PLAIN_HASHER.copy()
    hasher.update(preimage)
    return node, hasher.digest()


def _merge_into_leaf(leaf: bytes, items: list[bytes], depth: int) -> _Subtree:
    """The subtree at `depth` that held only `leaf`, after applying `items`."""
    merged = [item for item in items if len(item) == _LEAF_SIZE]
    if not any(leaf.startswith(item[:HASH_SIZE]) for item in items):  # leaf not overwritten
        merged.append(leaf)
        merged.sort()
    return _build(merged, depth)


def _settle(node: list) -> _Subtree:
    """A node whose children and preimage are up to date, as its parent must see it:
    rehashed, or replaced by its only entry when it holds just one."""
    preimage = node[_PREIMAGE]
    bitmap = preimage[1] << 8 | preimage[2]
    if bitmap & (bitmap - 1) == 0:
        if bitmap == 0:
            return None, None
        # One child left. If it is a leaf, this subtree holds one entry and so *is* that leaf
        # (its hash is depth-independent, so it moves up as is). An internal child holds >= 2
        # entries, so this node stays.
        only = node[bitmap.bit_length() - 1]
        if type(only) is bytes:
            return only, bytes(preimage[3:])
    hasher = _PLAIN_HASHER.copy()
    hasher.update(preimage)
    return node, hasher.digest()


def _update_one(node: list, item: bytes, depth: int) -> _Subtree:
    """Apply one change below the internal node `node` at `depth`: the common case once a
    batch has been split down to single keys, so it is a loop rather than a call per level."""
    path = item[:HASH_SIZE]
    nibbles = _nibbles(path)
    top = node
    top_depth = depth
    # Descend, noting where each node on the way keeps the hash of the child we go into.
    trail = []
    while True:
        nibble = nibbles[depth]
        child = node[nibble]
        trail.append((node[16], node[17][nibble]))  # (_PREIMAGE, _OFFSETS)
        if type(child) is not list:
            break
        node = child
        depth += 1
    if child is None or not child.startswith(path) or len(item) != _LEAF_SIZE:
        return _update_one_reshaping(top, item, nibbles, top_depth)
    # The hot path of `apply`: an existing key gets a new value. No slot appears or
    # disappears, so every node on the way up is patched at its noted offset and rehashed.
    node[nibble] = item
    hasher = _LEAF_HASHER.copy()
    hasher.update(item)
    child_hash = hasher.digest()
    new_hasher = _PLAIN_HASHER.copy
    for preimage, offset in reversed(trail):
        preimage[offset : offset + 32] = child_hash  # 32 == HASH_SIZE (a literal: hot loop)
        hasher = new_hasher()
        hasher.update(preimage)
        child_hash = hasher.digest()
    return top, child_hash


def _update_one_reshaping(node: list, item: bytes, nibbles: bytes, depth: int) -> _Subtree:
    """`_update_one` for a change that fills an empty slot, splits a leaf or deletes: slots
    may appear or disappear and nodes may collapse on the way up."""
    path = item[:HASH_SIZE]
    nodes = []
    while True:
        nodes.append(node)
        child = node[nibbles[depth]]
        if type(child) is not list:
            break
        node = child
        depth += 1
    # `child`, at depth + 1, is the slot the key falls into: empty, the key's own leaf, or
    # another key's leaf.
    if child is None or child.startswith(path):
        if len(item) == _LEAF_SIZE:
            new, new_hash = item, leaf_hash(path, item[HASH_SIZE:])
        else:
            new, new_hash = None, None
    else:
        new, new_hash = _merge_into_leaf(child, [item], depth + 1)
    for node in reversed(nodes):
        nibble = nibbles[depth]
        depth -= 1
        node[nibble] = new
        _put_child_hash(node, nibble, new_hash)
        new, new_hash = _settle(node)
    return new, new_hash


def _update(node: list, items: list[bytes], depth: int) -> _Subtree:
    """Apply `items` below the internal node `node` at `depth` (in place), splitting them by
    nibble so that every touched node is rehashed once."""
    if len(items) == 1:
        return _update_one(node, items[0], depth)
    preimage = node[_PREIMAGE]
    for nibble, start, end in _split(items, depth):
        child = node[nibble]
        if type(child) is list:
            if end - start == 1:
                new_child, child_hash = _update_one(child, items[start], depth + 1)
            else:
                new_child, child_hash = _update(child, items[start:end], depth + 1)
            if new_child is child:  # the usual case: same node, new hash, same slots
                offset = node[_OFFSETS][nibble]
                preimage[offset : offset + HASH_SIZE] = child_hash
                continue
            child = new_child
        elif child is None:
            leaves = [item for item in items[start:end] if len(item) == _LEAF_SIZE]
            child, child_hash = _build(leaves, depth + 1)
        else:
            item = items[start]
            if end - start == 1 and len(item) == _LEAF_SIZE and child[:32] == item[:32]:
                # A small tree's common case: the slot's one entry gets a new value. The
                # leaf is replaced in place; no slot appears or disappears.
                hasher = _LEAF_HASHER.copy()
                hasher.update(item)
                node[nibble] = item
                offset = node[_OFFSETS][nibble]
                preimage[offset : offset + HASH_SIZE] = hasher.digest()
                continue
            child, child_hash = _merge_into_leaf(child, items[start:end], depth + 1)
        node[nibble] = child
        _put_child_hash(node, nibble, child_hash)
    return _settle(node)


@dataclass(frozen=True, slots=True)
class ProofLevel:
    """One internal node on the key's path: its bitmap and the hashes of its other children."""

    bitmap: int
    siblings: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Proof:
    """A proof of a key's entry, or of its absence, against a root. See the module docstring.

    `other_path` and `other_value_hash` are set only for `TERMINAL_OTHER_LEAF`.
    """

    levels: tuple[ProofLevel, ...]
    terminal: int
    other_path: bytes | None = None
    other_value_hash: bytes | None = None

    @property
    def is_inclusion(self) -> bool:
        return self.terminal == TERMINAL_LEAF

    def to_obj(self) -> list:
        """Plain lists, bytes and ints (msgpack-able): [[[bitmap, [sibling, ...]], ...], terminal]

        terminal is [0] (the key's leaf), [1] (empty slot) or [2, other_path, other_value_hash].
        """
        levels = [[level.bitmap, list(level.siblings)] for level in self.levels]
        if self.terminal == TERMINAL_OTHER_LEAF:
            terminal = [self.terminal, self.other_path, self.other_value_hash]
        else:
            terminal = [self.terminal]
        return [levels, terminal]

    def to_bytes(self) -> bytes:
        """The canonical msgpack encoding of `to_obj()` (for JSON-RPC, as base64)."""
        return codec.encode(self.to_obj())

    @classmethod
    def from_bytes(cls, data: bytes) -> Proof:
        """The inverse of `to_bytes`; raises ValueError on anything else."""
        try:
            obj = codec.decode(data, max_size=MAX_PROOF_BYTES, max_depth=4)
        except DecodeError as error:
            raise ValueError(f"proof is not canonical msgpack: {error}") from error
        return cls.from_obj(obj)

    @classmethod
    def from_obj(cls, obj: Any) -> Proof:
        """The inverse of `to_obj`; raises ValueError on anything that is not that shape."""
        if not isinstance(obj, list | tuple) or len(obj) != 2:
            raise ValueError("proof must be a 2-element list [levels, terminal]")
        raw_levels, raw_terminal = obj
        if not isinstance(raw_levels, list | tuple) or len(raw_levels) > MAX_DEPTH:
            raise ValueError(f"proof levels must be a list of at most {MAX_DEPTH} entries")
        levels = []
        for index, raw_level in enumerate(raw_levels):
            if not isinstance(raw_level, list | tuple) or len(raw_level) != 2:
                raise ValueError(f"proof level {index} must be [bitmap, siblings]")
            bitmap, siblings = raw_level
            if type(bitmap) is not int or not 0 < bitmap <= 0xFFFF:
                raise ValueError(f"proof level {index}: bitmap must be an int in 1..65535")
            if not isinstance(siblings, list | tuple) or len(siblings) > 16:
                raise ValueError(f"proof level {index}: siblings must be a list of <= 16 hashes")
            if len(siblings) not in (bitmap.bit_count(), bitmap.bit_count() - 1):
                raise ValueError(f"proof level {index}: sibling count does not match the bitmap")
            if not all(_is_hash(sibling) for sibling in siblings):
                raise ValueError(f"proof level {index}: siblings must be {HASH_SIZE}-byte bytes")
            levels.append(ProofLevel(bitmap, tuple(siblings)))
        if not isinstance(raw_terminal, list | tuple) or not raw_terminal:
            raise ValueError("proof terminal must be a non-empty list")
        kind = raw_terminal[0]
        if type(kind) is int and kind in (TERMINAL_LEAF, TERMINAL_EMPTY) and len(raw_terminal) == 1:
            return cls(tuple(levels), kind)
        if (
            type(kind) is int
            and kind == TERMINAL_OTHER_LEAF
            and len(raw_terminal) == 3
            and _is_hash(raw_terminal[1])
            and _is_hash(raw_terminal[2])
        ):
            return cls(tuple(levels), kind, raw_terminal[1], raw_terminal[2])
        raise ValueError("proof terminal must be [0], [1] or [2, other_path, other_value_hash]")


def _is_hash(value: object) -> bool:
    return type(value) is bytes and len(value) == HASH_SIZE


class StateTree:
    """The in-memory sparse Merkle tree over the state map. Not thread-safe: one owner.

    About 250 MiB at 1M entries (measured). The internal nodes are lists, so the cyclic
    garbage collector tracks them; a long-running owner may `gc.freeze()` after the build.
    """

    __slots__ = ("_root", "_root_hash")

    def __init__(self) -> None:
        self._root: bytes | list | None = None  # None, a leaf (bytes) or an internal node
        self._root_hash: bytes = EMPTY_ROOT

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, bytes]]) -> StateTree:
        """Build the tree of a whole state (e.g. from the store on reopen) in one pass.

        Raises ValueError if a key appears twice (a store never yields that).
        """
        leaves = []
        new_hasher = _PLAIN_HASHER.copy
        for key, value in items:
            _check_key(key)
            if type(value) is not bytes:
                raise TypeError(f"state value must be bytes, got {type(value).__name__}")
            key_hasher = new_hasher()
            key_hasher.update(key)
            value_hasher = new_hasher()
            value_hasher.update(value)
            leaves.append(key_hasher.digest() + value_hasher.digest())
        leaves.sort()
        # The build allocates ~0.36 lists per entry, none of which can be in a reference
        # cycle; with the cyclic collector on, each of its full passes re-walks the growing
        # tree (measured: ~40% of the build time at 1M entries).
        collecting = gc.isenabled()
        gc.disable()
        try:
            root, root_hash = _build(leaves, 0)
        finally:
            if collecting:
                gc.enable()
        tree = cls()
        tree._root = root
        tree._root_hash = EMPTY_ROOT if root_hash is None else root_hash
        return tree

    @property
    def root(self) -> bytes:
        """The current root: the `app_hash` of the state as it is now."""
        return self._root_hash

    def apply(self, changes: Mapping[bytes, bytes | None]) -> bytes:
        """Apply a batch (value None deletes the key) and return the new root.

        Every key and value is checked before anything changes, so a bad batch leaves the
        tree as it was. Deleting an absent key is a no-op.
        """
        items = []
        new_hasher = _PLAIN_HASHER.copy
        for key, value in changes.items():
            if type(key) is not bytes:
                _check_key(key)
            key_hasher = new_hasher()
            key_hasher.update(key)
            if value is None:
                items.append(key_hasher.digest())
            elif type(value) is bytes:
                value_hasher = new_hasher()
                value_hasher.update(value)
                items.append(key_hasher.digest() + value_hasher.digest())
            else:
                raise TypeError(f"state value must be bytes or None, got {type(value).__name__}")
        if not items:
            return self._root_hash
        # Sorting by path makes the walk independent of the mapping's iteration order.
        items.sort()
        root = self._root
        if root is None:
            root, root_hash = _build([item for item in items if len(item) == _LEAF_SIZE], 0)
        elif type(root) is bytes:
            root, root_hash = _merge_into_leaf(root, items, 0)
        else:
            root, root_hash = _update(root, items, 0)
        self._root = root
        self._root_hash = EMPTY_ROOT if root_hash is None else root_hash
        return self._root_hash

    def prove(self, key: bytes) -> Proof:
        """A proof of `key`'s entry (inclusion) or of its absence (exclusion) against `root`."""
        _check_key(key)
        path = _hash(key)
        nibbles = _nibbles(path)
        levels = []
        node = self._root
        depth = 0
        while type(node) is list:
            nibble = nibbles[depth]
            preimage = node[_PREIMAGE]
            bitmap = _bitmap_of(preimage)
            child_hashes = [
                bytes(preimage[offset : offset + HASH_SIZE])
                for offset in range(3, len(preimage), HASH_SIZE)
            ]
            if bitmap >> nibble & 1:
                del child_hashes[(bitmap & ((1 << nibble) - 1)).bit_count()]
            levels.append(ProofLevel(bitmap, tuple(child_hashes)))
            node = node[nibble]
            depth += 1
        if node is None:
            return Proof(tuple(levels), TERMINAL_EMPTY)
        if node[:HASH_SIZE] == path:
            return Proof(tuple(levels), TERMINAL_LEAF)
        return Proof(tuple(levels), TERMINAL_OTHER_LEAF, node[:HASH_SIZE], node[HASH_SIZE:])

    def __len__(self) -> int:
        """The number of entries (walks the whole tree: for tests and tools, not hot paths)."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            if type(node) is bytes:
                count += 1
            elif node is not None:
                stack.extend(child for child in node[:_PREIMAGE] if child is not None)
        return count


def _check_key(key: object) -> None:
    if type(key) is not bytes:
        raise TypeError(f"state key must be bytes, got {type(key).__name__}")


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: Proof | Any) -> bool:
    """True when `proof` shows that, under `root`, `key` maps to `value` (None: is absent).

    A pure function for clients holding only a header's `app_hash`. `proof` is a `Proof`, its
    `to_obj()` form or its `to_bytes()` form. It never raises on hostile input: anything
    malformed is False.
    """
    if not (_is_hash(root) and type(key) is bytes and (value is None or type(value) is bytes)):
        return False
    if not isinstance(proof, Proof):
        try:
            proof = Proof.from_bytes(proof) if type(proof) is bytes else Proof.from_obj(proof)
        except ValueError:
            return False
    levels = proof.levels
    if not isinstance(levels, tuple) or len(levels) > MAX_DEPTH:
        return False
    path = _hash(key)
    nibbles = _nibbles(path)
    depth = len(levels)

    # The hash of the slot the key's path leads to below the last level (None: empty).
    terminal = proof.terminal
    if value is not None:
        if terminal != TERMINAL_LEAF:
            return False
        current: bytes | None = leaf_hash(path, _hash(value))
    elif terminal == TERMINAL_EMPTY:
        current = None
        if depth == 0:
            return root == EMPTY_ROOT
    elif terminal == TERMINAL_OTHER_LEAF:
        other = proof.other_path
        if not (_is_hash(other) and _is_hash(proof.other_value_hash)) or other == path:
            return False
        # The other leaf must sit in this slot, i.e. agree with the key's path so far.
        if _nibbles(other)[:depth] != nibbles[:depth]:
            return False
        current = leaf_hash(other, proof.other_value_hash)
    else:
        return False

    for index in reversed(range(depth)):
        level = levels[index]
        if not isinstance(level, ProofLevel):
            return False
        bitmap, siblings = level.bitmap, level.siblings
        if type(bitmap) is not int or not 0 < bitmap <= 0xFFFF or not isinstance(siblings, tuple):
            return False
        if not all(_is_hash(sibling) for sibling in siblings):
            return False
        nibble = nibbles[index]
        on_path = bool(bitmap >> nibble & 1)
        if on_path != (current is not None):
            return False  # the bitmap must show exactly the slot we came from, or its absence
        if len(siblings) != bitmap.bit_count() - on_path:
            return False
        if current is None:
            children = siblings
        else:
            position = (bitmap & ((1 << nibble) - 1)).bit_count()
            children = (*siblings[:position], current, *siblings[position:])
        current = _internal_hash(bitmap, children)
    return current == root
