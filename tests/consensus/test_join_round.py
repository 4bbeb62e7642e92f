"""`Core.join_round_as`: a core that followed a height without signing (the driver's signing
hold after a lost record) joins it mid-round. Rules that would have had it vote in this round
fired while it had no address, and the others may be waiting for its vote to reach a quorum
of any kind (no quorum, no timeout, no next round), so it casts the nil votes of the steps
already passed, and nothing for a value. Set of four, power 1 each: quorum 3.
"""

from __future__ import annotations

from consensus.core import Core, CoreConfig
from consensus.types import Step, VoteType
from tests.consensus.harness import (
    CHAIN,
    address,
    hooks_for,
    prevote,
    proposal,
    sent,
    valset,
    value_id,
    votes_of,
)

A1, A2, A3, A4 = (address(i) for i in (1, 2, 3, 4))
VS = valset([1, 1, 1, 1])
V = b"block-v"


def follower() -> Core:
    """Validator A1's core, following without an address (as the driver starts it when held)."""
    core = Core(CHAIN, None, lambda h: VS, hooks_for(A1), CoreConfig())
    core.start()
    return core


def test_in_the_propose_step_it_casts_nothing_and_prevotes_the_proposal_when_it_comes():
    core = follower()
    assert core.current_step is Step.PROPOSE
    ready = core.join_round_as(A1)
    assert sent(ready) == []
    ready = core.step(proposal(A2, 1, 0, V))  # round 0's proposer
    (vote,) = votes_of(ready, VoteType.PREVOTE)
    assert (vote.validator, vote.value_id) == (A1, value_id(V))


def test_past_the_propose_step_it_prevotes_nil_and_completes_a_waiting_quorum():
    core = follower()
    core.step(proposal(A2, 1, 0, V))  # no address: the core moves to PREVOTE without a vote
    core.step(prevote(A2, 1, 0, value_id(V)))
    core.step(prevote(A3, 1, 0, value_id(V)))
    assert core.current_step is Step.PREVOTE
    ready = core.join_round_as(A1)
    (vote,) = votes_of(ready, VoteType.PREVOTE)
    assert (vote.validator, vote.value_id, vote.round) == (A1, None, 0)
    assert votes_of(ready, VoteType.PRECOMMIT) == []
    # Three prevotes of any kind: the prevote timeout is scheduled, so the round can end.
    assert (Step.PREVOTE, 1, 0) in [(t.step, t.height, t.round) for t in ready.timeouts]
    assert ready.persist is not None  # the vote is recorded before it is sent


def test_in_the_precommit_step_it_prevotes_and_precommits_nil():
    core = follower()
    core.step(proposal(A2, 1, 0, V))
    for a in (A2, A3, A4):
        core.step(prevote(a, 1, 0, value_id(V)))
    assert core.current_step is Step.PRECOMMIT
    ready = core.join_round_as(A1)
    assert [v.value_id for v in votes_of(ready, VoteType.PREVOTE)] == [None]
    assert [v.value_id for v in votes_of(ready, VoteType.PRECOMMIT)] == [None]
