"""Unit tests of the simulator's parts that do not need the consensus core running:
the event queue, the network's fault decisions, fault plans, signature schemes and values."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .faults import (
    FAILPOINTS,
    FAULT_KINDS,
    FaultPlan,
    PartitionEpisode,
    draw_plan,
    fork_plan,
    parse_kinds,
    plan_from_json,
    plan_to_json,
)
from .network import BASE_LATENCY_MS, Network
from .scheduler import EventQueue, SimulationError
from .signing import Ed25519Scheme, FakeScheme
from .values import make_value, validate_value, value_id

# -- scheduler -------------------------------------------------------------------------------


def test_queue_orders_by_time_then_scheduling_order():
    queue = EventQueue()
    queue.push(5, "late")
    queue.push(1, "first")
    queue.push(1, "second")  # same time: scheduled later, popped later
    queue.push(3, "middle")
    popped = [(queue.pop(), queue.now) for _ in range(4)]
    assert popped == [("first", 1), ("second", 1), ("middle", 3), ("late", 5)]


def test_queue_refuses_the_past_and_bounds_pending_events():
    queue = EventQueue(max_pending=2)
    queue.push(10, "a")
    queue.pop()
    with pytest.raises(SimulationError, match="past"):
        queue.push(9, "b")
    queue.push_after(0, "c")
    queue.push_after(1, "d")
    with pytest.raises(SimulationError, match="pending"):
        queue.push_after(2, "e")


# -- network ---------------------------------------------------------------------------------


def plan(**fields) -> FaultPlan:
    return FaultPlan(kinds=FAULT_KINDS, heal_ms=1000, **fields)


def test_partition_blocks_across_groups_only_while_active():
    episode = PartitionEpisode(100, 200, ((0, 1), (2, 3)))
    network = Network(plan(partitions=(episode,)), seed=1)
    assert network.route(150, 0, 2) == ()
    assert network.route(150, 3, 1) == ()
    assert len(network.route(150, 0, 1)) == 1
    assert len(network.route(99, 0, 2)) == 1
    assert len(network.route(200, 0, 2)) == 1


def test_one_way_partition_drops_only_from_the_first_group():
    episode = PartitionEpisode(0, 500, ((0,), (1, 2, 3)), one_way=True)
    network = Network(plan(partitions=(episode,)), seed=1)
    assert network.route(10, 0, 1) == ()
    assert len(network.route(10, 1, 0)) == 1
    assert not network.reachable(10, 1, 0)  # a request/response needs both directions
    assert network.reachable(10, 1, 2)


def test_replicas_outside_every_group_form_their_own_group():
    episode = PartitionEpisode(0, 500, ((0, 1),))
    assert episode.blocks(0, 4) and episode.blocks(4, 1) and not episode.blocks(4, 5)


def test_drop_and_duplicate_rates_follow_the_plan_and_stop_at_heal():
    network = Network(plan(drop_permille=250, duplicate_permille=100), seed=7)
    copies = [len(network.route(10, 0, 1)) for _ in range(4000)]
    lost, doubled = copies.count(0), copies.count(2)
    assert 850 <= lost <= 1150  # 25% of 4000, give or take
    assert 230 <= doubled <= 370  # 10% of the 3000 that were not lost
    after = [network.route(1000, 0, 1) for _ in range(500)]
    low, high = BASE_LATENCY_MS
    assert all(len(d) == 1 and low <= d[0] <= high for d in after)


def test_delay_and_reorder_stretch_latency_only_before_heal():
    network = Network(plan(delay_permille=1000, delay_max_ms=300, reorder_jitter_ms=50), seed=3)
    during = [network.route(0, 0, 1)[0] for _ in range(500)]
    assert max(during) > 100 and min(during) >= BASE_LATENCY_MS[0]
    assert max(during) <= BASE_LATENCY_MS[1] + 50 + 300


def test_network_decisions_are_a_function_of_the_seed():
    def trace(seed):
        network = Network(plan(drop_permille=300, reorder_jitter_ms=40), seed=seed)
        return [network.route(t, 0, 1) for t in range(300)]

    assert trace(11) == trace(11)
    assert trace(11) != trace(12)


# -- fault plans -----------------------------------------------------------------------------


@settings(max_examples=150)
@given(
    seed=st.integers(0, 2**32),
    validators=st.integers(2, 10),
    byzantine=st.integers(0, 9),
    kinds=st.sets(st.sampled_from(FAULT_KINDS)),
)
def test_drawn_plans_keep_every_fault_before_heal(seed, validators, byzantine, kinds):
    byzantine = min(byzantine, validators - 1)
    plan = draw_plan(random.Random(seed).randint, validators, byzantine, kinds)
    replicas = plan.replica_count(validators)
    assert len(plan.byzantine) == byzantine
    assert len({role.validator for role in plan.byzantine}) == byzantine
    assert set(plan.kinds) == kinds
    for episode in plan.partitions:
        assert 0 <= episode.start_ms < episode.end_ms <= plan.heal_ms
        members = [m for group in episode.groups for m in group]
        assert sorted(members) == list(range(replicas))
        assert all(episode.groups)
    for crash in plan.crashes:
        assert 0 <= crash.at_ms <= crash.restart_ms <= plan.heal_ms
        assert 0 <= crash.replica < replicas and crash.failpoint in FAILPOINTS
    assert ("drop" in kinds) == (plan.drop_permille > 0)
    assert plan_from_json(plan_to_json(plan)) == plan


@given(seed=st.integers(0, 2**32), validators=st.integers(4, 13))
def test_fork_plan_gives_each_side_a_quorum_when_byzantine_reaches_a_third(seed, validators):
    byzantine = -(-validators // 3)  # ceil(n/3): the smallest count that is >= n/3
    plan = fork_plan(random.Random(seed).randint, validators, byzantine, ())
    (episode,) = plan.partitions
    assert episode.start_ms == 0 and episode.end_ms == plan.heal_ms
    left, right = episode.groups
    # Each side holds one copy of every twin; count the distinct validators on each side.
    twin_copy = {validators + j: j for j in range(byzantine)}
    sides = [{twin_copy.get(r, r) for r in side} for side in (left, right)]
    assert set(range(byzantine)) <= sides[0] and set(range(byzantine)) <= sides[1]
    honest_left = len(sides[0]) - byzantine
    honest_right = len(sides[1]) - byzantine
    assert honest_left + honest_right == validators - byzantine
    assert abs(honest_left - honest_right) <= 1  # halves: the most power on both sides


def test_parse_kinds():
    assert parse_kinds("all") == FAULT_KINDS
    assert parse_kinds("none") == ()
    assert parse_kinds("crash,drop") == ("drop", "crash")
    with pytest.raises(ValueError, match="unknown"):
        parse_kinds("drop,meteor")


# -- signatures and values -------------------------------------------------------------------


@pytest.mark.parametrize("scheme_class", [FakeScheme, Ed25519Scheme])
def test_schemes_verify_only_the_signers_own_message(scheme_class):
    scheme = scheme_class()
    alice, bob = scheme.keypair(1, 0), scheme.keypair(1, 1)
    signature = alice.sign(b"message")
    assert scheme.verify(alice.pub_key, b"message", signature)
    assert not scheme.verify(bob.pub_key, b"message", signature)
    assert not scheme.verify(alice.pub_key, b"messagf", signature)
    flipped = signature[:-1] + bytes([signature[-1] ^ 1])
    assert not scheme.verify(alice.pub_key, b"message", flipped)
    assert not scheme.verify(b"\x01" * 32, b"message", signature)
    assert alice.address != bob.address and len(alice.address) == 20
    assert scheme_class().keypair(1, 0).pub_key == alice.pub_key  # derived from the seed


def test_values_are_valid_only_at_their_height_and_distinct_per_variant():
    proposer = bytes(range(20))
    honest, other = make_value(7, 2, proposer), make_value(7, 2, proposer, variant=1)
    assert validate_value(7, honest) and validate_value(7, other)
    assert not validate_value(8, honest)
    assert not validate_value(7, honest + b"x")
    assert not validate_value(7, b"")
    assert value_id(honest) != value_id(other) and len(value_id(honest)) == 32


# -- byzantine behaviours --------------------------------------------------------------------


def test_double_voter_rewrites_only_its_own_votes_and_signs_the_conflict_validly():
    from consensus.types import Vote, VoteType, vote_signing_bytes

    from .byzantine import DoubleVote

    scheme = FakeScheme()
    me, other = scheme.keypair(2, 0), scheme.keypair(2, 1)
    behaviour = DoubleVote("chain", me.address, me.sign, seed=1)

    def signed(key, value):
        data = vote_signing_bytes("chain", VoteType.PREVOTE, 3, 1, value)
        return Vote(VoteType.PREVOTE, 3, 1, value, key.address, key.sign(data))

    relayed = signed(other, value_id(b"x"))
    assert behaviour.outgoing(relayed, [1, 2, 3]) == [(relayed, (1, 2, 3))]

    own = signed(me, value_id(b"x"))
    sends = behaviour.outgoing(own, [1, 2, 3])
    received = {peer: [m for m, peers in sends if peer in peers] for peer in (1, 2, 3)}
    for messages in received.values():
        assert len(messages) == 2 and own in messages  # every peer gets both halves
    (conflict,) = {m for m, _ in sends if m != own}
    assert conflict.value_id != own.value_id and conflict.validator == me.address
    data = vote_signing_bytes("chain", VoteType.PREVOTE, 3, 1, conflict.value_id)
    assert scheme.verify(me.pub_key, data, conflict.signature)
