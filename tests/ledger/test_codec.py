"""Canonical encoding (ledger/codec.py): exact bytes, round trips, and every refusal with its code.

The expected bytes come from the msgpack specification, through a small reference encoder
written here from the spec (`reference_encode`), not from the msgpack library the codec uses.
The decoder's invariant (from h11): any input bytes give a value or a DecodeError, never
another exception.
"""

from __future__ import annotations

import enum
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.codes import Code, DecodeError

# --------------------------------------------------------------------------------------
# reference encoder, from https://github.com/msgpack/msgpack/blob/master/spec.md


def reference_encode(value) -> bytes:
    if value is None:
        return b"\xc0"
    if value is False:
        return b"\xc2"
    if value is True:
        return b"\xc3"
    if isinstance(value, int):
        if 0 <= value <= 0x7F:
            return bytes([value])
        if -32 <= value < 0:
            return struct.pack(">b", value)
        if value > 0:
            for head, fmt, limit in ((0xCC, ">B", 2**8), (0xCD, ">H", 2**16), (0xCE, ">I", 2**32)):
                if value < limit:
                    return bytes([head]) + struct.pack(fmt, value)
            return b"\xcf" + struct.pack(">Q", value)
        for head, fmt, limit in ((0xD0, ">b", 2**7), (0xD1, ">h", 2**15), (0xD2, ">i", 2**31)):
            if value >= -limit:
                return bytes([head]) + struct.pack(fmt, value)
        return b"\xd3" + struct.pack(">q", value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _header(len(raw), 0xA0, 32, (0xD9, 0xDA, 0xDB)) + raw
    if isinstance(value, bytes):
        return _header(len(value), None, 0, (0xC4, 0xC5, 0xC6)) + value
    if isinstance(value, (list, tuple)):
        return _header(len(value), 0x90, 16, (None, 0xDC, 0xDD)) + b"".join(
            reference_encode(v) for v in value
        )
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-8"))
        return _header(len(value), 0x80, 16, (None, 0xDE, 0xDF)) + b"".join(
            reference_encode(k) + reference_encode(v) for k, v in items
        )
    raise AssertionError(f"not in the model: {value!r}")


def _header(n, fix, fix_limit, heads):
    if fix is not None and n < fix_limit:
        return bytes([fix | n])
    h8, h16, h32 = heads
    if h8 is not None and n < 2**8:
        return bytes([h8, n])
    if n < 2**16:
        return bytes([h16]) + struct.pack(">H", n)
    return bytes([h32]) + struct.pack(">I", n)


def normalise(value):
    """What decoding gives back: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    return value


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=codec.INT_MIN, max_value=codec.INT_MAX)
    | st.sampled_from([0, 127, 128, 255, 256, 2**16, 2**32, -32, -33, -128, -129, -(2**31) - 1])
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)


def depth_of(value) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def refused(data: bytes, code: Code, **limits) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        codec.decode(data, **limits)
    assert info.value.code is code, info.value
    return info.value


# --------------------------------------------------------------------------------------
# exact bytes

EXACT = [
    (None, "c0"),
    (False, "c2"),
    (True, "c3"),
    (0, "00"),
    (127, "7f"),
    (128, "cc80"),
    (255, "ccff"),
    (256, "cd0100"),
    (65535, "cdffff"),
    (65536, "ce00010000"),
    (2**32 - 1, "ceffffffff"),
    (2**32, "cf0000000100000000"),
    (2**64 - 1, "cfffffffffffffffff"),
    (-1, "ff"),
    (-32, "e0"),
    (-33, "d0df"),
    (-128, "d080"),
    (-129, "d1ff7f"),
    (-32768, "d18000"),
    (-32769, "d2ffff7fff"),
    (-(2**31), "d280000000"),
    (-(2**31) - 1, "d3ffffffff7fffffff"),
    (-(2**63), "d38000000000000000"),
    ("", "a0"),
    ("a", "a161"),
    ("é", "a2c3a9"),
    ("a" * 31, "bf" + "61" * 31),
    ("a" * 32, "d920" + "61" * 32),
    ("a" * 256, "da0100" + "61" * 256),
    (b"", "c400"),
    (b"\x01", "c40101"),
    (b"\x00" * 256, "c50100" + "00" * 256),
    ([], "90"),
    ((1, 2), "920102"),
    ([0] * 16, "dc0010" + "00" * 16),
    ({}, "80"),
    ({"b": 1, "a": 2}, "82a16102a16201"),
]


@pytest.mark.parametrize("value, expected", EXACT)
def test_exact_bytes(value, expected):
    assert codec.encode(value).hex() == expected
    assert reference_encode(value).hex() == expected  # the test's own encoder agrees
    assert codec.decode(bytes.fromhex(expected)) == normalise(value)


def test_large_lengths_use_32_bit_headers():
    assert codec.encode("a" * 65536)[:5] == b"\xdb\x00\x01\x00\x00"
    assert codec.encode(b"\x00" * 65536)[:5] == b"\xc6\x00\x01\x00\x00"
    assert codec.encode([None] * 65536)[:5] == b"\xdd\x00\x01\x00\x00"
    assert codec.encode({str(i): 0 for i in range(16)})[:3] == b"\xde\x00\x10"


def test_map_keys_sort_by_utf8_bytes():
    value = {"é": 1, "z": 2, "aa": 3, "a": 4, "": 5, "\U00010000": 6, "\uffff": 7, "B": 8}
    encoded = codec.encode(value)
    assert encoded == reference_encode(value)
    keys = list(codec.decode(encoded))
    assert keys == sorted(value, key=lambda k: k.encode("utf-8"))
    # UTF-16 order would put U+10000 (surrogates D800...) before U+FFFF; UTF-8 does not.
    assert keys.index("\uffff") < keys.index("\U00010000")


def test_int_and_str_subclasses_encode_as_their_values():
    class Colour(enum.IntEnum):
        RED = 300

    class Name(str):
        pass

    class Kind(str, enum.Enum):  # noqa: UP042 -- the str()-surprising kind, on purpose
        BOND = "bond"

    assert str(Kind.BOND) == "Kind.BOND"  # so the codec must not use str()
    assert codec.encode(Kind.BOND) == codec.encode("bond")
    assert codec.encode({Kind.BOND: 1}) == codec.encode({"bond": 1})
    assert codec.encode(Colour.RED) == codec.encode(300)
    assert codec.encode({Name("k"): Name("v")}) == codec.encode({"k": "v"})
    assert codec.encode(True) == b"\xc3"  # bool is not encoded as the int 1


# --------------------------------------------------------------------------------------
# encode refuses values outside the model (our bugs, so TypeError / ValueError)


@pytest.mark.parametrize(
    "value",
    [1.0, float("nan"), float("inf"), {1, 2}, bytearray(b"x"), memoryview(b"x"), object(), 1j],
)
def test_encode_refuses_other_types(value):
    with pytest.raises(TypeError):
        codec.encode(value)
    with pytest.raises(TypeError):
        codec.encode({"nested": [value]})


@pytest.mark.parametrize("key", [1, b"k", None, (1,), True])
def test_encode_refuses_non_str_keys(key):
    with pytest.raises(TypeError):
        codec.encode({key: 1})


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30])
def test_encode_refuses_ints_out_of_range(value):
    with pytest.raises(ValueError):
        codec.encode(value)


def test_encode_refuses_strings_that_are_not_utf8():
    with pytest.raises(ValueError):
        codec.encode("\ud800")
    with pytest.raises(ValueError):
        codec.encode({"\udfff": 1})


# --------------------------------------------------------------------------------------
# round trips


@settings(max_examples=200)
@given(values)
def test_round_trip_matches_reference_encoder(value):
    encoded = codec.encode(value)
    assert encoded == reference_encode(value)
    decoded = codec.decode(encoded, max_depth=64)
    assert decoded == normalise(value)
    assert codec.encode(decoded) == encoded


@settings(max_examples=100)
@given(st.dictionaries(st.text(max_size=5), st.integers(0, 10), max_size=8), st.randoms())
def test_insertion_order_never_matters(mapping, rnd):
    items = list(mapping.items())
    rnd.shuffle(items)
    assert codec.encode(dict(items)) == codec.encode(mapping)


# --------------------------------------------------------------------------------------
# decode refuses hostile encodings, each with its code


@pytest.mark.parametrize(
    "hex_data",
    [
        "d40100",  # fixext1
        "d5010000",  # fixext2
        "d601" + "00" * 4,  # fixext4
        "d701" + "00" * 8,  # fixext8
        "d801" + "00" * 16,  # fixext16
        "c70101" + "00",  # ext8
        "c8000101" + "00",  # ext16
        "c900000001" + "01" + "00",  # ext32
        "d6ff00000001",  # timestamp 32 (ext -1, which msgpack decodes natively)
        "d7ff" + "00" * 8,  # timestamp 64
        "c70cff" + "00" * 12,  # timestamp 96
        "d5ff0000",  # ext -1 with a length no timestamp has
        "c700ff",  # ext8 -1, empty
        "81a161d40100",  # ext nested in a map
        "ca3f800000",  # float32 1.0
        "cb3ff0000000000000",  # float64 1.0
        "cb7ff8000000000000",  # float64 NaN
        "cb7ff0000000000000",  # float64 +inf
        "cb0000000000000000",  # float64 0.0
        "91cb8000000000000000",  # float64 -0.0 inside an array
        "8101a0",  # int map key
        "81c0a0",  # nil map key
        "81c4016100",  # bin map key (msgpack itself lets bytes keys through)
        "81c3c0",  # bool map key
        "819001",  # array map key
    ],
)
def test_forbidden_types(hex_data):
    refused(bytes.fromhex(hex_data), Code.FORBIDDEN_TYPE)


@pytest.mark.parametrize(
    "hex_data",
    [
        "cc05",  # uint8 for a fixint
        "cd0005",  # uint16 for a fixint
        "cd00ff",  # uint16 for a uint8
        "ce0000ffff",  # uint32 for a uint16
        "cf00000000ffffffff",  # uint64 for a uint32
        "d005",  # int8 for a positive fixint
        "d0ff",  # int8 for a negative fixint (-1)
        "d1ff80",  # int16 for an int8 (-128)
        "d2ffff8000",  # int32 for an int16
        "d3ffffffff80000000",  # int64 for an int32
        "d30000000000000005",  # int64 for a positive value
        "d90161",  # str8 for a fixstr
        "da000161",  # str16 for a fixstr
        "db0000000161",  # str32 for a fixstr
        "c5000101",  # bin16 for a bin8
        "c60000000101",  # bin32 for a bin8
        "dc000101",  # array16 for a fixarray
        "dd0000000101",  # array32 for a fixarray
        "de0001a16101",  # map16 for a fixmap
        "df00000001a16101",  # map32 for a fixmap
        "82a16201a16102",  # keys out of order: "b" then "a"
        "82a16101a16102",  # duplicate key "a"
        "82a16101a16101",  # duplicate key "a" with the same value
        "91" + "82a16201a16102",  # unsorted map nested in an array
        "82a0c0a0c0",  # duplicate empty key
    ],
)
def test_non_canonical(hex_data):
    refused(bytes.fromhex(hex_data), Code.NON_CANONICAL)


@pytest.mark.parametrize(
    "hex_data",
    [
        "",  # empty
        "c1",  # the reserved byte
        "a2ff fe",  # invalid UTF-8
        "a2c080",  # overlong encoding of NUL
        "a3eda080",  # UTF-8-encoded surrogate U+D800
        "a4f4908080",  # code point above U+10FFFF
        "92",  # array missing its elements
        "81a161",  # map missing a value
        "cd01",  # truncated uint16
        "a561",  # str shorter than its header
        "dbffffffff",  # str32 claiming 4 GiB
        "c6ffffffff",  # bin32 claiming 4 GiB
        "ddffffffff",  # array32 claiming 4 G elements
        "dfffffffff",  # map32 claiming 4 G entries
    ],
)
def test_malformed(hex_data):
    refused(bytes.fromhex(hex_data.replace(" ", "")), Code.MALFORMED)


def test_every_truncation_is_malformed():
    encoded = codec.encode({"body": {"a": [1, 2, b"xyz", "text"], "n": 2**40}, "z": None})
    for end in range(len(encoded)):
        refused(encoded[:end], Code.MALFORMED)


@pytest.mark.parametrize("extra", ["00", "c0", "ffff", "82a16101a16202"])
def test_trailing_bytes(extra):
    error = refused(codec.encode({"a": 1}) + bytes.fromhex(extra), Code.TRAILING_BYTES)
    assert str(len(extra) // 2) in error.message


def test_depth_limit():
    def nested(depth: int) -> object:
        value: object = 0
        for i in range(depth):
            value = [value] if i % 2 else {"k": value}
        return value

    assert codec.decode(codec.encode(nested(16))) == nested(16)
    refused(codec.encode(nested(17)), Code.TOO_DEEP)
    assert codec.decode(codec.encode(nested(3)), max_depth=3) == nested(3)
    refused(codec.encode(nested(4)), Code.TOO_DEEP, max_depth=3)
    refused(codec.encode([[]]), Code.TOO_DEEP, max_depth=1)
    assert codec.decode(codec.encode([1, "x"]), max_depth=1) == [1, "x"]  # scalars add no depth
    # Far deeper than msgpack's own parser stack: still a DecodeError.
    refused(b"\x91" * 5000 + b"\x00", Code.TOO_DEEP)
    refused(b"\x81\xa1k" * 5000 + b"\x00", Code.TOO_DEEP)


def test_size_limit():
    blob = codec.encode(b"\x00" * 1000)
    assert codec.decode(blob, max_size=len(blob)) == b"\x00" * 1000
    refused(blob, Code.TOO_LARGE, max_size=len(blob) - 1)
    big = codec.encode(b"\x00" * codec.DEFAULT_MAX_SIZE)
    refused(big, Code.TOO_LARGE)
    assert codec.DEFAULT_MAX_SIZE == 1024 * 1024 and codec.DEFAULT_MAX_DEPTH == 16


def test_non_bytes_input():
    refused("c0", Code.MALFORMED)  # type: ignore[arg-type]
    refused(None, Code.MALFORMED)  # type: ignore[arg-type]
    assert codec.decode(bytearray(b"\xc0")) is None
    assert codec.decode(memoryview(b"\x01")) == 1


def test_arrays_decode_to_lists():
    assert codec.decode(codec.encode((1, (2,)))) == [1, [2]]


# --------------------------------------------------------------------------------------
# fuzz: every input is a canonical value or a DecodeError


def check_any_bytes(data: bytes) -> None:
    try:
        value = codec.decode(data, max_size=4096, max_depth=8)
    except DecodeError as error:
        assert 100 <= error.code < 200
        return
    assert codec.encode(value) == data  # anything accepted is canonical
    assert depth_of(value) <= 8


@settings(max_examples=1000)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_refuse(data):
    check_any_bytes(data)


@settings(max_examples=250)
@given(values, st.data())
def test_mutated_encodings_decode_or_refuse(value, data):
    """Small edits of valid encodings reach deep into the parser, unlike random bytes."""
    encoded = bytearray(codec.encode(value))
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        position = data.draw(st.integers(0, len(encoded)))
        if kind == "insert":
            encoded.insert(position, data.draw(st.integers(0, 255)))
        elif position < len(encoded):
            if kind == "flip":
                encoded[position] ^= 1 << data.draw(st.integers(0, 7))
            elif kind == "delete":
                del encoded[position]
            else:
                encoded[position] = data.draw(st.sampled_from([0xC1, 0xCA, 0xD4, 0xDC, 0xFF]))
    check_any_bytes(bytes(encoded))


def test_huge_max_depth_still_refuses_cleanly():
    # msgpack's own stack stops at 1024 levels; our walk must not hit Python's recursion limit.
    for levels in (990, 1023, 1100):
        try:
            codec.decode(b"\x91" * levels + b"\x00", max_depth=10_000)
        except DecodeError as error:
            assert error.code is Code.TOO_DEEP


def test_dict_and_list_subclasses_encode_like_their_base():
    from collections import OrderedDict

    class Items(list):
        pass

    assert codec.encode(OrderedDict([("b", 1), ("a", 2)])) == codec.encode({"a": 2, "b": 1})
    assert codec.encode(Items([1, 2])) == codec.encode([1, 2])


def test_encode_and_decode_from_many_threads():
    # The codec keeps one msgpack Packer per thread; threads must never see each other's bytes.
    from concurrent.futures import ThreadPoolExecutor

    samples = [
        {"n": i, "blob": bytes([i % 256]) * (i % 300), "list": list(range(i % 20))}
        for i in range(400)
    ]

    def round_trip(value):
        encoded = codec.encode(value)
        assert encoded == reference_encode(value)
        return codec.decode(encoded) == value

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(round_trip, samples * 5))
