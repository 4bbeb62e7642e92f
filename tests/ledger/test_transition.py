"""The block transition's own checks: money conservation is verified on every block, at a
cost proportional to the block, and a block that breaks it never becomes pending."""

from __future__ import annotations

import dataclasses

import pytest

from ledger import ops
from ledger.codes import Code
from ledger.transition import BrokenInvariant
from tests.ledger.test_chain import (
    DAY_MS,
    GENESIS_MS,
    Signer,
    commit_next,
    key,
    setup_txs,
    transfer,
    two_nodes,  # noqa: F401 (a fixture)
)


def _minting_transfer(original):
    """A broken `transfer` that credits the receiver a second time: money out of nowhere."""

    def broken(state, ctx, tx, args):
        events = original(state, ctx, tx, args)
        receiver = key("bob").address
        holding = state.holdings["PKR"][receiver]
        state.put_holding(
            "PKR", receiver, dataclasses.replace(holding, balance=holding.balance + 1)
        )
        return events

    return broken


def test_a_block_that_conserves_money_passes(two_nodes):  # noqa: F811
    proposer, validator = two_nodes
    signer = Signer()
    first = commit_next(proposer, setup_txs(signer))
    validator.commit(validator.execute_block(first.block), b"c1")
    pending = proposer.build_block(
        [transfer(signer, "alice", "bob", 2_500)], GENESIS_MS + 2 * DAY_MS, b"p" * 20
    )
    assert pending.receipts[0].code == Code.OK
    assert validator.execute_block(pending.block).header == pending.header
    token = validator.state.savepoint()  # an empty block's writes: nothing to balance
    assert validator.state.unbalanced_supply_since(token) == []
    validator.state.release(token)


@pytest.mark.parametrize("side", ["proposer", "validator"])
def test_money_from_nowhere_stops_the_block_and_changes_nothing(two_nodes, monkeypatch, side):  # noqa: F811
    proposer, validator = two_nodes
    signer = Signer()
    first = commit_next(proposer, setup_txs(signer))
    validator.commit(validator.execute_block(first.block), b"c1")
    block_txs = [transfer(signer, "alice", "bob", 2_500)]
    if side == "validator":
        proposed = proposer.build_block(block_txs, GENESIS_MS + 2 * DAY_MS, b"p" * 20).block
    chain = proposer if side == "proposer" else validator
    root = chain.app_hash
    monkeypatch.setitem(ops.OPERATIONS, "transfer", _minting_transfer(ops.OPERATIONS["transfer"]))
    with pytest.raises(BrokenInvariant, match="PKR: balances changed by 1, supply by 0"):
        if side == "proposer":
            chain.build_block(block_txs, GENESIS_MS + 2 * DAY_MS, b"p" * 20)
        else:
            chain.execute_block(proposed)
    assert chain.pending is None
    assert chain.app_hash == root
    assert chain.state.balance("PKR", key("bob").address) == 0
