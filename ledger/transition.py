"""The state transition of one block, read top to bottom as its specification.

`transition_block` is the one function both sides of consensus run: the proposer, which
assembles a block from candidate transactions (`ProposeBlock`), and every validator, which
checks a proposed block (`CheckBlock`). The steps, in order:

0. protocol version: the version block tip.height + 1 runs under (ledger/protocol.py). One this
   code does not know stops the node before anything changes (`UnsupportedProtocol`); a
   scheduled upgrade due at this height comes into force first, so everything below runs
   under the new rules.
1. header links: chain id, height (tip + 1), prev_hash (tip's hash), time strictly after the
   tip's. A proposer makes them so; a validator refuses a block that breaks one.
2. validator-set promotion: the changes decided at or before height - VALSET_DELAY come into
   force (inside the block, so an abandoned block forgets them too); the set's hash is the
   header's `validators_hash`.
3. evidence: each piece becomes a misbehaviour record. A proposer keeps only the pieces that
   are well formed, in the height window and not yet on chain; a validator refuses a block
   holding any other.
4. transactions, in order (ledger/execute.py). A proposer leaves out those that cannot be in a
   block at all (bad signature, wrong nonce, ...) and reports them as dropped; a validator
   refuses a block holding one.
5. state root: the changes go into the state tree; its root is the header's `app_hash`.
6. results: `results_hash` over the receipts.

A validator's block must agree with steps 5 and 6 too; when it does not, `BlockMismatch` (an
`InvalidBlock`) is raised AFTER the tree was changed, carrying the changes so the caller
(`ledger.chain.Chain`, which owns the savepoint and the tree) can put both back. Every other
refusal is raised before the tree changes, so rolling back the state's savepoint is enough.

The state and tree are changed on return; the caller opened a savepoint on the state before
(`Chain` keeps it until commit or abandon). No I/O, no clock: the block time is the header's
(a validator) or the proposer's argument.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from consensus.errors import LocalProtocolError
from ledger.block import (
    Block,
    Header,
    check_txs_hash,
    compute_evidence_hash,
    compute_results_hash,
    compute_txs_hash,
    compute_validators_hash,
)
from ledger.codes import InvalidBlock
from ledger.commitment import StateTree
from ledger.execute import apply_transactions
from ledger.ops.evidence import apply_evidence, select_evidence
from ledger.ops.governance import VALSET_DELAY, promote_validator_changes
from ledger.protocol import LATEST_VERSION, UnsupportedProtocol
from ledger.state import State
from ledger.types import BlockContext, Event, Receipt


class BrokenInvariant(LocalProtocolError, AssertionError):
    """A rule the ledger itself broke while running a block (e.g. money not conserved): a bug
    of ours, never the proposer's doing, so the node stops loudly rather than commit it."""


class BlockMismatch(InvalidBlock):
    """A validator's block whose app_hash or results_hash is not what executing it gives;
    `changes` went into the tree already (see the module docstring)."""

    def __init__(self, message: str, changes: dict[bytes, bytes | None]) -> None:
        super().__init__(message)
        self.changes = changes


@dataclass(frozen=True, slots=True)
class Tip:
    """The committed block the next one must follow."""

    chain_id: str
    height: int
    block_hash: bytes  # the genesis hash at height 0
    time_ms: int


@dataclass(frozen=True, slots=True)
class ProposeBlock:
    """A proposer's inputs: candidate transactions and evidence, its clock's time, itself."""

    txs: Sequence[bytes]
    time_ms: int
    proposer: bytes
    evidence: Sequence[bytes] = ()


@dataclass(frozen=True, slots=True)
class CheckBlock:
    """A validator's input: the proposed block, whose every header field is checked."""

    block: Block


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """What a block did: the block itself (as proposed, or as assembled), one receipt per
    included transaction, the encoded state changes, the transactions a proposer left out,
    and the block's own `misbehaviour` events."""

    block: Block
    receipts: tuple[Receipt, ...]
    changes: dict[bytes, bytes | None]
    dropped: tuple[Receipt, ...]
    evidence_events: tuple[Event, ...]


def transition_block(
    state: State,
    tree: StateTree,
    tip: Tip,
    work: ProposeBlock | CheckBlock,
    *,
    verified: Container[bytes] = (),
) -> BlockOutcome:
    """Run block tip.height + 1 on `state` and `tree` (see the module docstring).

    `verified`: ids of transactions whose exact signed bytes the caller already verified (the
    mempool does so once); their signatures are not checked again."""
    proposing = isinstance(work, ProposeBlock)
    height = tip.height + 1

    # 0. Protocol version.
    version = state.protocol.version_at(height)
    if version > LATEST_VERSION:
        raise UnsupportedProtocol(height, version)
    activated = state.protocol.activated(height)
    if activated is not None:
        state.put_protocol(activated)

    # 1. Header links.
    if proposing:
        time_ms = max(work.time_ms, tip.time_ms + 1)  # header time strictly increases
        claimed = None
    else:
        claimed = work.block.header
        check_header_links(tip, claimed)
        check_txs_hash(work.block)
        time_ms = claimed.time_ms
    ctx = BlockContext(tip.chain_id, height, time_ms)

    # 2. Validator-set promotion.
    promote_validator_changes(state, height - VALSET_DELAY)
    validators_hash = compute_validators_hash(state.validator_set.validators)
    if claimed is not None and claimed.validators_hash != validators_hash:
        raise InvalidBlock(
            f"block {height}: validators_hash is not the set in force at that height"
        )

    # 3. Evidence.
    if proposing:
        evidence = select_evidence(state, work.evidence, height)
    else:
        evidence = work.block.evidence
    evidence_events = apply_evidence(state, evidence, height)

    # 4. Transactions; money is conserved (checked on the block's own writes).
    txs = work.txs if proposing else work.block.txs
    token = state.savepoint()
    try:
        result = apply_transactions(state, txs, ctx, verified=verified, drop_invalid=proposing)
        unbalanced = state.unbalanced_supply_since(token)
    finally:
        state.release(token)  # the caller's savepoint still covers these writes
    if unbalanced:
        raise BrokenInvariant(f"block {height} does not conserve money: {'; '.join(unbalanced)}")

    # 5. State root.
    app_hash = tree.apply(result.changes)

    # 6. Results.
    results_hash = compute_results_hash(result.receipts)

    if claimed is None:
        header = Header(
            chain_id=tip.chain_id,
            height=height,
            time_ms=time_ms,
            prev_hash=tip.block_hash,
            txs_hash=compute_txs_hash(result.included),
            app_hash=app_hash,
            results_hash=results_hash,
            proposer=work.proposer,
            validators_hash=validators_hash,
            evidence_hash=compute_evidence_hash(evidence),
        )
        block = Block(header, result.included, tuple(evidence))
    else:
        if app_hash != claimed.app_hash:
            raise BlockMismatch(
                f"block {height}: app_hash {claimed.app_hash.hex()} but executing gives "
                f"{app_hash.hex()}",
                result.changes,
            )
        if results_hash != claimed.results_hash:
            raise BlockMismatch(
                f"block {height}: results_hash does not match the receipts of its transactions",
                result.changes,
            )
        block = work.block
    return BlockOutcome(
        block, result.receipts, result.changes, result.dropped, tuple(evidence_events)
    )


def check_header_links(tip: Tip, header: Header) -> None:
    """`InvalidBlock` unless `header` follows `tip`: chain, height, prev_hash, time."""
    if header.chain_id != tip.chain_id:
        raise InvalidBlock(f"block for chain {header.chain_id!r}, this is {tip.chain_id!r}")
    if header.height != tip.height + 1:
        raise InvalidBlock(f"block height {header.height}, expected {tip.height + 1}")
    if header.prev_hash != tip.block_hash:
        raise InvalidBlock(f"block {header.height}: prev_hash is not the last block's hash")
    if header.time_ms <= tip.time_ms:
        raise InvalidBlock(
            f"block {header.height}: time {header.time_ms} is not after {tip.time_ms}"
        )
