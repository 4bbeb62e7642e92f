"""The peer manager: who we are connected to, and the queues between them and the node.

What it owns: dialing the configured peers (any host:port), accepting incoming connections,
at most one connection per remote Ed25519 key, reconnecting with capped exponential backoff,
one bounded send queue per peer, the bounded inbound channel of `(peer_key, message)`, and
the misbehaviour score and ban list.

Theory of operation (one task owns the state):

* `run()` is the one owner task. Its nursery holds one dial loop per configured address,
  the listener loop, and per connection a reader and a writer task. The peer table, scores
  and bans are only touched in synchronous code (no `await` between a check and its
  update), so under trio's cooperative scheduling every update is atomic.
* Outgoing: `broadcast` / `send_to` never block. Each peer has a bounded trio memory
  channel drained by its writer task. When it is full the peer is *disconnected* (not fed
  by dropping old messages): consensus messages must not vanish silently from the middle of
  a stream, and a peer that cannot keep up is better served by reconnecting and catching up
  through block sync. One slow peer therefore never delays the others.
* Incoming: each reader task `await`s the bounded inbound channel, so a node that falls
  behind in processing stops reading sockets (real back-pressure) instead of buffering.
* Duplicates: two nodes that dial each other at once end up with two links. Both keep the
  one *initiated by the lower key* and close the other, so they agree without talking.
  A new link in the same direction as the current one replaces it (the old one is most
  likely dead: the remote restarted).
* Misbehaviour: a `PeerProtocolError` or `report_misbehaviour` disconnects the peer and adds
  a penalty to its score; at `ban_threshold` the key is banned for `ban_ms` (incoming
  handshakes refused, no dialing). Scores do not decay; a ban resets the score.

Durations in the config are integer milliseconds (no floats in anything configured);
time is trio's clock, never the wall clock, so tests run on `MockClock`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from node.p2p.connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Identity,
    IsAllowed,
    PeerConnection,
    handshake_initiator,
    handshake_responder,
)
from node.p2p.errors import ConnectionClosed, PeerCode, PeerProtocolError

log = logging.getLogger(__name__)

# Penalties for protocol errors. Most are deliberate (a MAC failure on TCP is not an
# accident), so they ban at once; a truncated frame or a slow handshake can be a crash or a
# bad network, so they count but do not ban on the first offence.
DEFAULT_PENALTY = 25
LENIENT_PROTOCOL_ERRORS = {
    PeerCode.TRUNCATED_FRAME: 10,
    PeerCode.HANDSHAKE_TIMEOUT: 10,
    PeerCode.NONCE_EXHAUSTED: 0,
}


@dataclass(frozen=True, slots=True, order=True)
class PeerAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> PeerAddress:
        """`host:port` or `[ipv6]:port`."""
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"peer address must be host:port, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PeerManagerConfig:
    chain_id: str
    dial: tuple[PeerAddress, ...] = ()
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    send_queue_size: int = 256  # messages per peer before it counts as too slow
    inbound_queue_size: int = 1024
    handshake_timeout_ms: int = 10_000
    connect_timeout_ms: int = 5_000
    backoff_base_ms: int = 250
    backoff_cap_ms: int = 30_000
    ban_threshold: int = 100
    ban_ms: int = 10 * 60 * 1000
    max_pending_handshakes: int = 32  # concurrent unauthenticated incoming connections


@dataclass(frozen=True, slots=True)
class PeerStatus:
    key: bytes
    outbound: bool
    address: str | None  # the dialed address; None for an accepted connection
    score: int


def backoff_delay_ms(attempt: int, base_ms: int, cap_ms: int, rng: random.Random) -> int:
    """Delay before redial number `attempt` (0-based): capped exponential, equal jitter.

    ceiling = min(cap, base * 2**attempt); delay uniform in [ceiling/2, ceiling]
    ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015). The jitter spreads the
    redials of many nodes after a shared outage; the floor keeps the backoff meaningful.
    """
    ceiling = min(cap_ms, base_ms << min(attempt, 32))
    return ceiling // 2 + rng.randrange(ceiling - ceiling // 2 + 1)


Connect = Callable[[PeerAddress], Awaitable[trio.abc.Stream]]


async def tcp_connect(address: PeerAddress) -> trio.abc.Stream:
    return await trio.open_tcp_stream(address.host, address.port)


class _Peer:
    """One live, authenticated connection and its send queue (mutable, owned by the manager)."""

    __slots__ = ("address", "cancel_scope", "closed", "conn", "outbound", "queue", "queue_out")

    def __init__(
        self, conn: PeerConnection, outbound: bool, address: PeerAddress | None, size: int
    ) -> None:
        self.conn = conn
        self.outbound = outbound
        self.address = address
        self.queue, self.queue_out = trio.open_memory_channel[bytes](size)
        self.cancel_scope = trio.CancelScope()
        self.closed = trio.Event()

    @property
    def key(self) -> bytes:
        return self.conn.remote_key


class PeerManager:
    def __init__(
        self,
        config: PeerManagerConfig,
        identity: Identity,
        is_allowed: IsAllowed,
        *,
        rng: random.Random,
        connect: Connect = tcp_connect,
    ) -> None:
        self.config = config
        self.local_key = identity.public_key
        self._identity = identity
        self._is_allowed = is_allowed
        self._rng = rng
        self._connect = connect
        self._inbound_send, self.inbound = trio.open_memory_channel[tuple[bytes, bytes]](
            config.inbound_queue_size
        )
        self._peers: dict[bytes, _Peer] = {}
        self._scores: dict[bytes, int] = {}
        self._banned_until: dict[bytes, float] = {}
        self._address_keys: dict[PeerAddress, bytes] = {}
        self._handshake_slots = trio.Semaphore(config.max_pending_handshakes)

    # ---- the owner task -------------------------------------------------------------

    async def run(
        self,
        listeners: Sequence[trio.abc.Listener] = (),
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Dial, accept and serve until cancelled. Closes `inbound` when it ends."""
        try:
            async with trio.open_nursery() as nursery:
                for address in self.config.dial:
                    nursery.start_soon(self._dial_loop, address)
                if listeners:
                    nursery.start_soon(
                        partial(
                            trio.serve_listeners,
                            self.handle_incoming,
                            list(listeners),
                            handler_nursery=nursery,
                        )
                    )
                task_status.started()
        finally:
            self._inbound_send.close()

    # ---- the node's side ------------------------------------------------------------

    def broadcast(self, message: bytes) -> int:
        """Queue `message` for every connected peer; returns how many took it."""
        self._check_size(message)
        return sum(self._enqueue(self._peers[key], message) for key in sorted(self._peers))

    def send_to(self, key: bytes, message: bytes) -> bool:
        """Queue `message` for one peer; False if not connected or too slow (disconnected)."""
        self._check_size(message)
        peer = self._peers.get(key)
        return peer is not None and self._enqueue(peer, message)

    def report_misbehaviour(self, key: bytes, reason: str, penalty: int = DEFAULT_PENALTY) -> None:
        """The node found invalid data from `key`: disconnect it, add to its score, maybe ban."""
        score = self._scores.get(key, 0) + penalty
        log.warning("peer %s misbehaved (+%d -> %d): %s", key.hex()[:16], penalty, score, reason)
        if score >= self.config.ban_threshold:
            self._banned_until[key] = trio.current_time() + self.config.ban_ms / 1000
            self._scores.pop(key, None)
            log.warning("peer %s banned for %d ms", key.hex()[:16], self.config.ban_ms)
        else:
            self._scores[key] = score
        peer = self._peers.get(key)
        if peer is not None:
            peer.cancel_scope.cancel()

    def drop_disallowed(self) -> int:
        """Close every link whose key the allow-list no longer admits (a validator removed
        by a committed change, say); returns how many. The allow-list is asked only at the
        handshake, so without this a removed validator would keep its links, and go on
        receiving transactions and blocks, until one of the two nodes restarted."""
        dropped = 0
        for key in sorted(self._peers):
            if not self._accepts(key):
                log.warning("peer %s is no longer allowed: disconnecting it", key.hex()[:16])
                self._peers[key].cancel_scope.cancel()
                dropped += 1
        return dropped

    def is_banned(self, key: bytes) -> bool:
        until = self._banned_until.get(key)
        if until is None:
            return False
        if trio.current_time() < until:
            return True
        del self._banned_until[key]
        return False

    def peers(self) -> tuple[PeerStatus, ...]:
        """The connected peers, sorted by key."""
        return tuple(
            PeerStatus(
                key=key,
                outbound=peer.outbound,
                address=None if peer.address is None else str(peer.address),
                score=self._scores.get(key, 0),
            )
            for key, peer in sorted(self._peers.items())
        )

    # ---- connections ----------------------------------------------------------------

    async def handle_incoming(self, stream: trio.abc.Stream) -> None:
        """Authenticate an accepted stream and serve it until it ends. Never raises for
        anything the remote does."""
        try:
            self._handshake_slots.acquire_nowait()
        except trio.WouldBlock:
            log.info("too many pending handshakes: dropping an incoming connection")
            await trio.aclose_forcefully(stream)
            return
        try:
            conn = await handshake_responder(
                stream,
                self._identity,
                self.config.chain_id,
                self._accepts,
                timeout_s=self.config.handshake_timeout_ms / 1000,
                max_message_size=self.config.max_message_size,
            )
        except (PeerProtocolError, ConnectionClosed) as exc:
            log.info("incoming handshake failed: %s", exc)
            await trio.aclose_forcefully(stream)
            return
        finally:
            self._handshake_slots.release()
        await self._serve(conn, outbound=False, address=None)

    def _accepts(self, key: bytes) -> bool:
        return key != self.local_key and not self.is_banned(key) and self._is_allowed(key)

    async def _dial_loop(self, address: PeerAddress) -> None:
        attempt = 0
        while True:
            await self._wait_until_dial_needed(address)
            conn = await self._dial_once(address)
            if conn is not None:
                attempt = 0
                self._address_keys[address] = conn.remote_key
                await self._serve(conn, outbound=True, address=address)
            delay = backoff_delay_ms(
                attempt, self.config.backoff_base_ms, self.config.backoff_cap_ms, self._rng
            )
            attempt += 1
            await trio.sleep(delay / 1000)

    async def _wait_until_dial_needed(self, address: PeerAddress) -> None:
        """Return once the key behind `address` is neither connected nor banned."""
        while (key := self._address_keys.get(address)) is not None:
            peer = self._peers.get(key)
            if peer is not None:
                await peer.closed.wait()
            elif self.is_banned(key):
                await trio.sleep_until(self._banned_until[key])
            else:
                return

    async def _dial_once(self, address: PeerAddress) -> PeerConnection | None:
        try:
            with trio.fail_after(self.config.connect_timeout_ms / 1000):
                stream = await self._connect(address)
        except (OSError, trio.TooSlowError) as exc:
            log.debug("dial %s failed: %r", address, exc)
            return None
        try:
            return await handshake_initiator(
                stream,
                self._identity,
                self.config.chain_id,
                self._accepts,
                timeout_s=self.config.handshake_timeout_ms / 1000,
                max_message_size=self.config.max_message_size,
            )
        except (PeerProtocolError, ConnectionClosed) as exc:
            log.info("handshake with %s failed: %s", address, exc)
            await trio.aclose_forcefully(stream)
            return None

    async def _serve(
        self, conn: PeerConnection, *, outbound: bool, address: PeerAddress | None
    ) -> None:
        peer = _Peer(conn, outbound, address, self.config.send_queue_size)
        if not self._admit(peer):
            await conn.aclose()
            return
        log.info("peer %s connected (%s)", peer.key.hex()[:16], "out" if outbound else "in")
        try:
            with peer.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, peer)
                    nursery.start_soon(self._read_loop, peer)
        finally:
            if self._peers.get(peer.key) is peer:
                del self._peers[peer.key]
            peer.closed.set()
            await conn.aclose()
            log.info("peer %s disconnected", peer.key.hex()[:16])

    def _admit(self, new: _Peer) -> bool:
        """Register `new` unless a preferred link to the same key exists (see module doc)."""
        old = self._peers.get(new.key)
        if old is not None:
            preferred_outbound = self.local_key < new.key  # the lower key's dial wins
            if new.outbound != old.outbound and new.outbound != preferred_outbound:
                return False
            old.cancel_scope.cancel()
        self._peers[new.key] = new
        return True

    async def _read_loop(self, peer: _Peer) -> None:
        try:
            while True:
                message = await peer.conn.receive()
                await self._inbound_send.send((peer.key, message))
        except PeerProtocolError as exc:
            penalty = LENIENT_PROTOCOL_ERRORS.get(exc.code, self.config.ban_threshold)
            self.report_misbehaviour(peer.key, str(exc), penalty)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("peer %s: %s", peer.key.hex()[:16], exc or type(exc).__name__)
        peer.cancel_scope.cancel()

    async def _write_loop(self, peer: _Peer) -> None:
        try:
            async for message in peer.queue_out:
                await peer.conn.send(message)
        except ConnectionClosed as exc:
            log.info("peer %s: %s", peer.key.hex()[:16], exc)
        peer.cancel_scope.cancel()

    def _enqueue(self, peer: _Peer, message: bytes) -> bool:
        try:
            peer.queue.send_nowait(message)
        except trio.WouldBlock:
            log.warning("peer %s too slow: send queue full, disconnecting", peer.key.hex()[:16])
            peer.cancel_scope.cancel()
            return False
        except trio.ClosedResourceError:
            return False
        return True

    def _check_size(self, message: bytes) -> None:
        if len(message) > self.config.max_message_size:
            raise ValueError(
                f"message of {len(message)} bytes above {self.config.max_message_size}"
            )
