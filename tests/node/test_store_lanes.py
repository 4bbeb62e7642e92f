"""The store's worker-thread slot under a read flood (node/store_lanes.py, issue 13 part 3).

The attack: clients keep the store's one worker thread busy with reads (16 clients paging
`events`). With a plain FIFO slot a block commit queued behind them waits for every read; with
`StoreLanes` it waits at most for the one read already running. The "thread" here is a fake
that takes virtual time (MockClock), so the bounds are exact.
"""

from __future__ import annotations

import functools

import trio
import trio.testing

from ledger.store import AsyncStore
from node.store_lanes import StoreLanes

READ_S = 0.05  # one read on the worker thread
COMMIT_S = 0.02  # one block commit
READERS = 16


class FakeThread:
    """Runs `fn` after `seconds(fn)` of virtual time; checks calls never overlap."""

    def __init__(self) -> None:
        self.running = 0
        self.max_running = 0

    async def __call__(self, fn):
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await trio.sleep(getattr(fn, "seconds", READ_S))
            return fn()
        finally:
            self.running -= 1


def timed(seconds: float, result=None):
    def fn():
        return result

    fn.seconds = seconds
    return fn


async def commit_delays(run_read, run_write, blocks: int = 5) -> list[float]:
    """Delays of `blocks` commits (one a second) while READERS clients read without pause."""
    delays: list[float] = []
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            while True:
                await run_read(timed(READ_S))

        for _ in range(READERS):
            nursery.start_soon(reader)
        for _ in range(blocks):
            await trio.sleep(1.0)
            start = trio.current_time()
            await run_write(timed(COMMIT_S))
            delays.append(trio.current_time() - start - COMMIT_S)
        nursery.cancel_scope.cancel()
    return delays


def test_a_read_flood_delays_a_fifo_commit_by_every_queued_read():
    """The attack without the lanes: the commit waits behind all 16 readers."""

    async def main():
        thread = FakeThread()
        limiter = trio.CapacityLimiter(1)
        run = functools.partial(_limited, thread, limiter)
        return await commit_delays(run, run), thread.max_running

    delays, overlap = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert overlap == 1
    assert min(delays) >= (READERS - 1) * READ_S


async def _limited(thread, limiter, fn):
    async with limiter:
        return await thread(fn)


def test_a_read_flood_delays_a_commit_by_at_most_one_read():
    async def main():
        thread = FakeThread()
        lanes = StoreLanes(thread)
        delays = await commit_delays(lanes.run_read, lanes.run_write)
        return delays, thread.max_running

    delays, overlap = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert overlap == 1  # never two calls on the store at once
    assert len(delays) == 5
    assert max(delays) <= READ_S + 1e-9


def test_reads_still_progress_and_writers_keep_their_order():
    async def main():
        thread = FakeThread()
        lanes = StoreLanes(thread)
        order: list[str] = []

        async def read(tag):
            await lanes.run_read(timed(READ_S, tag))
            order.append(tag)

        async def write(tag):
            await lanes.run_write(timed(COMMIT_S, tag))
            order.append(tag)

        async with trio.open_nursery() as nursery:
            # One at a time (trio starts tasks of one batch in any order): r1 runs, r2 and r3
            # wait, then two writes arrive.
            for start, tag in (
                (read, "r1"),
                (read, "r2"),
                (read, "r3"),
                (write, "w1"),
                (write, "w2"),
            ):
                nursery.start_soon(start, tag)
                await trio.sleep(0.001)
        return order

    order = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert order == ["r1", "w1", "w2", "r2", "r3"]


def test_a_cancelled_waiter_passes_the_slot_on():
    async def main():
        thread = FakeThread()
        lanes = StoreLanes(thread)
        done: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lanes.run_read, timed(READ_S))
            await trio.sleep(0.001)
            with trio.move_on_after(0.01):
                await lanes.run_read(timed(READ_S))  # cancelled while waiting
            with trio.move_on_after(READ_S):
                # Cancelled at the very moment the slot is handed to it.
                await lanes.run_write(timed(COMMIT_S))

            async def last():
                await lanes.run_read(timed(READ_S))
                done.append("last")

            nursery.start_soon(last)
        assert lanes.waiting_reads == 0
        return done

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == ["last"]


def test_async_store_sends_client_reads_to_the_read_lane():
    class Store:
        def save_consensus_record(self, record):
            return record

    lanes: list[str] = []

    def lane(tag):
        async def run(fn):
            lanes.append(tag)
            return fn()

        return run

    async def main():
        store = AsyncStore(Store(), lane("write"), lane("read"))
        # `read` hands the store itself to `fn`, on the worker thread, in the read lane.
        assert await store.read(lambda s, key: (type(s).__name__, key), b"k") == ("Store", b"k")
        await store.save_consensus_record(b"r")
        await store.run(lambda: None)

    trio.run(main)
    assert lanes == ["read", "write", "write"]
