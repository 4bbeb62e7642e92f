"""The fake network: decides, for each message sent, whether and when it arrives.

The network never holds messages itself; `route` returns the delivery delays (none = lost,
two = duplicated) and the simulator schedules a delivery event for each. Decisions use the
network's own random stream, so adding a fault kind does not shift the randomness of
anything else in the run.

Latency is 1..5 ms when no fault is active; that spread alone already reorders messages
between different senders. While faults are active (before `plan.heal_ms`):
- "drop":      each message is lost with probability drop_permille / 1000;
- "duplicate": a second copy arrives with its own delay;
- "delay":     with probability delay_permille / 1000, up to delay_max_ms extra latency;
- "reorder":   up to reorder_jitter_ms extra latency on every message, so later messages
               from one sender overtake earlier ones;
- partitions:  messages across an active `PartitionEpisode` are lost (decided at send time).
"""

from __future__ import annotations

import random

from .faults import FaultPlan

BASE_LATENCY_MS = (1, 5)


class Network:
    __slots__ = ("_plan", "_rng", "sent", "lost", "duplicated")

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self._plan = plan
        self._rng = random.Random(f"network/{seed}")
        self.sent = 0
        self.lost = 0
        self.duplicated = 0

    def partitioned(self, now: int, src: int, dst: int) -> bool:
        return any(
            episode.start_ms <= now < episode.end_ms and episode.blocks(src, dst)
            for episode in self._plan.partitions
        )

    def reachable(self, now: int, src: int, dst: int) -> bool:
        """Both directions open (what a request/response exchange such as block sync needs)."""
        return not self.partitioned(now, src, dst) and not self.partitioned(now, dst, src)

    def route(self, now: int, src: int, dst: int) -> tuple[int, ...]:
        """The delays (ms) after which copies of a message from src to dst arrive."""
        self.sent += 1
        plan, rng = self._plan, self._rng
        faulty = now < plan.heal_ms
        if faulty and self.partitioned(now, src, dst):
            self.lost += 1
            return ()
        if faulty and plan.drop_permille and rng.randrange(1000) < plan.drop_permille:
            self.lost += 1
            return ()
        copies = 1
        if faulty and plan.duplicate_permille and rng.randrange(1000) < plan.duplicate_permille:
            copies = 2
            self.duplicated += 1
        return tuple(self._latency(faulty) for _ in range(copies))

    def _latency(self, faulty: bool) -> int:
        plan, rng = self._plan, self._rng
        latency = rng.randint(*BASE_LATENCY_MS)
        if faulty and plan.reorder_jitter_ms:
            latency += rng.randint(0, plan.reorder_jitter_ms)
        if faulty and plan.delay_permille and rng.randrange(1000) < plan.delay_permille:
            latency += rng.randint(0, plan.delay_max_ms)
        return latency
