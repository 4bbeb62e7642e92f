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
