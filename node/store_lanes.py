"""`StoreLanes`: the store's one worker-thread slot, shared by two lanes, the driver's first.

What it owns: the order in which calls reach the store's worker thread (ledger/store.py
`AsyncStore`). The store is one SQLite connection plus an in-memory overlay of held-back state
changes (ledger/state_log.py) that a block commit rewrites, so its calls must run one at a
time -- a second read connection on another thread would read the overlay while a commit
changes it. What can be chosen is the order: with one FIFO slot, a block commit queued behind
a flood of RPC reads waited for all of them (issue 13: 16 clients paging events stretched block
gaps from 1 s to 4 s). Here the driver's calls (`run_write`: block commits, the consensus
record, sync serving) always go before any waiting RPC read (`run_read`), so a commit waits at
most for the one read already running on the thread. Within a lane the order is FIFO.

Calls are never abandoned: `trio.to_thread.run_sync` without `abandon_on_cancel` finishes the
call before the caller sees a cancellation, so at most one call is ever on the thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")

RunInThread = Callable[[Callable[[], Any]], Awaitable[Any]]


class StoreLanes:
    """One slot, two FIFO lanes: a waiting `run_write` call goes before any `run_read` call."""

    def __init__(self, run_in_thread: RunInThread | None = None) -> None:
        # Injected by tests (a fake "thread" that takes virtual time under MockClock).
        self._run_in_thread = run_in_thread or trio.to_thread.run_sync
        self._busy = False
        self._writers: deque[trio.Event] = deque()
        self._readers: deque[trio.Event] = deque()

    @property
    def waiting_reads(self) -> int:
        return len(self._readers)

    async def run_write(self, fn: Callable[[], T]) -> T:
        """`fn()` on the worker thread, ahead of every waiting read."""
        return await self._run(fn, self._writers)

    async def run_read(self, fn: Callable[[], T]) -> T:
        """`fn()` on the worker thread once no write is waiting."""
        return await self._run(fn, self._readers)

    async def _run(self, fn: Callable[[], T], lane: deque[trio.Event]) -> T:
        await self._acquire(lane)
        try:
            return await self._run_in_thread(fn)
        finally:
            self._release()

    async def _acquire(self, lane: deque[trio.Event]) -> None:
        if not self._busy and not self._writers and not self._readers:
            self._busy = True
            await trio.lowlevel.checkpoint()  # a checkpoint on every path, as trio expects
            return
        turn = trio.Event()
        lane.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self._release()  # handed the slot while being cancelled: pass it on
            else:
                lane.remove(turn)
            raise

    def _release(self) -> None:
        """Hand the slot to the first waiting writer, else the first waiting reader."""
        for lane in (self._writers, self._readers):
            if lane:
                lane.popleft().set()  # the slot stays busy: it is theirs now
                return
        self._busy = False
