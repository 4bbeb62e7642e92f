"""The validator-set adapter between the ledger and consensus: ledger validators as consensus
`ValidatorSet`s, the driver's `ValidatorSchedule` rebuilt from the chain and kept up to date
after each commit, and the validator keys the driver sends to and the peer allow-list admits.

`ValidatorSets.allowed_keys()` (the peer allow-list's dynamic part) is the keys of the sets of
the next two heights: a new validator may connect as soon as the change that adds it is
committed, two heights before it signs. `key_of(address)` keeps every key seen, so a message
to a validator that has since left still finds its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consensus.types import Validator, ValidatorSchedule, ValidatorSet, ValidatorUpdate
from ledger.chain import Chain
from ledger.crypto import address_from_public_key
from ledger.ops.evidence import MAX_EVIDENCE_AGE


def consensus_set(validators: Sequence[Any]) -> ValidatorSet:
    """A consensus `ValidatorSet` from ledger validators (public_key, power)."""
    return ValidatorSet.of(
        Validator(address_from_public_key(v.public_key), v.public_key, v.power)
        for v in validators
        if v.power > 0
    )


def updates_decided_at(chain: Chain, height: int) -> tuple[ValidatorUpdate, ...]:
    """The validator changes the ledger recorded as decided in block `height`."""
    return tuple(
        ValidatorUpdate(address_from_public_key(v.public_key), v.public_key, v.power)
        for change in chain.state.validator_set.pending
        if change.decided_height == height
        for v in change.changes
    )


def schedule_from_chain(chain: Chain) -> ValidatorSchedule:
    """The schedule for heights up to chain.height + 2, rebuilt from the ledger on start.

    The chain puts a change decided at H in force at the start of block H + VALSET_DELAY
    (`ledger.ops.governance.promote_validator_changes`), so after block h is committed the
    ledger's validators are the set in force at h, and its pending changes are those decided
    at h - 1 (in force at h + 1) and at h (in force at h + 2). The sets of the past heights
    the evidence window needs (down to h - MAX_EVIDENCE_AGE) come from the chain's
    validator-set history (`Chain.validator_history`, loaded when the chain opened: no block
    is read here), so a restarted validator verifies evidence from before its restart."""
    height = chain.height
    if height == 0:
        # genesis: heights 1 and 2, nothing pending
        return ValidatorSchedule(1, consensus_set(chain.state.validator_set.validators))
    points = [(p.height, consensus_set(p.validators)) for p in chain.validator_history]
    schedule = ValidatorSchedule.from_history(points, known_until=height)
    schedule.record(height - 1, updates_decided_at(chain, height - 1))
    schedule.record(height, updates_decided_at(chain, height))
    return schedule


class ValidatorSets:
    """The schedule of the chain's validator sets and the keys of their members."""

    def __init__(self, chain: Chain) -> None:
        self._chain = chain
        self.schedule = schedule_from_chain(chain)
        self._keys: dict[bytes, bytes] = {}  # validator address -> public key (all seen)
        self._allowed: frozenset[bytes] = frozenset()
        self.learn_keys(chain.height + 1)
        self.learn_keys(chain.height + 2)

    def record_commit(self, height: int) -> None:
        """Block `height` is committed: the changes it decided join the schedule."""
        self.schedule.record(height, updates_decided_at(self._chain, height))
        # Kept back MAX_EVIDENCE_AGE heights: evidence that old is verified against them.
        self.schedule.prune(height - MAX_EVIDENCE_AGE)

    def learn_keys(self, height: int) -> None:
        # `_keys` (address -> key, for send_to) keeps every key seen; `_allowed` only the
        # sets of the next two heights (recomputed when the schedule learns `height`).
        vset = self.schedule.for_height(height)
        if vset is not None:
            for v in vset.validators:
                self._keys[v.address] = v.pub_key
        chain_height = self._chain.height
        sets = (self.schedule.for_height(h) for h in (chain_height + 1, chain_height + 2))
        self._allowed = frozenset(v.pub_key for s in sets if s is not None for v in s.validators)

    def key_of(self, address: bytes) -> bytes | None:
        """The public key of the validator with this address (any set seen), or None."""
        return self._keys.get(address)

    def allowed_keys(self) -> frozenset[bytes]:
        """Public keys of the validators of the sets in force now and next (heights
        chain.height + 1 and + 2), for the peer allow-list: a validator added by a decided
        change is allowed as soon as the change is committed (two heights before it signs);
        one removed stops being allowed once its last height is committed."""
        return frozenset(self._allowed)
