"""Running one seed of the whole-node simulation, and describing what it found.

`run_node_seed(case)` builds the world (keys, genesis), the plan (drawn from the seed, or the
fork plan of the negative control, or the one given), one SQLite file per replica in a fresh
temporary directory (under /dev/shm when there is one: no fsync cost), and runs everything in
ONE `trio.run` on `trio.testing.MockClock(autojump_threshold=0)`: the wire, every node's life
(driver, crash, restart), the fault schedule, the clients and the watcher. Simulated time
jumps whenever every task waits, so a run of tens of simulated seconds takes about a second.

Determinism: every random choice comes from a `random.Random` seeded with the seed and a
purpose; trio's scheduler is made deterministic the way its Hypothesis plugin does it (tasks
woken together run in creation order, shuffled by a generator seeded here). The same seed
gives the same run, which `NodeOutcome.digest` fingerprints.

The watcher ends the run: as soon as a SAFE violation is found (a fork makes the rest moot), or
once the faults have healed and the LIVE condition holds -- every honest node at least
`LIVE_BLOCKS` above the highest honest height at the heal, and every trading client with a
transaction committed after the heal -- or at `heal_ms + LIVE_BOUND_MS`, a LIVE violation.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing
from trio._core import _run as trio_run

from consensus.core import CoreConfig
from node.driver import DriverConfig

from ..checker import Violation
from .clients import CASH, Client, make_world, run_clients
from .invariants import AFTER_THE_RUN, SAFETY_KINDS, NodeChecker
from .net import SimNet
from .plan import BYZANTINE_BEHAVIOURS, NodePlan, draw_node_plan, fork_node_plan, node_plan_to_json
from .replica import SimNode

LIVE_BLOCKS = 3
LIVE_BOUND_MS = 30_000
WATCH_MS = 100
CORE = CoreConfig(
    timeout_propose_ms=1000,
    timeout_prevote_ms=500,
    timeout_precommit_ms=500,
    retransmit_ms=700,
)
DRIVER = DriverConfig(
    core=CORE,
    heartbeat_ms=300,
    min_block_interval_ms=200,
    tick_ms=200,
    sync_timeout_ms=1000,
)


@dataclass(frozen=True, slots=True)
class NodeCase:
    """Everything that determines a run (the knobs of `scripts/simulate.py --node`)."""

    seed: int
    validators: int = 4
    byzantine: int = 1
    faults: bool = True
    investors: int = 4
    plan: NodePlan | None = None  # None: drawn from the seed
    behaviours: tuple[str, ...] = BYZANTINE_BEHAVIOURS

    @property
    def expects_fork_possible(self) -> bool:
        """Byzantine power >= 1/3 (equal powers): the negative control's fork plan."""
        return 3 * self.byzantine >= self.validators


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    seed: int
    violations: tuple[Violation, ...]
    min_height: int
    max_height: int
    commits: int
    crashes: int
    txs_committed: int
    evidence_committed: int
    messages_sent: int
    messages_lost: int
    sim_ms: int
    digest: str
    counts: dict = field(default_factory=dict)

    def count(self, *kinds: str) -> int:
        return sum(1 for v in self.violations if v.kind in kinds)

    @property
    def safety_violations(self) -> int:
        return self.count(*SAFETY_KINDS)

    @property
    def liveness_failures(self) -> int:
        return self.count("LIVE")


def plan_for(case: NodeCase) -> NodePlan:
    if case.plan is not None:
        return case.plan
    if case.expects_fork_possible:
        return fork_node_plan(case.seed, case.validators, case.byzantine)
    return draw_node_plan(case.seed, case.validators, case.byzantine, case.faults, case.behaviours)


class NodeSimulation:
    def __init__(self, case: NodeCase, directory: Path) -> None:
        self.case = case
        self.seed = case.seed
        self.plan = plan = plan_for(case)
        self.world = make_world(case.validators, case.investors)
        self.driver_config = DRIVER
        self._roles = {b.validator: b.behaviour for b in plan.byzantine}
        twins = plan.twins
        # Replica r < validators is validator r; replica validators + j is twin j's copy.
        owners = [*range(case.validators), *twins]
        keys = [self.world.validator_keys[v].public_key for v in owners]
        self.net = SimNet(plan, case.seed, keys)
        byzantine = frozenset(self.world.validator_keys[v].address for v in self._roles)
        self.checker = NodeChecker(self.world.genesis, byzantine)
        self.nodes = [SimNode(self, r, v, directory / f"r{r}.db") for r, v in enumerate(owners)]
        self.net.taps.append(lambda replica, data: self.checker.on_sent(self.nodes[replica], data))
        self.clients: list[Client] = []
        self.crashes = 0
        self.end_ms = 0
        self._rng = random.Random(f"node-sim/{case.seed}")
        for crash in plan.crashes:
            if not 0 <= crash.replica < len(self.nodes):
                raise ValueError(f"crash of replica {crash.replica}: outside 0..{len(owners)}")

    # -- what nodes and clients ask ---------------------------------------------------------

    def behaviour_of(self, validator: int) -> frozenset[str]:
        role = self._roles.get(validator)
        if role == "double-both":
            return frozenset({"double-vote", "double-propose"})
        if role in ("double-vote", "double-propose"):
            return frozenset({role})
        return frozenset()  # honest, or a Twin (honest code, shared key)

    def is_honest(self, validator: int) -> bool:
        return validator not in self._roles

    def honest_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.honest]

    def pick_up_node(self, rng: random.Random) -> SimNode | None:
        up = [n for n in self.nodes if n.up and n.driver is not None]
        return rng.choice(up) if up else None

    def balance(self, address: bytes) -> int:
        for node in self.honest_nodes():
            if node.up and node.chain is not None:
                return node.chain.state.balance(CASH, address)
        return 0

    # -- the run --------------------------------------------------------------------------

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.net.run)
            for node in self.nodes:
                nursery.start_soon(node.life)
            nursery.start_soon(self._faults)
            nursery.start_soon(run_clients, self)
            await self._watch()
            self.end_ms = SimNet.now_ms()
            nursery.cancel_scope.cancel()

    async def _faults(self) -> None:
        async with trio.open_nursery() as nursery:
            for crash in self.plan.crashes:
                await trio.sleep_until(crash.at_ms / 1000)
                node = self.nodes[crash.replica]
                if not node.up:
                    continue
                if crash.point == "idle":
                    node.crash()
                else:
                    node.disk.armed = crash.point
                nursery.start_soon(self._restart_later, node, crash.at_ms + crash.down_ms)
            await trio.sleep_until(self.plan.heal_ms / 1000)
            for node in self.nodes:
                node.disk.armed = None
                if not node.up:
                    node.restart()

    async def _restart_later(self, node: SimNode, at_ms: int) -> None:
        await trio.sleep_until(at_ms / 1000)
        node.disk.armed = None
        if not node.up:
            node.restart()

    def _live(self, target: int, heal_ms: int) -> list[str]:
        """What still keeps the LIVE condition from holding (empty: it holds)."""
        behind = [
            f"{n.name} at {n.chain.height if n.chain else 'down'}"
            for n in self.honest_nodes()
            if not n.dead and (n.chain is None or n.chain.height < target)
        ]
        stuck = [c.name for c in self.clients if c.name != "regulator" and c.last_done_ms < heal_ms]
        problems = []
        if behind:
            problems.append(f"honest nodes below height {target}: {', '.join(behind)}")
        if stuck or not self.clients:
            problems.append(f"clients with nothing committed since the heal: {stuck}")
        return problems

    async def _watch(self) -> None:
        heal_ms = self.plan.heal_ms
        while SimNet.now_ms() < heal_ms:
            if self.checker.stop:
                return
            await trio.sleep(min(WATCH_MS, heal_ms - SimNet.now_ms()) / 1000)
        await trio.sleep(0.001)  # the restarts at the heal open their nodes first
        tip = max((n.chain.height for n in self.honest_nodes() if n.chain), default=0)
        target = tip + LIVE_BLOCKS
        deadline = heal_ms + LIVE_BOUND_MS
        while SimNet.now_ms() < deadline:
            if self.checker.stop:
                return
            if not self._live(target, heal_ms):
                return
            await trio.sleep(WATCH_MS / 1000)
        for problem in self._live(target, heal_ms):
            self.checker.fail("LIVE", f"{LIVE_BOUND_MS} ms after the heal: {problem}")

    def outcome(self) -> NodeOutcome:
        heights = [n.chain.height for n in self.honest_nodes() if n.chain is not None]
        checker = self.checker
        return NodeOutcome(
            seed=self.seed,
            violations=tuple(checker.violations),
            min_height=min(heights, default=0),
            max_height=max(heights, default=0),
            commits=checker.commits,
            crashes=self.crashes,
            txs_committed=len(checker.tx_height),
            evidence_committed=checker.evidence_committed,
            messages_sent=self.net.sent,
            messages_lost=self.net.lost,
            sim_ms=self.end_ms,
            digest=checker.digest,
        )


@contextlib.contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Trio's scheduler made a function of the seed, as its Hypothesis plugin does it."""
    saved = (trio_run._ALLOW_DETERMINISTIC_SCHEDULING, trio_run._r.getstate())
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    trio_run._r.seed(f"trio/{seed}")
    try:
        yield
    finally:
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved[0]  # type: ignore[misc]
        trio_run._r.setstate(saved[1])


def _scratch_dir() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def run_node_seed(case: NodeCase) -> NodeOutcome:
    with tempfile.TemporaryDirectory(prefix="khazana-nodesim-", dir=_scratch_dir()) as tmp:
        simulation = NodeSimulation(case, Path(tmp))
        with deterministic_trio(case.seed):
            trio.run(simulation.main, clock=trio.testing.MockClock(autojump_threshold=0))
        for node in simulation.nodes:
            if node.chain is not None:
                if node.honest and not simulation.checker.stop:
                    simulation.checker.check_stores(node)
                node.chain.store.close()
        return simulation.outcome()


def repro_command(case: NodeCase) -> str:
    args = ["python", "scripts/simulate.py", "--node", "--seeds", "1", "--first-seed"]
    args += [str(case.seed), "--validators", str(case.validators)]
    args += ["--byzantine", str(case.byzantine), "--investors", str(case.investors)]
    if not case.faults:
        args += ["--faults", "none"]
    if case.behaviours != BYZANTINE_BEHAVIOURS:
        args += ["--behaviours", ",".join(case.behaviours)]
    if case.plan is not None:
        args += ["--plan", node_plan_to_json(case.plan)]
    return shlex.join(args)


def describe(outcome: NodeOutcome, case: NodeCase) -> str:
    """A failure report: what broke, then the line that replays it."""
    lines = [f"seed {case.seed}: {len(outcome.violations)} violation(s)"]
    for v in outcome.violations[:10]:
        when = "after the run" if v.time_ms == AFTER_THE_RUN else f"at {v.time_ms} ms"
        lines.append(f"  {v.kind} {when}: {v.detail}")
    lines.append(f"  reproduce: {repro_command(case)}")
    return "\n".join(lines)
