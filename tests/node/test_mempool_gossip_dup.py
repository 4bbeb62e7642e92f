"""A transaction gossiped again (the same bytes, still waiting) is refused as
ALREADY_IN_MEMPOOL without being decoded again; other bytes with the same id still are."""

from __future__ import annotations

import dataclasses

import node.mempool as mempool_module
from ledger.codes import Code
from ledger.tx import Signature, decode_signed_tx, encode_signed_tx
from tests.node.test_mempool import pool, state, transfer, view  # noqa: F401 (fixture)


def test_repeated_gossip_is_not_decoded_again(state, monkeypatch):  # noqa: F811
    decoded = []
    real = mempool_module.decode_signed_tx

    def counting(raw):
        decoded.append(raw)
        return real(raw)

    monkeypatch.setattr(mempool_module, "decode_signed_tx", counting)
    mp = pool()
    raw = transfer("alice", 0, "bob", 5)
    assert mp.admit(raw, view(state)).code == 0
    tx_id = decode_signed_tx(raw).tx_id
    for _ in range(3):
        again = mp.add_gossiped(raw, view(state))
        assert (again.code, again.tx_id) == (Code.ALREADY_IN_MEMPOOL, tx_id)
    assert decoded == [raw]
    # The same id with other (forged) signature bytes is decoded and judged as before.
    tx = decode_signed_tx(raw)
    forged = encode_signed_tx(
        dataclasses.replace(tx, signatures=(Signature(tx.signatures[0].public_key, b"\x01" * 64),))
    )
    assert mp.add_gossiped(forged, view(state)).code == Code.ALREADY_IN_MEMPOOL
    assert decoded == [raw, forged]
    # Gone from the pool (committed or evicted): decoded and admitted again as new.
    mp.evict(tx_id)
    assert mp.admit(raw, view(state)).code == 0
    assert decoded == [raw, forged, raw]


def test_knows_waiting_and_recently_committed_bytes_only(state):  # noqa: F811
    from tests.node.test_mempool import commit

    mp = pool(verified_cache=2)
    raw = transfer("alice", 0, "bob", 5)
    other = transfer("bob", 0, "alice", 1)
    assert not mp.knows(raw)  # never seen
    assert mp.check(raw, view(state)).code == 0
    assert not mp.knows(raw)  # verified, but neither waiting nor committed
    assert mp.admit(raw, view(state)).code == 0 and mp.knows(raw)
    receipts = commit(state, [raw]).receipts
    mp.remove_committed([r.tx_id for r in receipts], view(state, 3))
    assert len(mp) == 0 and mp.knows(raw)  # a late gossip copy is dropped unseen
    assert not mp.knows(other)
    # Both memories are bounded: once the verified entry is forgotten, so is the shortcut.
    for name in ("bob", "carol"):
        mp.check(transfer(name, 0, "alice", 1), view(state, 3))
    assert not mp.knows(raw)


def test_gossip_with_a_committed_nonce_is_refused_without_verifying(state, monkeypatch):  # noqa: F811
    from tests.node.test_mempool import commit

    verified = []
    real = mempool_module.verify_tx_signatures
    monkeypatch.setattr(
        mempool_module, "verify_tx_signatures", lambda tx: verified.append(tx) or real(tx)
    )
    first = transfer("alice", 0, "bob", 5)
    commit(state, [first])  # committed through a block this pool never saw
    # Another signing of the same nonce: a stale copy, refused before any signature check.
    stale = transfer("alice", 0, "carol", 7)
    mp = pool()
    gossiped = mp.add_gossiped(stale, view(state, 3))
    assert (gossiped.code, gossiped.codespace) == (Code.NONCE_USED, "ledger")
    assert verified == [] and len(mp) == 0
    # A client keeps the ledger's order of checks: its signatures are verified first.
    assert mp.admit(stale, view(state, 3)).code == Code.NONCE_USED
    assert len(verified) == 1
    # A gossiped transaction with a current nonce is verified and admitted as before.
    fresh = transfer("alice", 1, "bob", 1)
    assert mp.add_gossiped(fresh, view(state, 3)).code == 0
    assert len(verified) == 2


def test_gossip_checks_what_makes_a_transaction_includable_not_its_compliance(state):  # noqa: F811
    from tests.node.test_mempool import commit

    mp = pool()
    # A transfer beyond the balance: a client is refused with the ledger's code; a peer's copy
    # is admitted, and the block records the same refusal (nonce consumed, nothing moved).
    overdraft = transfer("alice", 0, "bob", 10_001)
    assert mp.admit(overdraft, view(state)).code == Code.INSUFFICIENT_BALANCE
    assert mp.add_gossiped(overdraft, view(state)).code == 0
    (receipt,) = commit(state, [t.raw for t in mp.reap(10, 10**6)]).receipts
    assert receipt.code == Code.INSUFFICIENT_BALANCE and receipt.executed
    mp.remove_committed([receipt.tx_id], view(state, 3))
    assert len(mp) == 0
    # What would make a block invalid is still refused: an unknown sender, a foreign key.
    assert mp.add_gossiped(transfer("mallory", 0, "bob", 5), view(state, 3)).code == (
        Code.ACCOUNT_NOT_FOUND
    )
    by_bob = transfer("alice", 1, "bob", 5, signer="bob")
    assert mp.add_gossiped(by_bob, view(state, 3)).code == Code.SENDER_NOT_SIGNED
    # Nonces: the next one is ready, a later one parks until the gap is filled.
    later = mp.add_gossiped(transfer("alice", 3, "bob", 1), view(state, 3))
    assert later.code == 0 and later.log.startswith("parked")
    assert mp.reap(10, 10**6) == []
    assert mp.add_gossiped(transfer("alice", 1, "bob", 1), view(state, 3)).code == 0
    assert mp.add_gossiped(transfer("alice", 2, "bob", 1), view(state, 3)).code == 0
    assert [t.body.nonce for t in mp.reap(10, 10**6)] == [1, 2, 3]
