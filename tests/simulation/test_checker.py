"""The checker must see what it claims to see: forks, bad certificates, false or missing
evidence. Each test builds the inputs by hand (signatures from the fake scheme, certificates
assembled here, not by the core), so the expectations are independent of the core."""

from __future__ import annotations

from consensus.types import (
    Commit,
    Decision,
    Evidence,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
    vote_signing_bytes,
)

from .checker import Checker
from .signing import FakeScheme
from .values import make_value, value_id

CHAIN = "checker-test"


def setup(byzantine=()):
    scheme = FakeScheme()
    keys = [scheme.keypair(99, i) for i in range(4)]
    valset = ValidatorSet.of(Validator(k.address, k.pub_key, 10) for k in keys)
    checker = Checker(CHAIN, valset, scheme.verify, frozenset(keys[i].address for i in byzantine))
    return keys, checker


def vote(key, height, value, vote_type=VoteType.PRECOMMIT, round_=0):
    vid = value_id(value) if value is not None else None
    data = vote_signing_bytes(CHAIN, vote_type, height, round_, vid)
    return Vote(vote_type, height, round_, vid, key.address, key.sign(data))


def decision(keys, height, value, signers=(0, 1, 2)):
    precommits = sorted((vote(keys[i], height, value) for i in signers), key=lambda v: v.validator)
    commit = Commit(
        height, 0, value_id(value), tuple((v.validator, v.signature) for v in precommits)
    )
    return Decision(height, 0, value, value_id(value), commit)


def test_agreeing_decisions_with_quorum_certificates_pass():
    keys, checker = setup()
    value = make_value(1, 0, keys[0].address)
    for name in ("v0", "v1", "v2"):
        checker.on_decision(5, name, True, decision(keys, 1, value))
    assert checker.violations == []


def test_two_honest_replicas_deciding_differently_is_a_fork():
    keys, checker = setup()
    checker.on_decision(5, "v0", True, decision(keys, 3, make_value(3, 0, keys[0].address)))
    checker.on_decision(6, "v1", True, decision(keys, 3, make_value(3, 1, keys[1].address)))
    assert [v.kind for v in checker.violations] == ["SAFE"]
    assert "height 3" in checker.violations[0].detail


def test_a_byzantine_replica_deciding_differently_is_not_a_fork():
    keys, checker = setup(byzantine=(1,))
    checker.on_decision(5, "v0", True, decision(keys, 3, make_value(3, 0, keys[0].address)))
    checker.on_decision(6, "v1", False, decision(keys, 3, make_value(3, 1, keys[1].address)))
    assert checker.violations == []


def test_a_certificate_short_of_quorum_or_for_another_value_is_refused():
    keys, checker = setup()
    value = make_value(2, 0, keys[0].address)
    checker.on_decision(1, "v0", True, decision(keys, 2, value, signers=(0, 1)))  # 20 of 40
    other = decision(keys, 2, value)
    wrong_value = Decision(2, 0, b"tampered", other.value_id, other.commit)
    checker.on_decision(2, "v1", True, wrong_value)
    kinds = [v.kind for v in checker.violations]
    assert kinds == ["CERT", "CERT"]


def test_evidence_against_a_byzantine_validator_is_accepted_and_recorded():
    keys, checker = setup(byzantine=(3,))
    a = vote(keys[3], 4, make_value(4, 0, keys[3].address), VoteType.PREVOTE)
    b = vote(keys[3], 4, make_value(4, 0, keys[3].address, 1), VoteType.PREVOTE)
    first, second = sorted((a, b), key=lambda v: v.value_id)
    checker.on_evidence(10, "v0", Evidence(first, second))
    assert checker.violations == []
    assert checker.accused == {"v0": {keys[3].address}}


def test_evidence_against_an_honest_validator_or_not_conflicting_is_a_violation():
    keys, checker = setup(byzantine=(3,))
    a = vote(keys[0], 4, make_value(4, 0, keys[0].address), VoteType.PREVOTE)
    b = vote(keys[0], 4, None, VoteType.PREVOTE)
    checker.on_evidence(10, "v1", Evidence(b, a))
    same = vote(keys[3], 4, make_value(4, 0, keys[3].address))
    checker.on_evidence(11, "v1", Evidence(same, same))
    details = [v.detail for v in checker.violations]
    assert len(details) == 2
    assert "accused honest" in details[0] and "do not conflict" in details[1]


def test_a_double_vote_seen_whole_but_not_reported_is_a_violation():
    keys, checker = setup(byzantine=(3,))
    a = vote(keys[3], 4, make_value(4, 0, keys[3].address), VoteType.PREVOTE)
    b = vote(keys[3], 4, make_value(4, 0, keys[3].address, 1), VoteType.PREVOTE)
    for replica in ("v0", "v1"):
        checker.on_vote_delivered(replica, 0, 4, a)
        checker.on_vote_delivered(replica, 0, 4, b)
    checker.on_vote_delivered("v2", 0, 4, a)
    checker.on_vote_delivered("v2", 0, 5, b)  # second half arrived after v2 moved on
    first, second = sorted((a, b), key=lambda v: v.value_id)
    checker.on_evidence(20, "v0", Evidence(first, second))
    checker.check_evidence_reached(30)
    assert [v.detail.split()[0] for v in checker.violations] == ["v1"]
