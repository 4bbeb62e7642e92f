"""The evidence pool: double votes the consensus core reported, kept (bounded) until a block
of ours carries them, and the check of the evidence items of others' proposals.

The core reports two conflicting signed votes by one validator (`Ready.evidence`); the driver
hands each to `EvidencePool.record`, and puts each, as a block evidence item
(`ledger.ops.evidence`: the consensus wire bytes and the validator's public key), into its next
proposal (`items`). Before prevoting for a proposal, a validator verifies every item of it
(`verify_item`: `consensus.types.verify_evidence` against the validator set of the evidence's
height; the schedule keeps the sets of the last `MAX_EVIDENCE_AGE` heights for that, rebuilt
on start from the chain's validator-set history, `ledger/validator_history.py`); one it cannot
verify makes the proposal invalid. The ledger records each committed item in state (no
slashing) and refuses it a second time; a committed item leaves the pool
(`forget_committed`, after each commit).

Unknowable sets: a node whose store predates the validator-set history knows no set below
the height it was upgraded at. Refusing evidence about such a height would make every
proposal carrying it invalid to this node for up to `MAX_EVIDENCE_AGE` heights (defect 5 in
docs/RELIABILITY.md); instead the node checks all it can -- shape, one slot, conflicting
values, and both signatures by the key the item names (whose address the ledger checks) --
and accepts it. Only membership goes unchecked, and a double vote by a non-member can only
be signed by that key's own holder: it cannot be forged against anyone.
"""

from __future__ import annotations

import logging

from consensus.types import Evidence, Validator, ValidatorSchedule, ValidatorSet, verify_evidence
from consensus.wire import WireError, decode_message, encode_message
from ledger.chain import Chain
from ledger.codes import LedgerError
from ledger.crypto import hash256, verify_signature
from ledger.ops.evidence import decode_evidence_item, encode_evidence_item, recorded

# The driver's own log: these lines are the driver's decisions, filtered and read as such.
log = logging.getLogger("node.driver")

MAX_EVIDENCE_KEPT = 256


class EvidencePool:
    """Evidence to propose (`evidence`, oldest first) and the check of proposed items."""

    def __init__(self, chain: Chain, schedule: ValidatorSchedule, name: str) -> None:
        self._chain = chain
        self._schedule = schedule
        self._name = name
        self.evidence: list[Evidence] = []

    def record(self, evidence: Evidence) -> None:
        if evidence in self.evidence:
            return
        log.warning(
            "%s: evidence of double signing by %s at height %d round %d",
            self._name,
            evidence.vote_a.validator.hex(),
            evidence.vote_a.height,
            evidence.vote_a.round,
        )
        self.evidence.append(evidence)
        del self.evidence[:-MAX_EVIDENCE_KEPT]

    def item(self, evidence: Evidence) -> bytes | None:
        """The block item for `evidence`, or None when its height's set is no longer known."""
        vset = self._schedule.for_height(evidence.vote_a.height)
        member = None if vset is None else vset.get(evidence.vote_a.validator)
        if member is None:
            return None
        return encode_evidence_item(encode_message(evidence), member.pub_key)

    def items(self) -> list[bytes]:
        """The block items of the evidence kept, for our next proposal."""
        items = (self.item(ev) for ev in self.evidence)
        return [item for item in items if item is not None]

    def verify_item(self, raw: bytes) -> bool:
        """Is this block evidence item two conflicting votes, validly signed by the member of
        that height's validator set whose key it names?"""
        try:
            item = decode_evidence_item(raw)
            evidence = decode_message(item.evidence)
        except (LedgerError, WireError):
            return False
        if not isinstance(evidence, Evidence):
            return False
        vset = self._schedule.for_height(item.height)
        if vset is None and item.height <= self._chain.height:
            # Before this node's history ("Unknowable sets" above): all but membership.
            vset = ValidatorSet.of([Validator(item.validator, item.public_key, 1)])
        member = None if vset is None else vset.get(item.validator)
        if member is None or member.pub_key != item.public_key:
            return False
        return verify_evidence(vset, self._chain.chain_id, evidence, verify_signature)

    def forget_committed(self) -> None:
        """Drop the evidence the chain has recorded (after a commit)."""
        state = self._chain.state
        kept = []
        for evidence in self.evidence:
            item = self.item(evidence)
            if item is not None and recorded(state, hash256(item)) is None:
                kept.append(evidence)
        self.evidence = kept
