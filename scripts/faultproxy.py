"""A loopback fault proxy between validators' peer ports (test tooling, never node runtime).

This kernel has no netem, so faults between real node processes are made here. One listener
per *directed link* (dialer -> listener): node A's config names, for peer B, the address of the
link A->B instead of B's own peer port, and the proxy forwards to B. Because each link has its
own port the proxy knows both ends of every connection, so a fault can act on one direction of
one pair: traffic "from A to B" is the upstream of link A->B plus the downstream of link B->A.

The peer protocol is encrypted and authenticated (Noise), so the proxy cannot see or move
messages; its faults act on TCP chunks and connections, and mean exactly this:

- `partition` (a one-way block from src to dst): bytes from src to dst are neither read nor
  forwarded while the block lasts, on open connections and new ones, like a cut cable under
  TCP: the sender's socket buffer fills, nothing arrives, and when the cable is mended TCP's
  retransmission delivers the held bytes intact. (Dropping them instead would corrupt the
  encrypted stream, which a node rightly treats as an attack: BAD_MAC, peer banned.)
  New connections on a blocked link are accepted and then stall, so handshakes time out.
- `delay_ms` (+ `jitter_ms`): each chunk from src to dst is held before it is forwarded; order
  within a connection is kept (TCP would keep it too), so this is latency, plus head-of-line
  blocking when jitter is large.
- `loss` (per mille): with this probability per chunk the connection is reset (both sides
  closed). Losing a segment inside a TCP stream is invisible to the application until TCP gives
  up, so "loss" at this level is a broken connection; the nodes reconnect and retransmit.
- `duplicate` (per mille): with this probability per chunk the connection is closed *after*
  the chunk is delivered. TCP removes duplicate segments, so duplicates never reach a node as
  bytes; what a node does see is the same consensus message again after the reconnect (peers
  retransmit their current-round messages), which is the duplication the protocol must absorb.
- `reorder` (per mille): with this probability a chunk and everything after it on that
  connection is held for a burst of up to 4 * `jitter_ms` (at least 200 ms), while other links
  go on: messages arrive in a different order *across* links (within a stream TCP forbids it).

The proxy runs trio in a background thread (`FaultProxy.start()` / `close()`) so a synchronous
chaos driver can change the rules at any time (`set_rule`, `partition`, `heal`); rules are read
per chunk under a lock. Randomness comes from a seeded `random.Random`, so a run is repeatable
as far as the OS scheduler lets it be.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace

import trio

CHUNK = 65536
MAX_CONNECTIONS_PER_LINK = 16  # bounded: a node keeps one connection per peer, plus redials


@dataclass(frozen=True, slots=True)
class Rule:
    """What happens to bytes from one node to another (all zero: forwarded untouched)."""

    blocked: bool = False
    delay_ms: int = 0
    jitter_ms: int = 0
    loss: int = 0  # per mille of chunks that reset the connection
    duplicate: int = 0  # per mille of chunks after which the connection is closed
    reorder: int = 0  # per mille of chunks that start a held burst


CLEAN = Rule()


@dataclass(frozen=True, slots=True)
class Link:
    """A directed link: `dialer` reaches `listener` at `listen_port` (the proxy's port)."""

    dialer: str
    listener: str
    listen_port: int
    target: tuple[str, int]


class FaultProxy:
    """Listeners for every directed link between `targets` (name -> real peer address)."""

    def __init__(self, targets: dict[str, tuple[str, int]], seed: int = 0) -> None:
        self.targets = dict(targets)
        self.names = tuple(targets)
        self._rules: dict[tuple[str, str], Rule] = {}
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.links: dict[tuple[str, str], Link] = {}
        self._sockets: dict[tuple[str, str], socket.socket] = {}
        for dialer in self.names:
            for listener in self.names:
                if dialer == listener:
                    continue
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", 0))
                sock.listen(MAX_CONNECTIONS_PER_LINK)
                port = sock.getsockname()[1]
                self._sockets[(dialer, listener)] = sock
                self.links[(dialer, listener)] = Link(dialer, listener, port, targets[listener])
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._resets: dict[tuple[str, str], int] = {}
        self.chunks = 0
        self.resets = 0
        self.held = 0  # polls while a direction was blocked

    # ---- control (any thread) ------------------------------------------------------------

    def address_for(self, dialer: str, listener: str) -> str:
        return f"127.0.0.1:{self.links[(dialer, listener)].listen_port}"

    def rule(self, src: str, dst: str) -> Rule:
        with self._lock:
            return self._rules.get((src, dst), CLEAN)

    def set_rule(self, src: str, dst: str, rule: Rule) -> None:
        with self._lock:
            self._rules[(src, dst)] = rule

    def set_all(self, rule: Rule) -> None:
        """The same rule on every direction of every pair."""
        with self._lock:
            for pair in self.links:
                self._rules[pair] = rule

    def block(self, src: str, dst: str) -> None:
        """One-way partition: nothing from `src` reaches `dst`."""
        with self._lock:
            self._rules[(src, dst)] = replace(self._rules.get((src, dst), CLEAN), blocked=True)

    def partition(self, *groups: Iterable[str]) -> None:
        """Nodes talk only inside their group (1|3, 2|2, ...): both directions blocked."""
        member = {name: index for index, group in enumerate(groups) for name in group}
        for src, dst in self.links:
            if member.get(src) != member.get(dst):
                self.block(src, dst)

    def heal(self) -> None:
        """Every rule back to clean (open connections broken by a block reconnect by
        themselves)."""
        with self._lock:
            self._rules.clear()

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def close(self) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._cancel is not None:
            try:
                trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- the trio side -------------------------------------------------------------------

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._cancel = scope
            async with trio.open_nursery() as nursery:
                for pair, sock in self._sockets.items():
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    nursery.start_soon(self._accept, self.links[pair], listener)
                self._ready.set()

    async def _accept(self, link: Link, listener: trio.SocketListener) -> None:
        limiter = trio.CapacityLimiter(MAX_CONNECTIONS_PER_LINK)
        async with listener, trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._serve, link, stream, limiter)

    async def _serve(
        self, link: Link, client: trio.SocketStream, limiter: trio.CapacityLimiter
    ) -> None:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:
            await client.aclose()  # over the bound: refuse rather than queue
            return
        try:
            try:
                with trio.fail_after(5):
                    server = await trio.open_tcp_stream(*link.target)
            except (OSError, trio.TooSlowError):
                await client.aclose()  # the node is down: the dialer sees a refused peer
                return
            async with client, server, trio.open_nursery() as nursery:
                done = nursery.cancel_scope
                nursery.start_soon(self._pump, client, server, link.dialer, link.listener, done)
                nursery.start_soon(self._pump, server, client, link.listener, link.dialer, done)
        finally:
            limiter.release()

    async def _unblocked(self, src: str, dst: str) -> Rule:
        """Wait while src -> dst is blocked; the rule in force once it is not."""
        while (rule := self.rule(src, dst)).blocked:
            self.held += 1
            await trio.sleep(0.05)
        return rule

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        src: str,
        dst: str,
        done: trio.CancelScope,
    ) -> None:
        """Copy src's bytes to dst under the current rule; any end or reset ends both."""
        try:
            while True:
                await self._unblocked(src, dst)  # a blocked direction is not even read
                data = await source.receive_some(CHUNK)
                if not data:
                    break
                self.chunks += 1
                rule = await self._unblocked(src, dst)
                with self._lock:  # one seeded generator, shared by every pump
                    lose, duplicate, reorder = (self._random.randrange(1000) for _ in range(3))
                    hold_ms = rule.delay_ms + (
                        self._random.randrange(rule.jitter_ms + 1) if rule.jitter_ms else 0
                    )
                    if reorder < rule.reorder:
                        hold_ms += self._random.randrange(200, max(201, 4 * rule.jitter_ms))
                if lose < rule.loss:
                    self.resets += 1
                    break
                if hold_ms:
                    await trio.sleep(hold_ms / 1000)
                await sink.send_all(data)
                if duplicate < rule.duplicate:
                    self.resets += 1
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        done.cancel()
