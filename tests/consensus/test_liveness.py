"""Liveness and agreement of the core under loss, delay, a dead validator and crash-restarts.

A deliberately small virtual-time driver (the full simulator lives in tests/simulation): a
seeded heap of events, messages lost with a given probability and delayed 1-80 ms, timeouts
fired at their virtual time, decisions applied and `advance()` called, `sync_needed` answered
from the blocks others decided. Every run must keep agreement at every height and finish
the target heights on every live validator within the event budget.
"""

from __future__ import annotations

import heapq
import random

import pytest

from consensus.core import Core, CoreConfig
from consensus.types import Step, Timeout, VoteType
from tests.consensus.harness import CHAIN, address, hooks_for, make_core, precommit, prevote, valset

CONFIG = CoreConfig(
    timeout_propose_ms=300,
    timeout_propose_delta_ms=50,
    timeout_prevote_ms=100,
    timeout_prevote_delta_ms=50,
    timeout_precommit_ms=100,
    timeout_precommit_delta_ms=50,
    retransmit_ms=400,
)


class MiniSim:
    def __init__(self, seed: int, drop: float, down: tuple[int, ...] = (), n: int = 4) -> None:
        self.rng = random.Random(seed)
        self.drop = drop
        self.vs = valset([1] * n)
        self.addrs = [v.address for v in self.vs.validators]
        self.down = {self.addrs[i] for i in down}
        self.queue: list = []
        self.seq = 0
        self.now = 0
        self.blocks: dict[int, bytes] = {}
        self.commits: dict[int, object] = {}
        self.decided: dict[bytes, list[bytes]] = {a: [] for a in self.addrs}
        self.durable: dict[bytes, object] = {}
        self.incarnation = {a: 0 for a in self.addrs}
        self.cores = {a: self._core(a) for a in self.addrs if a not in self.down}

    def _core(self, a: bytes) -> Core:
        return Core(
            CHAIN,
            a,
            lambda h: self.vs,
            hooks_for(a),
            CONFIG,
            durable=self.durable.get(a),
            start_height=len(self.decided[a]) + 1,
            last_commit=self.commits.get(len(self.decided[a])),  # the driver stores them
        )

    def push(self, delay: int, kind: str, a: bytes, item) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.now + delay, self.seq, kind, a, self.incarnation[a], item))

    def handle(self, a: bytes, ready) -> None:
        core = self.cores[a]
        if ready.persist is not None:
            self.durable[a] = ready.persist
        for out in ready.messages:
            targets = [out.to] if out.to is not None else [b for b in self.addrs if b != a]
            for dst in targets:
                if dst in self.cores and self.rng.random() >= self.drop:
                    self.push(self.rng.randint(1, 80), "msg", dst, out.message)
        for t in ready.timeouts:
            self.push(t.duration_ms, "timeout", a, t)
        for d in ready.decisions:
            assert self.blocks.setdefault(d.height, d.value_id) == d.value_id, "disagreement"
            self.decided[a].append(d.value_id)
            self.commits.setdefault(d.height, d.commit)
        follow = None
        if ready.sync_needed is not None:
            target, mine = ready.sync_needed, self.decided[a]
            if target >= core.height and target in self.blocks:
                mine.extend(self.blocks[h] for h in range(len(mine) + 1, target + 1))
                follow = core.on_synced(target, self.commits[target])
        if follow is None and ready.need_value is not None:
            h, r = ready.need_value
            follow = core.propose_value(h, r, b"v%d-%d-%d" % (h, r, self.rng.randint(0, 3)))
        elif follow is None and ready.decisions:
            follow = core.advance()
        if follow is not None:
            self.handle(a, follow)

    def crash_and_restart(self, a: bytes) -> None:
        self.incarnation[a] += 1  # in-flight timers and messages of the old one are void
        self.cores[a] = self._core(a)
        self.handle(a, self.cores[a].start())

    def run(self, heights: int, crash_every: int = 0, budget: int = 200_000) -> bool:
        for a in self.cores:
            self.handle(a, self.cores[a].start())
        events = 0
        while self.queue and events < budget:
            self.now, _, kind, a, incarnation, item = heapq.heappop(self.queue)
            if incarnation != self.incarnation[a]:
                continue
            events += 1
            if crash_every and events % crash_every == 0:
                self.crash_and_restart(self.rng.choice(sorted(self.cores)))
                continue
            core = self.cores[a]
            self.handle(a, core.step(item) if kind == "msg" else core.on_timeout(item))
            if min(len(self.decided[b]) for b in self.cores) >= heights:
                return True
        return False


@pytest.mark.parametrize("drop", [0.0, 0.2, 0.4])
def test_all_live_validators_decide_under_loss(drop):
    for seed in range(4):
        assert MiniSim(seed, drop).run(heights=5), f"seed {seed} drop {drop}"


def test_three_of_four_decide_under_loss_with_one_validator_dead():
    for seed in range(6):
        assert MiniSim(seed, 0.3, down=(3,)).run(heights=5), f"seed {seed}"


def test_crash_restarts_from_durable_state_keep_agreement_and_progress():
    for seed in range(4):
        assert MiniSim(seed, 0.1).run(heights=6, crash_every=97), f"seed {seed}"


def test_node_alone_in_a_later_round_resends_its_previous_round_votes():
    """Regression: A timed out of round 0 into round 1; the others still wait in round 0 for
    A's round-0 votes, lost on the way. Resending only round 1 deadlocked the network."""
    a1, a2, a3 = address(1), address(2), address(3)
    core = make_core(a1, valset([1, 1, 1, 1]), config=CONFIG)
    core.start()
    core.on_timeout(Timeout(Step.PROPOSE, 1, 0, 0))
    core.step(prevote(a2, 1, 0, None))
    core.step(prevote(a3, 1, 0, None))  # line 44: precommit nil
    core.step(precommit(a2, 1, 0, None))
    core.step(precommit(a3, 1, 0, None))
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    assert core.round == 1
    ready = core.on_timeout(Timeout(Step.RETRANSMIT, 1, 1, 0))
    mine = {(m.vote_type, m.round) for m in (o.message for o in ready.messages)}
    assert {(VoteType.PREVOTE, 0), (VoteType.PRECOMMIT, 0)} <= mine


def test_negative_control_no_progress_without_a_quorum():
    # Two of four dead: nothing can be decided, and the driver must notice.
    sim = MiniSim(0, 0.0, down=(2, 3))
    assert not sim.run(heights=1, budget=5_000)
    assert sim.blocks == {}


def test_runs_are_deterministic():
    def trace(seed):
        sim = MiniSim(seed, 0.3, down=(3,))
        assert sim.run(heights=4)
        return sim.now, sim.seq, sim.decided

    assert trace(5) == trace(5)


def test_observer_follows_the_chain_without_signing():
    sim = MiniSim(1, 0.1)
    watcher = address(99)
    sim.decided[watcher] = []
    sim.incarnation[watcher] = 0
    sim.addrs.append(watcher)  # receives every broadcast, is in no validator set
    sim.cores[watcher] = Core(CHAIN, None, lambda h: sim.vs, hooks_for(None), CONFIG)
    assert sim.run(heights=5)
    sent_by_watcher = [item for *_, item in sim.queue if getattr(item, "validator", 0) == watcher]
    assert sent_by_watcher == []
    chain = [sim.blocks[h] for h in range(1, len(sim.decided[watcher]) + 1)]
    assert len(chain) >= 4 and sim.decided[watcher] == chain


def test_validator_added_by_block_2_signs_from_height_4_and_the_chain_goes_on():
    from consensus.types import ValidatorSchedule, ValidatorUpdate
    from tests.consensus.harness import pub_key

    newcomer = address(5)
    sim = MiniSim(3, 0.1)
    schedule = ValidatorSchedule(1, sim.vs)
    sim.decided[newcomer] = []
    sim.incarnation[newcomer] = 0
    sim.addrs.append(newcomer)
    signed_heights: list[int] = []
    record = sim.handle

    def handle(a, ready):
        for d in ready.decisions:
            if d.height > len(schedule_heights):  # first node to decide records the block
                schedule_heights.append(d.height)
                updates = [ValidatorUpdate(newcomer, pub_key(newcomer), 1)] if d.height == 2 else []
                schedule.record(d.height, updates)
        if a == newcomer:
            signed_heights.extend(
                o.message.height
                for o in ready.messages
                if newcomer
                in (getattr(o.message, "validator", 0), getattr(o.message, "proposer", 0))
            )
        record(a, ready)

    schedule_heights: list[int] = []
    sim.handle = handle
    sim.vs = None  # every core below reads the schedule
    for a in list(sim.cores) + [newcomer]:
        sim.cores[a] = Core(CHAIN, a, schedule.for_height, hooks_for(a), CONFIG)
    assert sim.run(heights=8)
    assert schedule.for_height(4).total_power == 5 and schedule.for_height(3).total_power == 4
    assert signed_heights and min(signed_heights) == 4
