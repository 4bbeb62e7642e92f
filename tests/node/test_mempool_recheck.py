"""The recheck after a block, scoped to the accounts the block wrote (`remove_committed(...,
changes=)`, what the driver passes), drops exactly what the walk over every waiting sender
drops: twin pools take the same random traffic -- admissions, reaped blocks, blocks holding
another copy of a waiting nonce (committed elsewhere under another id), empty blocks -- one
rechecking every sender, the other only those the block's changes name; they must stay
identical. And the recheck's verdict on a moved sender's next transaction
(`can_be_in_block`, no dry run of the operation) is the ledger's `executed` flag."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.execute import check_transaction
from node.mempool import Mempool, can_be_in_block
from tests.node.test_mempool import CHAIN_ID, commit, key, signed, transfer, view
from tests.node.test_mempool_defence import VASP_A, squat_world
from tests.node.test_mempool_properties import LIMITS, SENDERS, investor_tx

INVESTORS = tuple(s for s in SENDERS if s != VASP_A)

action = st.one_of(
    st.tuples(st.just("gossip"), st.sampled_from(INVESTORS), st.integers(0, 3), st.integers(0, 1)),
    st.tuples(st.just("gossip"), st.sampled_from(INVESTORS), st.integers(0, 3), st.integers(0, 1)),
    st.tuples(st.just("block"), st.integers(0, 3)),
    st.tuples(st.just("foreign"), st.sampled_from(INVESTORS)),
    st.tuples(st.just("empty"), st.just(0)),
)


def same(a: Mempool, b: Mempool) -> None:
    assert list(a.verified_ids) == list(b.verified_ids)
    assert {s: w.base for s, w in a._book.senders.items()} == {
        s: w.base for s, w in b._book.senders.items()
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=10, max_size=50))
def test_scoped_recheck_equals_the_full_walk(actions):
    state = squat_world(3)
    full, scoped = Mempool(LIMITS, CHAIN_ID), Mempool(LIMITS, CHAIN_ID)
    height = 2
    for act in actions:
        kind = act[0]
        if kind == "gossip":
            _, sender, offset, variant = act
            address = key(sender).address
            nonce = full._book.expected_nonce(address, state.accounts[address].nonce) + offset
            raw = investor_tx(sender, nonce, variant)
            a = full.admit(raw, view(state, height))
            b = scoped.admit(raw, view(state, height))
            assert (a.code, a.tx_id) == (b.code, b.tx_id)
            continue
        if kind == "block":
            txs = full.reap(act[1], 10**9)
            assert [t.tx_id for t in txs] == [t.tx_id for t in scoped.reap(act[1], 10**9)]
        elif kind == "foreign":
            # The sender's next nonce, committed under another id than the one waiting.
            address = key(act[1]).address
            nonce = state.accounts[address].nonce
            txs = [investor_tx(act[1], nonce, 2)]
        else:
            txs = []
        result = commit(state, txs, height)
        height += 1
        ids = [r.tx_id for r in result.receipts]
        dropped_full = full.remove_committed(ids, view(state, height))
        dropped_scoped = scoped.remove_committed(ids, view(state, height), changes=result.changes)
        assert sorted(dropped_full) == sorted(dropped_scoped)
        same(full, scoped)


def test_a_nonce_committed_elsewhere_drops_the_waiting_copy():
    state = squat_world(3)
    pool = Mempool(LIMITS, CHAIN_ID)
    waiting = investor_tx("alice", 0, 0)
    assert pool.admit(waiting, view(state, 2)).code == 0
    result = commit(state, [investor_tx("alice", 0, 2)], 2)  # the same nonce, another id
    ids = [r.tx_id for r in result.receipts]
    dropped = pool.remove_committed(ids, view(state, 3), changes=result.changes)
    assert len(dropped) == 1 and len(pool) == 0


@settings(max_examples=60, deadline=None)
@given(
    sender=st.sampled_from(("alice", "bob", "nobody")),
    signer=st.sampled_from((None, "bob", "carol")),
    offset=st.sampled_from((-1, 0, 1)),
    amount=st.sampled_from((5, 10**12)),  # the second is refused by the operation
    chain=st.sampled_from((CHAIN_ID, "another-chain")),
)
def test_can_be_in_block_is_the_dry_runs_executed_flag(sender, signer, offset, amount, chain):
    """The recheck's verdict without the operation's dry run agrees with the ledger's."""
    state = squat_world(0)
    commit(state, [transfer("alice", 0, "bob", 1)], 2)  # alice's next nonce is 1
    ctx = view(state, 3).ctx
    account = state.accounts.get(key(sender).address)
    nonce = max(0, (account.nonce if account is not None else 0) + offset)
    args = {"instrument": "PKR", "to": key("carol").address, "amount": amount}
    tx = signed(sender, nonce, "transfer", args, chain_id=chain, signer=signer)
    expected = check_transaction(state, tx, ctx, verified=True).executed
    assert can_be_in_block(state, ctx, tx) == expected
