"""The simulated network between whole nodes: what the drivers see as their peers.

Each replica gets a `SimEndpoint`, which is what `node.driver.Driver` takes as its `PeerNet`
(the interface of the real `PeerManager`): an `inbound` channel of (peer key, bytes),
`broadcast`, `send_to`, `report_misbehaviour` and `peers`. Messages are the real encoded node
messages (node/messages.py), so every byte a driver sends goes through its peers' decoders.

`SimNet.route` decides each message's fate at send time, from the network's own random
stream and the plan: lost across a partition or by a drop, duplicated, delayed by the link's
base latency plus, before `heal_ms`, a delay spike. A single wire task delivers due messages
in (time, sequence) order. A message reaches only the incarnation of the node that was up
when it was sent (a crashed node's links are gone, as its TCP connections would be).

`peers()` is the set of replicas a node could be connected to now: up, reachable both ways,
and with another key (a Twin never connects to its own key, as the real handshake refuses).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any

import trio

from .plan import NodePlan

INBOUND_SIZE = 10_000  # a real link's bounded queue: a message that finds it full is lost


@dataclass(frozen=True, slots=True)
class _PeerRef:
    key: bytes


class SimNet:
    def __init__(self, plan: NodePlan, seed: int, keys: list[bytes]) -> None:
        self.plan = plan
        self._rng = random.Random(f"node-net/{seed}")
        self.keys = keys  # replica index -> public key (twins share one)
        self.endpoints: list[SimEndpoint | None] = [None] * len(keys)
        self._queue: list[tuple[int, int, int, int, bytes, bytes]] = []
        self._seq = 0
        self._wake = trio.Event()
        self.sent = 0
        self.lost = 0
        self.duplicated = 0
        self.misbehaviour: list[tuple[int, bytes, str]] = []
        self.taps: list[Any] = []  # callables (replica, data) seeing every message sent

    @staticmethod
    def now_ms() -> int:
        return round(trio.current_time() * 1000)

    # -- topology ---------------------------------------------------------------------

    def attach(self, replica: int, incarnation: int) -> SimEndpoint:
        endpoint = SimEndpoint(self, replica, incarnation)
        self.endpoints[replica] = endpoint
        return endpoint

    def detach(self, replica: int) -> None:
        endpoint = self.endpoints[replica]
        if endpoint is not None:
            endpoint.close()
        self.endpoints[replica] = None

    def partitioned(self, now: int, src: int, dst: int) -> bool:
        if now >= self.plan.heal_ms:
            return False
        return any(
            p.start_ms <= now < p.end_ms and p.blocks(src, dst) for p in self.plan.partitions
        )

    def connected(self, src: int) -> list[int]:
        now = self.now_ms()
        return [
            dst
            for dst, endpoint in enumerate(self.endpoints)
            if endpoint is not None
            and self.keys[dst] != self.keys[src]
            and not self.partitioned(now, src, dst)
            and not self.partitioned(now, dst, src)
        ]

    # -- sending ----------------------------------------------------------------------

    def send(self, src: int, dst: int, data: bytes) -> bool:
        endpoint = self.endpoints[dst]
        if endpoint is None:
            return False
        self.sent += 1
        for delay in self.route(src, dst):
            self._push(self.now_ms() + delay, dst, endpoint.incarnation, self.keys[src], data)
        return True

    def route(self, src: int, dst: int) -> tuple[int, ...]:
        """The delays (ms) after which copies of one message from src to dst arrive."""
        plan, rng, now = self.plan, self._rng, self.now_ms()
        base = plan.latency_ms[src][dst]
        if now >= plan.heal_ms:
            return (base,)
        if self.partitioned(now, src, dst) or rng.randrange(1000) < plan.drop_permille:
            self.lost += 1
            return ()
        copies = 1
        if rng.randrange(1000) < plan.duplicate_permille:
            copies = 2
            self.duplicated += 1
        delays = []
        for _ in range(copies):
            spike = 0
            if rng.randrange(1000) < plan.delay_permille:
                spike = rng.randint(0, plan.delay_max_ms)
            delays.append(base + spike)
        return tuple(delays)

    def _push(self, at_ms: int, dst: int, incarnation: int, src_key: bytes, data: bytes) -> None:
        heapq.heappush(self._queue, (at_ms, self._seq, dst, incarnation, src_key, data))
        self._seq += 1
        self._wake.set()

    async def run(self) -> None:
        """The wire: deliver each message when it is due, in (time, sequence) order."""
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            at_ms = self._queue[0][0]
            if at_ms > self.now_ms():
                self._wake = trio.Event()
                with trio.move_on_at(at_ms / 1000):
                    await self._wake.wait()
                continue
            _, _, dst, incarnation, src_key, data = heapq.heappop(self._queue)
            endpoint = self.endpoints[dst]
            if endpoint is None or endpoint.incarnation != incarnation:
                self.lost += 1
                continue
            try:
                endpoint.deliver.send_nowait((src_key, data))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                self.lost += 1


class SimEndpoint:
    """One node incarnation's view of the network (the driver's `PeerNet`)."""

    def __init__(self, net: SimNet, replica: int, incarnation: int) -> None:
        self.net = net
        self.replica = replica
        self.incarnation = incarnation
        self.key = net.keys[replica]
        self.deliver, self.inbound = trio.open_memory_channel[tuple[bytes, bytes]](INBOUND_SIZE)
        self.open = True

    def close(self) -> None:
        self.open = False
        self.deliver.close()

    def _send(self, to: bytes | None, data: bytes) -> int:
        if not self.open:
            return 0
        for tap in self.net.taps:
            tap(self.replica, data)
        sent = 0
        for dst in self.net.connected(self.replica):
            if to is None or self.net.keys[dst] == to:
                sent += self.net.send(self.replica, dst, data)
        return sent

    def broadcast(self, message: bytes) -> int:
        return self._send(None, message)

    def send_to(self, key: bytes, message: bytes) -> bool:
        return self._send(key, message) > 0

    def report_misbehaviour(self, key: bytes, reason: str, penalty: int = 25) -> None:
        self.net.misbehaviour.append((self.replica, key, reason))

    def peers(self) -> tuple[_PeerRef, ...]:
        if not self.open:
            return ()
        keys = sorted({self.net.keys[dst] for dst in self.net.connected(self.replica)})
        return tuple(_PeerRef(k) for k in keys)
