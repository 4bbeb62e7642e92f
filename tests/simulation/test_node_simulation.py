"""The whole node in simulation (tests/simulation/nodesim/): real drivers, chains, SQLite
stores and mempools under a simulated network and clock.

On a fixed set of seeds whose plans between them crash nodes at each crash point, partition,
drop, duplicate and delay messages, skew clocks and field each byzantine behaviour (< 1/3 of
the power), every invariant holds and the chain grows after the heal; the same seed gives the
same run; the negative control (byzantine power >= 1/3: Twins across a partition) makes the
checker report a fork; and each checker part reports what it is there to see.
"""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import pytest

from consensus.types import Vote, VoteType
from ledger.crypto import hash256
from ledger.store import Store
from node import messages
from node.messages import ConsensusMessage
from scripts.simulate import main as simulate_main
from tests.simulation.nodesim.clients import make_world
from tests.simulation.nodesim.invariants import NodeChecker
from tests.simulation.nodesim.plan import (
    CRASH_POINTS,
    NodeCrash,
    NodePlan,
    draw_node_plan,
    node_plan_from_json,
    node_plan_to_json,
)
from tests.simulation.nodesim.run import NodeCase, describe, repro_command, run_node_seed

# Seeds whose plans together cover every crash point and byzantine behaviour (see
# `test_the_fixed_seeds_cover_every_fault`); each runs in a couple of seconds.
SEEDS = (3, 15, 21, 22, 28)


@functools.cache
def outcome_of(seed: int):
    return run_node_seed(NodeCase(seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_every_invariant_holds_on_the_fixed_seeds(seed):
    outcome = outcome_of(seed)
    assert outcome.violations == (), describe(outcome, NodeCase(seed))
    assert outcome.min_height >= 5 and outcome.txs_committed > 0
    assert outcome.commits >= 4 * outcome.min_height


def test_the_fixed_seeds_cover_every_fault():
    # Guard against a simulator that silently runs fault-free.
    plans = [draw_node_plan(seed, 4, 1) for seed in SEEDS]
    points = {crash.point for plan in plans for crash in plan.crashes}
    behaviours = {b.behaviour for plan in plans for b in plan.byzantine}
    assert points == set(CRASH_POINTS)
    assert behaviours == {"double-vote", "double-propose", "double-both", "twins"}
    assert any(plan.partitions for plan in plans)
    assert any(plan.drop_permille and plan.duplicate_permille for plan in plans)
    outcomes = [outcome_of(seed) for seed in SEEDS]
    assert sum(o.crashes for o in outcomes) >= 3
    assert sum(o.evidence_committed for o in outcomes) > 0
    assert sum(o.messages_lost for o in outcomes) > 0


def test_a_seed_replays_exactly():
    first = outcome_of(SEEDS[1])
    again = run_node_seed(NodeCase(SEEDS[1]))
    assert again == first
    assert again.digest == first.digest


def test_the_negative_control_bites():
    # Two of four validators are Twins across a partition: each side has > 2/3 and decides.
    outcome = run_node_seed(NodeCase(0, byzantine=2))
    assert outcome.count("SAFE") >= 1
    assert outcome.safety_violations >= 1


def test_without_faults_or_byzantine_the_run_is_clean_and_quick():
    outcome = run_node_seed(NodeCase(7, byzantine=0, faults=False))
    assert outcome.violations == ()
    assert outcome.crashes == 0 and outcome.messages_lost == 0


def crashes_of_every_validator(seed: int) -> NodeCase:
    base = draw_node_plan(seed, 4, 0, faults=False)
    times = ((0, 700), (1, 1300), (2, 1900), (3, 2500), (0, 3100))
    crashes = tuple(NodeCrash(replica, at, 30, "idle") for replica, at in times)
    return NodeCase(seed, byzantine=0, plan=NodePlan(3500, base.latency_ms, crashes=crashes))


def test_a_record_not_durable_before_the_vote_leaves_is_a_double_sign(monkeypatch):
    # Sabotage: the store writes each consensus record only when the next one comes, so a
    # crash loses the record of votes already sent. The restarted validators sign again.
    case = crashes_of_every_validator(0)
    assert run_node_seed(case).violations == ()
    original = Store.save_consensus_record

    def one_behind(store, record):
        previous, store.sim_lagging = getattr(store, "sim_lagging", None), record
        if previous is not None:
            original(store, previous)

    monkeypatch.setattr(Store, "save_consensus_record", one_behind)
    assert run_node_seed(case).count("SIGN") >= 1


# ---- the checker's parts bite ---------------------------------------------------------


def checker() -> tuple[NodeChecker, object]:
    world = make_world(4, 2)
    return NodeChecker(world.genesis, frozenset()), world


def honest_node(name="r0", replica=0):
    return SimpleNamespace(name=name, replica=replica, honest=True, chain=None)


def test_an_honest_double_vote_is_reported():
    check, world = checker()
    key = world.validator_keys[0]

    def vote(value: bytes | None) -> bytes:
        signed = Vote(VoteType.PREVOTE, 3, 1, value, key.address, b"s" * 64)
        return messages.encode(ConsensusMessage(signed))

    node = honest_node()
    check.on_sent(node, vote(hash256(b"a")))
    check.on_sent(node, vote(hash256(b"a")))  # a re-send of the same vote is fine
    assert check.violations == []
    check.on_sent(node, vote(None))
    assert [v.kind for v in check.violations] == ["SIGN"]
    # A byzantine node's double votes are not this check's business.
    check.on_sent(SimpleNamespace(name="r1", replica=1, honest=False), vote(hash256(b"b")))
    assert len(check.violations) == 1


def test_a_restart_that_lost_blocks_is_reported():
    check, _ = checker()
    node = honest_node()
    node.chain = SimpleNamespace(height=7, last_block_hash=b"h" * 32)
    check.on_crash(node)
    node.chain = SimpleNamespace(height=5)
    check.on_open(node)
    assert [v.kind for v in check.violations] == ["LOSS"]


def test_supply_that_does_not_match_the_receipts_is_reported():
    check, _ = checker()
    check._supply[4] = 1000
    holding = SimpleNamespace(balance=600)
    state = SimpleNamespace(
        instruments={"PKR": SimpleNamespace(supply=1000)},
        holdings={"PKR": {b"a": holding, b"b": SimpleNamespace(balance=300)}},
    )
    check._check_supply("r0 height 4", 4, state)
    assert [v.kind for v in check.violations] == ["MONEY"]


# ---- the command line ------------------------------------------------------------------


def test_plans_round_trip_through_json_and_the_repro_command():
    plan = draw_node_plan(12, 4, 1)
    assert node_plan_from_json(node_plan_to_json(plan)) == plan
    command = repro_command(NodeCase(12, plan=plan))
    assert "--node" in command and "--first-seed 12" in command and "--plan" in command


def test_simulate_node_prints_the_json_summary_last(capsys):
    assert simulate_main(["--node", "--seeds", "1", "--first-seed", "7", "--faults", "none"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["seeds"] == 1 and summary["mode"] == "node"
    assert summary["safety_violations"] == 0 and summary["liveness_failures"] == 0
    assert simulate_main(["--node", "--seeds", "1", "--byzantine", "2", "--expect-violation"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["safety_violations"] >= 1


def test_a_restarted_validator_and_a_double_voter_keep_the_chain_live():
    outcome = run_node_seed(NodeCase(128))
    assert outcome.violations == (), describe(outcome, NodeCase(128))
