"""Beyond the paper's lines: evidence, crash recovery, lagging and sync, the validator-set
delay, bounded buffers, and liveness with the retransmit timer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.core import CoreConfig
from consensus.types import (
    Commit,
    DurableState,
    Proposal,
    Step,
    Timeout,
    ValidatorSchedule,
    ValidatorUpdate,
    Vote,
    VoteType,
    verify_commit,
    verify_evidence,
)
from tests.consensus.harness import (
    CHAIN,
    Net,
    address,
    commit_for,
    make_core,
    precommit,
    prevote,
    proposal,
    pub_key,
    sent,
    valset,
    value_id,
    verify,
    votes_of,
)

A1, A2, A3, A4, A5 = (address(i) for i in (1, 2, 3, 4, 5))
VS = valset([1, 1, 1, 1])
V, W = b"block-v", b"block-w"
VID, WID = value_id(V), value_id(W)


def started(own=A1, **kw):
    core = make_core(own, VS, **kw)
    return core, core.start()


# ------------------------------------------------------------------ evidence


def test_double_vote_becomes_evidence_once_and_is_not_counted_twice():
    core, _ = started()
    core.step(prevote(A2, 1, 0, VID))
    ready = core.step(prevote(A2, 1, 0, WID))
    (ev,) = ready.evidence
    assert verify_evidence(VS, CHAIN, ev, verify)
    assert {ev.vote_a.value_id, ev.vote_b.value_id} == {VID, WID}
    assert core.step(prevote(A2, 1, 0, None)).evidence == ()  # same slot: once
    assert core.step(prevote(A2, 1, 0, WID)).evidence == ()
    # A2's power counted once: with A3 for W there is still no quorum of anything.
    core.step(prevote(A3, 1, 0, WID))
    assert core.current_step is Step.PROPOSE


def test_conflicting_vote_with_a_bad_signature_is_not_evidence():
    core, _ = started()
    core.step(prevote(A2, 1, 0, VID))
    forged = Vote(VoteType.PREVOTE, 1, 0, WID, A2, b"\x00" * 16)
    assert core.step(forged).evidence == ()
    assert core.stats.bad_signature == 1


# ------------------------------------------------------------------ crash recovery


def test_restored_core_resends_the_same_prevote_and_never_a_different_one():
    core, _ = started()
    ready = core.step(proposal(A2, 1, 0, V))
    durable = DurableState.from_bytes(ready.persist.to_bytes())
    (signed,) = votes_of(ready, VoteType.PREVOTE)
    restored = make_core(A1, VS, durable=durable, start_height=1)
    ready = restored.start()
    assert votes_of(ready, VoteType.PREVOTE) == [signed]  # same bytes, same signature
    assert restored.current_step is Step.PREVOTE
    # A different proposal for the same round (equivocating proposer) gets no new prevote,
    # and the propose timeout of that round cannot make it prevote nil either.
    assert votes_of(restored.step(proposal(A2, 1, 0, W)), VoteType.PREVOTE) == []
    assert votes_of(restored.on_timeout(Timeout(Step.PROPOSE, 1, 0, 0)), VoteType.PREVOTE) == []


def test_restored_proposer_resends_its_proposal_not_a_new_one():
    core = make_core(A2, VS)
    core.start()
    ready = core.propose_value(1, 0, V)
    (p,) = [m for m in sent(ready) if isinstance(m, Proposal)]
    restored = make_core(A2, VS, durable=ready.persist, start_height=1)
    # The value is not durable unless it is the valid value, so after a restart the proposer
    # cannot re-send it; it must not propose anything else either.
    ready = restored.start()
    assert ready.need_value is None
    assert [m for m in sent(ready) if isinstance(m, Proposal)] == []
    assert sent(restored.propose_value(1, 0, W)) == []
    assert restored.stats.refused_to_sign == 1
    assert p.value == V


def test_restored_proposer_reproposes_its_valid_value_with_the_durable_polka():
    """Regression: the polka behind the valid value was memory-only, so a proposer restarted
    after locking re-proposed without it and, with one validator dead, nobody could ever
    accept (line 28) -- rounds climbed forever."""
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    ready = None
    for a in (A2, A3):
        ready = core.step(prevote(a, 1, 0, VID))
    assert ready.persist.valid_round == 0
    assert [a for a, _ in ready.persist.valid_polka] == [A1, A2, A3]
    restored = make_core(A1, VS, durable=DurableState.from_bytes(ready.persist.to_bytes()))
    restored.start()
    restored.step(prevote(A2, 1, 3, None))
    ready = restored.step(prevote(A3, 1, 3, None))  # skip to round 3, where A1 proposes
    (p,) = [m for m in sent(ready) if isinstance(m, Proposal)]
    assert (p.round, p.value, p.pol_round) == (3, V, 0)
    relayed = [m for m in votes_of(ready, VoteType.PREVOTE) if m.round == 0]
    assert sorted(v.validator for v in relayed) == [A1, A2, A3]
    # A peer that never saw round 0 accepts the re-proposal from these messages alone.
    peer = make_core(A4, VS)
    peer.start()
    peer.step(prevote(A2, 1, 3, None))
    peer.step(prevote(A3, 1, 3, None))
    for m in sent(ready):
        peer.step(m)
    assert (peer._last_prevote.round, peer._last_prevote.value_id) == (3, VID)


def test_core_restored_behind_its_signing_history_refuses_to_sign():
    # The store lost a block (say a truncated WAL) but the durable guard says we signed at h2.
    signed = DurableState(
        height=2,
        round=0,
        step=Step.PRECOMMIT,
        last_prevote=prevote(A1, 2, 0, VID),
        last_precommit=precommit(A1, 2, 0, VID),
    )
    core = make_core(A1, VS, durable=signed, start_height=1)
    core.start()
    assert core.height == 1
    ready = core.step(proposal(A2, 1, 0, W))
    assert votes_of(ready, VoteType.PREVOTE) == [] and core.stats.refused_to_sign == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2), st.integers(0, 3)), max_size=40))
def test_no_conflicting_signature_across_any_crash_schedule(script):
    """Random inputs with crashes (restore from the last persisted state) in between: the
    node's own signatures never conflict for one (type, height, round)."""
    core, ready = started()
    durable = ready.persist
    signed: dict[tuple, Vote] = {}
    values = [V, W, b"block-x"]
    for op, a, r in script:
        other = (A2, A3, A4)[a]
        vid = value_id(values[a])
        if op == 0:
            ready = core.step(proposal(VS.proposer(1, r), 1, r, values[a]))
        elif op in (1, 2):
            ready = core.step(prevote(other, 1, r, vid if op == 1 else None))
        elif op in (3, 4):
            ready = core.step(precommit(other, 1, r, vid if op == 3 else None))
        elif op in (5, 6, 7):
            step = (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT)[op - 5]
            ready = core.on_timeout(Timeout(step, core.height, core.round, 0))
        elif op == 8:
            ready = core.propose_value(core.height, core.round, values[a])
        else:
            core = make_core(A1, VS, durable=durable, start_height=durable.height)
            ready = core.start()
        if ready.persist is not None:
            durable = ready.persist
        for m in sent(ready):
            if isinstance(m, Vote) and m.validator == A1:
                key = (m.vote_type, m.height, m.round)
                assert signed.setdefault(key, m) == m, f"conflicting vote for {key}"
            elif isinstance(m, Proposal) and m.proposer == A1:
                key = ("proposal", m.height, m.round)
                mine = (value_id(m.value), m.pol_round, m.signature)
                assert signed.setdefault(key, mine) == mine, f"conflicting proposal {key}"
        if ready.decisions:
            return


# ------------------------------------------------------------------ lagging and sync


def test_commit_for_current_height_with_the_value_decides_with_that_certificate():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    cert = commit_for([A2, A3, A4], 1, 0, V)
    (d,) = core.step(cert).decisions
    assert d.commit == cert and d.value == V


def test_commit_without_the_value_asks_to_sync_then_decides_when_the_block_arrives():
    core, _ = started()
    cert = commit_for([A2, A3, A4], 1, 0, V)
    ready = core.step(cert)
    assert ready.sync_needed == 1 and ready.decisions == ()
    assert core.step(commit_for([A2, A3, A4], 1, 0, V)).is_empty  # verified once
    (d,) = core.step(proposal(A2, 1, 0, V)).decisions
    assert d.commit == cert


def test_invalid_commit_is_dropped():
    core, _ = started()
    ready = core.step(commit_for([A2, A3], 1, 0, V))
    assert ready.sync_needed is None and core.stats.bad_signature == 1


def test_commit_for_a_higher_height_asks_to_sync_and_on_synced_resumes_after_it():
    core, _ = started()
    ready = core.step(commit_for([A2, A3, A4], 5, 0, V))
    assert ready.sync_needed == 5
    ready = core.on_synced(5)
    assert (core.height, core.round) == (6, 0)
    assert ready.persist.height == 6
    assert core.on_synced(3).is_empty  # already past


def test_more_than_a_third_two_heights_ahead_asks_to_sync():
    core, _ = started()
    assert core.step(prevote(A2, 3, 0, None)).sync_needed is None
    ready = core.step(prevote(A3, 3, 0, None))
    assert ready.sync_needed == 2


def test_one_height_ahead_asks_to_sync_only_after_the_retransmit_timer():
    core, _ = started(config=CoreConfig(retransmit_ms=50))
    core.step(prevote(A2, 2, 0, None))
    assert core.step(prevote(A3, 2, 0, None)).sync_needed is None
    ready = core.on_timeout(Timeout(Step.RETRANSMIT, 1, 0, 50))
    assert ready.sync_needed == 1
    assert Timeout(Step.RETRANSMIT, 1, 0, 50) in ready.timeouts  # keeps ticking
    assert core.on_timeout(Timeout(Step.RETRANSMIT, 1, 0, 50)).sync_needed == 1  # retried


def test_decided_validator_hands_its_commit_to_a_peer_voting_at_the_old_height():
    core, _ = started()
    core.step(proposal(A2, 1, 0, V))
    for a in (A2, A3):
        core.step(prevote(a, 1, 0, VID))
    for a in (A2, A3):
        ready = core.step(precommit(a, 1, 0, VID))
    (d,) = ready.decisions
    ready = core.step(prevote(A4, 1, 0, None))  # a laggard, still at height 1
    outs = [(o.message, o.to) for o in ready.messages]
    assert outs == [(d.commit, A4)]
    assert verify_commit(VS, CHAIN, d.commit, verify)
    assert core.step(precommit(A4, 1, 0, None)).messages == ()  # once per period


def _run_until_three_decide(net, lost):
    """Deliver everything except what `lost(dst, msg)` says is lost, until three decided."""
    while min(net.heights()[:3]) < 1:
        src, dst, msg = net.wire.popleft()
        if not lost(dst, msg):
            net.handle(dst, net.nodes[dst].core.step(msg))
    net.wire.clear()


def test_laggard_missing_precommits_decides_from_the_handed_over_commit():
    net = Net([1, 1, 1, 1], CoreConfig(retransmit_ms=100))
    net.start()
    laggard = net.addrs[3]
    _run_until_three_decide(
        net, lambda dst, m: dst == laggard and getattr(m, "vote_type", 0) == VoteType.PRECOMMIT
    )
    assert net.heights()[3] == 0 and net.nodes[laggard].core.current_step is Step.PRECOMMIT
    net.fire(laggard, Step.RETRANSMIT)  # it re-sends its precommit of height 1 ...
    net.deliver_all(limit=20)  # ... peers answer with the commit certificate
    first = net.nodes[net.addrs[0]].decided[0]
    assert net.nodes[laggard].decided[0].commit.value_id == first.value_id


def test_laggard_that_missed_everything_asks_to_sync_after_the_hand_off():
    net = Net([1, 1, 1, 1], CoreConfig(retransmit_ms=100))
    net.start()
    laggard = net.addrs[3]
    _run_until_three_decide(net, lambda dst, m: dst == laggard)
    net.fire(laggard, Step.PROPOSE)  # prevote nil at height 1: peers see an old vote
    net.deliver_all(limit=20)
    assert net.nodes[laggard].sync_needed == [1] and net.heights()[3] == 0


# ------------------------------------------------------------------ validator-set delay


def test_validator_added_at_height_1_votes_from_height_3():
    schedule = ValidatorSchedule(1, VS)
    schedule.record(1, [ValidatorUpdate(A5, pub_key(A5), 1)])
    core = make_core(A1, VS, provider=schedule.for_height, start_height=2)
    core.start()
    core.step(prevote(A5, 2, 0, None))
    assert core.stats.unknown_validator == 1  # not a member at height 2
    schedule.record(2)
    core.on_synced(2)
    assert core.height == 3 and core.valset.total_power == 5
    before = core.stats.accepted
    core.step(prevote(A5, 3, 0, None))
    assert core.stats.accepted == before + 1


# ------------------------------------------------------------------ bounded memory


def test_far_future_heights_and_rounds_are_not_stored():
    config = CoreConfig(height_window=2, round_window=3)
    core, _ = started(config=config)
    core.step(prevote(A2, 50, 0, None))
    assert core.stats.far_future == 1 and core._future == {}
    core.step(prevote(A2, 1, 10, None))  # beyond the round window: counted, not stored
    assert 10 not in core._rounds and core.round == 0
    core.step(prevote(A3, 1, 12, None))  # with A2 at >= 10: f + 1 at rounds >= 10
    assert core.round == 10


def test_per_validator_buffer_is_capped_and_unknown_validators_dropped():
    core, _ = started(config=CoreConfig(max_buffered_per_validator=3))
    for r in range(10):
        core.step(prevote(A2, 2, r, None))
    assert len(core._future[A2]) == 3 and core.stats.buffer_full == 7
    core.step(prevote(address(9), 2, 0, None))
    core.step(prevote(address(9), 1, 0, None))
    assert core.stats.unknown_validator == 2 and address(9) not in core._future


def test_buffered_messages_replay_at_their_height_and_old_rounds_are_pruned():
    core, _ = started()
    core.step(proposal(VS.proposer(2, 0), 2, 0, W))  # early proposal for height 2
    core.step(proposal(A2, 1, 0, V))
    for a in (A2, A3, A4):
        core.step(precommit(a, 1, 0, VID))
    ready = core.advance()
    assert core.height == 2 and 0 in core._rounds and list(core._rounds[0].proposals) == [WID]
    assert votes_of(ready, VoteType.PREVOTE)[0].value_id == WID
    assert core._future == {}


def test_rounds_kept_per_height_are_bounded():
    core, _ = started(config=CoreConfig(max_rounds_kept=4, round_window=100))
    for _ in range(1, 30):
        core.on_timeout(Timeout(Step.PRECOMMIT, 1, core.round, 0))
        core.step(prevote(A2, 1, 0, None))
    assert core.round == 29 and len(core._rounds) <= 5


def test_malformed_messages_are_dropped_not_raised():
    core, _ = started()
    bad = [
        Vote(VoteType.PREVOTE, 0, 0, None, A2, b""),
        Vote(VoteType.PREVOTE, 1, -1, None, A2, b""),
        Vote(VoteType.PREVOTE, 1, 0, b"", A2, b""),
        Vote(7, 1, 0, None, A2, b""),
        Proposal(1, 0, b"v", 0, A2, b""),  # pol_round must be < round
        Proposal(1, 0, "not bytes", -1, A2, b""),
        Vote(1.0, 1, 0, None, A2, b""),  # a float type would break struct.pack
        Vote(True, 1, 0, None, A2, b""),
        Commit(1, 0, VID, (([1], b""),)),  # unhashable signer
        Commit(1, 0, VID, [(A2, b"")]),  # not a tuple
    ]
    for m in bad:
        assert core.step(m).is_empty
    assert core.stats.malformed + core.stats.bad_signature == len(bad)


ANY_FIELD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.binary(max_size=40),
    st.text(max_size=5),
    st.sampled_from([A1, A2, A3, VID, 1, 2, -1, 0]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.lists(ANY_FIELD, min_size=7, max_size=7))))
def test_fuzz_peer_messages_never_raise(messages):
    """h11's rule for remote input: anything a peer sends is handled or dropped, never raised."""
    core, _ = started()
    for kind, f in messages:
        if kind == 0:
            msg = Vote(f[0], f[1], f[2], f[3], f[4], f[5])
        elif kind == 1:
            msg = Proposal(f[0], f[1], f[2], f[3], f[4], f[5])
        else:
            msg = Commit(f[0], f[1], f[2], (tuple(f[3:5]), tuple(f[5:7])))
        core.step(msg)
