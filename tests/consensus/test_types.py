"""Quorum maths, proposer rotation, signing bytes, certificates, evidence, durable encoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import (
    VALSET_DELAY,
    Commit,
    ConsensusError,
    DurableState,
    Evidence,
    ProposalRecord,
    Step,
    Validator,
    ValidatorSchedule,
    ValidatorSet,
    ValidatorUpdate,
    VoteType,
    make_evidence,
    proposal_signing_bytes,
    verify_commit,
    verify_evidence,
    vote_signing_bytes,
)
from tests.consensus.harness import (
    CHAIN,
    address,
    commit_for,
    precommit,
    prevote,
    pub_key,
    valset,
    value_id,
    verify,
)

A1, A2, A3, A4 = (address(i) for i in (1, 2, 3, 4))


@given(st.integers(min_value=1, max_value=10_000))
def test_quorum_and_skip_power_are_the_smallest_strict_thirds(total):
    vs = ValidatorSet((Validator(A1, b"k", total),))
    assert 3 * vs.quorum_power > 2 * total and 3 * (vs.quorum_power - 1) <= 2 * total
    assert 3 * vs.skip_power > total and 3 * (vs.skip_power - 1) <= total


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=7))
def test_rotation_gives_each_validator_its_power_share_per_cycle(powers):
    vs = valset(powers)
    total = vs.total_power
    chosen = [vs.proposer(h, 0) for h in range(total)]
    for v in vs.validators:
        assert chosen.count(v.address) == v.power
    # The next round at the same height is the next slot of the cycle.
    assert all(vs.proposer(h, 1) == vs.proposer(h + 1, 0) for h in range(total))


def test_rotation_interleaves_instead_of_repeating():
    vs = valset([1, 1, 2])  # A3 has half the power
    seq = [vs.proposer(h, 0) for h in range(8)]
    assert all(a != b for a, b in zip(seq, seq[1:], strict=False) if a != A3 or b != A3)
    assert seq[:4].count(A3) == 2 and seq[0] != seq[1]


def test_rotation_of_a_huge_total_stays_small_and_proportional():
    vs = valset([10**9, 10**9, 2 * 10**9])
    cycle = [vs.proposer(h, 0) for h in range(4096)]
    assert cycle.count(A3) == 2048 and cycle.count(A1) == 1024


def test_valset_refuses_bad_shapes():
    with pytest.raises(ConsensusError):
        ValidatorSet((Validator(A2, b"k", 1), Validator(A1, b"k", 1)))
    with pytest.raises(ConsensusError):
        ValidatorSet((Validator(A1, b"k", 1), Validator(A1, b"k", 1)))
    with pytest.raises(ConsensusError):
        ValidatorSet((Validator(A1, b"k", 0),))
    with pytest.raises(ConsensusError):
        ValidatorSet(())


def test_vote_signing_bytes_layout():
    vid = bytes(range(32))
    expected = (
        b"khazana/vote/v1\x00"
        + bytes([len(CHAIN)])
        + CHAIN.encode()
        + b"\x02"
        + (7).to_bytes(8, "big")
        + (3).to_bytes(4, "big")
        + b"\x20"
        + vid
    )
    assert vote_signing_bytes(CHAIN, VoteType.PRECOMMIT, 7, 3, vid) == expected
    nil = vote_signing_bytes(CHAIN, VoteType.PREVOTE, 7, 3, None)
    assert nil.endswith(b"\x01" + struct.pack(">QI", 7, 3) + b"\x00")


def test_proposal_signing_bytes_layout():
    vid = b"\xaa" * 32
    got = proposal_signing_bytes("c", 1, 2, vid, -1)
    assert got == (
        b"khazana/proposal/v1\x00\x01c\x03"
        + struct.pack(">QI", 1, 2)
        + b"\x20"
        + vid
        + b"\x00\x00\x00\x00"
    )
    assert proposal_signing_bytes("c", 1, 2, vid, 1).endswith(b"\x00\x00\x00\x02")


def test_signing_bytes_are_never_confusable():
    vid = b"\x01" * 32
    kinds = {
        vote_signing_bytes(CHAIN, VoteType.PREVOTE, 1, 0, vid),
        vote_signing_bytes(CHAIN, VoteType.PRECOMMIT, 1, 0, vid),
        vote_signing_bytes("other-chain", VoteType.PREVOTE, 1, 0, vid),
        proposal_signing_bytes(CHAIN, 1, 0, vid, -1),
        vote_signing_bytes(CHAIN, VoteType.PREVOTE, 1, 0, None),
    }
    assert len(kinds) == 5
    assert not any(k.startswith(b"khazana/tx/v1\x00") for k in kinds)


def test_verify_commit_accepts_more_than_two_thirds_only():
    vs = valset([1, 1, 1, 1])
    assert verify_commit(vs, CHAIN, commit_for([A1, A2, A3], 5, 1, b"v"), verify)
    assert not verify_commit(vs, CHAIN, commit_for([A1, A2], 5, 1, b"v"), verify)


def test_verify_commit_ignores_repeated_unknown_and_bad_signers():
    vs = valset([1, 1, 1, 1])
    good = commit_for([A1, A2], 5, 1, b"v")
    sigs = good.signatures
    repeated = Commit(5, 1, good.value_id, sigs + (sigs[0],))
    assert not verify_commit(vs, CHAIN, repeated, verify)
    stranger = address(9)
    unknown = commit_for([A1, A2, stranger], 5, 1, b"v")
    assert not verify_commit(vs, CHAIN, unknown, verify)
    forged = Commit(5, 1, good.value_id, sigs + ((A3, b"\x00" * 16),))
    assert not verify_commit(vs, CHAIN, forged, verify)
    other_round = Commit(5, 2, good.value_id, commit_for([A1, A2, A3], 5, 1, b"v").signatures)
    assert not verify_commit(vs, CHAIN, other_round, verify)


def test_verify_commit_with_weighted_power():
    vs = valset([1, 1, 1, 5])  # total 8, quorum 6
    assert verify_commit(vs, CHAIN, commit_for([A1, A4], 2, 0, b"v"), verify)
    assert not verify_commit(vs, CHAIN, commit_for([A1, A2, A3], 2, 0, b"v"), verify)


def test_evidence_is_canonical_and_verifiable():
    vs = valset([1, 1, 1, 1])
    a = prevote(A2, 3, 0, value_id(b"x"))
    b = prevote(A2, 3, 0, None)
    ev = make_evidence(a, b)
    assert ev == make_evidence(b, a) and ev.vote_a.value_id is None
    assert verify_evidence(vs, CHAIN, ev, verify)
    assert not verify_evidence(vs, CHAIN, Evidence(a, a), verify)
    assert not verify_evidence(vs, CHAIN, Evidence(a, precommit(A2, 3, 0, None)), verify)
    assert not verify_evidence(vs, CHAIN, Evidence(a, prevote(A3, 3, 0, None)), verify)


def test_durable_state_round_trips_and_refuses_corruption():
    state = DurableState(
        height=9,
        round=2,
        step=Step.PRECOMMIT,
        locked_round=1,
        locked_value=b"v",
        valid_round=2,
        valid_value=b"w",
        last_proposal=ProposalRecord(9, 1, 0, b"i" * 32, b"s"),
        last_prevote=prevote(A1, 9, 2, b"w" * 32),
        last_precommit=precommit(A1, 9, 2, None),
        valid_polka=((A2, b"sig-2"), (A3, b"sig-3")),
    )
    assert DurableState.from_bytes(state.to_bytes()) == state
    with pytest.raises(ConsensusError):
        DurableState.from_bytes(state.to_bytes()[:-3])
    with pytest.raises(ConsensusError):
        DurableState.from_bytes(b"\x93\x02\x01\x01")


def test_valset_updates_decided_at_h_take_effect_at_h_plus_delay():
    assert VALSET_DELAY == 2
    genesis = valset([1, 1, 1, 1])
    schedule = ValidatorSchedule(1, genesis)
    assert schedule.for_height(2) is genesis and schedule.for_height(3) is None
    added = ValidatorUpdate(address(5), pub_key(address(5)), 1)
    schedule.record(1, [added])
    assert schedule.for_height(2) is genesis
    three = schedule.for_height(3)
    assert three.get(address(5)) is not None and three.total_power == 5
    schedule.record(2, [ValidatorUpdate(A1, b"", 0)])
    assert schedule.for_height(3) is three and schedule.for_height(4).get(A1) is None
    with pytest.raises(ConsensusError):
        schedule.record(4)  # block 3 was never recorded
    schedule.prune(4)
    assert schedule.for_height(2) is None and schedule.for_height(4) is not None
