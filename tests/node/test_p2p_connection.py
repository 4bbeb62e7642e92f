"""PeerConnection: the authenticated handshake, the frame format and every way to break it.

Each hostile input must come out as a `PeerProtocolError` (or a clean `ConnectionClosed`),
and the receiving side must stay usable for everyone else.
"""

from __future__ import annotations

import functools
import os

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.crypto import generate_key
from node.p2p.connection import (
    MAX_CHUNK,
    PROLOGUE,
    FrameStream,
    encode_identity_payload,
    handshake_initiator,
    handshake_responder,
)
from node.p2p.errors import ConnectionClosed, PeerCode, PeerProtocolError
from node.p2p.noise import HandshakeState, generate_x25519_private_key


def trio_test(fn):
    """Run an async test under trio on a MockClock: timeouts elapse instantly and exactly
    (no pytest-trio in the environment)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        clock = trio.testing.MockClock(autojump_threshold=0)
        return trio.run(functools.partial(fn, *args, **kwargs), clock=clock)

    return wrapper


CHAIN = "khazana-test-1"
ALICE = generate_key(bytes(range(32)))
BOB = generate_key(bytes(range(1, 33)))
MALLORY = generate_key(bytes(range(2, 34)))


def allow(*keys):
    allowed = {k.public_key for k in keys}
    return lambda key: key in allowed


async def connect_pair(
    initiator=ALICE,
    responder=BOB,
    *,
    init_chain=CHAIN,
    resp_chain=CHAIN,
    init_allowed=None,
    resp_allowed=None,
    max_message_size=4 * 1024 * 1024,
    streams=None,
):
    """Handshake both sides concurrently; returns (initiator_result, responder_result),
    each a PeerConnection or the exception that side raised."""
    left, right = streams or trio.testing.memory_stream_pair()
    results: dict[str, object] = {}

    async def side(name, coro):
        try:
            results[name] = await coro
        except (PeerProtocolError, ConnectionClosed) as exc:
            results[name] = exc
            # A refusing side closes; the other then sees the end of the stream.
            await trio.aclose_forcefully(left if name == "init" else right)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            side,
            "init",
            handshake_initiator(
                left,
                initiator,
                init_chain,
                init_allowed or allow(responder),
                max_message_size=max_message_size,
                timeout_s=5,
            ),
        )
        nursery.start_soon(
            side,
            "resp",
            handshake_responder(
                right,
                responder,
                resp_chain,
                resp_allowed or allow(initiator),
                max_message_size=max_message_size,
                timeout_s=5,
            ),
        )
    return results["init"], results["resp"]


@trio_test
async def test_handshake_authenticates_both_sides_and_messages_flow_both_ways():
    a, b = await connect_pair()
    assert a.remote_key == BOB.public_key
    assert b.remote_key == ALICE.public_key
    assert a.handshake_hash == b.handshake_hash
    await a.send(b"prevote h=1 r=0")
    assert await b.receive() == b"prevote h=1 r=0"
    await b.send(b"")
    await b.send(b"precommit")
    assert await a.receive() == b""
    assert await a.receive() == b"precommit"


@trio_test
async def test_responder_refuses_an_unknown_initiator():
    a, b = await connect_pair(initiator=MALLORY, resp_allowed=allow(ALICE))
    assert isinstance(b, PeerProtocolError) and b.code == PeerCode.UNKNOWN_PEER
    # Mallory finished its side, but the responder closed: nothing gets through.
    with pytest.raises(ConnectionClosed):
        await a.receive()


@trio_test
async def test_initiator_refuses_an_unknown_responder():
    a, b = await connect_pair(responder=MALLORY, init_allowed=allow(BOB))
    assert isinstance(a, PeerProtocolError) and a.code == PeerCode.UNKNOWN_PEER
    assert isinstance(b, ConnectionClosed)


@trio_test
async def test_wrong_chain_is_refused_whichever_side_is_on_it():
    # The initiator sees the responder's chain first (message 2) and refuses; the
    # responder then sees the stream end before any transport message.
    for init_chain, resp_chain in ((CHAIN, "another-chain"), ("another-chain", CHAIN)):
        a, b = await connect_pair(init_chain=init_chain, resp_chain=resp_chain)
        assert isinstance(a, PeerProtocolError) and a.code == PeerCode.WRONG_CHAIN
        assert isinstance(b, ConnectionClosed)


@trio_test
async def test_responder_refuses_an_initiator_on_another_chain():
    # A hostile initiator that ignores the responder's chain still cannot get in.
    left, right = trio.testing.memory_stream_pair()
    mallory = HandshakeState(
        initiator=True, static_private_key=generate_x25519_private_key(), prologue=PROLOGUE
    )

    async def initiate_on_other_chain():
        frames = FrameStream(left)
        await frames.write_frames([mallory.write_message(b"")])
        mallory.read_message(await frames.read_frame())
        payload = encode_identity_payload(ALICE, "another-chain", mallory.static_public_key)
        await frames.write_frames([mallory.write_message(payload)])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(initiate_on_other_chain)
        with pytest.raises(PeerProtocolError) as caught:
            await handshake_responder(right, BOB, CHAIN, allow(ALICE))
    assert caught.value.code == PeerCode.WRONG_CHAIN


@trio_test
async def test_identity_signature_must_cover_the_noise_static_key():
    # Mallory replays Bob's payload (signed over Bob's Noise key) with her own Noise key.
    left, right = trio.testing.memory_stream_pair()
    bob_noise_key = generate_x25519_private_key()
    bob_payload = encode_identity_payload(
        BOB,
        CHAIN,
        HandshakeState(initiator=False, static_private_key=bob_noise_key).static_public_key,
    )
    mallory = HandshakeState(
        initiator=False, static_private_key=generate_x25519_private_key(), prologue=PROLOGUE
    )

    async def mallory_responds():
        frames = FrameStream(right)
        mallory.read_message(await frames.read_frame())
        await frames.write_frames([mallory.write_message(bob_payload)])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mallory_responds)
        with pytest.raises(PeerProtocolError) as caught:
            await handshake_initiator(left, ALICE, CHAIN, allow(BOB))
    assert caught.value.code == PeerCode.BAD_IDENTITY_SIGNATURE


@trio_test
async def test_handshake_deadline():
    left, _silent = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(PeerProtocolError) as caught:
        await handshake_initiator(left, ALICE, CHAIN, allow(BOB), timeout_s=3)
    assert caught.value.code == PeerCode.HANDSHAKE_TIMEOUT
    assert trio.current_time() - start == pytest.approx(3)


@trio_test
async def test_large_message_is_chunked_and_reassembled():
    a, b = await connect_pair()
    message = os.urandom(3 * MAX_CHUNK + 12345)
    frames_before = a._send_cipher.nonce  # one nonce per frame
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send, message)
        assert await b.receive() == message
    assert a._send_cipher.nonce - frames_before == 4  # three full chunks and a tail
    # (every frame was <= 65535 bytes, or b's reader would have raised FRAME_TOO_LARGE)
    # Boundaries: exactly one chunk, and the 4 MiB limit itself.
    await a.send(b"x" * MAX_CHUNK)
    assert await b.receive() == b"x" * MAX_CHUNK
    big = os.urandom(4 * 1024 * 1024)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send, big)
        assert await b.receive() == big
    with pytest.raises(ValueError):
        await a.send(big + b"!")


@trio_test
async def test_reassembly_stops_at_the_receivers_limit():
    # The sender allows more than the receiver: the receiver refuses while reassembling.
    left, right = trio.testing.memory_stream_pair()
    results = {}

    async def init():
        results["a"] = await handshake_initiator(
            left, ALICE, CHAIN, allow(BOB), max_message_size=1_000_000
        )

    async def resp():
        results["b"] = await handshake_responder(
            right, BOB, CHAIN, allow(ALICE), max_message_size=100_000
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(init)
        nursery.start_soon(resp)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(results["a"].send, b"y" * 200_000)
        with pytest.raises(PeerProtocolError) as caught:
            await results["b"].receive()
        assert caught.value.code == PeerCode.MESSAGE_TOO_LARGE
        await results["b"].aclose()


class TamperingProxy:
    """Forwards bytes both ways; flips one byte at a chosen offset of the b->a direction."""

    def __init__(self):
        self.a_side, self.proxy_a = trio.testing.memory_stream_pair()
        self.proxy_b, self.b_side = trio.testing.memory_stream_pair()
        self.flip_at: int | None = None
        self.forwarded = 0

    async def run(self):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, self.proxy_a, self.proxy_b, False)
            nursery.start_soon(self._pump, self.proxy_b, self.proxy_a, True)

    async def _pump(self, source, sink, tamper):
        while data := await source.receive_some():
            if tamper:
                data = bytearray(data)
                if self.flip_at is not None and self.forwarded <= self.flip_at < (
                    self.forwarded + len(data)
                ):
                    data[self.flip_at - self.forwarded] ^= 0x80
                self.forwarded += len(data)
            await sink.send_all(bytes(data))
        await sink.aclose()


@pytest.mark.parametrize(
    "offset_in_frame, code",
    [
        (4 + 5, PeerCode.BAD_MAC),  # inside the ciphertext
        (4 + 18, PeerCode.BAD_MAC),  # inside the Poly1305 tag (body: 1 + 3 + 16 bytes)
        (0, PeerCode.FRAME_TOO_LARGE),  # high byte of the length prefix
    ],
)
@trio_test
async def test_tampered_frame_is_a_protocol_error(offset_in_frame, code):
    proxy = TamperingProxy()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy.run)
        a, b = await connect_pair(streams=(proxy.a_side, proxy.b_side))
        proxy.flip_at = proxy.forwarded + offset_in_frame
        await b.send(b"abc")
        with pytest.raises(PeerProtocolError) as caught:
            await a.receive()
        assert caught.value.code == code
        nursery.cancel_scope.cancel()


async def _established():
    """A connection `a` and the raw stream its peer writes to."""
    a, b = await connect_pair()
    return a, b, b.stream


@trio_test
async def test_truncated_frame_is_a_protocol_error():
    a, b, raw = await _established()
    await raw.send_all((100).to_bytes(4, "big") + b"only ten b")
    await raw.aclose()
    with pytest.raises(PeerProtocolError) as caught:
        await a.receive()
    assert caught.value.code == PeerCode.TRUNCATED_FRAME


@trio_test
async def test_truncated_chunked_message_is_a_protocol_error():
    a, b, raw = await _established()
    # A valid first chunk announcing more, then the stream ends.
    frame = b._send_cipher.encrypt_with_ad(b"", b"\x01" + b"part one")
    await raw.send_all(len(frame).to_bytes(4, "big") + frame)
    await raw.aclose()
    with pytest.raises(PeerProtocolError) as caught:
        await a.receive()
    assert caught.value.code == PeerCode.TRUNCATED_FRAME


@trio_test
async def test_oversize_length_prefix_is_refused_before_reading_the_body():
    a, b, raw = await _established()
    await raw.send_all((65536).to_bytes(4, "big"))
    with pytest.raises(PeerProtocolError) as caught:
        await a.receive()
    assert caught.value.code == PeerCode.FRAME_TOO_LARGE


@trio_test
async def test_unknown_frame_flags_are_refused():
    a, b, raw = await _established()
    frame = b._send_cipher.encrypt_with_ad(b"", b"\x02hello")
    await raw.send_all(len(frame).to_bytes(4, "big") + frame)
    with pytest.raises(PeerProtocolError) as caught:
        await a.receive()
    assert caught.value.code == PeerCode.MALFORMED_FRAME


@trio_test
async def test_replayed_frame_fails_because_the_nonce_moved_on():
    a, b, raw = await _established()
    frame = b._send_cipher.encrypt_with_ad(b"", b"\x00vote")
    await raw.send_all(len(frame).to_bytes(4, "big") + frame)
    assert await a.receive() == b"vote"
    await raw.send_all(len(frame).to_bytes(4, "big") + frame)
    with pytest.raises(PeerProtocolError) as caught:
        await a.receive()
    assert caught.value.code == PeerCode.BAD_MAC


@trio_test
async def test_protocol_error_on_one_link_leaves_other_links_working():
    a, b, raw = await _established()
    c, d = await connect_pair(responder=MALLORY, init_allowed=allow(MALLORY))
    await raw.send_all(os.urandom(64))
    with pytest.raises(PeerProtocolError):
        await a.receive()
    await a.aclose()
    await d.send(b"still here")
    assert await c.receive() == b"still here"


# The decoder invariant (h11): every input is a valid message or a remote protocol error
# (or the clean end of the stream), never anything else.
@settings(max_examples=60)
@given(garbage=st.binary(max_size=300))
def test_random_bytes_after_the_handshake(garbage):
    async def main():
        a, b, raw = await _established()
        await raw.send_all(garbage)
        await raw.aclose()
        with pytest.raises((PeerProtocolError, ConnectionClosed)):
            await a.receive()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=60)
@given(garbage=st.binary(max_size=300))
def test_random_bytes_during_the_handshake(garbage):
    async def main():
        left, right = trio.testing.memory_stream_pair()
        await left.send_all(garbage)
        await left.aclose()
        with pytest.raises((PeerProtocolError, ConnectionClosed)):
            await handshake_responder(right, BOB, CHAIN, allow(ALICE), timeout_s=5)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_real_tcp_socket_on_loopback():
    # Real sockets on the real clock: a MockClock would jump past the handshake deadline
    # while the kernel moves bytes.
    trio.run(_tcp_round_trip)


async def _tcp_round_trip():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:

        async def serve_one():
            stream = await listeners[0].accept()
            conn = await handshake_responder(stream, BOB, CHAIN, allow(ALICE))
            await conn.send(await conn.receive() + b" ack")

        nursery.start_soon(serve_one)
        stream = await trio.testing.open_stream_to_socket_listener(listeners[0])
        conn = await handshake_initiator(stream, ALICE, CHAIN, allow(BOB))
        payload = os.urandom(200_000)
        await conn.send(payload)
        assert await conn.receive() == payload + b" ack"
        await conn.aclose()
    await listeners[0].aclose()
