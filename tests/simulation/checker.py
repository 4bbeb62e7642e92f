"""The invariants a run must keep, checked as events happen.

- SAFE:     no two honest replicas decide different values at one height (checked at every
            decision and every block handed over by sync).
- CERT:     every decision's value hashes to its value id, and its commit certificate is for
            that height and value and is accepted by `verify_commit` against the validator set.
- LIVE:     once faults stop (`heal_ms`), every honest replica reaches the target height
            within the stated bound (checked by the simulator at the end of the run).
- EVIDENCE: evidence an honest replica reports names two votes by one validator for the same
            height, round and type with different value ids, both validly signed, and only
            ever accuses a byzantine validator; and when an honest replica received both
            halves of a double vote while at that height, it reports evidence naming the
            double voter.

Findings are `Violation` records, not exceptions, so a run can report everything it saw
together with the seed that reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from consensus.types import (
    Decision,
    Evidence,
    ValidatorSet,
    Vote,
    verify_commit,
    verify_evidence,
    vote_signing_bytes,
)

from .values import value_id as compute_value_id


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str  # "SAFE" | "CERT" | "LIVE" | "EVIDENCE"
    time_ms: int
    detail: str


@dataclass(slots=True)
class _DoubleVote:
    """Conflicting votes by one validator that reached one honest replica incarnation."""

    value_ids: set = field(default_factory=set)
    at_height: bool = True  # every copy arrived while the replica was at the vote's height


class Checker:
    def __init__(
        self,
        chain_id: str,
        valset: ValidatorSet,
        verify: Callable[[bytes, bytes, bytes], bool],
        byzantine_addresses: frozenset[bytes],
    ) -> None:
        self._chain_id = chain_id
        self._valset = valset
        self._verify = verify
        self._byzantine = byzantine_addresses
        self.violations: list[Violation] = []
        # height -> (value_id, replica name) of the first honest decision at that height
        self._decided: dict[int, tuple[bytes, str]] = {}
        self._forked_heights: set[int] = set()
        # (replica name, incarnation, height, round, vote type, validator) -> what arrived
        self._double_votes: dict[tuple, _DoubleVote] = {}
        # replica name -> validators it reported evidence against
        self.accused: dict[str, set[bytes]] = {}
        self.decisions_checked = 0

    def _fail(self, kind: str, now: int, detail: str) -> None:
        self.violations.append(Violation(kind, now, detail))

    # -- decisions ------------------------------------------------------------------------

    def check_certificate(self, now: int, replica: str, decision: Decision) -> bool:
        commit = decision.commit
        problems = []
        if compute_value_id(decision.value) != decision.value_id:
            problems.append("value does not hash to value_id")
        if commit.height != decision.height or commit.value_id != decision.value_id:
            problems.append(
                f"commit is for height {commit.height} value {commit.value_id.hex()[:12]}"
            )
        if not verify_commit(self._valset, self._chain_id, commit, self._verify):
            problems.append("verify_commit refuses the certificate")
        for problem in problems:
            self._fail("CERT", now, f"{replica} height {decision.height}: {problem}")
        return not problems

    def on_decision(self, now: int, replica: str, honest: bool, decision: Decision) -> None:
        self.decisions_checked += 1
        self.check_certificate(now, replica, decision)
        if honest:
            self.on_honest_block(now, replica, decision.height, decision.value_id)

    def on_honest_block(self, now: int, replica: str, height: int, value_id: bytes) -> None:
        first = self._decided.setdefault(height, (value_id, replica))
        if first[0] != value_id and height not in self._forked_heights:
            self._forked_heights.add(height)
            self._fail(
                "SAFE",
                now,
                f"height {height}: {first[1]} decided {first[0].hex()[:12]}, "
                f"{replica} decided {value_id.hex()[:12]}",
            )

    # -- evidence -------------------------------------------------------------------------

    def _signed_by(self, vote: Vote) -> bool:
        validator = self._valset.get(vote.validator)
        if validator is None:
            return False
        data = vote_signing_bytes(
            self._chain_id, vote.vote_type, vote.height, vote.round, vote.value_id
        )
        return self._verify(validator.pub_key, data, vote.signature)

    def on_evidence(self, now: int, replica: str, evidence: Evidence) -> None:
        a, b = evidence.vote_a, evidence.vote_b
        same_slot = (a.validator, a.height, a.round, a.vote_type) == (
            b.validator,
            b.height,
            b.round,
            b.vote_type,
        )
        if not same_slot or a.value_id == b.value_id:
            self._fail("EVIDENCE", now, f"{replica} reported votes that do not conflict")
            return
        if not (self._signed_by(a) and self._signed_by(b)):
            self._fail("EVIDENCE", now, f"{replica} reported evidence with a bad signature")
            return
        if not verify_evidence(self._valset, self._chain_id, evidence, self._verify):
            self._fail("EVIDENCE", now, f"{replica} reported evidence verify_evidence refuses")
        if a.validator not in self._byzantine:
            self._fail("EVIDENCE", now, f"{replica} accused honest {a.validator.hex()[:12]}")
        self.accused.setdefault(replica, set()).add(a.validator)

    def on_vote_delivered(
        self, replica: str, incarnation: int, current_height: int, vote: Vote
    ) -> None:
        """Track votes from byzantine validators reaching an honest replica."""
        if vote.validator not in self._byzantine:
            return
        key = (replica, incarnation, vote.height, vote.round, int(vote.vote_type), vote.validator)
        seen = self._double_votes.setdefault(key, _DoubleVote())
        seen.value_ids.add(vote.value_id)
        seen.at_height = seen.at_height and current_height == vote.height

    def check_evidence_reached(self, now: int) -> None:
        """Run at the end: each double vote an honest replica saw whole is in its evidence."""
        missed: dict[tuple[str, bytes], int] = {}
        for (replica, _inc, height, _round, _type, validator), seen in sorted(
            self._double_votes.items()
        ):
            if len(seen.value_ids) < 2 or not seen.at_height:
                continue
            if validator not in self.accused.get(replica, set()):
                missed.setdefault((replica, validator), height)
        for (replica, validator), height in sorted(missed.items()):
            self._fail(
                "EVIDENCE",
                now,
                f"{replica} saw a double vote by {validator.hex()[:12]} at height {height} "
                "but reported no evidence",
            )

    @property
    def double_votes_seen(self) -> int:
        return sum(1 for seen in self._double_votes.values() if len(seen.value_ids) >= 2)
