"""Canonical msgpack: the one byte encoding of every value the ledger signs, hashes or stores.

Two different byte strings must never mean the same value, or two honest nodes could hash
the same transaction to different ids and sign different bytes. So there is exactly one
encoding of each value, and the decoder accepts that encoding and nothing else.

The value model (everything else is refused):

    None, bool, int in [-2**63, 2**64-1], str (valid UTF-8), bytes,
    list/tuple (encoded as an array, decoded as a list),
    dict with str keys (encoded sorted by the keys' UTF-8 bytes, no duplicates).

No floats (not exact, NaN has many encodings), no ext types (timestamps included), no
non-str map keys. The wire rules are those of msgpack with "shortest form" everywhere:
ints in the smallest of fixint/uint8..64 (non-negative) or fixint/int8..64 (negative),
str as fixstr/str8/16/32 and bin as bin8/16/32 by length, arrays and maps as
fix/16/32 by count. `docs/PROTOCOL.md` spells out the bytes.

Two kinds of error, following h11: `encode` is only ever handed values built by our own code,
so a forbidden value there is a bug (`TypeError`, or `ValueError` for an out-of-range int or
an unencodable string) and crashes loudly. `decode` is handed bytes from peers and clients:
every input is either a valid value or a `DecodeError` with a stable code, never anything
else.

How `decode` is strict without a hand-written parser: msgpack's C unpacker parses (with
length limits derived from the input size, so a lying length header cannot allocate), a walk
checks types, depth and key order, and then the value is re-packed and compared with the
input. Any non-shortest int, str or bin form, any duplicate key (the dict collapses it) or
any other redundancy changes the bytes, so the comparison refuses it.
"""

from __future__ import annotations

import threading

import msgpack

from ledger.codes import Code, DecodeError

DEFAULT_MAX_SIZE = 1024 * 1024  # 1 MiB
DEFAULT_MAX_DEPTH = 16

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

# A map or array counts as one level; scalars inside the deepest allowed level are fine.
# So `{}` has depth 1, `{"a": []}` depth 2, `[[[1]]]` depth 3.

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "INT_MAX",
    "INT_MIN",
    "decode",
    "encode",
    "encode_presorted",
    "join_array",
]


# --------------------------------------------------------------------------------------
# encode


def encode(value: object) -> bytes:
    """The canonical bytes of `value`. Raises TypeError/ValueError on a value outside the model."""
    return _pack(_canonical(value))


def encode_presorted(value: object) -> bytes:
    """The canonical bytes of a trusted value whose maps were built in sorted key order.

    For the ledger's own records on hot paths (`to_map()` of the types in `ledger/types.py`,
    receipts, events): the value goes straight to msgpack's C packer, with none of `encode`'s
    walk. That is only canonical because the caller guarantees what `encode` would check:
    every dict's keys are str and were inserted in sorted order, ints are in range, no floats,
    no other types. msgpack writes dicts in insertion order, so a map built out of order would
    give different bytes, silently -- `tests/ledger/test_codec_fast.py` asserts
    `encode_presorted(r.to_map()) == encode(r.to_map())` for every record type so a record
    whose key order drifts fails there. Anything not built by our own record code (args,
    genesis documents, peers' values) goes through `encode`.
    """
    return _pack(value)


def join_array(encoded_items: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The canonical bytes of a list, given the canonical bytes of each of its items.

    msgpack is concatenative (an array is its header, then its items' encodings), so a value
    encoded once can be reused inside larger values instead of being walked again.
    """
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    return packer.pack_array_header(len(encoded_items)) + b"".join(encoded_items)


_packers = threading.local()


def _pack(value: object) -> bytes:
    """msgpack with bin for bytes and str for text; `value` is already in canonical shape.

    A reused Packer is about twice as fast as `msgpack.packb`, which builds one per call;
    one per thread because a Packer holds a buffer.
    """
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    return packer.pack(value)


def _canonical(value: object) -> object:
    """Check `value` against the model and return it with every dict re-built in key order.

    msgpack writes dicts in insertion order, so sorting here is what makes the map order
    canonical. Python compares str by code point, which is the same order as comparing
    their UTF-8 bytes (UTF-8 was designed to preserve it).
    """
    # Exact type checks first: they are the common case and cheap.
    t = type(value)
    if t is str:
        _check_utf8(value)  # type: ignore[arg-type]
        return value
    if t is int:
        if not INT_MIN <= value <= INT_MAX:  # type: ignore[operator]
            raise ValueError(f"int {value} is outside [-2**63, 2**64-1]")
        return value
    if t is bytes or value is None or t is bool:
        return value
    if t is dict:
        return _canonical_dict(value)  # type: ignore[arg-type]
    if t is list or t is tuple:
        return [_canonical(item) for item in value]  # type: ignore[attr-defined]
    # Subclasses (IntEnum codes, str enums) encode as their base value; bool is checked
    # before int because bool is an int subclass.
    if isinstance(value, bool):
        return bool(value)
    # `int.__int__` / `str.__str__` give the underlying value even where a subclass overrides
    # `__int__` / `__str__` (a `class Kind(str, Enum)` prints as "Kind.X").
    if isinstance(value, int):
        return _canonical(int.__int__(value))
    if isinstance(value, str):
        return _canonical(str.__str__(value))
    if isinstance(value, dict):
        return _canonical_dict(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, float):
        raise TypeError(f"floats are not encodable (got {value!r}); use integer minor units")
    raise TypeError(f"{type(value).__name__} is not encodable: {value!r:.80}")


def _canonical_dict(d: dict) -> dict:
    for key in d:
        if type(key) is not str:
            if not isinstance(key, str):
                raise TypeError(f"map keys must be str, got {type(key).__name__}: {key!r:.80}")
    out = {}
    for key in sorted(d):
        _check_utf8(key)
        out[str.__str__(key)] = _canonical(d[key])
    return out


def _check_utf8(text: str) -> None:
    # Only strings holding lone surrogates fail; ASCII (the common case) is checked for free.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"str is not valid UTF-8 (lone surrogate): {text!r:.80}") from exc


# --------------------------------------------------------------------------------------
# decode


class _ExtRefused(Exception):
    """Raised from inside the unpacker when it meets an ext type; becomes FORBIDDEN_TYPE."""


def _refuse_ext(code: int, data: bytes) -> object:
    raise _ExtRefused(f"ext type {code} ({len(data)} bytes) is not allowed")


def decode(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> object:
    """Decode exactly one canonical value from `data`, or raise `DecodeError`.

    Refusals and their codes: larger than `max_size` (TOO_LARGE), nested deeper than
    `max_depth` (TOO_DEEP), bytes after the value (TRAILING_BYTES), floats, ext types and
    non-str map keys (FORBIDDEN_TYPE), any encoding other than the canonical one
    (NON_CANONICAL), truncated or otherwise unparsable input and invalid UTF-8 (MALFORMED).
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(Code.MALFORMED, f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if size > max_size:
        raise DecodeError(Code.TOO_LARGE, f"{size} bytes exceeds the limit of {max_size}")
    if size == 0:
        raise DecodeError(Code.MALFORMED, "empty input")
    value = _unpack(data)
    try:
        _check_decoded(value, 1, max_depth)
    except RecursionError:  # only reachable with a max_depth near Python's recursion limit
        raise DecodeError(Code.TOO_DEEP, "nesting exceeds the recursion limit") from None
    # Re-pack as decoded (dicts keep the order they had on the wire, and the walk above
    # has already refused out-of-order keys): equal bytes iff every form was the shortest.
    if _pack(value) != data:
        raise DecodeError(Code.NON_CANONICAL, "not the canonical encoding of its value")
    return value


def _unpack(data: bytes) -> object:
    try:
        # msgpack >= 1.0 defaults: raw=False (str is UTF-8 checked), strict_map_key=True
        # (only str/bytes keys), use_list=True, and max_{str,bin,array,map,ext}_len derived
        # from len(data), so a lying length header fails before anything is allocated.
        # Passing them explicitly doubles the call's cost; tests pin the behaviour.
        return msgpack.unpackb(data, ext_hook=_refuse_ext)
    except msgpack.ExtraData as exc:
        raise DecodeError(
            Code.TRAILING_BYTES, f"{len(exc.extra)} bytes after the end of the value"
        ) from None
    except _ExtRefused as exc:
        raise DecodeError(Code.FORBIDDEN_TYPE, str(exc)) from None
    except msgpack.StackError:
        raise DecodeError(Code.TOO_DEEP, "nesting exceeds the unpacker's stack") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(Code.MALFORMED, f"invalid UTF-8 in a str: {exc.reason}") from None
    except ValueError as exc:
        message = str(exc)
        if "map key" in message:  # strict_map_key: "int is not allowed for map key ..."
            raise DecodeError(Code.FORBIDDEN_TYPE, f"map keys must be str: {message}") from None
        if "timestamp" in message:  # ext type -1 with a length msgpack cannot parse
            raise DecodeError(
                Code.FORBIDDEN_TYPE, f"ext type -1 is not allowed: {message}"
            ) from None
        raise DecodeError(Code.MALFORMED, message or type(exc).__name__) from None
    except Exception as exc:  # the invariant: bytes never raise anything else
        raise DecodeError(Code.MALFORMED, f"{type(exc).__name__}: {exc}") from None


def _check_decoded(value: object, depth: int, max_depth: int) -> None:
    """Refuse types outside the model, nesting beyond `max_depth` and unsorted map keys."""
    t = type(value)
    if t is dict:
        if depth > max_depth:
            raise DecodeError(Code.TOO_DEEP, f"nesting deeper than {max_depth}")
        previous = None
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise DecodeError(Code.FORBIDDEN_TYPE, f"map key of type {type(key).__name__}")
            if previous is not None and key <= previous:
                # Equal keys cannot reach here (the dict merged them); the re-pack catches those.
                raise DecodeError(
                    Code.NON_CANONICAL, f"map keys out of order: {key!r:.40} after {previous!r:.40}"
                )
            previous = key
            if type(item) in _CONTAINERS:
                _check_decoded(item, depth + 1, max_depth)
            elif type(item) not in _SCALARS:
                _refuse_type(item)
    elif t is list:
        if depth > max_depth:
            raise DecodeError(Code.TOO_DEEP, f"nesting deeper than {max_depth}")
        for item in value:  # type: ignore[attr-defined]
            if type(item) in _CONTAINERS:
                _check_decoded(item, depth + 1, max_depth)
            elif type(item) not in _SCALARS:
                _refuse_type(item)
    elif t not in _SCALARS:
        _refuse_type(value)


_CONTAINERS = frozenset({dict, list})
_SCALARS = frozenset({str, bytes, int, bool, type(None)})


def _refuse_type(value: object) -> None:
    if type(value) is float:
        raise DecodeError(Code.FORBIDDEN_TYPE, f"float {value!r} is not allowed")
    # msgpack turns ext type -1 into a Timestamp itself, without calling ext_hook.
    raise DecodeError(Code.FORBIDDEN_TYPE, f"{type(value).__name__} is not allowed")
