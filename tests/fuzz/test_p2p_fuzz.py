"""Peer input under hostile bytes: the message envelope, the frame decoder, a real link.

Invariants:
* `node.messages.decode` returns a `NodeMessage` or raises `MessageError` -- nothing else --
  and whatever it accepts is canonical (`encode(decode(b)) == b`), so trailing bytes, ext
  types, truncations and non-canonical integers are all refused.
* `FrameStream.read_frame` over any byte stream yields frames of at most 65535 bytes or a
  `PeerProtocolError` / `ConnectionClosed`; a huge length prefix is refused after 4 bytes.
* A `PeerConnection` after a real Noise handshake turns garbage, bad flags and oversized
  messages into `PeerProtocolError`s with their stable codes.
* The consensus core keeps its buffer of future messages bounded under a flood of far-future
  heights and rounds and of messages signed by keys outside the validator set.
"""

from __future__ import annotations

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import MAX_HEIGHT as MAX_CONSENSUS_HEIGHT
from consensus.types import MAX_ROUND, Commit, Proposal, Vote, VoteType
from consensus.wire import encode_message
from ledger.crypto import generate_key
from node import messages
from node.messages import MessageError
from node.p2p.connection import (
    FLAG_MORE,
    FrameStream,
    PeerConnection,
    handshake_initiator,
    handshake_responder,
)
from node.p2p.errors import ConnectionClosed, PeerCode, PeerProtocolError
from node.p2p.noise import MAX_MESSAGE_LEN
from tests.consensus import harness

FUZZ = settings(max_examples=200, deadline=None)
MAX_HEIGHT = 2**63 - 1  # node.messages' bound on sync and status heights


def decodes_or_refuses(data: bytes) -> messages.NodeMessage | None:
    """The invariant on the envelope: a canonical message or a MessageError."""
    try:
        message = messages.decode(data)
    except MessageError:
        return None
    assert messages.encode(message) == data, "accepted bytes must be canonical"
    return message


def valid_messages() -> list[bytes]:
    vote = Vote(VoteType.PREVOTE, 5, 0, b"\x01" * 32, b"\x02" * 20, b"\x03" * 64)
    proposal = Proposal(5, 1, b"block", -1, b"\x02" * 20, b"\x03" * 64)
    commit = Commit(5, 0, b"\x01" * 32, ((b"\x02" * 20, b"\x03" * 64),))
    return [
        messages.encode(messages.ConsensusMessage(vote)),
        messages.encode(messages.ConsensusMessage(proposal)),
        messages.encode(messages.ConsensusMessage(commit)),
        messages.encode(messages.TxGossip((b"tx1", b"tx2"))),
        messages.encode(messages.SyncRequest(1, 64)),
        messages.encode(messages.SyncResponse((messages.SyncedBlock(b"b", b"c"),))),
        messages.encode(messages.Status(3, b"\x04" * 32)),
    ]


# msgpack values of every kind a hostile peer can write, ext types and maps included.
packable = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=True),
        st.binary(max_size=40),
        st.text(max_size=20),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    ),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.integers(0, 9), inner, max_size=3)
    ),
    max_leaves=16,
)


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_decode_or_are_refused(data):
    decodes_or_refuses(data)


@FUZZ
@given(kind=st.integers(0, 6), fields=st.lists(packable, max_size=4))
def test_structured_envelopes_decode_or_are_refused(kind, fields):
    decodes_or_refuses(msgpack.packb([kind, *fields], use_bin_type=True))


@FUZZ
@given(
    index=st.integers(0, 6),
    cut=st.integers(min_value=0),
    tail=st.binary(min_size=1, max_size=16),
    flip=st.tuples(st.integers(min_value=0), st.integers(1, 255)),
)
def test_truncated_extended_and_flipped_valid_messages(index, cut, tail, flip):
    good = valid_messages()[index]
    assert decodes_or_refuses(good) is not None
    assert decodes_or_refuses(good[: cut % len(good)]) is None  # every strict prefix
    assert decodes_or_refuses(good + tail) is None  # trailing bytes
    position, mask = flip
    flipped = bytearray(good)
    flipped[position % len(good)] ^= mask
    decodes_or_refuses(bytes(flipped))


def test_ext_types_and_maps_are_refused_everywhere():
    ext = msgpack.ExtType(1, b"x")
    for obj in ([1, ext], [2, [ext]], [5, 1, ext], {1: 2}, [3, 1, {1: 1}], [ext]):
        assert decodes_or_refuses(msgpack.packb(obj, use_bin_type=True)) is None
    inner = msgpack.packb([2, 1, 5, 0, None, ext, b"s" * 64], use_bin_type=True)
    assert decodes_or_refuses(messages.encode(messages.TxGossip((b"x",)))[:-1] + inner) is None
    assert decodes_or_refuses(msgpack.packb([1, inner], use_bin_type=True)) is None


@FUZZ
@given(
    height=st.integers(min_value=1, max_value=MAX_CONSENSUS_HEIGHT),
    round_=st.integers(min_value=0, max_value=MAX_ROUND + 1),
    validator=st.binary(min_size=1, max_size=40),
)
def test_far_future_heights_and_unknown_validators_decode_as_data(height, round_, validator):
    """Far-future heights and unknown validators are well-formed on the wire: the decoder
    passes them on exactly (the core decides); a round past the maximum is refused. (A height
    past 2**64-1 cannot even be written in msgpack.)"""
    vote = Vote(VoteType.PRECOMMIT, height, round_, None, validator, b"\x00" * 64)
    try:
        payload = encode_message(vote)
    except (TypeError, ValueError, OverflowError):
        return
    decoded = decodes_or_refuses(msgpack.packb([1, payload], use_bin_type=True))
    if decoded is not None:
        assert decoded.message == vote
    if round_ > MAX_ROUND:
        assert decoded is None
    too_far = msgpack.packb([2, 1, height, MAX_ROUND + 1, None, validator, b"\x00" * 64])
    assert decodes_or_refuses(msgpack.packb([1, too_far], use_bin_type=True)) is None


def test_core_buffer_stays_bounded_under_far_future_and_unknown_floods():
    vs = harness.valset([1, 1, 1, 1])
    addresses = [v.address for v in vs.validators]
    core = harness.make_core(addresses[0], vs)
    core.start()
    stranger = harness.address(99)
    for height in range(2, 2000):
        for sender in (addresses[1], stranger):
            core.step(harness.prevote(sender, height, height % 50, b"v" * 32))
            core.step(harness.proposal(sender, height, 0, b"value"))
        core.step(harness.prevote(addresses[2], MAX_CONSENSUS_HEIGHT, MAX_ROUND, b"v" * 32))
    buffered = sum(len(b) for b in core._future.values())
    config = core.config
    assert buffered <= config.max_buffered_per_validator * len(addresses)
    assert core.stats.unknown_validator >= 1998 * 2
    assert core.stats.far_future > 0
    assert core.height == 1  # nothing a flood can do moves the height


# --------------------------------------------------------------------------- frames


class ScriptedStream(trio.abc.Stream):
    """A stream that yields the given bytes in the given pieces, then EOF."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.largest_read = 0

    async def receive_some(self, max_bytes=None):
        self.largest_read = max(self.largest_read, max_bytes or 0)
        return self.pieces.pop(0) if self.pieces else b""

    async def send_all(self, data):
        pass

    async def wait_send_all_might_not_block(self):
        pass

    async def aclose(self):
        pass


async def read_all_frames(pieces: list[bytes]) -> tuple[list[bytes], Exception]:
    frames = FrameStream(ScriptedStream(pieces))
    out = []
    while True:
        try:
            out.append(await frames.read_frame())
        except (PeerProtocolError, ConnectionClosed) as exc:
            return out, exc


@FUZZ
@given(data=st.binary(max_size=2048), cuts=st.lists(st.integers(1, 300), max_size=8))
def test_frame_decoder_on_random_bytes(data, cuts):
    pieces, rest = [], data
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    frames, end = trio.run(read_all_frames, [p for p in pieces if p])
    assert all(len(f) <= MAX_MESSAGE_LEN for f in frames)
    assert sum(4 + len(f) for f in frames) <= len(data)
    if isinstance(end, PeerProtocolError):
        assert end.code in (PeerCode.FRAME_TOO_LARGE, PeerCode.TRUNCATED_FRAME)


@FUZZ
@given(length=st.integers(MAX_MESSAGE_LEN + 1, 2**32 - 1))
def test_huge_length_prefix_is_refused_after_four_bytes(length):
    stream_bytes = [length.to_bytes(4, "big"), b"\x00" * 100]
    frames, end = trio.run(read_all_frames, stream_bytes)
    assert frames == [] and isinstance(end, PeerProtocolError)
    assert end.code == PeerCode.FRAME_TOO_LARGE


# --------------------------------------------------------------------------- a real link


CHAIN = "khazana-fuzz"
ALICE, BOB = generate_key(b"a" * 32), generate_key(b"b" * 32)


async def linked(max_message_size: int = 1024):
    """Two ends of a real Noise link over an in-memory stream pair."""
    left, right = trio.testing.memory_stream_pair()
    allowed = {ALICE.public_key, BOB.public_key}.__contains__
    out: dict = {}

    async def init():
        out["a"] = await handshake_initiator(left, ALICE, CHAIN, allowed)

    async def resp():
        out["b"] = await handshake_responder(
            right, BOB, CHAIN, allowed, max_message_size=max_message_size
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(init)
        nursery.start_soon(resp)
    return out["a"], out["b"]


async def _receive_code(receiver: PeerConnection) -> PeerCode | None:
    try:
        with trio.fail_after(5):
            await receiver.receive()
    except PeerProtocolError as exc:
        return exc.code
    return None


@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(min_size=0, max_size=600))
def test_garbage_frames_after_the_handshake_fail_authentication(garbage):
    async def main():
        sender, receiver = await linked()
        await sender._frames.write_frames([garbage])  # raw bytes where ciphertext belongs
        return await _receive_code(receiver)

    assert trio.run(main) == PeerCode.BAD_MAC


@settings(max_examples=40, deadline=None)
@given(flags=st.integers(2, 255), chunk=st.binary(max_size=64))
def test_authenticated_frames_with_unknown_flags_are_malformed(flags, chunk):
    async def main():
        sender, receiver = await linked()
        frame = sender._send_cipher.encrypt_with_ad(b"", bytes([flags]) + chunk)
        await sender._frames.write_frames([frame])
        return await _receive_code(receiver)

    assert trio.run(main) == PeerCode.MALFORMED_FRAME


@pytest.mark.parametrize("chunks", [1, 3, 40])
def test_oversized_message_is_cut_while_reassembling(chunks):
    async def main():
        sender, receiver = await linked(max_message_size=1024)
        frames = [
            sender._send_cipher.encrypt_with_ad(b"", bytes([FLAG_MORE]) + b"x" * 600)
            for _ in range(chunks)
        ]
        await sender._frames.write_frames(frames)
        await sender.aclose()  # the peer goes away in the middle of its message
        return await _receive_code(receiver), len(receiver._frames._buffer)

    code, buffered = trio.run(main)
    if chunks == 1:  # 600 bytes fit the limit: the end of stream is what is wrong
        assert code == PeerCode.TRUNCATED_FRAME
    else:
        assert code == PeerCode.MESSAGE_TOO_LARGE
    assert buffered <= 4 + MAX_MESSAGE_LEN * 2  # one frame plus one read, never more
