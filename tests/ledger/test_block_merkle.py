"""The transactions' Merkle tree (`txs_hash`): RFC 6962 roots and audit paths, checked against
a direct transcription of the RFC's recursive definitions, and tampering refused."""

from __future__ import annotations

import pytest

from ledger.block import (
    compute_txs_hash,
    tx_inclusion_proof,
    tx_leaf_hash,
    verify_tx_inclusion,
)
from ledger.crypto import hash256


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(data: list[bytes]) -> bytes:
    """RFC 6962 2.1 MTH over leaf inputs d(i) = hash256(raw tx)."""
    if not data:
        return hash256(b"")
    if len(data) == 1:
        return hash256(b"\x00" + data[0])
    k = _k(len(data))
    return hash256(b"\x01" + mth(data[:k]) + mth(data[k:]))


def path(m: int, data: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 PATH(m, D[n])."""
    if len(data) == 1:
        return []
    k = _k(len(data))
    if m < k:
        return path(m, data[:k]) + [mth(data[k:])]
    return path(m - k, data[k:]) + [mth(data[:k])]


def raws(n: int) -> list[bytes]:
    return [b"tx-%d" % i * (i % 3 + 1) for i in range(n)]


def test_leaf_and_empty_root_follow_the_documented_formulas():
    assert tx_leaf_hash(b"abc") == hash256(b"\x00" + hash256(b"abc"))
    assert compute_txs_hash([]) == hash256(b"")
    assert compute_txs_hash([b"abc"]) == tx_leaf_hash(b"abc")
    a, b = tx_leaf_hash(b"a"), tx_leaf_hash(b"b")
    assert compute_txs_hash([b"a", b"b"]) == hash256(b"\x01" + a + b)


@pytest.mark.parametrize("n", [*range(1, 18), 31, 32, 33, 100])
def test_root_and_every_proof_match_rfc6962_and_verify(n):
    txs = raws(n)
    digests = [hash256(raw) for raw in txs]
    root = compute_txs_hash(txs)
    assert root == mth(digests)
    for index in range(n):
        proof = tx_inclusion_proof(txs, index)
        assert list(proof) == path(index, digests)
        assert verify_tx_inclusion(root, txs[index], index, n, proof)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_tampered_proofs_are_refused(n):
    txs = raws(n)
    root = compute_txs_hash(txs)
    for index in range(n):
        proof = list(tx_inclusion_proof(txs, index))
        assert not verify_tx_inclusion(root, txs[index] + b"!", index, n, proof)
        assert not verify_tx_inclusion(b"\x00" * 32, txs[index], index, n, proof)
        for other in range(n):
            if txs[other] != txs[index]:
                assert not verify_tx_inclusion(root, txs[other], index, n, proof)
        if index + 1 < n:
            assert not verify_tx_inclusion(root, txs[index], index + 1, n, proof)
        # The size is not in the root (RFC 6962): the block says it. A size whose tree is
        # deeper needs a longer path.
        assert not verify_tx_inclusion(root, txs[index], index, 2 * n + 1, proof)
        assert not verify_tx_inclusion(root, txs[index], index, n, [*proof, root])
        if proof:
            assert not verify_tx_inclusion(root, txs[index], index, n, proof[:-1])
            flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
            assert not verify_tx_inclusion(root, txs[index], index, n, flipped)


def test_bad_inputs_are_refused_not_raised():
    txs = raws(4)
    root = compute_txs_hash(txs)
    proof = tx_inclusion_proof(txs, 1)
    assert not verify_tx_inclusion(root, txs[1], -1, 4, proof)
    assert not verify_tx_inclusion(root, txs[1], 4, 4, proof)
    assert not verify_tx_inclusion(root, txs[1], 1, 0, proof)
    assert not verify_tx_inclusion(root, txs[1], 1, 4, [b"short"])
    with pytest.raises(IndexError):
        tx_inclusion_proof(txs, 4)
