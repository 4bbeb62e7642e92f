"""The check of a proposed block before we prevote for it (the core's `validate_value` hook).

`ProposalCheck.validate(h, value)` decodes the block, refuses a time more than
`max_future_ms` ahead of our clock (on a test network with a genesis `block_time_step_ms`:
any time other than the previous block's + the step, see "Chain time" in docs/NODE.md),
verifies its evidence items (node/evidence_pool.py) and executes it with
`Chain.execute_block` (every transaction verified, reusing the mempool's verifications); the
verdict is cached per value for the height (our own proposal is remembered as valid). At most
one block is pending in the chain: a different proposal abandons it first.
"""

from __future__ import annotations

import logging

from ledger.block import Block, decode_block
from ledger.chain import Chain
from ledger.codes import InvalidBlock, LedgerError
from ledger.crypto import hash256
from node.evidence_pool import EvidencePool
from node.mempool import Mempool
from node.proposal_timer import BlockClock

# The driver's own log: these lines are the driver's decisions, filtered and read as such.
log = logging.getLogger("node.driver")


def abandon_pending(chain: Chain) -> None:
    """Drop the chain's pending block, if any (at most one block is pending)."""
    if chain.pending is not None:
        chain.abandon()


class ProposalCheck:
    """Verdicts on proposed values, cached for the current height."""

    def __init__(
        self,
        chain: Chain,
        mempool: Mempool,
        evidence: EvidencePool,
        clock: BlockClock,
        max_future_ms: int,
        name: str,
    ) -> None:
        self._chain = chain
        self._mempool = mempool
        self._evidence = evidence
        self._clock = clock
        self._max_future_ms = max_future_ms
        self._name = name
        self._verdicts: dict[bytes, bool] = {}
        self._verdict_height = 0

    def remember(self, value: bytes) -> None:
        """Our own proposal: valid (we built it), no need to execute it again."""
        self._verdicts[hash256(value)] = True

    def clear(self) -> None:
        """Forget the verdicts (a block was committed: a new height)."""
        self._verdicts.clear()

    def validate(self, height: int, value: bytes) -> bool:
        if height != self._verdict_height:
            self._verdicts.clear()
            self._verdict_height = height
        # Keyed by the hash of the exact bytes. (The value id, the block hash, would do as
        # well now that txs_hash covers every transaction byte, signatures included.)
        digest = hash256(value)
        cached = self._verdicts.get(digest)
        if cached is not None:
            return cached
        try:
            block = decode_block(value)
        except LedgerError:
            verdict = False
        else:
            verdict = self._check(height, block)
        self._verdicts[digest] = verdict
        return verdict

    def _check(self, height: int, block: Block) -> bool:
        chain = self._chain
        if height != chain.height + 1 or block.header.height != height:
            return False
        if self._clock.step_ms is not None:
            if block.header.time_ms != self._clock.next_time_ms():
                log.info("%s: proposal %d breaks the time step", self._name, height)
                return False
        elif block.header.time_ms > self._clock.clock_ms() + self._max_future_ms:
            log.info("%s: proposal %d too far in the future", self._name, height)
            return False
        for raw in block.evidence:
            if not self._evidence.verify_item(raw):
                log.info("%s: proposal %d holds evidence we cannot verify", self._name, height)
                return False
        pending = chain.pending
        if pending is not None and pending.block == block:
            return True
        abandon_pending(chain)
        try:
            chain.execute_block(block, verified=self._mempool.verified_for(block.txs))
        except (InvalidBlock, LedgerError) as exc:
            log.info("%s: refused proposal for height %d: %s", self._name, height, exc)
            return False
        return True
