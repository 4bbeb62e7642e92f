"""The mempool (`node.mempool`): every admission code, verify-once, bounds, reap order, commits.

States are real ledger states built from a genesis and a few setup transactions (as in
tests/ledger/test_chain.py); "committing" a block applies the reaped transactions to that
state with `ledger.execute.apply_transactions`, exactly what a node's chain does.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import node.mempool as mempool_module
from ledger.chain import Chain
from ledger.codes import Code
from ledger.crypto import generate_key
from ledger.execute import apply_transactions, check_transaction
from ledger.genesis import default_genesis, state_from_genesis
from ledger.state import State
from ledger.tx import (
    Signature,
    SignedTx,
    TxBody,
    decode_signed_tx,
    encode_signed_tx,
    sign_tx,
    tx_footprint,
)
from ledger.types import BlockContext
from node.mempool import AdmissionView, Mempool, MempoolLimits

CHAIN_ID = "khazana-mempool-test"
GENESIS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000
INSTITUTIONS = ("ministry", "central-bank", "regulator", "auditor")
INVESTORS = ("alice", "bob", "carol")

_KEYS: dict[str, object] = {}


def key(name: str):
    if name not in _KEYS:
        _KEYS[name] = generate_key(name.encode().ljust(32, b"\x00")[:32])
    return _KEYS[name]


def genesis() -> dict:
    return default_genesis(
        validators=[(name, key("validator-" + name).public_key) for name in INSTITUTIONS],
        institutions={name: key(name).address for name in INSTITUTIONS},
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
    )


def signed(sender: str, nonce: int, op: str, args: dict, chain_id: str = CHAIN_ID, signer=None):
    body = TxBody(chain_id, key(sender).address, nonce, op, args)
    return sign_tx(body, [key(signer or sender)])


def transfer(sender: str, nonce: int, to: str, amount: int, **kw) -> bytes:
    args = {"instrument": "PKR", "to": key(to).address, "amount": amount}
    return signed(sender, nonce, "transfer", args, **kw).raw


def signed_id(raw: bytes) -> bytes:
    return decode_signed_tx(raw).tx_id


def ctx_at(height: int) -> BlockContext:
    return BlockContext(CHAIN_ID, height, GENESIS_MS + height * DAY_MS)


_SETUP: list[bytes] = []


def setup_txs() -> list[bytes]:
    """Cash token PKR, three onboarded investors, 10 000 issued to alice and to bob."""
    if not _SETUP:
        cash = {
            "id": "PKR",
            "kind": "cash",
            "name": "Digital rupee",
            "currency": "PKR",
            "face_value": 1,
            "decimals": 2,
            "cap": 10**15,
        }
        txs = [signed("central-bank", 0, "register_instrument", cash).raw]
        for nonce, name in enumerate(INVESTORS):
            onboard = {
                "investor": key(name).address,
                "country": "PK",
                "category": "retail",
                "kyc_expiry": "2030-01-01",
            }
            txs.append(signed("regulator", nonce, "onboard_investor", onboard).raw)
        for nonce, name in enumerate(("alice", "bob"), start=1):
            issue = {"instrument": "PKR", "to": key(name).address, "amount": 10_000}
            txs.append(signed("central-bank", nonce, "issue", issue).raw)
        _SETUP.extend(txs)
    return _SETUP


def world() -> State:
    state = state_from_genesis(genesis())
    result = apply_transactions(state, setup_txs(), ctx_at(1))
    assert all(r.code == Code.OK for r in result.receipts)
    return state


@pytest.fixture
def state() -> State:
    return world()


def view(state: State, height: int = 2) -> AdmissionView:
    return AdmissionView(state, ctx_at(height))


def pool(**limits) -> Mempool:
    return Mempool(MempoolLimits(**limits), CHAIN_ID)


def commit(state: State, txs, height: int = 2):
    """Apply transactions as a committed block (raises InvalidBlock if one cannot be in it)."""
    raws = [t.raw if isinstance(t, SignedTx) else t for t in txs]
    return apply_transactions(state, raws, ctx_at(height))


# ---------------------------------------------------------------------- admission codes


def test_accepted_transaction_is_waiting_and_counted(state):
    mp = pool()
    raw = transfer("alice", 0, "bob", 5)
    result = mp.admit(raw, view(state))
    assert (result.code, result.codespace) == (0, "")
    assert result.tx_id == signed_id(raw)
    assert mp.has(result.tx_id) and len(mp) == 1 and mp.total_bytes == len(raw)
    assert mp.reap(10, 10**6)[0].raw == raw


def test_too_large_is_refused_before_decoding():
    mp = pool(max_tx_bytes=64)
    result = mp.admit(b"\x00" * 65, view(world()))
    assert (result.code, result.codespace) == (Code.TX_TOO_LARGE, "mempool")
    assert len(mp) == 0


def test_undecodable_bytes_get_the_decoders_code(state):
    mp = pool()
    assert mp.admit(b"\x81\xa1x", view(state)).code == Code.MALFORMED  # truncated map
    trailing = mp.admit(transfer("alice", 0, "bob", 5) + b"\x00", view(state))
    assert (trailing.code, trailing.codespace) == (Code.TRAILING_BYTES, "ledger")
    assert len(mp) == 0


def test_the_same_transaction_twice_is_already_in_mempool(state):
    mp = pool()
    raw = transfer("alice", 0, "bob", 5)
    assert mp.admit(raw, view(state)).code == 0
    again = mp.admit(raw, view(state))
    assert (again.code, again.codespace) == (Code.ALREADY_IN_MEMPOOL, "mempool")
    assert len(mp) == 1


def test_a_committed_transaction_is_nonce_used(state):
    raw = transfer("alice", 0, "bob", 5)
    commit(state, [raw])
    assert pool().admit(raw, view(state, 3)).code == Code.NONCE_USED


def test_wrong_chain(state):
    raw = transfer("alice", 0, "bob", 5, chain_id="another-chain")
    assert pool().admit(raw, view(state)).code == Code.WRONG_CHAIN


def test_bad_signature(state):
    genuine = signed("alice", 0, "transfer", {"instrument": "PKR", "to": key("bob").address})
    other = signed("alice", 0, "transfer", {"instrument": "PKR", "to": key("carol").address})
    forged = SignedTx(genuine.body, other.signatures, b"", genuine.tx_id)
    result = pool().admit(encode_signed_tx(forged), view(state))
    assert (result.code, result.tx_id) == (Code.BAD_SIGNATURE, genuine.tx_id)


def test_unknown_sender_and_a_sender_that_did_not_sign(state):
    mp = pool()
    assert mp.admit(transfer("mallory", 0, "bob", 5), view(state)).code == Code.ACCOUNT_NOT_FOUND
    by_bob = transfer("alice", 0, "bob", 5, signer="bob")
    assert mp.admit(by_bob, view(state)).code == Code.SENDER_NOT_SIGNED
    assert len(mp) == 0


def test_compliance_refusal_has_the_ledgers_code(state):
    mp = pool()
    result = mp.admit(transfer("alice", 0, "bob", 10_001), view(state))
    assert (result.code, result.codespace) == (Code.INSUFFICIENT_BALANCE, "ledger")
    expected = check_transaction(state, transfer("alice", 0, "bob", 10_001), ctx_at(2))
    assert result.log == expected.log and result.log
    empty = pool().admit(transfer("carol", 0, "bob", 1), view(state))
    assert empty.code == Code.INSUFFICIENT_BALANCE  # carol holds nothing


def test_a_nonce_held_by_another_waiting_transaction_is_nonce_used(state):
    mp = pool()
    assert mp.admit(transfer("alice", 0, "bob", 5), view(state)).code == 0
    rival = mp.admit(transfer("alice", 0, "carol", 5), view(state))
    assert rival.code == Code.NONCE_USED and "held by" in rival.log
    assert len(mp) == 1


def test_nonce_window_parks_inside_and_refuses_beyond(state):
    mp = pool(nonce_window=4)
    far = mp.admit(transfer("alice", 4, "bob", 1), view(state))
    assert (far.code, far.codespace) == (Code.NONCE_TOO_FAR, "mempool")
    parked = mp.admit(transfer("alice", 3, "bob", 1), view(state))
    assert parked.code == 0 and "parked" in parked.log
    assert mp.reap(10, 10**6) == []  # a gap: nothing of alice is ready


def test_parked_transactions_become_ready_in_nonce_order(state):
    mp = pool()
    raws = [transfer("alice", n, "bob", n + 1) for n in range(3)]
    for raw in (raws[2], raws[1]):
        assert mp.admit(raw, view(state)).code == 0
    assert mp.reap(10, 10**6) == []
    # Parked transactions alone must not make a proposer cut a block (it would commit empty
    # blocks as fast as it can while they wait for their gap).
    assert len(mp) == 2 and not mp.has_ready()
    assert mp.admit(raws[0], view(state)).code == 0
    assert mp.has_ready()
    assert [t.raw for t in mp.reap(10, 10**6)] == raws
    commit(state, mp.reap(10, 10**6))  # they really execute in that order


def test_parked_transaction_still_needs_a_valid_sender(state):
    mp = pool()
    by_bob = transfer("alice", 2, "bob", 5, signer="bob")
    assert mp.admit(by_bob, view(state)).code == Code.SENDER_NOT_SIGNED


def test_dry_run_sees_the_senders_own_waiting_transactions(state):
    mp = pool()
    assert mp.admit(transfer("alice", 0, "bob", 10_000), view(state)).code == 0
    # On the committed state alice still holds 10 000; after her waiting transfer, nothing.
    overdrawn = mp.admit(transfer("alice", 1, "bob", 1), view(state))
    assert overdrawn.code == Code.INSUFFICIENT_BALANCE
    # And an instrument registered by a waiting transaction can be issued right after it.
    usd = {
        "id": "USD",
        "kind": "cash",
        "name": "Dollar",
        "currency": "USD",
        "face_value": 1,
        "decimals": 2,
        "cap": 10**12,
    }
    register = signed("central-bank", 3, "register_instrument", usd).raw
    issue = signed(
        "central-bank", 4, "issue", {"instrument": "USD", "to": key("bob").address, "amount": 7}
    ).raw
    assert mp.admit(register, view(state)).code == 0
    assert mp.admit(issue, view(state)).code == 0
    before = dict(state.instruments)
    assert "USD" not in before  # the dry runs left the committed state as it was
    receipts = commit(state, mp.reap(10, 10**6)).receipts
    assert [r.code for r in receipts] == [Code.OK] * 3


# ---------------------------------------------------------------------- bounds


def test_pool_full_by_count_refuses_and_keeps_what_it_has(state):
    mp = pool(max_txs=2)
    assert mp.admit(transfer("alice", 0, "bob", 1), view(state)).code == 0
    assert mp.admit(transfer("bob", 0, "alice", 1), view(state)).code == 0
    full = mp.admit(transfer("alice", 1, "bob", 1), view(state))
    assert (full.code, full.codespace) == (Code.MEMPOOL_FULL, "mempool")
    assert len(mp) == 2
    commit(state, mp.reap(10, 10**6))
    mp.remove_committed([t.tx_id for t in mp.reap(10, 10**6)], view(state, 3))
    assert mp.admit(transfer("alice", 1, "bob", 1), view(state, 3)).code == 0


def test_pool_full_by_bytes(state):
    # The bound is memory: each transaction is charged its decoded footprint, not its length.
    a, b = transfer("alice", 0, "bob", 1), transfer("bob", 0, "alice", 1)
    cost_a, cost_b = (tx_footprint(decode_signed_tx(raw)) for raw in (a, b))
    assert cost_a > len(a) and cost_b > len(b)
    mp = pool(max_bytes=cost_a + cost_b - 1, reserved_percent=0)
    assert mp.admit(a, view(state)).code == 0
    assert mp.admit(b, view(state)).code == Code.MEMPOOL_FULL
    assert mp.total_bytes == len(a) and mp.usage()["memory"] == cost_a


# ---------------------------------------------------------------------- verify once


@pytest.fixture
def verify_calls(monkeypatch):
    calls: list[bytes] = []
    real = mempool_module.verify_tx_signatures

    def counting(tx):
        calls.append(tx.tx_id)
        return real(tx)

    monkeypatch.setattr(mempool_module, "verify_tx_signatures", counting)
    return calls


def test_signatures_are_verified_once(state, verify_calls):
    mp = pool()
    raw = transfer("alice", 0, "bob", 5)
    assert mp.check(raw, view(state)).code == 0 and len(mp) == 0
    assert mp.admit(raw, view(state)).code == 0
    assert mp.add_gossiped(raw, view(state)).code == Code.ALREADY_IN_MEMPOOL
    tx_id = mp.reap(1, 10**6)[0].tx_id
    mp.evict(tx_id)
    assert mp.admit(raw, view(state)).code == 0
    assert verify_calls == [tx_id]


def test_a_bad_signature_is_not_remembered(state, verify_calls):
    genuine = signed("alice", 0, "transfer", {"instrument": "PKR", "to": key("bob").address})
    other = signed("alice", 1, "transfer", {"instrument": "PKR", "to": key("bob").address})
    forged = encode_signed_tx(SignedTx(genuine.body, other.signatures, b"", genuine.tx_id))
    mp = pool()
    for _ in range(2):
        assert mp.admit(forged, view(state)).code == Code.BAD_SIGNATURE
    assert len(verify_calls) == 2
    assert not mp.is_verified(forged)


def test_verified_cache_is_bounded_lru(state, verify_calls):
    mp = pool(verified_cache=2)
    raws = [transfer(name, 0, "carol", 1) for name in ("alice", "bob", "central-bank")]
    for raw in raws:
        mp.check(raw, view(state))
    assert [mp.is_verified(raw) for raw in raws] == [False, True, True]
    mp.check(raws[0], view(state))
    assert len(verify_calls) == 4  # forgotten, so verified again


def test_verified_for_matches_exact_bytes_not_just_the_id(state):
    mp = pool()
    args = {"instrument": "PKR", "to": key("bob").address, "amount": 1}
    genuine = signed("alice", 0, "transfer", args)
    assert mp.admit(genuine.raw, view(state)).code == 0
    # Same body (same id) with an extra, unverified "approval" signature.
    bogus = Signature(key("regulator").public_key, b"\x01" * 64)
    sigs = tuple(sorted(genuine.signatures + (bogus,), key=lambda s: s.public_key))
    padded = encode_signed_tx(SignedTx(genuine.body, sigs, b"", genuine.tx_id))
    assert mp.verified_for([genuine.raw, padded]) == {genuine.tx_id}
    assert mp.verified_for([padded]) == set()
    assert set(mp.verified_ids) == {genuine.tx_id}


def test_reaped_block_builds_on_a_real_chain_without_reverifying(tmp_path, verify_calls):
    chain = Chain.open(tmp_path / "node.db", genesis())
    try:
        pending = chain.build_block(setup_txs(), GENESIS_MS + DAY_MS, key("validator-x").address)
        chain.commit(pending, b"cert-1")
        mp = pool()
        v = AdmissionView(chain.state, chain.context(2, GENESIS_MS + 2 * DAY_MS))
        raws = [transfer("alice", n, "bob", 1) for n in range(3)]
        for raw in raws:
            assert mp.admit(raw, v).code == 0
        reaped = [t.raw for t in mp.reap(100, 10**6)]
        before = len(verify_calls)
        pending = chain.build_block(
            reaped, GENESIS_MS + 2 * DAY_MS, key("validator-x").address, verified=mp.verified_ids
        )
        assert list(pending.block.txs) == raws and pending.dropped == ()
        chain.commit(pending, b"cert-2")
        assert len(verify_calls) == before
        mp.remove_committed([r.tx_id for r in pending.receipts], AdmissionView(chain.state, v.ctx))
        assert len(mp) == 0 and mp.total_bytes == 0
    finally:
        chain.close()


# ---------------------------------------------------------------------- reap


def test_reap_interleaves_senders_by_arrival_and_keeps_each_in_nonce_order(state):
    mp = pool()
    order = [("bob", 1), ("alice", 0), ("bob", 0), ("alice", 1), ("central-bank", 3)]
    raws = {}
    for name, nonce in order:
        raw = (
            transfer(name, nonce, "carol", 1)
            if name != "central-bank"
            else signed(
                name, nonce, "issue", {"instrument": "PKR", "to": key("carol").address, "amount": 1}
            ).raw
        )
        raws[name, nonce] = raw
        assert mp.admit(raw, view(state)).code == 0, (name, nonce)
    got = [(t.body.sender, t.body.nonce) for t in mp.reap(10, 10**6)]
    addr = {name: key(name).address for name in ("alice", "bob", "central-bank")}
    # bob's slot comes first (his nonce 1 arrived first) but carries his nonce 0.
    assert got == [
        (addr["bob"], 0),
        (addr["alice"], 0),
        (addr["bob"], 1),
        (addr["alice"], 1),
        (addr["central-bank"], 3),
    ]
    assert len(mp.reap(2, 10**6)) == 2
    assert len(mp) == 5  # reaping removes nothing


def test_reap_byte_limit_stops_a_sender_but_not_the_others(state):
    mp = pool()
    first = transfer("alice", 0, "bob", 1)
    longer = transfer("alice", 1, "bob", 9_999)  # the amount takes two more bytes
    small = transfer("bob", 0, "alice", 1)
    assert len(longer) == len(first) + 2 == len(small) + 2
    for raw in (first, longer, small):
        assert mp.admit(raw, view(state)).code == 0
    # alice's second does not fit; it cannot be skipped for a later alice nonce, but bob's can go.
    assert [t.raw for t in mp.reap(10, len(first) + len(small) + 1)] == [first, small]
    assert [t.raw for t in mp.reap(10, 10**6)] == [first, longer, small]


# ---------------------------------------------------------------------- commits


def test_remove_committed_drops_included_and_stale_transactions(state):
    mp = pool()
    ours = transfer("alice", 0, "bob", 1)
    follow = transfer("alice", 1, "bob", 2)
    bobs = transfer("bob", 0, "alice", 3)
    for raw in (ours, follow, bobs):
        assert mp.admit(raw, view(state)).code == 0
    # Another node's block commits a different alice nonce 0 and bob's transaction.
    theirs = transfer("alice", 0, "carol", 9)
    receipts = commit(state, [theirs, bobs]).receipts
    dropped = mp.remove_committed([r.tx_id for r in receipts], view(state, 3))
    ours_id = signed_id(ours)
    assert dropped == [ours_id]
    assert [t.raw for t in mp.reap(10, 10**6)] == [follow]
    assert mp.total_bytes == len(follow)


def test_recheck_drops_a_first_transaction_that_can_no_longer_be_in_a_block(state):
    mp = pool()
    first, second = transfer("alice", 1, "bob", 1), transfer("alice", 2, "bob", 1)
    commit(state, [transfer("alice", 0, "bob", 1)])  # alice at nonce 1 ...
    for raw in (first, second):
        assert mp.admit(raw, view(state, 3)).code == 0
    # ... then a block recovers alice's key (as `recover_key` would) and moves her nonce.
    account = state.accounts[key("alice").address]
    state.put_account(dataclasses.replace(account, public_key=key("alice-new").public_key, nonce=1))
    # nonce unchanged -> no recheck at all (the cheap path)
    assert mp.remove_committed([], view(state, 4)) == []
    state.put_account(state.accounts[key("alice").address].with_nonce(2))
    # first is now below the committed nonce; second is first in line and fully rechecked:
    # alice's old key signed it, so it cannot be in a block any more.
    dropped = mp.remove_committed([], view(state, 4))
    assert dropped == [signed_id(first), signed_id(second)]
    assert len(mp) == 0 and mp.total_bytes == 0


def test_recheck_keeps_a_compliance_refusal_for_the_block_to_record(state):
    mp = pool()
    spend = transfer("alice", 1, "bob", 10_000)
    assert mp.admit(transfer("alice", 0, "carol", 1), view(state)).code == 0
    assert mp.admit(spend, view(state)).code == Code.INSUFFICIENT_BALANCE
    spend_all = transfer("alice", 1, "bob", 9_999)
    assert mp.admit(spend_all, view(state)).code == 0
    # Another node's block commits a different nonce 0 of alice: she now holds 9 995.
    commit(state, [transfer("alice", 0, "carol", 5)])
    assert mp.remove_committed([], view(state, 3)) == [signed_id(transfer("alice", 0, "carol", 1))]
    assert [t.raw for t in mp.reap(10, 10**6)] == [spend_all]  # would now fail: kept
    receipt = commit(state, mp.reap(10, 10**6), 3).receipts[0]
    assert receipt.code == Code.INSUFFICIENT_BALANCE


# ---------------------------------------------------------------------- random sequences

SENDERS = ("alice", "bob", "carol")
_TX_CACHE: dict[tuple[str, int, int], bytes] = {}


def cached_tx(sender: str, nonce: int, variant: int) -> bytes:
    k = (sender, nonce, variant)
    if k not in _TX_CACHE:
        to = SENDERS[(SENDERS.index(sender) + 1 + variant) % len(SENDERS)]
        _TX_CACHE[k] = transfer(sender, nonce, to, 1 + variant)
    return _TX_CACHE[k]


action = st.one_of(
    st.tuples(
        st.just("admit"),
        st.sampled_from(SENDERS),
        st.integers(-1, 5),
        st.integers(0, 1),
    ),
    st.tuples(st.just("commit"), st.integers(0, 6), st.integers(200, 2000)),
    st.tuples(st.just("evict"), st.integers(0, 20)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, max_size=30))
def test_random_sequences_keep_bounds_and_per_sender_order(actions):
    state = world()
    limits = MempoolLimits(max_txs=6, max_bytes=1200, nonce_window=4)
    mp = Mempool(limits, CHAIN_ID)
    height = 2
    for act in actions:
        if act[0] == "admit":
            _, sender, offset, variant = act
            committed = state.accounts[key(sender).address].nonce
            raw = cached_tx(sender, max(0, committed + offset), variant)
            before = len(mp)
            result = mp.admit(raw, view(state, height))
            assert len(mp) == before + (1 if result.code == 0 else 0)
        elif act[0] == "commit":
            _, max_txs, max_bytes = act
            reaped = mp.reap(max_txs, max_bytes)
            assert len(reaped) <= max_txs and sum(len(t.raw) for t in reaped) <= max_bytes
            seen: dict[bytes, int] = {}
            for tx in reaped:  # each sender's nonces consecutive from its committed nonce
                sender = tx.body.sender
                expected = seen.get(sender, state.accounts[sender].nonce)
                assert tx.body.nonce == expected
                seen[sender] = expected + 1
            receipts = commit(state, reaped, height).receipts  # InvalidBlock would fail here
            height += 1
            mp.remove_committed([r.tx_id for r in receipts], view(state, height))
            assert not any(mp.has(r.tx_id) for r in receipts)
        else:
            waiting = [t.tx_id for t in mp.reap(100, 10**9)]
            if waiting:
                mp.evict(waiting[act[1] % len(waiting)])
        assert len(mp) <= limits.max_txs
        assert mp.total_bytes <= limits.max_bytes
        assert mp.total_bytes == sum(len(mp.get(i).raw) for i in mp.verified_ids)
