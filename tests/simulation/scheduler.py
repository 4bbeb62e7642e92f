"""Simulated time: an event queue ordered by (time, sequence), and the simulator's error type.

Every action of a run -- a message arriving, a timeout firing, a crash, a partition starting --
is an event at an integer millisecond. Ties are broken by the order in which events were
scheduled (a monotonically increasing sequence number), never by comparing the events
themselves, so the order of a run depends only on the seed.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any


class SimulationError(Exception):
    """The simulator itself was misused or ran out of a bounded resource (a bug, not a finding).

    Findings about the core (a fork, a stalled replica) are not exceptions: they are recorded
    as `Violation`s by the checker so that a run can report all of them with its seed.
    """


@dataclass(frozen=True, slots=True, order=True)
class _Entry:
    time: int
    seq: int
    event: Any = field(compare=False)


class EventQueue:
    """A bounded min-heap of events keyed by (time, seq).

    `max_pending` bounds memory: a run that schedules more than that many events at once has a
    runaway (for example a message storm) and stops with a `SimulationError` instead of eating
    the machine.
    """

    __slots__ = ("_heap", "_seq", "_max_pending", "now")

    def __init__(self, max_pending: int = 200_000) -> None:
        self._heap: list[_Entry] = []
        self._seq = 0
        self._max_pending = max_pending
        self.now = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, time: int, event: Any) -> None:
        if time < self.now:
            raise SimulationError(f"event scheduled in the past: {time} < now {self.now}")
        if len(self._heap) >= self._max_pending:
            raise SimulationError(f"more than {self._max_pending} pending events")
        heapq.heappush(self._heap, _Entry(time, self._seq, event))
        self._seq += 1

    def push_after(self, delay: int, event: Any) -> None:
        self.push(self.now + delay, event)

    def peek_time(self) -> int | None:
        return self._heap[0].time if self._heap else None

    def pop(self) -> Any:
        """Remove the earliest event, advance `now` to its time and return it."""
        entry = heapq.heappop(self._heap)
        self.now = entry.time
        return entry.event
