"""Proposal timing: when the driver answers the core's `need_value`, and the time a block of
ours carries.

With transactions waiting, the proposal goes at once -- in round 0 no sooner than
`min_block_interval_ms` after our last commit, so that under load a block gathers what
arrives meanwhile; with an empty mempool a waiter task holds the answer back until a
transaction arrives (`note_admitted`) or the heartbeat interval passes (empty blocks only at
the heartbeat; the core's propose timeout is larger). A waiter asks the driver to propose by
posting to its inbox (`post(height, round)`); the driver then claims the request with `take`,
which refuses one the round has moved past.

`BlockClock` is the time of the next block: the proposer's clock, or on a test network with a
genesis `block_time_step_ms` exactly the previous block's time + the step ("Chain time" in
docs/NODE.md), what every validator checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ledger.chain import Chain
from ledger.genesis import block_time_step_ms
from node.driver_parts import DriverConfig
from node.mempool import Mempool


class BlockClock:
    """Our clock and the time of the next block."""

    def __init__(self, chain: Chain, clock_ms: Callable[[], int]) -> None:
        self._chain = chain
        self.clock_ms = clock_ms
        # Test networks: header time advances by exactly this step (None: the proposer's clock).
        self.step_ms: int | None = block_time_step_ms(chain.genesis)

    def next_time_ms(self) -> int:
        """The time of the next block: the proposer's clock, or on a test network with a time
        step exactly the last block's time + the step (what every validator checks)."""
        if self.step_ms is None:
            return self.clock_ms()
        return self._chain.last_time_ms + self.step_ms


class ProposalTimer:
    """The `need_value` we are answering, the waiters that time its answer, and our last
    commit's time on our clock."""

    def __init__(
        self,
        chain: Chain,
        mempool: Mempool,
        config: DriverConfig,
        clock: BlockClock,
        post: Callable[[int, int], Awaitable[None]],
    ) -> None:
        self._chain = chain
        self._mempool = mempool
        self._config = config
        self.clock = clock
        self._post = post
        self._tx_arrived = trio.Event()
        self._waiting_value: tuple[int, int] | None = None
        self.last_commit_clock_ms = clock.clock_ms()

    def note_commit(self) -> None:
        """A block was committed: the minimum block interval counts from now."""
        self.last_commit_clock_ms = self.clock.clock_ms()

    def note_admitted(self) -> None:
        """Transactions were admitted: a waiter holding back an empty block proposes now."""
        # has_ready scans the senders: once per waiting proposer, not once per admission.
        if not self._tx_arrived.is_set() and self._mempool.has_ready():
            self._tx_arrived.set()

    def start(self, height: int, round_: int, nursery: trio.Nursery) -> bool:
        """The core needs a value for (height, round_): True to propose at once; else a
        waiter posts (height, round_) when it is time (empty blocks only at the heartbeat)."""
        self._waiting_value = (height, round_)
        if self._mempool.has_ready():
            # Under load, a block cut the moment one transaction is ready costs every
            # validator a whole round of votes, fsyncs and commit for few transactions; a
            # minimum interval since our last commit lets a block gather what arrives
            # meanwhile (round 0 only: a later round proposes at once).
            interval = self._config.min_block_interval_ms
            wait_ms = self.last_commit_clock_ms + interval - self.clock.clock_ms()
            if interval and round_ == 0 and wait_ms > 0:
                nursery.start_soon(self._propose_later, height, round_, wait_ms)
                return False
            return True
        self._tx_arrived = trio.Event()
        nursery.start_soon(self._wait_for_txs, height, round_, self._tx_arrived)
        return False

    def take(self, height: int, round_: int) -> bool:
        """Is (height, round_) the value we are answering? It is answered now, if so."""
        if self._waiting_value != (height, round_):
            return False
        self._waiting_value = None
        return True

    async def _propose_later(self, height: int, round_: int, wait_ms: int) -> None:
        # The driver ignores it if the round has moved on meanwhile.
        await trio.sleep(wait_ms / 1000)
        await self._post(height, round_)

    async def _wait_for_txs(self, height: int, round_: int, arrived: trio.Event) -> None:
        # An empty block no sooner than one heartbeat after the previous block's time (with a
        # time step, chain time is not our clock's: one heartbeat after we committed it).
        clock = self.clock
        last_ms = self._chain.last_time_ms if clock.step_ms is None else self.last_commit_clock_ms
        wait_ms = last_ms + self._config.heartbeat_ms - clock.clock_ms()
        with trio.move_on_after(max(0, wait_ms) / 1000):
            await arrived.wait()
        if arrived.is_set() and round_ == 0:
            # A transaction arrived: still no sooner than the minimum block interval.
            rest_ms = self.last_commit_clock_ms + self._config.min_block_interval_ms
            await trio.sleep(max(0, rest_ms - clock.clock_ms()) / 1000)
        await self._post(height, round_)
