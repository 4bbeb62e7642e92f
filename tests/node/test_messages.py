"""The peer-message envelope: round trips, and every other input is a `MessageError`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import Commit, Proposal, Vote, VoteType
from consensus.wire import encode_message
from ledger import codec
from node import messages as m

PROPOSAL = Proposal(3, 1, b"block-bytes", -1, b"p" * 20, b"s" * 64)
VOTE = Vote(VoteType.PREVOTE, 3, 1, None, b"v" * 20, b"s" * 64)
COMMIT = Commit(3, 1, b"i" * 32, ((b"a" * 20, b"s" * 64),))

SAMPLES = [
    m.ConsensusMessage(PROPOSAL),
    m.ConsensusMessage(VOTE),
    m.ConsensusMessage(COMMIT),
    m.TxGossip((b"tx1", b"tx2")),
    m.SyncRequest(7, 16),
    m.SyncResponse((m.SyncedBlock(b"block", b"commit"),)),
    m.SyncResponse(()),
    m.Status(12, b"h" * 32),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda x: type(x).__name__)
def test_round_trip(message):
    data = m.encode(message)
    assert m.decode(data) == message


def test_layout_is_the_documented_array():
    # Independent expectation: the bytes are codec.encode of the documented array.
    assert m.encode(m.SyncRequest(7, 16)) == codec.encode([3, 7, 16])
    assert m.encode(m.ConsensusMessage(VOTE)) == codec.encode([1, encode_message(VOTE)])
    assert m.encode(m.Status(1, b"h" * 32)) == codec.encode([5, 1, b"h" * 32])


@pytest.mark.parametrize(
    "obj",
    [
        [],
        [9],
        [1],
        [1, b"garbage"],
        [1, "text"],
        [2, []],
        [2, [b""]],
        [2, [b"x"] * (m.MAX_GOSSIP_TXS + 1)],
        [3, 0, 5],
        [3, 1, 0],
        [3, 1, m.MAX_SYNC_BLOCKS + 1],
        [3, 1, 2, 3],
        [4, [[b"block"]]],
        [4, [[b"block", "commit"]]],
        [5, -1, b"h" * 32],
        [5, 1, b"short"],
        {"kind": 1},
    ],
)
def test_invalid_messages_are_refused(obj):
    with pytest.raises(m.MessageError):
        m.decode(codec.encode(obj))


def test_evidence_is_not_sent_alone():
    from consensus.types import Evidence

    vote_b = Vote(VoteType.PREVOTE, 3, 1, b"x" * 32, b"v" * 20, b"t" * 64)
    data = codec.encode([1, encode_message(Evidence(VOTE, vote_b))])
    with pytest.raises(m.MessageError):
        m.decode(data)


def test_non_canonical_bytes_are_refused():
    data = m.encode(m.SyncRequest(7, 16))
    with pytest.raises(m.MessageError):
        m.decode(data + b"\x00")
    with pytest.raises(m.MessageError):
        m.decode(b"\x93\x03\xcc\x07\x10")  # 7 as uint8 instead of a fixint


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_every_input_is_valid_or_a_message_error(data):
    try:
        decoded = m.decode(data)
    except m.MessageError:
        return
    assert m.encode(decoded) == data  # canonical: a valid input re-encodes to itself


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(0, 10_000), st.integers(0, 255))
def test_fuzz_mutated_messages(message, position, byte):
    data = bytearray(m.encode(message))
    data[position % len(data)] = byte
    try:
        m.decode(bytes(data))
    except m.MessageError:
        pass
