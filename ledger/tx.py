"""The signed-transaction envelope: its fields, its exact bytes, its id and its signatures.

A transaction is a canonical msgpack map (see `ledger/codec.py` and `docs/PROTOCOL.md`):

    {"body": {"args": {...}, "chain": str, "nonce": int, "op": str, "sender": bytes[20]},
     "sigs": [[public_key: bytes[32], signature: bytes[64]], ...]}

- The body is what is signed: signing bytes = `TX_DOMAIN_TAG || encode(body)`. The chain id
  is inside the body, so a signature made for one chain fails on every other.
- The transaction id is `hash256(encode(body))`: it names the body, not the envelope, so
  adding, re-making or reordering signatures never changes it (no malleable ids).
- 1..MAX_SIGNATURES signatures, sorted by public key, no signer twice: one byte string per
  set of signers.

This module checks the envelope only: the shape, types and lengths of every field, and that
each attached signature verifies. Whether the signers are enough for the operation (the
sender's own key, maker-checker policies), and what `args` must hold, is decided by the
operation's rules in `ledger/ops/`.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger import codec
from ledger.codes import Code, DecodeError, InvalidTransaction
from ledger.crypto import (
    ADDRESS_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    TX_DOMAIN_TAG,
    KeyPair,
    address_from_public_key,
    address_to_text,
    hash256,
    verify_signature,
)

MAX_TX_BYTES = 65536
MAX_SIGNATURES = 8
MAX_NONCE = 2**63 - 1
# Nesting allowed inside a transaction: envelope (1), body (2), args (3), and up to 13
# levels of structure inside args.
MAX_TX_DEPTH = codec.DEFAULT_MAX_DEPTH

# Chain ids: printable ASCII without spaces, so they print and compare unambiguously.
CHAIN_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,64}")
# Operation names: short ASCII identifiers such as "transfer" or "register_instrument".
OP_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

_BODY_KEYS = ("args", "chain", "nonce", "op", "sender")  # sorted: the wire order
_ENVELOPE_KEYS = ("body", "sigs")

__all__ = [
    "MAX_NONCE",
    "MAX_SIGNATURES",
    "MAX_TX_BYTES",
    "Signature",
    "SignedTx",
    "TxBody",
    "add_signatures",
    "clear_decode_cache",
    "decode_cache_stats",
    "decode_signed_tx",
    "encode_signed_tx",
    "remember_verified",
    "set_decode_cache_bytes",
    "sign_tx",
    "tx_footprint",
    "verify_tx_signatures",
]


@dataclass(frozen=True, slots=True)
class TxBody:
    """What the signers agree to. Constructing one checks every field (DecodeError BAD_FIELD).

    `encoded` (the canonical bytes) and `tx_id` are computed once, at construction. `args`
    must therefore not be mutated afterwards; build a new body instead.
    """

    chain_id: str
    sender: bytes
    nonce: int
    op: str
    args: dict
    encoded: bytes = field(init=False, repr=False, compare=False)
    tx_id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_body_fields(self.chain_id, self.sender, self.nonce, self.op, self.args)
        encoded = codec.encode(self.to_obj())
        object.__setattr__(self, "encoded", encoded)
        object.__setattr__(self, "tx_id", hash256(encoded))

    def __hash__(self) -> int:  # args is a dict, so hash the id that covers every field
        return hash(self.tx_id)

    @classmethod
    def _from_wire(cls, body_obj: dict, encoded: bytes) -> TxBody:
        """A body decoded from canonical bytes whose encoding (`encoded`) is already known.

        Same checks as the constructor, without re-encoding: the decoder has already proved
        that `encoded` is the canonical encoding of `body_obj`.
        """
        chain_id = body_obj["chain"]
        sender = body_obj["sender"]
        nonce = body_obj["nonce"]
        op = body_obj["op"]
        args = body_obj["args"]
        _check_body_fields(chain_id, sender, nonce, op, args)
        body = object.__new__(cls)
        setattr_ = object.__setattr__  # frozen: the dataclass's own __init__ does the same
        setattr_(body, "chain_id", chain_id)
        setattr_(body, "sender", sender)
        setattr_(body, "nonce", nonce)
        setattr_(body, "op", op)
        setattr_(body, "args", args)
        setattr_(body, "encoded", encoded)
        setattr_(body, "tx_id", hash256(encoded))
        return body

    def to_obj(self) -> dict:
        """The body as the map that is encoded (wire field names)."""
        return {
            "args": self.args,
            "chain": self.chain_id,
            "nonce": self.nonce,
            "op": self.op,
            "sender": self.sender,
        }

    def signing_bytes(self) -> bytes:
        """The exact bytes each signer signs: the transaction domain tag, then the body."""
        return TX_DOMAIN_TAG + self.encoded


@dataclass(frozen=True, slots=True)
class Signature:
    public_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A body with its signatures, the exact bytes it travels as (`raw`) and its id."""

    body: TxBody
    signatures: tuple[Signature, ...]
    raw: bytes = field(repr=False)
    tx_id: bytes

    @property
    def signers(self) -> tuple[bytes, ...]:
        """The signers' public keys, in wire order."""
        return tuple(s.public_key for s in self.signatures)


def _check_body_fields(chain_id: object, sender: object, nonce: object, op: object, args: object):
    if type(chain_id) is not str or not CHAIN_ID_PATTERN.fullmatch(chain_id):
        raise DecodeError(
            Code.BAD_FIELD, f"chain must be 1-64 printable ASCII characters, got {chain_id!r:.80}"
        )
    if type(sender) is not bytes or len(sender) != ADDRESS_BYTES:
        raise DecodeError(Code.BAD_FIELD, f"sender must be {ADDRESS_BYTES} bytes: {sender!r:.80}")
    if type(nonce) is not int or not 0 <= nonce <= MAX_NONCE:
        raise DecodeError(Code.BAD_FIELD, f"nonce must be an int in [0, 2**63-1], got {nonce!r}")
    if type(op) is not str or not OP_PATTERN.fullmatch(op):
        raise DecodeError(
            Code.BAD_FIELD, f"op must be an ASCII identifier of at most 64 chars: {op!r:.80}"
        )
    if type(args) is not dict:
        raise DecodeError(Code.BAD_FIELD, f"args must be a map, got {type(args).__name__}")


# --------------------------------------------------------------------------------------
# signing


def sign_tx(body: TxBody, keys: Iterable[KeyPair]) -> SignedTx:
    """Sign `body` with every key in `keys` (at least one, at most MAX_SIGNATURES signers)."""
    return _assemble(body, _sign_all(body, keys))


def add_signatures(tx: SignedTx, keys: Iterable[KeyPair]) -> SignedTx:
    """`tx` with signatures by `keys` added; a signer already present keeps its signature."""
    return _assemble(tx.body, tx.signatures + _sign_all(tx.body, keys))


def _sign_all(body: TxBody, keys: Iterable[KeyPair]) -> tuple[Signature, ...]:
    message = body.signing_bytes()
    return tuple(Signature(key.public_key, key.sign(message)) for key in keys)


def _assemble(body: TxBody, signatures: Iterable[Signature]) -> SignedTx:
    by_key: dict[bytes, Signature] = {}
    for sig in signatures:
        by_key.setdefault(sig.public_key, sig)
    ordered = tuple(by_key[k] for k in sorted(by_key))
    if not 1 <= len(ordered) <= MAX_SIGNATURES:
        raise ValueError(f"a transaction needs 1 to {MAX_SIGNATURES} signers, got {len(ordered)}")
    tx = SignedTx(body, ordered, b"", body.tx_id)
    raw = encode_signed_tx(tx)
    if len(raw) > MAX_TX_BYTES:
        raise ValueError(f"signed transaction is {len(raw)} bytes, limit {MAX_TX_BYTES}")
    return SignedTx(body, ordered, raw, body.tx_id)


# --------------------------------------------------------------------------------------
# wire form

# `encode({"body": ..., "sigs": ...})` is a 2-entry fixmap whose keys are fixstrs, and
# "body" sorts before "sigs"; writing those bytes directly reuses the body's cached encoding.
_ENVELOPE_HEAD = b"\x82\xa4body"
_SIGS_KEY = b"\xa4sigs"
# [bin8(32) public key, bin8(64) signature]: fixarray header + (2 + 32) + (2 + 64) bytes.
_SIG_ENTRY_BYTES = 1 + 2 + PUBLIC_KEY_BYTES + 2 + SIGNATURE_BYTES


def encode_signed_tx(tx: SignedTx) -> bytes:
    """The canonical bytes of `tx`: `encode({"body": body, "sigs": [[pub, sig], ...]})`."""
    sigs = [[s.public_key, s.signature] for s in tx.signatures]
    return _ENVELOPE_HEAD + tx.body.encoded + _SIGS_KEY + codec.encode(sigs)


# How many bytes of decoded transactions `decode_signed_tx` may remember (see `_DecodeCache`).
DECODE_CACHE_BYTES = 16 * 1024 * 1024


def decode_signed_tx(raw: bytes) -> SignedTx:
    """Parse and check a signed transaction's envelope; DecodeError with the first problem.

    Does not verify signatures (see `verify_tx_signatures`) nor the operation's args.

    A node meets the same bytes several times (mempool admission, then the proposal that
    carries them, the committed block's events). Bytes whose signatures were verified are
    remembered by `remember_verified` (the mempool after admission, execution after its
    signature check), and `decode_signed_tx` returns the remembered result for exactly those
    bytes. Decoding itself never stores anything: bytes from anyone (a forged envelope, a
    wrong chain id) are decoded, judged and forgotten.
    """
    if type(raw) is not bytes:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise DecodeError(Code.MALFORMED, f"expected bytes, got {type(raw).__name__}")
        raw = bytes(raw)
    if len(raw) > MAX_TX_BYTES:
        raise DecodeError(Code.TOO_LARGE, f"transaction is {len(raw)} bytes, limit {MAX_TX_BYTES}")
    remembered = _CACHE.get(raw)
    if remembered is not None:
        return remembered
    return _decode_envelope(raw)


def remember_verified(tx: SignedTx, footprint: int | None = None) -> None:
    """Remember `tx` for `decode_signed_tx(tx.raw)`. Only for a transaction whose signatures
    were verified over exactly `tx.raw` (verified content: a forged envelope never gets in).
    `footprint`: its `tx_footprint`, if the caller has it already."""
    _CACHE.put(tx, footprint)


def decode_cache_stats() -> tuple[int, int]:
    """(transactions remembered, their bytes as counted by `tx_footprint`)."""
    return _CACHE.stats()


def set_decode_cache_bytes(max_bytes: int) -> None:
    """Bound the decode cache to `max_bytes` of footprint (the node's `mempool.decode_cache_bytes`);
    0 turns it off. Forgets the oldest entries beyond the new bound at once."""
    _CACHE.resize(max_bytes)


def clear_decode_cache() -> None:
    _CACHE.clear()


# Per reference held by a container (a pointer), on top of the referenced object's size.
_POINTER_BYTES = 8


def tx_footprint(tx: SignedTx, limit: int | None = None) -> int:
    """Bytes of memory a decoded transaction keeps alive: its raw bytes, the body's encoding,
    every decoded object of its args (`sys.getsizeof` plus a pointer per reference), and the
    objects around them. Small ints and short strings that CPython shares are counted as if
    they were not, so the figure is an upper bound, which is what a memory budget needs.

    With `limit`, the walk stops as soon as the count passes it (the result is then > limit):
    a caller that only wants to refuse a transaction above a bound pays for no more.
    """
    body = tx.body
    total = (
        _FIXED_BYTES
        + _PER_SIGNATURE_BYTES * len(tx.signatures)
        + _sizeof(tx.raw)
        + _sizeof(body.encoded)
        + _sizeof(body.chain_id)
        + _sizeof(body.op)
    )
    # Containers wait on a stack; scalars are counted where they are met (most args are a
    # flat map of a few scalars). Depth is bounded by the decoder, width by the limit.
    sizeof, pointer = _sizeof, _POINTER_BYTES
    args = body.args
    total += sizeof(args) + pointer
    stack: list[object] = [args]
    while stack:
        value = stack.pop()
        items = value.values() if type(value) is dict else value
        if type(value) is dict:
            for key in value:  # type: ignore[attr-defined]
                total += sizeof(key) + pointer
        for item in items:  # type: ignore[attr-defined]
            total += sizeof(item) + pointer
            if type(item) is dict or type(item) is list:
                stack.append(item)
        if limit is not None and total > limit:
            return total
    return total


_sizeof = sys.getsizeof


def _fixed_sizes() -> tuple[int, int]:
    """The parts of every decoded transaction whose size does not depend on its content:
    the SignedTx and TxBody objects, the sender and the id, the signatures' tuple header,
    and per signature its object, key and signature bytes (measured once, on this Python)."""
    public_key = bytes(PUBLIC_KEY_BYTES)
    sig = Signature(public_key, bytes(SIGNATURE_BYTES))
    body = object.__new__(TxBody)
    tx = SignedTx(body, (), b"", bytes(32))
    fixed = _sizeof(tx) + _sizeof(body) + _sizeof(bytes(ADDRESS_BYTES)) + _sizeof(bytes(32))
    fixed += _sizeof(())
    per_signature = _sizeof(sig) + _sizeof(public_key) + _sizeof(sig.signature) + _POINTER_BYTES
    return fixed, per_signature


_FIXED_BYTES, _PER_SIGNATURE_BYTES = _fixed_sizes()


class _DecodeCache:
    """Decoded transactions by their exact raw bytes, least recently used first, bounded by
    the sum of their `tx_footprint` (bytes, not entries: one transaction of nested maps can
    keep MiBs alive where a transfer keeps one or two KiB). A transaction larger than an
    eighth of the bound is not remembered (it would push out many others for one reuse).

    Thread-safe: the store's worker thread decodes too. Only `remember_verified` adds.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[SignedTx, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, raw: bytes) -> SignedTx | None:
        with self._lock:
            entry = self._entries.get(raw)
            if entry is None:
                return None
            self._entries.move_to_end(raw)
            return entry[0]

    def put(self, tx: SignedTx, cost: int | None = None) -> None:
        raw = tx.raw
        if raw in self._entries:  # unlocked peek: a stale answer costs one footprint walk
            return
        if cost is None:
            cost = tx_footprint(tx, self.max_bytes // 8)
        if cost > self.max_bytes // 8:
            return
        with self._lock:
            if raw in self._entries:
                return
            self._entries[raw] = (tx, cost)
            self._bytes += cost
            self._shrink()

    def _shrink(self) -> None:
        while self._bytes > self.max_bytes:
            _, (_, cost) = self._entries.popitem(last=False)
            self._bytes -= cost

    def resize(self, max_bytes: int) -> None:
        if type(max_bytes) is not int or max_bytes < 0:
            raise ValueError(f"decode cache bound must be an int >= 0, got {max_bytes!r}")
        with self._lock:
            self.max_bytes = max_bytes
            self._shrink()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> tuple[int, int]:
        with self._lock:
            return len(self._entries), self._bytes


_CACHE = _DecodeCache(DECODE_CACHE_BYTES)


def _decode_envelope(raw: bytes) -> SignedTx:
    # `raw` is bytes within MAX_TX_BYTES: decode_signed_tx checked both.
    obj = codec.decode(raw, max_size=MAX_TX_BYTES, max_depth=MAX_TX_DEPTH)
    if type(obj) is not dict or tuple(obj) != _ENVELOPE_KEYS:
        raise DecodeError(Code.BAD_FIELD, f"a transaction is a map with keys {_ENVELOPE_KEYS}")
    body_obj = obj["body"]
    if type(body_obj) is not dict or tuple(body_obj) != _BODY_KEYS:
        keys = sorted(body_obj) if type(body_obj) is dict else type(body_obj).__name__
        raise DecodeError(Code.BAD_FIELD, f"body must have exactly the keys {_BODY_KEYS}: {keys}")
    signatures = _decode_signatures(obj["sigs"])
    # `raw` is canonical, so the body's encoding is the slice between the envelope's
    # "body" key and its "sigs" key; each signature entry encodes to exactly
    # _SIG_ENTRY_BYTES and the array header to 1 byte (at most 8 < 16 entries).
    end = len(raw) - len(_SIGS_KEY) - 1 - _SIG_ENTRY_BYTES * len(signatures)
    body = TxBody._from_wire(body_obj, raw[len(_ENVELOPE_HEAD) : end])
    return SignedTx(body, signatures, raw, body.tx_id)


def _decode_signatures(sigs: object) -> tuple[Signature, ...]:
    if type(sigs) is not list:
        raise DecodeError(Code.BAD_FIELD, "sigs must be an array of [public_key, signature]")
    if not 1 <= len(sigs) <= MAX_SIGNATURES:
        raise DecodeError(
            Code.BAD_FIELD, f"{len(sigs)} signatures; a transaction has 1 to {MAX_SIGNATURES}"
        )
    out = []
    previous = b""
    for index, entry in enumerate(sigs):
        if (
            type(entry) is not list
            or len(entry) != 2
            or type(entry[0]) is not bytes
            or len(entry[0]) != PUBLIC_KEY_BYTES
            or type(entry[1]) is not bytes
            or len(entry[1]) != SIGNATURE_BYTES
        ):
            raise DecodeError(
                Code.BAD_FIELD,
                f"sigs[{index}] must be [public key ({PUBLIC_KEY_BYTES} bytes), "
                f"signature ({SIGNATURE_BYTES} bytes)]",
            )
        public_key = entry[0]
        if public_key == previous:
            raise DecodeError(Code.BAD_FIELD, f"sigs[{index}]: the same signer appears twice")
        if public_key < previous:
            raise DecodeError(Code.NON_CANONICAL, f"sigs[{index}]: not sorted by public key")
        previous = public_key
        out.append(Signature(public_key, entry[1]))
    return tuple(out)


def verify_tx_signatures(tx: SignedTx) -> None:
    """Check every attached signature; InvalidTransaction(BAD_SIGNATURE) names the first bad one."""
    message = tx.body.signing_bytes()
    for index, sig in enumerate(tx.signatures):
        if not verify_signature(sig.public_key, message, sig.signature):
            raise InvalidTransaction(
                Code.BAD_SIGNATURE,
                f"signature {index} by {_describe_signer(sig.public_key)} does not verify "
                f"for transaction {tx.tx_id.hex()} on chain {tx.body.chain_id!r}",
            )


def _describe_signer(public_key: bytes) -> str:
    try:
        return f"{address_to_text(address_from_public_key(public_key))} (key {public_key.hex()})"
    except ValueError:
        return f"key {public_key.hex()}"
