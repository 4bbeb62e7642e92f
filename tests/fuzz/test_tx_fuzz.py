"""Transactions under hostile input, through the node's mempool admission (node/mempool.py).

Invariants: every hostile transaction gets a refusal with a stable `ledger.codes.Code` and
never enters the pool; a valid one is admitted once; under a flood the pool answers
MEMPOOL_FULL and its counts, bytes and verified-signature cache stay within their limits.
The state is a real chain's (tests/ledger/test_chain.py: the cash token, alice with cash).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import VoteType, vote_signing_bytes
from ledger.chain import Chain
from ledger.codes import Code
from ledger.crypto import generate_key, verify_signature
from ledger.tx import Signature, SignedTx, TxBody, encode_signed_tx, sign_tx
from node.mempool import AdmissionView, Mempool, MempoolLimits
from tests.ledger.test_chain import (
    CHAIN_ID,
    DAY_MS,
    GENESIS_MS,
    Signer,
    commit_next,
    genesis,
    key,
    setup_txs,
)

ED25519_L = 2**252 + 27742317777372353535851937790883648493
# Encodings of small-order points (y coordinates of the 8-torsion), as 32-byte keys.
SMALL_ORDER_KEYS = (
    bytes(32),  # y = 0
    (1).to_bytes(32, "little"),  # the identity
    ((2**255 - 19) - 1).to_bytes(32, "little"),  # y = -1 (order 2)
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
)
CODES = {int(c) for c in Code}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    chain = Chain.open(tmp_path_factory.mktemp("txfuzz") / "node.db", genesis())
    commit_next(chain, setup_txs(Signer()))
    yield chain
    chain.close()


def view(chain: Chain) -> AdmissionView:
    return AdmissionView(chain.state, chain.context(chain.height + 1, GENESIS_MS + 2 * DAY_MS))


def transfer_body(nonce: int, chain_id: str = CHAIN_ID, sender: str = "alice") -> TxBody:
    args = {"instrument": "PKR", "to": key("bob").address, "amount": 1}
    return TxBody(chain_id, key(sender).address, nonce, "transfer", args)


def with_signature(body: TxBody, public_key: bytes, signature: bytes) -> bytes:
    tx = SignedTx(body, (Signature(public_key, signature),), b"", body.tx_id)
    return encode_signed_tx(tx)


def refused(pool: Mempool, chain: Chain, raw: bytes) -> int:
    before = (len(pool), pool.total_bytes)
    result = pool.admit(raw, view(chain))
    assert result.code != 0 and result.code in CODES, result
    assert (len(pool), pool.total_bytes) == before
    return result.code


@settings(max_examples=40, deadline=None)
@given(multiple=st.integers(1, 3))
def test_s_plus_l_malleated_signature_is_refused(chain, multiple):
    body = transfer_body(0)
    good = sign_tx(body, [key("alice")])
    sig = good.signatures[0].signature
    s = int.from_bytes(sig[32:], "little") + multiple * ED25519_L
    if s >= 2**256:
        return
    malleated = sig[:32] + s.to_bytes(32, "little")
    assert not verify_signature(key("alice").public_key, body.signing_bytes(), malleated)
    pool = Mempool(MempoolLimits(), CHAIN_ID)
    raw = with_signature(body, key("alice").public_key, malleated)
    assert refused(pool, chain, raw) == Code.BAD_SIGNATURE
    assert pool.admit(good.raw, view(chain)).code == 0  # the honest one still goes in


@pytest.mark.parametrize("small", SMALL_ORDER_KEYS)
def test_small_order_keys_never_verify(chain, small):
    body = transfer_body(0)
    pool = Mempool(MempoolLimits(), CHAIN_ID)
    # With a small-order key, R = identity and S = 0 "verifies" every message in lax libraries.
    forged = (1).to_bytes(32, "little") + bytes(32)
    assert not verify_signature(small, body.signing_bytes(), forged)
    assert refused(pool, chain, with_signature(body, small, forged)) in (
        Code.BAD_SIGNATURE,
        Code.BAD_FIELD,
        Code.UNAUTHORIZED,
    )


@settings(max_examples=30, deadline=None)
@given(chain_id=st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True).filter(lambda c: c != CHAIN_ID))
def test_another_chain_id_is_refused(chain, chain_id):
    pool = Mempool(MempoolLimits(), CHAIN_ID)
    raw = sign_tx(transfer_body(0, chain_id=chain_id), [key("alice")]).raw
    assert refused(pool, chain, raw) == Code.WRONG_CHAIN


def test_a_vote_signature_is_not_a_tx_signature_and_back(chain):
    alice = key("alice")
    body = transfer_body(0)
    vote_sig = alice.sign(vote_signing_bytes(CHAIN_ID, VoteType.PREVOTE, 1, 0, body.tx_id))
    pool = Mempool(MempoolLimits(), CHAIN_ID)
    assert refused(pool, chain, with_signature(body, alice.public_key, vote_sig)) == (
        Code.BAD_SIGNATURE
    )
    # ... and a tx signature never verifies as a vote on the same id: the domain tags differ.
    tx_sig = sign_tx(body, [alice]).signatures[0].signature
    for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
        signed = vote_signing_bytes(CHAIN_ID, vote_type, 1, 0, body.tx_id)
        assert not verify_signature(alice.public_key, signed, tx_sig)


def test_replays_are_refused(chain):
    pool = Mempool(MempoolLimits(), CHAIN_ID)
    raw = sign_tx(transfer_body(0), [key("alice")]).raw
    assert pool.admit(raw, view(chain)).code == 0
    assert refused(pool, chain, raw) == Code.ALREADY_IN_MEMPOOL
    # A replay of an already committed transaction (the setup's first one) is stale.
    committed = setup_txs(Signer())[0]
    assert refused(pool, chain, committed) == Code.NONCE_USED


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=1, max_size=600))
def test_random_bytes_are_refused_with_a_stable_code(chain, raw):
    pool = Mempool(MempoolLimits(), CHAIN_ID)
    refused(pool, chain, raw)


def test_flood_of_many_senders_gets_mempool_full_and_stays_bounded(chain):
    limits = MempoolLimits(
        max_txs=16,
        max_bytes=64 * 1024,
        nonce_window=64,
        verified_cache=32,
        reserved_percent=0,
        max_txs_per_sender=16,
    )
    pool = Mempool(limits, CHAIN_ID)
    for nonce in range(16):
        assert pool.admit(sign_tx(transfer_body(nonce), [key("alice")]).raw, view(chain)).code == 0
    codes: dict[int, int] = {}
    for i in range(600):
        # Made-up senders: refused on a lookup, before any signature check or room question.
        sender = generate_key(i.to_bytes(4, "big").ljust(32, b"\x01"))
        body = dataclasses.replace(transfer_body(i % 5), sender=sender.address)
        code = pool.admit(sign_tx(body, [sender]).raw, view(chain)).code
        codes[code] = codes.get(code, 0) + 1
    # A known sender's next transaction meets the full pool; alice has used her own share.
    for name in ("bob", "alice"):
        nonce = chain.state.accounts[key(name).address].nonce + (16 if name == "alice" else 0)
        body = dataclasses.replace(transfer_body(nonce), sender=key(name).address)
        code = pool.admit(sign_tx(body, [key(name)]).raw, view(chain)).code
        codes[code] = codes.get(code, 0) + 1
    assert codes == {Code.ACCOUNT_NOT_FOUND: 600, Code.MEMPOOL_FULL: 1, Code.SENDER_QUOTA: 1}
    assert len(pool) == 16 and pool.total_bytes <= limits.max_bytes
    assert len(pool._verified) <= limits.verified_cache
