"""Invariants the core checks in production (TigerBeetle's habit), and a control that bites:
a decision from its own tally must carry more than two thirds of the power in precommits for
the decided value, from distinct members of the set."""

from __future__ import annotations

import pytest

from consensus.core import BrokenInvariant
from consensus.types import Decision
from tests.consensus.harness import address, make_core, precommit, proposal, valset, value_id

VALUE = b"block-1"


def _core_with_precommits(signers: list[int]):
    vs = valset([1, 1, 1, 1])
    core = make_core(address(1), vs)
    core.start()
    core.step(proposal(vs.proposer(1, 0), 1, 0, VALUE))
    decisions = []
    for i in signers:
        ready = core.step(precommit(address(i), 1, 0, value_id(VALUE)))
        decisions += [d for d in ready.decisions if isinstance(d, Decision)]
    return core, decisions


def test_a_quorum_of_precommits_decides_and_passes_the_check():
    _core, decisions = _core_with_precommits([2, 3, 4])
    assert [d.height for d in decisions] == [1]
    assert len(decisions[0].commit.signatures) >= 3


def test_a_tally_that_claims_a_quorum_it_does_not_hold_stops_the_core():
    core, decisions = _core_with_precommits([2, 3])  # 2 of 4: no quorum, nothing decided
    assert decisions == []
    tally = core._rounds[0]
    tally.precommit_power[value_id(VALUE)] = 4  # a broken tally (the bug the check is for)
    with pytest.raises(BrokenInvariant, match="quorum"):
        core._line_49_decide(0, tally)


def test_a_precommit_for_another_value_in_the_certificate_stops_the_core():
    core, _ = _core_with_precommits([2, 3])
    tally = core._rounds[0]
    other = precommit(address(4), 1, 0, value_id(b"another block"))
    tally.precommits[address(4)] = other  # counted for VALUE by a broken tally
    tally.precommit_power[value_id(VALUE)] = 3
    with pytest.raises(BrokenInvariant):
        # the certificate is built from precommits for VALUE only: 2 of 4 power
        core._line_49_decide(0, tally)
