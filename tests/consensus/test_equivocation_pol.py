"""Line 28's proof of lock counts an equivocator's other prevote (the paper counts 2f + 1
PREVOTE messages for v at vr, whoever else their senders voted for).

The whole-node simulation found the stall this prevents (`scripts/simulate.py --node`, seeds
8 and 16 before the fix): a byzantine validator prevoted nil to some validators and v to
others; one honest validator saw v's polka and locked v, the others counted the nil prevote
(the tally keeps a validator's first vote), so when v was re-proposed with its polka they
could never verify it, the locked one prevoted nil for everything else, and no value ever
reached a polka again. Same setting as test_algorithm.py: we are A1 of four validators of
power 1 (quorum 3); A4 equivocates.
"""

from __future__ import annotations

from consensus.types import Step, Timeout, VoteType
from tests.consensus.harness import (
    address,
    make_core,
    prevote,
    proposal,
    valset,
    value_id,
    votes_of,
)

A1, A2, A3, A4 = (address(i) for i in (1, 2, 3, 4))
VS = valset([1, 1, 1, 1])
V, W = b"block-v", b"block-w"
VID, WID = value_id(V), value_id(W)


def round_zero_with_an_equivocator(extra_value=VID):
    core = make_core(A1, VS)
    core.start()
    core.on_timeout(Timeout(Step.PROPOSE, 1, 0, 0))  # we prevote nil: no proposal yet
    core.step(proposal(A2, 1, 0, V))  # late: we hold V now
    core.step(prevote(A4, 1, 0, None))  # the equivocator's nil reaches us first
    core.step(prevote(A2, 1, 0, VID))
    core.step(prevote(A3, 1, 0, VID))
    ready = core.step(prevote(A4, 1, 0, extra_value))  # and then its other prevote
    assert ready.evidence, "the two prevotes of A4 are still evidence"
    core.on_timeout(Timeout(Step.PREVOTE, 1, 0, 0))
    core.on_timeout(Timeout(Step.PRECOMMIT, 1, 0, 0))
    assert core.round == 1 and core.locked_round == -1
    return core


def test_a_reproposal_whose_polka_holds_an_equivocators_other_prevote_is_prevoted():
    core = round_zero_with_an_equivocator()
    ready = core.step(proposal(A3, 1, 1, V, pol_round=0))
    assert [v.value_id for v in votes_of(ready, VoteType.PREVOTE)] == [VID]


def test_the_other_prevote_counts_only_for_its_own_value():
    # A4's other prevote was for W: V's proof of lock has 2 of the 3 it needs.
    core = round_zero_with_an_equivocator(extra_value=WID)
    ready = core.step(proposal(A3, 1, 1, V, pol_round=0))
    assert votes_of(ready, VoteType.PREVOTE) == []
    assert core.current_step is Step.PROPOSE
