"""The consensus core's timeouts as trio timers: one cancel scope per (step, height, round).

A newer timer of the same key replaces the old one; the timers of finished heights are
cancelled after each commit (`cancel_below`). A timer that fires posts its `Timeout` to the
driver's inbox (`post`), which hands it to the core after `fired` forgets it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from consensus.types import Timeout


def _key(timeout: Timeout) -> tuple[int, int, int]:
    return (int(timeout.step), timeout.height, timeout.round)


class ConsensusTimers:
    """The running timers, by (step, height, round)."""

    def __init__(self, post: Callable[[Timeout], Awaitable[None]]) -> None:
        self._post = post
        self._timers: dict[tuple[int, int, int], trio.CancelScope] = {}

    def schedule(self, timeout: Timeout, nursery: trio.Nursery) -> None:
        key = _key(timeout)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        scope = trio.CancelScope()
        self._timers[key] = scope
        nursery.start_soon(self._timer, scope, timeout)

    def fired(self, timeout: Timeout) -> None:
        """The timer of `timeout` fired (the driver is handling it): forget it."""
        self._timers.pop(_key(timeout), None)

    def cancel_below(self, height: int) -> None:
        for key in [k for k in sorted(self._timers) if k[1] < height]:
            self._timers.pop(key).cancel()

    async def _timer(self, scope: trio.CancelScope, timeout: Timeout) -> None:
        with scope:
            await trio.sleep(timeout.duration_ms / 1000)
            await self._post(timeout)
