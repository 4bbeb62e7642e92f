"""One test per rule (line) of Algorithm 1 in "The latest gossip on BFT consensus".

The core under test is validator A (address 1) in a set of four with power 1 each (quorum 3,
f + 1 = 2). Proposers for height 1 rotate A2, A3, A4, A1 for rounds 0, 1, 2, 3. Other
validators' messages are built and signed by hand, so every expectation is independent of
the core.
"""

from __future__ import annotations

from consensus.core import CoreConfig
from consensus.types import Proposal, Step, Timeout, VoteType
from tests.consensus.harness import (
    address,
    make_core,
    precommit,
    prevote,
    proposal,
    sent,
    valset,
    value_id,
    votes_of,
)

A1, A2, A3, A4 = (address(i) for i in (1, 2, 3, 4))
VS = valset([1, 1, 1, 1])
V, W = b"block-v", b"block-w"
VID, WID = value_id(V), value_id(W)


def started(own=A1, **kw):
    core = make_core(own, VS, **kw)
    return core, core.start()


def only_vote(ready, vote_type):
    votes = votes_of(ready, vote_type)
    assert len(votes) == 1, votes
    return votes[0]


def polka(core, round, vid, voters=(A2, A3, A4)):
    """Feed prevotes of `voters`; return the Ready of the last one."""
    ready = None
    for a in voters:
        ready = core.step(prevote(a, 1, round, vid))
    return ready


def test_rotation_used_by_these_tests():
    assert [VS.proposer(1, r) for r in range(4)] == [A2, A3, A4, A1]


def test_line_11_start_round_proposer_asks_for_a_value_and_broadcasts_the_proposal():
    core, ready = started(own=A2)
    assert ready.need_value == (1, 0)
    ready = core.propose_value(1, 0, V)
    (p,) = [m for m in sent(ready) if isinstance(m, Proposal)]
    assert (p.height, p.round, p.value, p.pol_round, p.proposer) == (1, 0, V, -1, A2)
    # The proposer delivers its own proposal to itself and prevotes it (line 22).
    assert only_vote(ready, VoteType.PREVOTE).value_id == VID
    assert ready.persist is not None and ready.persist.last_proposal.value_id == VID


def test_line_16_proposer_reproposes_its_valid_value_with_its_valid_round():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    polka(core, 0, VID)  # line 36: valid value V at round 0
    assert core.valid_round == 0
    # Two validators (f + 1) are at round 3, where A1 proposes: skip there (line 55).
    core.step(prevote(A2, 1, 3, None))
    ready = core.step(prevote(A3, 1, 3, None))
    assert core.round == 3
    assert ready.need_value is None
    (p,) = [m for m in sent(ready) if isinstance(m, Proposal)]
    assert (p.value, p.pol_round) == (V, 0)
    # The polka that justifies pol_round travels with it (peers need it for line 28).
    relayed = [m for m in votes_of(ready, VoteType.PREVOTE) if m.round == 0]
    assert sorted(v.validator for v in relayed) == sorted([A1, A2, A3, A4])


def test_line_21_non_proposer_schedules_timeout_propose():
    config = CoreConfig(timeout_propose_ms=1234)
    _, ready = started(config=config)
    assert ready.need_value is None
    assert Timeout(Step.PROPOSE, 1, 0, 1234) in ready.timeouts


def test_line_22_prevote_for_valid_proposal_when_unlocked():
    core, _ = started()
    ready = core.step(proposal(A2, 1, 0, V))
    assert only_vote(ready, VoteType.PREVOTE).value_id == VID
    assert core.current_step is Step.PREVOTE


def test_line_22_prevote_nil_for_invalid_proposal():
    core, _ = started(invalid=frozenset({V}))
    ready = core.step(proposal(A2, 1, 0, V))
    assert only_vote(ready, VoteType.PREVOTE).value_id is None


def test_line_22_prevote_nil_when_locked_on_another_value():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    polka(core, 0, VID)
    assert core.locked_value == V
    for a in (A2, A3, A4):
        core.step(precommit(a, 1, 0, None))
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    ready = core.step(proposal(A3, 1, 1, W))
    assert only_vote(ready, VoteType.PREVOTE).value_id is None


def test_line_22_prevote_for_the_value_it_is_locked_on():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    polka(core, 0, VID)
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))  # line 65 (no 2f+1 needed to fire it)
    ready = core.step(proposal(A3, 1, 1, V))
    assert only_vote(ready, VoteType.PREVOTE).value_id == VID


def test_line_28_prevote_for_reproposal_backed_by_a_polka():
    core, _ = started()
    core.on_timeout(Timeout(Step.PROPOSE, 1, 0, 0))  # prevote nil in round 0
    polka(core, 0, VID)  # others saw V; we never got the proposal of round 0
    core.on_timeout(Timeout(Step.PREVOTE, 1, 0, 0))
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    ready = core.step(proposal(A3, 1, 1, V, pol_round=0))
    assert only_vote(ready, VoteType.PREVOTE).value_id == VID


def test_line_28_waits_for_the_polka_before_prevoting():
    core, _ = started()
    core.on_timeout(Timeout(Step.PROPOSE, 1, 0, 0))
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    ready = core.step(proposal(A3, 1, 1, V, pol_round=0))
    assert votes_of(ready, VoteType.PREVOTE) == []
    assert core.current_step is Step.PROPOSE
    ready = polka(core, 0, VID)  # the proof of lock arrives later
    assert only_vote(ready, VoteType.PREVOTE).value_id == VID


def test_line_28_locked_node_accepts_a_newer_polka():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    polka(core, 0, VID)
    assert core.locked_round == 0
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    core.on_timeout(Timeout(Step.PROPOSE, 1, 1, 0))
    polka(core, 1, WID)  # a polka for W at round 1 >= our locked round 0
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 1, 0))
    ready = core.step(proposal(A4, 1, 2, W, pol_round=1))
    assert only_vote(ready, VoteType.PREVOTE).value_id == WID


def test_line_28_prevote_nil_when_locked_after_the_pol_round():
    core, _ = started()
    core.on_timeout(Timeout(Step.PROPOSE, 1, 0, 0))
    polka(core, 0, WID, voters=(A2, A3, A4))  # polka for W at round 0 (we prevoted nil)
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    core.step(proposal(A3, 1, 1, V))
    polka(core, 1, VID)  # locked on V at round 1
    assert core.locked_round == 1
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 1, 0))
    ready = core.step(proposal(A4, 1, 2, W, pol_round=0))
    assert only_vote(ready, VoteType.PREVOTE).value_id is None


def test_line_34_timeout_prevote_after_any_quorum_of_prevotes_once():
    core, _ = started(config=CoreConfig(timeout_prevote_ms=700))
    core.step(proposal(A2, 1, 0, V))  # we prevote V
    ready = core.step(prevote(A2, 1, 0, None))
    assert not any(t.step is Step.PREVOTE for t in ready.timeouts)
    ready = core.step(prevote(A3, 1, 0, WID))  # V, nil, W: 3 of 4, no value has a quorum
    assert Timeout(Step.PREVOTE, 1, 0, 700) in ready.timeouts
    ready = core.step(prevote(A4, 1, 0, None))
    assert not any(t.step is Step.PREVOTE for t in ready.timeouts)


def test_line_36_lock_on_polka():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    ready = polka(core, 0, VID, voters=(A2, A3))
    assert only_vote(ready, VoteType.PRECOMMIT).value_id == VID
    assert (core.locked_round, core.locked_value) == (0, V)
    assert (core.valid_round, core.valid_value) == (0, V)
    assert core.current_step is Step.PRECOMMIT
    assert ready.persist.locked_value == V  # durable before the precommit leaves


def test_line_36_in_precommit_step_sets_valid_value_but_not_lock():
    core, _ = started()
    core.step(prevote(A2, 1, 0, VID))
    core.step(prevote(A3, 1, 0, VID))
    core.on_timeout(Timeout(Step.PROPOSE, 1, 0, 0))  # prevote nil: 3 prevotes, 2 for V
    core.on_timeout(Timeout(Step.PREVOTE, 1, 0, 0))  # precommit nil
    core.step(prevote(A4, 1, 0, VID))  # polka for V (A2, A3, A4), proposal still missing
    assert core.valid_round == -1
    ready = core.step(proposal(A2, 1, 0, V))
    assert (core.valid_round, core.valid_value) == (0, V)
    assert (core.locked_round, core.locked_value) == (-1, None)
    assert votes_of(ready, VoteType.PRECOMMIT) == []


def test_line_44_precommit_nil_on_nil_polka():
    core, _ = started()
    core.on_timeout(Timeout(Step.PROPOSE, 1, 0, 0))
    core.step(prevote(A2, 1, 0, None))
    ready = core.step(prevote(A3, 1, 0, None))
    assert only_vote(ready, VoteType.PRECOMMIT).value_id is None
    assert core.current_step is Step.PRECOMMIT


def test_line_47_timeout_precommit_after_any_quorum_of_precommits():
    core, _ = started(config=CoreConfig(timeout_precommit_ms=900))
    core.step(precommit(A2, 1, 0, None))
    ready = core.step(precommit(A3, 1, 0, WID))
    assert not any(t.step is Step.PRECOMMIT for t in ready.timeouts)
    ready = core.step(precommit(A4, 1, 0, VID))
    assert Timeout(Step.PRECOMMIT, 1, 0, 900) in ready.timeouts
    assert ready.decisions == ()


def test_line_49_decide_on_quorum_of_precommits():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    core.step(precommit(A2, 1, 0, VID))
    core.step(precommit(A3, 1, 0, VID))
    ready = core.step(precommit(A4, 1, 0, VID))
    (d,) = ready.decisions
    assert (d.height, d.round, d.value, d.value_id) == (1, 0, V, VID)
    assert [a for a, _ in d.commit.signatures] == [A2, A3, A4]
    ready = core.advance()  # the driver applied block 1: height 2 starts
    assert core.height == 2 and core.round == 0 and core.locked_round == -1


def test_line_49_decide_for_an_earlier_round():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    assert core.round == 1
    for a in (A2, A3):
        core.step(precommit(a, 1, 0, VID))
    ready = core.step(precommit(A4, 1, 0, VID))
    assert [(d.round, d.value) for d in ready.decisions] == [(0, V)]


def test_line_49_no_decision_without_the_value():
    core, _ = started()
    for a in (A2, A3, A4):
        ready = core.step(precommit(a, 1, 0, VID))
    assert ready.decisions == ()
    ready = core.step(proposal(A2, 1, 0, V))  # the block arrives late
    assert [d.value for d in ready.decisions] == [V]


def test_line_55_round_skip_on_f_plus_one():
    core, _ = started()
    ready = core.step(prevote(A3, 1, 5, None))
    assert core.round == 0  # one validator (1/4) is not enough
    ready = core.step(precommit(A4, 1, 5, None))  # two (> 1/3): skip to round 5
    assert core.round == 5 and core.current_step is Step.PROPOSE
    assert any(t.step is Step.PROPOSE and t.round == 5 for t in ready.timeouts)


def test_line_55_round_skip_counts_power_not_heads():
    vs = valset([1, 1, 1, 3])  # total 6, f + 1 = 3: A4 alone has it
    core = make_core(A1, vs)
    core.start()
    core.step(prevote(A2, 1, 2, None))
    core.step(prevote(A3, 1, 2, None))
    assert core.round == 0  # power 2 of 6 is not > 1/3
    core.step(prevote(A4, 1, 2, None))
    assert core.round == 2


def test_line_57_timeout_propose_prevotes_nil():
    core, _ = started()
    ready = core.on_timeout(Timeout(Step.PROPOSE, 1, 0, 0))
    assert only_vote(ready, VoteType.PREVOTE).value_id is None
    assert core.current_step is Step.PREVOTE


def test_line_61_timeout_prevote_precommits_nil():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    ready = core.on_timeout(Timeout(Step.PREVOTE, 1, 0, 0))
    assert only_vote(ready, VoteType.PRECOMMIT).value_id is None


def test_line_65_timeout_precommit_starts_next_round():
    core, _ = started()
    ready = core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    assert (core.round, core.current_step) == (1, Step.PROPOSE)
    assert any(t.step is Step.PROPOSE and t.round == 1 for t in ready.timeouts)


def test_stale_timeouts_are_ignored():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))  # now in prevote step
    for stale in (
        Timeout(Step.PROPOSE, 1, 0, 0),  # wrong step
        Timeout(Step.PREVOTE, 2, 0, 0),  # wrong height
        Timeout(Step.PREVOTE, 1, 3, 0),  # wrong round
    ):
        assert core.on_timeout(stale).is_empty
    assert (core.round, core.current_step) == (0, Step.PREVOTE)
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    assert core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0)).is_empty  # old round now
    assert core.round == 1


def test_timeouts_grow_per_round_up_to_a_cap():
    config = CoreConfig(timeout_propose_ms=1000, timeout_propose_delta_ms=100, max_backoff_rounds=3)
    assert [config.timeout_ms(Step.PROPOSE, r) for r in (0, 1, 2, 3, 4, 50)] == [
        1000,
        1100,
        1200,
        1300,
        1300,
        1300,
    ]
