"""The ledger/node gaps closed for issue 4: the store's public worker-thread runner, validator
changes reaching the ledger's validators_hash, evidence on chain, coherent config defaults."""

from __future__ import annotations

import functools
import threading

import trio

from ledger.store import AsyncStore, Store
from tests.node.test_driver import CHAIN_ID


def test_async_store_run_executes_on_the_injected_worker_thread(tmp_path):
    store = Store.open(tmp_path / "s.db", chain_id=CHAIN_ID, genesis_hash=b"\x01" * 32)
    calls = []

    async def main():
        limiter = trio.CapacityLimiter(1)
        run_sync = functools.partial(trio.to_thread.run_sync, limiter=limiter)
        async_store = AsyncStore(store, run_sync)

        def work(a, b):
            calls.append(threading.get_ident())
            return (a, b, store.latest_height())

        result = await async_store.run(work, 1, b"x")
        assert result == (1, b"x", None)
        assert calls and calls[0] != threading.get_ident()  # not the trio thread

    try:
        trio.run(main)
    finally:
        store.close()
