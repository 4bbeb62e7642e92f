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


def test_default_heartbeat_is_below_the_default_propose_timeout(tmp_path):
    # The empty-block heartbeat must end before the other validators' propose timeout, or
    # every empty round would time out and change rounds.
    from consensus.core import CoreConfig
    from node.config import ConsensusConfig
    from node.driver import DriverConfig

    defaults = ConsensusConfig()
    assert defaults.core == CoreConfig()
    assert defaults.heartbeat_ms < defaults.core.timeout_propose_ms
    assert DriverConfig().heartbeat_ms < DriverConfig().core.timeout_propose_ms
    # A config file that sets nothing gives the driver the core's own propose timeout (the
    # stretch in node.app.driver_config only applies to a heartbeat configured too long).
    from node.app import driver_config
    from node.config import from_dict

    document = {
        "name": "ministry",
        "role": "validator",
        "chain_id": "khazana-test",
        "p2p": {"listen": "10.0.0.5:26656"},
        "rpc": {"listen": "10.0.0.5:26657"},
    }
    config = from_dict(document, home=tmp_path)
    driver = driver_config(config)
    assert driver.heartbeat_ms == 1000
    assert driver.core.timeout_propose_ms == CoreConfig().timeout_propose_ms
    # ...and a heartbeat configured above the propose timeout is still made coherent.
    document["consensus"] = {"heartbeat_ms": 4000}
    stretched = driver_config(from_dict(document, home=tmp_path))
    assert stretched.core.timeout_propose_ms > stretched.heartbeat_ms == 4000
