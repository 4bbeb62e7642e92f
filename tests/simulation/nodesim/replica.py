"""One simulated node: a real `Driver` with its real `Chain`, `Store` (a SQLite file) and
`Mempool`, crashed and restarted by the fault plan.

- `SimChain` is `ledger.chain.Chain` with one hook: right after a block is committed (the
  SQLite transaction done), the checker sees the block, its certificate and the node's state.
- `SimDisk` is the store's `run_sync` (what `trio.to_thread.run_sync` is in a real node):
  each call runs inline, after a checkpoint, and is where a "before_store" / "after_store"
  crash strikes -- just before the write, or just after it with nothing after it run.
- `SimNode.life` opens the node from its file, runs the driver in a cancel scope, and on a
  crash cancels that scope (the process is gone: its timers, mempool, pending block and
  unsent messages with it), closes the SQLite connection without another write, and waits
  for the restart, which reopens everything from the same file: only what SQLite committed
  survives, in particular the consensus record that must be durable before a vote leaves.

A driver that raises is a ROBUST violation (nothing a peer or a client sends may kill a
node); the node stays down. `sim` is the `run.NodeSimulation` (typed `Any`: `run` imports
this module, and no import goes back).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from consensus.types import DurableState
from ledger.chain import Chain, PendingBlock
from ledger.store import AsyncStore
from node.byzantine import Byzantine
from node.driver import Driver, DriverOptions, DriverParts, _value_id
from node.mempool import Mempool, MempoolLimits

MAX_DISK_LATENCY_MS = 2


class SimChain(Chain):
    """A `Chain` that reports every commit to `on_commit` once the block is durable."""

    on_commit: Callable[[PendingBlock, bytes], None] | None = None

    def commit(self, pending: PendingBlock, commit_certificate: bytes) -> None:
        super().commit(pending, commit_certificate)
        if self.on_commit is not None:
            self.on_commit(pending, commit_certificate)


class SimDisk:
    """The store's worker "thread": inline calls, a little simulated latency, crash points."""

    def __init__(self, node: SimNode, seed: int) -> None:
        self._node = node
        self._rng = random.Random(f"disk/{seed}/{node.replica}")
        self.armed: str | None = None  # "before_store" / "after_store": crash at next call
        self.calls = 0

    async def run_sync(self, fn: Callable[[], Any]) -> Any:
        latency = self._rng.randint(0, MAX_DISK_LATENCY_MS)
        await trio.sleep(latency / 1000)
        self.calls += 1
        if self.armed == "before_store":
            await self._crash()
        result = fn()
        if self.armed == "after_store":
            await self._crash()
        return result

    async def _crash(self) -> None:
        self.armed = None
        self._node.crash()
        await trio.lowlevel.checkpoint()  # raises Cancelled: nothing after this runs
        raise AssertionError("a crashed node went on running")  # pragma: no cover


class SimNode:
    """Replica `replica` of the simulation: a validator (or a Twin's second copy)."""

    def __init__(self, sim: Any, replica: int, validator: int, path: Path) -> None:
        self.sim = sim
        self.replica = replica
        self.validator = validator  # index of the validator whose key it signs with
        self.name = f"r{replica}" + (f"=v{validator}" if replica != validator else "")
        self.identity = sim.world.validator_keys[validator]
        self.path = path
        self.behaviours = sim.behaviour_of(validator)
        self.honest = sim.is_honest(validator)
        self.skew_ms = sim.plan.skew_ms[replica] if sim.plan.skew_ms else 0
        self.disk = SimDisk(self, sim.seed)
        self.incarnation = 0
        self.up = False
        self.dead = False  # the driver raised: down for good
        self.chain: SimChain | None = None
        self.driver: Driver | None = None
        self._scope: trio.CancelScope | None = None
        self._restart = trio.Event()
        self._restart.set()

    def clock_ms(self) -> int:
        return self.sim.world.start_ms + self.skew_ms + round(trio.current_time() * 1000)

    def _open(self) -> Driver:
        sim = self.sim
        chain = SimChain.open(self.path, sim.world.genesis)
        self.chain = chain
        sim.checker.on_open(self)
        chain.on_commit = lambda pending, cert: sim.checker.on_commit(self, pending, cert)
        record = chain.store.load_consensus_record()
        durable = DurableState.from_bytes(record) if record else None
        byzantine = None
        if self.behaviours:
            byzantine = Byzantine(self.behaviours, chain.chain_id, self.identity.sign, _value_id)
        endpoint = sim.net.attach(self.replica, self.incarnation)
        self.driver = Driver(
            DriverParts(
                chain,
                AsyncStore(chain.store, self.disk.run_sync),
                endpoint,
                Mempool(MempoolLimits(), chain.chain_id),
                self.clock_ms,
            ),
            sim.driver_config,
            identity=self.identity,
            durable=durable,
            options=DriverOptions(name=self.name, byzantine=byzantine),
        )
        return self.driver

    async def life(self) -> None:
        while not self.dead:
            await self._restart.wait()
            self._restart = trio.Event()
            try:
                driver = self._open()
            except Exception as exc:  # a store that no longer opens is the finding
                self.dead = True
                self.sim.checker.fail("ROBUST", f"{self.name} cannot restart: {exc!r}")
                return
            self.up = True
            try:
                with trio.CancelScope() as scope:
                    self._scope = scope
                    await driver.run()
            except Exception as exc:  # any escape is the finding
                self.dead = True
                self.sim.checker.fail("ROBUST", f"{self.name} died: {exc!r}")
            self.up = False
            self.sim.net.detach(self.replica)
            assert self.chain is not None
            self.sim.checker.on_crash(self)
            # The SQLite connection goes without another write: no commit, no abandon.
            self.chain.store.close()
            self.chain = None
            self.driver = None
            self.incarnation += 1

    def crash(self) -> None:
        if self.up and self._scope is not None:
            self.sim.crashes += 1
            self._scope.cancel()

    def restart(self) -> None:
        self.disk.armed = None
        self._restart.set()
