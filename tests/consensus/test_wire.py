"""The consensus wire format: round trips, exact bytes, and the fuzz invariant (every input
is a well-formed message or a WireError, nothing else)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import Commit, Evidence, Proposal, Vote, VoteType
from consensus.wire import WireError, decode_message, encode_message
from tests.consensus.harness import address, commit_for, precommit, prevote, proposal

A1, A2 = address(1), address(2)

SAMPLES = [
    prevote(A1, 3, 1, b"\x07" * 32),
    precommit(A2, 3, 1, None),
    proposal(A1, 9, 2, b"block bytes", pol_round=1),
    commit_for([A1, A2], 4, 0, b"v"),
    Evidence(prevote(A1, 2, 0, None), prevote(A1, 2, 0, b"\x01" * 32)),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    assert decode_message(encode_message(msg)) == msg


def test_vote_bytes_are_the_documented_array():
    vote = Vote(VoteType.PREVOTE, 5, 2, None, b"\xaa", b"\xbb")
    assert encode_message(vote) == bytes([0x97, 2, 1, 5, 2, 0xC0, 0xC4, 1, 0xAA, 0xC4, 1, 0xBB])


@pytest.mark.parametrize(
    "raw",
    [
        [2, 3, 1, 0, None, b"a", b"s"],  # vote type 3
        [2, 1, 0, 0, None, b"a", b"s"],  # height 0
        [2, 1, 1, -1, None, b"a", b"s"],  # negative round
        [2, 1, 1, 0, b"", b"a", b"s"],  # empty value id
        [2, True, 1, 0, None, b"a", b"s"],  # bool is not an int
        [2, 1, 1.0, 0, None, b"a", b"s"],  # float
        [2, 1, 1, 0, None, "a", b"s"],  # str instead of bin
        [1, 1, 0, b"v", 0, b"p", b"s"],  # pol_round must be < round
        [3, 1, 0, b"v", [[b"a"]]],  # commit entry arity
        [4, [1, 1, 0, b"v", -1, b"p", b"s"], [2, 1, 1, 0, None, b"a", b"s"]],  # not votes
        [9],
        [],
        {"kind": 2},
    ],
)
def test_malformed_fields_are_wire_errors(raw):
    with pytest.raises(WireError):
        decode_message(msgpack.packb(raw, use_bin_type=True))


def test_trailing_bytes_ext_types_and_oversize_are_refused():
    good = encode_message(SAMPLES[0])
    with pytest.raises(WireError):
        decode_message(good + b"\x00")
    with pytest.raises(WireError):
        decode_message(msgpack.packb(msgpack.ExtType(1, b"x")))
    with pytest.raises(WireError):
        decode_message(good, max_size=len(good) - 1)
    with pytest.raises(WireError):
        decode_message(b"\xdd\xff\xff\xff\xff")  # array32 claiming 4 billion items


def test_non_canonical_integer_width_is_refused():
    # height 5 written as uint64 instead of a fixint: same value, different bytes.
    canonical = encode_message(Vote(VoteType.PREVOTE, 5, 0, None, b"a", b"s"))
    wide = canonical.replace(b"\x01\x05\x00", b"\x01\xcf" + (5).to_bytes(8, "big") + b"\x00", 1)
    assert wide != canonical
    with pytest.raises(WireError):
        decode_message(wide)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_every_input_is_a_message_or_a_wire_error(data):
    try:
        msg = decode_message(data)
    except WireError:
        return
    assert isinstance(msg, Proposal | Vote | Commit | Evidence)
    assert encode_message(msg) == data


@settings(max_examples=200)
@given(st.integers(0, len(SAMPLES) - 1), st.integers(0, 400), st.integers(0, 255))
def test_fuzz_single_byte_mutations(index, position, byte):
    data = bytearray(encode_message(SAMPLES[index]))
    data[position % len(data)] = byte
    try:
        msg = decode_message(bytes(data))
    except WireError:
        return
    assert encode_message(msg) == bytes(data)
