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
* Strangers on the port: every accepted connection passes `node.p2p.admission.InboundGate`
  -- the IP allowlist first, then a place in the pending table (pools for peer IPs and for
  everyone else, a per-IP cap, eviction of silent and old pending connections instead of
  refusing the newcomer), short deadlines on the handshake's first message and on the whole
  handshake, and after it the caps on inbound links of keys that are not `reserved_keys`
  (genesis validators and configured peers, always admitted). docs/P2P.md has the policy.

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

from node.p2p import admission
from node.p2p.admission import AdmissionLimits, InboundGate, IPAddress, Pending
from node.p2p.connection import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HandshakeOptions,
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
    PeerCode.FRAME_TIMEOUT: 10,
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
    handshake_timeout_ms: int = 5_000  # the whole handshake
    first_message_timeout_ms: int = 2_000  # the remote's first handshake message
    frame_timeout_ms: int = 30_000  # the rest of a frame once its first byte arrived
    connect_timeout_ms: int = 5_000
    backoff_base_ms: int = 250
    backoff_cap_ms: int = 30_000
    ban_threshold: int = 100
    ban_ms: int = 10 * 60 * 1000
    max_pending_handshakes: int = 32  # pending incoming handshakes from strangers' IPs
    reserved_pending_handshakes: int = 16  # the same from the IPs of configured peers
    max_pending_per_ip: int = 8
    max_inbound_peers: int = 64  # established inbound links of keys not in reserved_keys
    max_inbound_per_ip: int = 8  # the same, from one IP
    allow_ips: tuple[str, ...] = ()  # CIDR networks allowed to connect; empty: all
    # Genesis validators and configured peers: never refused for want of an inbound place.
    reserved_keys: frozenset[bytes] = frozenset()

    def admission_limits(self) -> AdmissionLimits:
        return AdmissionLimits(
            max_pending=self.max_pending_handshakes,
            reserved_pending=self.reserved_pending_handshakes,
            max_pending_per_ip=self.max_pending_per_ip,
            max_inbound=self.max_inbound_peers,
            max_inbound_per_ip=self.max_inbound_per_ip,
            allow_ips=admission.parse_networks(self.allow_ips),
        )

    def handshake_options(
        self, on_first_message: Callable[[], None] | None = None
    ) -> HandshakeOptions:
        return HandshakeOptions(
            timeout_s=self.handshake_timeout_ms / 1000,
            first_message_timeout_s=self.first_message_timeout_ms / 1000,
            frame_timeout_s=self.frame_timeout_ms / 1000,
            on_first_message=on_first_message,
        )


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

    __slots__ = (
        "address",
        "cancel_scope",
        "closed",
        "conn",
        "ip",
        "outbound",
        "queue",
        "queue_out",
    )

    def __init__(
        self,
        conn: PeerConnection,
        outbound: bool,
        address: PeerAddress | None,
        size: int,
        ip: IPAddress | None = None,
    ) -> None:
        self.conn = conn
        self.outbound = outbound
        self.address = address
        self.ip = ip
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
        self._gate = InboundGate(config.admission_limits())
        for address in config.dial:  # IP literals are peer IPs before any dial
            self._gate.set_peer_ips(address, [admission.parse_ip(address.host)])

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

    def refusals(self) -> dict[str, int]:
        """Inbound connections that ended before becoming a peer link, by reason (totals
        since start; every reason of `node.p2p.admission.REASONS` present)."""
        return dict(self._gate.refused)

    def pending_handshakes(self) -> int:
        """Accepted connections whose handshake is under way."""
        return self._gate.pending_count()

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
        ip = admission.remote_ip(stream)
        if not self._gate.ip_allowed(ip):  # before any handshake work
            log.debug("incoming connection from %s refused: not in allow_ips", ip)
            await trio.aclose_forcefully(stream)
            return
        pending = self._gate.open(ip)
        conn = await self._respond(stream, pending)
        if conn is None:
            await trio.aclose_forcefully(stream)
            return
        if conn.remote_key in self.config.reserved_keys:
            # A proven validator's address: its next handshakes use the reserved pool.
            self._gate.set_peer_ips(conn.remote_key, [ip])
        await self._serve(conn, outbound=False, address=None, ip=ip)

    async def _respond(self, stream: trio.abc.Stream, pending: Pending) -> PeerConnection | None:
        """The responder's handshake in `pending`'s place; None if it failed or was evicted."""
        options = self.config.handshake_options(on_first_message=partial(_answered, pending))
        try:
            with pending.cancel_scope:
                return await handshake_responder(
                    stream,
                    self._identity,
                    self.config.chain_id,
                    self._accepts,
                    options=options,
                    max_message_size=self.config.max_message_size,
                )
        except (PeerProtocolError, ConnectionClosed) as exc:
            log.debug("incoming handshake from %s failed: %s", pending.ip, exc)
            if isinstance(exc, PeerProtocolError):
                self._gate.refused[_handshake_reason(exc.code, pending)] += 1
        finally:
            self._gate.close(pending)
        if pending.evicted:
            log.debug("pending connection from %s evicted for a newer one", pending.ip)
        return None

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
        await self._resolve_peer_ips(address)
        try:
            with trio.fail_after(self.config.connect_timeout_ms / 1000):
                stream = await self._connect(address)
        except (OSError, trio.TooSlowError) as exc:
            log.debug("dial %s failed: %r", address, exc)
            return None
        ip = admission.remote_ip(stream)
        if ip is not None:
            self._gate.set_peer_ips(address, [ip])
        try:
            return await handshake_initiator(
                stream,
                self._identity,
                self.config.chain_id,
                self._accepts,
                options=self.config.handshake_options(),
                max_message_size=self.config.max_message_size,
            )
        except (PeerProtocolError, ConnectionClosed) as exc:
            log.info("handshake with %s failed: %s", address, exc)
            await trio.aclose_forcefully(stream)
            return None

    async def _resolve_peer_ips(self, address: PeerAddress) -> None:
        """A configured peer named by host name: its addresses are peer IPs even while we
        cannot reach it (it may be the one dialing us after a restart)."""
        if admission.parse_ip(address.host) is not None or self._connect is not tcp_connect:
            return
        with trio.move_on_after(self.config.connect_timeout_ms / 1000):
            try:
                infos = await trio.socket.getaddrinfo(
                    address.host, address.port, type=trio.socket.SOCK_STREAM
                )
            except OSError as exc:
                log.debug("resolving %s failed: %r", address, exc)
                return
            self._gate.set_peer_ips(address, [admission.parse_ip(info[4][0]) for info in infos])

    async def _serve(
        self,
        conn: PeerConnection,
        *,
        outbound: bool,
        address: PeerAddress | None,
        ip: IPAddress | None = None,
    ) -> None:
        peer = _Peer(conn, outbound, address, self.config.send_queue_size, ip)
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
        """Register `new` unless a preferred link to the same key exists (see module doc),
        or it is an inbound link of a non-reserved key beyond the inbound caps."""
        old = self._peers.get(new.key)
        if old is not None:
            preferred_outbound = self.local_key < new.key  # the lower key's dial wins
            if new.outbound != old.outbound and new.outbound != preferred_outbound:
                return False
        if not new.outbound and new.key not in self.config.reserved_keys:
            others = (
                peer.ip
                for key, peer in self._peers.items()
                if key != new.key and not peer.outbound and key not in self.config.reserved_keys
            )
            reason = self._gate.inbound_refusal(new.ip, others)
            if reason is not None:
                log.info(
                    "inbound link of %s from %s refused: %s", new.key.hex()[:16], new.ip, reason
                )
                return False
        if old is not None:
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


def _answered(pending: Pending) -> None:
    pending.answered = True


def _handshake_reason(code: PeerCode, pending: Pending) -> str:
    if code == PeerCode.HANDSHAKE_TIMEOUT:
        return admission.HANDSHAKE_TIMEOUT if pending.answered else admission.FIRST_MESSAGE_TIMEOUT
    if code == PeerCode.UNKNOWN_PEER:
        return admission.UNKNOWN_KEY
    return admission.HANDSHAKE_FAILED
