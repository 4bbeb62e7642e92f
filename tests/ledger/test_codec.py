"""Canonical encoding: exact bytes, round trips, and every refusal with its code."""

import pytest

from ledger import codec
from ledger.codes import Code, DecodeError


def test_map_keys_are_sorted_and_ints_shortest():
    assert codec.encode({"b": 1, "a": 128}) == bytes.fromhex("82a161cc80a16201")


def test_round_trip_simple():
    value = {"x": [1, -1, b"\x00", "t", None, True]}
    assert codec.decode(codec.encode(value)) == value


def test_trailing_bytes_refused():
    with pytest.raises(DecodeError) as info:
        codec.decode(b"\x01\x02")
    assert info.value.code is Code.TRAILING_BYTES
