"""One authenticated, encrypted link to a peer over any `trio.abc.Stream`.

What this module owns:

* The frame: every Noise message (handshake and transport) travels as a 4-byte big-endian
  length followed by that many bytes, at most 65535 (the Noise message limit). A larger
  prefix is refused as soon as it is read, before any allocation.
* The handshake: Noise XX (`node/p2p/noise.py`) with the Noise static key bound to the
  node's Ed25519 identity, as libp2p does (https://github.com/libp2p/specs/blob/master/
  noise/README.md, "The libp2p Handshake Payload"): the responder's payload in message 2
  and the initiator's in message 3 carry the Ed25519 public key and a signature over the
  sender's Noise static X25519 key. Our signed bytes also carry a domain tag and the chain
  id, so a signature made for another purpose or another chain never authenticates here.
  Both payloads are encrypted (XX encrypts from message 2 on).
* The transport: after the handshake each frame decrypts to `flags (1 byte) || chunk`; an
  application message longer than one frame is split into chunks, every chunk but the last
  with the `MORE` flag. The reassembled message is bounded by `max_message_size`.

Handshake payload (identical in messages 2 and 3):

    version (1 byte, = 1) || ed25519_public_key (32) || signature (64)
        || chain_id_length (1) || chain_id (UTF-8)

    signature = Ed25519(identity, IDENTITY_TAG || chain_id_length || chain_id
                                  || noise_static_public_key)

Deadlines (a socket that is opened and then left silent, or a peer that stops in the middle
of a frame, must not hold anything for long):

* the whole handshake runs under `timeout_s` (`HANDSHAKE_TIMEOUT`);
* on the accepting side, the initiator's first handshake message -- 36 bytes an honest node
  sends the moment it connects -- must arrive within `first_message_timeout_s` of the start
  (`HANDSHAKE_TIMEOUT`, said in the message). The dialing side waits for the answer under
  the whole deadline only: a responder may first have to work through a queue of accepted
  connections (strangers' among them), and we chose to dial it;
* after the handshake, a frame whose first byte has arrived must be complete within
  `frame_timeout_s` (`FRAME_TIMEOUT`). Silence *between* frames is not limited here: an
  idle link is legitimate.

Every refusal is a `PeerProtocolError` with a `PeerCode`; a clean end of the stream is
`ConnectionClosed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import trio

from ledger.crypto import verify_signature
from node.p2p.errors import ConnectionClosed, PeerCode, PeerProtocolError
from node.p2p.noise import (
    MAX_MESSAGE_LEN,
    TAGLEN,
    CipherState,
    HandshakeState,
    generate_x25519_private_key,
)

IDENTITY_TAG = b"khazana/p2p/v1\x00"
# The prologue binds the protocol version into the transcript: a peer speaking another
# version fails at the first encrypted field instead of misreading our payload.
PROLOGUE = IDENTITY_TAG
PAYLOAD_VERSION = 1

LENGTH_PREFIX = 4
FLAG_MORE = 0x01  # another chunk of the same application message follows
# One frame carries a Noise message of at most 65535 bytes: tag and flags byte included.
MAX_CHUNK = MAX_MESSAGE_LEN - TAGLEN - 1
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
DEFAULT_HANDSHAKE_TIMEOUT_S = 5
# The largest handshake message is message 2: e (32) + encrypted s (48) + the encrypted
# identity payload (at most 1 + 32 + 64 + 1 + 255 + 16). A connection that has not finished
# its handshake may make us buffer no more than this, not a full 64 KiB frame.
MAX_HANDSHAKE_FRAME = 512
DEFAULT_FIRST_MESSAGE_TIMEOUT_S = 2

IsAllowed = Callable[[bytes], bool]


class Identity(Protocol):
    """The node's Ed25519 key: `ledger.crypto.KeyPair` (from `read_key_file`) fits."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def identity_signing_bytes(chain_id: bytes, noise_static_public_key: bytes) -> bytes:
    return IDENTITY_TAG + bytes([len(chain_id)]) + chain_id + noise_static_public_key


def encode_identity_payload(
    identity: Identity, chain_id: str, noise_static_public_key: bytes
) -> bytes:
    chain = chain_id.encode("utf-8")
    if not 0 < len(chain) <= 255:
        raise ValueError(f"chain id must be 1..255 UTF-8 bytes, got {len(chain)}")
    signature = identity.sign(identity_signing_bytes(chain, noise_static_public_key))
    return bytes([PAYLOAD_VERSION]) + identity.public_key + signature + bytes([len(chain)]) + chain


def verify_identity_payload(
    payload: bytes, noise_static_public_key: bytes, chain_id: str, is_allowed: IsAllowed
) -> bytes:
    """The remote's Ed25519 public key, once its payload proves it owns the Noise key."""
    if len(payload) < 1 + 32 + 64 + 1 or payload[0] != PAYLOAD_VERSION:
        raise PeerProtocolError(PeerCode.BAD_HANDSHAKE, "identity payload of the wrong shape")
    public_key, signature = payload[1:33], payload[33:97]
    chain_length = payload[97]
    chain = payload[98:]
    if len(chain) != chain_length:
        raise PeerProtocolError(
            PeerCode.BAD_HANDSHAKE, f"chain id of {len(chain)} bytes, header says {chain_length}"
        )
    # The ledger's strict verification: small-order keys and malleable signatures refused.
    if not verify_signature(
        public_key, identity_signing_bytes(chain, noise_static_public_key), signature
    ):
        raise PeerProtocolError(
            PeerCode.BAD_IDENTITY_SIGNATURE, f"key {public_key.hex()} did not sign its Noise key"
        )
    if chain != chain_id.encode("utf-8"):
        raise PeerProtocolError(
            PeerCode.WRONG_CHAIN, f"peer is on chain {chain!r}, we are on {chain_id!r}"
        )
    if not is_allowed(public_key):
        raise PeerProtocolError(PeerCode.UNKNOWN_PEER, f"key {public_key.hex()} is not allowed")
    return public_key


class FrameStream:
    """Length-prefixed frames over a byte stream, with a bounded read buffer.

    `frame_timeout_s`: once a frame's first byte is here, the rest must follow within it
    (infinite by default; the handshake has its own deadline). `max_frame`: the largest
    frame body accepted, and what one read may take from the stream beyond a prefix."""

    __slots__ = ("_buffer", "_stream", "frame_timeout_s", "max_frame")

    def __init__(
        self,
        stream: trio.abc.Stream,
        frame_timeout_s: float = math.inf,
        max_frame: int = MAX_MESSAGE_LEN,
    ) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self.frame_timeout_s = frame_timeout_s
        self.max_frame = max_frame

    @property
    def stream(self) -> trio.abc.Stream:
        return self._stream

    async def _fill(self, size: int, *, at_boundary: bool) -> None:
        while len(self._buffer) < size:
            try:
                data = await self._stream.receive_some(LENGTH_PREFIX + self.max_frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionClosed(f"stream broke: {exc!r}") from exc
            if not data:
                if at_boundary and not self._buffer:
                    raise ConnectionClosed("end of stream")
                raise PeerProtocolError(
                    PeerCode.TRUNCATED_FRAME,
                    f"end of stream with {len(self._buffer)} of {size} bytes of a frame",
                )
            self._buffer += data

    async def read_frame(self, *, at_boundary: bool = True) -> bytes:
        """The next frame's body. `at_boundary=False`: EOF here truncates a message."""
        # Waiting for a frame to begin has no deadline (an idle link is fine); once it has
        # begun, a peer that trickles or stops must not hold the reader (and the buffer).
        await self._fill(1, at_boundary=at_boundary)
        with trio.move_on_after(self.frame_timeout_s) as deadline:
            await self._fill(LENGTH_PREFIX, at_boundary=False)
            length = int.from_bytes(self._buffer[:LENGTH_PREFIX], "big")
            if length > self.max_frame:
                raise PeerProtocolError(
                    PeerCode.FRAME_TOO_LARGE, f"length prefix {length} above {self.max_frame}"
                )
            await self._fill(LENGTH_PREFIX + length, at_boundary=False)
        if deadline.cancelled_caught:
            raise PeerProtocolError(
                PeerCode.FRAME_TIMEOUT,
                f"{len(self._buffer)} bytes of a frame, then nothing for {self.frame_timeout_s}s",
            )
        body = bytes(self._buffer[LENGTH_PREFIX : LENGTH_PREFIX + length])
        del self._buffer[: LENGTH_PREFIX + length]
        return body

    async def write_frames(self, bodies: list[bytes]) -> None:
        data = bytearray()
        for body in bodies:
            if len(body) > MAX_MESSAGE_LEN:
                raise ValueError(f"frame of {len(body)} bytes above {MAX_MESSAGE_LEN}")
            data += len(body).to_bytes(LENGTH_PREFIX, "big") + body
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(f"stream broke: {exc!r}") from exc


# Frames of one application message are written in groups, so a 4 MiB message is not copied
# into one buffer at once and other tasks get a turn between groups.
_FRAMES_PER_WRITE = 16


class PeerConnection:
    """An authenticated, encrypted link: whole application messages in, whole messages out.

    Built only by `handshake_initiator` / `handshake_responder`. `send` may be called from
    several tasks (a lock keeps the chunks of one message together); `receive` from one.
    """

    __slots__ = (
        "_frames",
        "_receive_cipher",
        "_send_cipher",
        "_send_lock",
        "handshake_hash",
        "max_message_size",
        "remote_key",
    )

    def __init__(
        self,
        frames: FrameStream,
        send_cipher: CipherState,
        receive_cipher: CipherState,
        *,
        remote_key: bytes,
        handshake_hash: bytes,
        max_message_size: int,
    ) -> None:
        self._frames = frames
        self._send_cipher = send_cipher
        self._receive_cipher = receive_cipher
        self._send_lock = trio.StrictFIFOLock()
        self.remote_key = remote_key
        self.handshake_hash = handshake_hash
        self.max_message_size = max_message_size

    @property
    def stream(self) -> trio.abc.Stream:
        return self._frames.stream

    async def send(self, message: bytes) -> None:
        if len(message) > self.max_message_size:
            # Our own caller built it: a bug, not the peer's fault.
            raise ValueError(f"message of {len(message)} bytes above {self.max_message_size}")
        async with self._send_lock:
            offsets = range(0, max(len(message), 1), MAX_CHUNK)
            batch: list[bytes] = []
            for offset in offsets:
                chunk = message[offset : offset + MAX_CHUNK]
                flags = FLAG_MORE if offset + MAX_CHUNK < len(message) else 0
                batch.append(self._send_cipher.encrypt_with_ad(b"", bytes([flags]) + chunk))
                if len(batch) == _FRAMES_PER_WRITE:
                    await self._frames.write_frames(batch)
                    batch = []
            if batch:
                await self._frames.write_frames(batch)

    async def receive(self) -> bytes:
        message = bytearray()
        while True:
            frame = await self._frames.read_frame(at_boundary=not message)
            plaintext = self._receive_cipher.decrypt_with_ad(b"", frame)
            if not plaintext or plaintext[0] & ~FLAG_MORE:
                raise PeerProtocolError(PeerCode.MALFORMED_FRAME, "missing or unknown frame flags")
            message += plaintext[1:]
            if len(message) > self.max_message_size:
                raise PeerProtocolError(
                    PeerCode.MESSAGE_TOO_LARGE,
                    f"message passed {self.max_message_size} bytes while reassembling",
                )
            if not plaintext[0] & FLAG_MORE:
                return bytes(message)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._frames.stream)


class HandshakeOptions:
    """Deadlines and hooks of one handshake (plain attributes; defaults are the node's).

    `on_first_message` is called once the remote's first handshake message has been read:
    the peer manager uses it to tell a connection that spoke from one that sits silent."""

    __slots__ = ("first_message_timeout_s", "frame_timeout_s", "on_first_message", "timeout_s")

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
        first_message_timeout_s: float = DEFAULT_FIRST_MESSAGE_TIMEOUT_S,
        frame_timeout_s: float = math.inf,
        on_first_message: Callable[[], None] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.first_message_timeout_s = min(first_message_timeout_s, timeout_s)
        self.frame_timeout_s = frame_timeout_s
        self.on_first_message = on_first_message


async def _read_first_message(frames: FrameStream, options: HandshakeOptions) -> bytes:
    with trio.move_on_after(options.first_message_timeout_s):
        frame = await frames.read_frame()
        if options.on_first_message is not None:
            options.on_first_message()
        return frame
    raise PeerProtocolError(
        PeerCode.HANDSHAKE_TIMEOUT,
        f"no first handshake message within {options.first_message_timeout_s}s",
    )


async def _run_handshake(
    stream: trio.abc.Stream,
    *,
    initiator: bool,
    identity: Identity,
    chain_id: str,
    is_allowed: IsAllowed,
    options: HandshakeOptions,
    max_message_size: int,
    static_private_key: bytes | None,
) -> PeerConnection:
    frames = FrameStream(stream, max_frame=MAX_HANDSHAKE_FRAME)

    def new_state() -> HandshakeState:
        return HandshakeState(
            initiator=initiator,
            static_private_key=static_private_key or generate_x25519_private_key(),
            prologue=PROLOGUE,
        )

    # The responder draws its keys and signs only once the initiator has spoken: a silent
    # socket costs it no X25519 and no Ed25519 work.
    with trio.move_on_after(options.timeout_s) as deadline:
        if initiator:
            state = new_state()
            await frames.write_frames([state.write_message(b"")])
            payload = state.read_message(await frames.read_frame())
            remote_key = verify_identity_payload(
                payload, state.remote_static or b"", chain_id, is_allowed
            )
            own_payload = encode_identity_payload(identity, chain_id, state.static_public_key)
            await frames.write_frames([state.write_message(own_payload)])
        else:
            first = await _read_first_message(frames, options)
            state = new_state()
            if state.read_message(first) != b"":
                # Message 1 is sent in the clear: nothing may ride on it.
                raise PeerProtocolError(PeerCode.BAD_HANDSHAKE, "payload in message 1")
            own_payload = encode_identity_payload(identity, chain_id, state.static_public_key)
            await frames.write_frames([state.write_message(own_payload)])
            payload = state.read_message(await frames.read_frame())
            remote_key = verify_identity_payload(
                payload, state.remote_static or b"", chain_id, is_allowed
            )
    if deadline.cancelled_caught:
        raise PeerProtocolError(
            PeerCode.HANDSHAKE_TIMEOUT, f"handshake not finished within {options.timeout_s}s"
        )
    frames.frame_timeout_s = options.frame_timeout_s
    frames.max_frame = MAX_MESSAGE_LEN
    send_cipher, receive_cipher = state.split()
    return PeerConnection(
        frames,
        send_cipher,
        receive_cipher,
        remote_key=remote_key,
        handshake_hash=state.handshake_hash,
        max_message_size=max_message_size,
    )


async def handshake_initiator(
    stream: trio.abc.Stream,
    identity: Identity,
    chain_id: str,
    is_allowed: IsAllowed,
    *,
    timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    static_private_key: bytes | None = None,
    options: HandshakeOptions | None = None,
) -> PeerConnection:
    """Run XX as the dialing side. The stream is not closed on failure: the caller owns it.
    `options`, when given, replaces `timeout_s` (alone, it bounds the first message too)."""
    return await _run_handshake(
        stream,
        initiator=True,
        identity=identity,
        chain_id=chain_id,
        is_allowed=is_allowed,
        options=options or HandshakeOptions(timeout_s=timeout_s, first_message_timeout_s=timeout_s),
        max_message_size=max_message_size,
        static_private_key=static_private_key,
    )


async def handshake_responder(
    stream: trio.abc.Stream,
    identity: Identity,
    chain_id: str,
    is_allowed: IsAllowed,
    *,
    timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    static_private_key: bytes | None = None,
    options: HandshakeOptions | None = None,
) -> PeerConnection:
    """Run XX as the accepting side. The stream is not closed on failure: the caller owns it.
    `options`, when given, replaces `timeout_s` (alone, it bounds the first message too)."""
    return await _run_handshake(
        stream,
        initiator=False,
        identity=identity,
        chain_id=chain_id,
        is_allowed=is_allowed,
        options=options or HandshakeOptions(timeout_s=timeout_s, first_message_timeout_s=timeout_s),
        max_message_size=max_message_size,
        static_private_key=static_private_key,
    )
