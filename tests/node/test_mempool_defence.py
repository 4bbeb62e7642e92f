"""The mempool under attack (issue 13): each defence tested with the attack it stops.

- forged envelopes (no key needed) leave nothing in any cache, and cost no signature check
  when the cheap checks refuse them;
- squatting investors behind nonce gaps cannot keep out ordinary transfers nor the
  regulator's freeze;
- per-sender and per-VASP shares, bounded parking;
- expiry after N committed blocks, parked expiry;
- eviction by priority (institution > ready > parked, newest first);
- useless transactions (unknown operation, nonce out of reach, MiB-expanding args) refused
  at admission with their stable codes.

States are real ledger states (tests/node/test_mempool.py's world) with extra investors
written straight into the state, each onboarded by a VASP (their KYC file names it).
"""

from __future__ import annotations

import tracemalloc
from datetime import date

import pytest

import node.mempool as mempool_module
from ledger.codes import Code
from ledger.state import State
from ledger.tx import (
    Signature,
    SignedTx,
    TxBody,
    clear_decode_cache,
    decode_cache_stats,
    decode_signed_tx,
    encode_signed_tx,
    tx_footprint,
)
from ledger.types import INVESTOR, VASP, Account, Kyc
from node.mempool import Mempool, MempoolLimits
from tests.node.test_mempool import CHAIN_ID, commit, key, signed, transfer, view, world

VASP_A, VASP_B = "vasp-a", "vasp-b"


def add_investor(state: State, name: str, vasp: str | None) -> None:
    vasp_address = None if vasp is None else key(vasp).address
    kyc = Kyc(
        "PK", "retail", date(2030, 1, 1), vasp_address or key("regulator").address, vasp_address
    )
    state.put_account(Account(key(name).address, roles=(INVESTOR,), kyc=kyc))


def add_vasp(state: State, name: str) -> None:
    state.put_account(Account(key(name).address, roles=(VASP,)))


def squat_world(squatters: int = 24) -> State:
    """alice and bob (regulator's investors, funded), two VASPs, and `squatters` investors
    onboarded by VASP A."""
    state = world()
    for name in (VASP_A, VASP_B):
        add_vasp(state, name)
    for index in range(squatters):
        add_investor(state, f"squatter-{index}", VASP_A)
    add_investor(state, "b-client", VASP_B)
    return state


def junk(sender: str, nonce: int, size: int = 60_000) -> bytes:
    """A known operation with junk args: a block would record it as refused (BAD_FIELD)."""
    args = {"instrument": "PKR", "to": key("bob").address, "amount": 1, "memo": b"j" * size}
    return signed(sender, nonce, "transfer", args).raw


def freeze(nonce: int, target: str = "bob") -> bytes:
    args = {"account": key(target).address, "reason_code": 7, "legal_reference": "court 13/26"}
    return signed("regulator", nonce, "freeze", args).raw


def issue(nonce: int, amount: int = 1) -> bytes:
    args = {"instrument": "PKR", "to": key("alice").address, "amount": amount}
    return signed("central-bank", nonce, "issue", args).raw


def forged_bomb(chain: str, width: int = 20_000, sender: str = "alice") -> bytes:
    body = TxBody(chain, key(sender).address, 0, "transfer", {"a": [{} for _ in range(width)]})
    junk_sig = (Signature(key(sender).public_key, b"\x07" * 64),)
    return encode_signed_tx(SignedTx(body, junk_sig, b"", body.tx_id))


@pytest.fixture
def verify_calls(monkeypatch):
    calls: list[bytes] = []
    real = mempool_module.verify_tx_signatures
    monkeypatch.setattr(
        mempool_module, "verify_tx_signatures", lambda tx: calls.append(tx.tx_id) or real(tx)
    )
    return calls


# ---------------------------------------------------------------------- forged envelopes


def test_forged_envelopes_grow_no_cache_and_retain_no_memory(verify_calls):
    """The probe: 200 forged 64 KiB envelopes (wrong chain id, junk signature) through
    check_tx took a validator from 177 to 1,058 MiB for good. Now nothing stays."""
    state = squat_world(0)
    mp = Mempool(MempoolLimits(), CHAIN_ID)
    clear_decode_cache()
    raws = [forged_bomb("another-chain", width=20_000 + i) for i in range(20)]
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for raw in raws * 10:  # 200 submissions, as in the probe
            result = mp.check(raw, view(state))
            assert (result.code, result.codespace) == (Code.WRONG_CHAIN, "ledger")
            assert mp.admit(raw, view(state)).code == Code.WRONG_CHAIN
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Each decoded envelope keeps > 1.2 MiB while it is judged; none of it stays.
    assert tx_footprint(decode_signed_tx(raws[0])) > 1_200_000
    assert after - before < 256 * 1024, after - before
    assert decode_cache_stats() == (0, 0) and len(mp) == 0 and not mp._verified
    assert verify_calls == []  # refused before any signature check


def test_forged_signatures_on_the_right_chain_are_refused_and_forgotten(verify_calls):
    state = squat_world(0)
    mp = Mempool(MempoolLimits(), CHAIN_ID)
    clear_decode_cache()
    # A small body (a bomb would be TX_TOO_COMPLEX first): junk signature, real sender.
    body = TxBody(CHAIN_ID, key("alice").address, 0, "transfer", {"amount": 1})
    raw = encode_signed_tx(
        SignedTx(body, (Signature(key("alice").public_key, b"\x07" * 64),), b"", body.tx_id)
    )
    for _ in range(3):
        assert mp.admit(raw, view(state)).code == Code.BAD_SIGNATURE
    assert len(verify_calls) == 3 and decode_cache_stats() == (0, 0) and not mp._verified
    # The same bomb on the right chain: refused on its memory, before any signature.
    bomb = forged_bomb(CHAIN_ID)
    result = mp.admit(bomb, view(state))
    assert (result.code, result.codespace) == (Code.TX_TOO_COMPLEX, "mempool")
    assert len(verify_calls) == 3 and decode_cache_stats() == (0, 0)


def test_admitted_transactions_enter_the_decode_cache_within_its_byte_bound():
    state = squat_world(0)
    clear_decode_cache()
    raw = transfer("alice", 0, "bob", 5)
    cost = tx_footprint(decode_signed_tx(raw))
    mp = Mempool(MempoolLimits(decode_cache_bytes=cost * 8), CHAIN_ID)
    assert mp.admit(raw, view(state)).code == 0
    assert decode_cache_stats() == (1, cost)
    assert decode_signed_tx(raw) is mp.get(decode_signed_tx(raw).tx_id)  # the proposal's decode
    for nonce in range(1, 30):
        assert mp.admit(transfer("alice", nonce, "bob", 1), view(state)).code == 0
    assert decode_cache_stats()[1] <= cost * 8


def test_made_up_senders_cost_no_signature_check(verify_calls):
    state = squat_world(0)
    mp = Mempool(MempoolLimits(), CHAIN_ID)
    for index in range(50):
        raw = transfer(f"nobody-{index}", 0, "bob", 1)
        assert mp.admit(raw, view(state)).code == Code.ACCOUNT_NOT_FOUND
    assert verify_calls == [] and not mp._verified


# ---------------------------------------------------------------------- useless transactions


def test_unknown_operation_is_refused_at_admission_ready_or_parked(verify_calls):
    state = squat_world(1)
    mp = Mempool(MempoolLimits(), CHAIN_ID)
    for nonce in (0, 5):  # ready, and behind a gap (where only `executed` used to be asked)
        raw = signed("squatter-0", nonce, "pay_me", {"junk": b"x" * 1000}).raw
        for admit in (mp.admit, mp.add_gossiped, mp.check):
            result = admit(raw, view(state))
            assert (result.code, result.codespace) == (Code.UNKNOWN_OPERATION, "ledger")
    assert len(mp) == 0 and verify_calls == []


def test_nonce_out_of_reach_is_refused_before_signatures(verify_calls):
    state = squat_world(0)
    mp = Mempool(MempoolLimits(nonce_window=8), CHAIN_ID)
    far = mp.admit(transfer("alice", 8, "bob", 1), view(state))
    assert (far.code, far.codespace) == (Code.NONCE_TOO_FAR, "mempool") and verify_calls == []


def test_args_that_expand_in_memory_are_refused(verify_calls):
    state = squat_world(0)
    mp = Mempool(MempoolLimits(), CHAIN_ID)
    wide = signed("alice", 0, "transfer", {"a": [{} for _ in range(20_000)]}).raw
    assert len(wide) < 64 * 1024
    result = mp.admit(wide, view(state))
    assert (result.code, result.codespace) == (Code.TX_TOO_COMPLEX, "mempool")
    assert verify_calls == []
    # The same number of bytes as one bytes field is fine (it keeps ~3x its size).
    flat = signed("alice", 0, "transfer", {"memo": b"x" * 60_000}).raw
    assert mp.add_gossiped(flat, view(state)).code == 0


# ---------------------------------------------------------------------- squatting


def test_squatters_behind_a_nonce_gap_cannot_block_transfers_or_a_freeze():
    """The probe: 24 onboarded investors each queued 63 junk transactions of 60 KB behind a
    nonce gap; every mempool filled and stayed full; transfers and the regulator's freeze got
    MEMPOOL_FULL. Now their share is bounded, and the rest of the pool stays usable."""
    state = squat_world(24)
    limits = MempoolLimits()
    mp = Mempool(limits, CHAIN_ID)
    codes: dict[int, int] = {}
    for index in range(24):
        for nonce in range(1, 64):  # nonce 0 never sent: all parked
            result = mp.add_gossiped(junk(f"squatter-{index}", nonce), view(state))
            codes[result.code] = codes.get(result.code, 0) + 1
    usage = mp.usage()
    assert codes[0] == usage["parked_txs"] == len(mp)
    assert usage["parked_memory"] <= limits.parked_bytes
    assert usage["general_memory"] <= limits.vasp_bytes  # one VASP's share at most
    assert set(codes) <= {0, Code.TOO_MANY_PARKED, Code.VASP_QUOTA, Code.SENDER_QUOTA}
    # An ordinary investor's transfer and the regulator's freeze both get in.
    assert mp.admit(transfer("alice", 0, "bob", 5), view(state)).code == 0
    assert mp.admit(freeze(3), view(state)).log == ""  # the regulator's next nonce: ready
    assert mp.has_ready()
    # The junk expires: parked_ttl_blocks after admission, nothing of it is left.
    height = 2 + limits.parked_ttl_blocks
    dropped = mp.remove_committed([], view(state, height))
    assert len(dropped) == codes[0] and len(mp) == 2 and mp.usage()["parked_txs"] == 0


def test_a_freeze_gets_in_when_investors_fill_everything_but_the_reserved_room():
    state = squat_world(30)
    limits = MempoolLimits(
        max_txs=40, reserved_percent=10, max_txs_per_sender=2, vasp_share_percent=100
    )
    mp = Mempool(limits, CHAIN_ID)
    admitted = 0
    for index in range(30):
        for nonce in (0, 1):
            result = mp.add_gossiped(transfer(f"squatter-{index}", nonce, "bob", 1), view(state))
            admitted += result.code == 0
    assert admitted == limits.general_txs == 36  # ready transactions, so nothing to evict
    full = mp.admit(transfer("alice", 0, "bob", 1), view(state))
    assert full.code == Code.MEMPOOL_FULL
    for nonce in range(3, 7):
        assert mp.admit(freeze(nonce, target=f"squatter-{nonce}"), view(state)).code == 0
    assert len(mp) == limits.max_txs
    # Beyond its reserved room, an institution's transaction evicts the newest investor's.
    regulator = key("regulator").address
    newest = [t for t in mp.reap(100, 10**9) if t.body.sender != regulator][-1]
    assert newest.raw == transfer("squatter-17", 1, "bob", 1)
    assert mp.admit(issue(3), view(state)).code == 0
    assert not mp.has(newest.tx_id) and len(mp) == limits.max_txs


def test_vasp_share_counts_the_vasp_and_its_investors_together():
    state = squat_world(12)
    limits = MempoolLimits(max_txs=40, vasp_share_percent=25)
    mp = Mempool(limits, CHAIN_ID)
    codes = [
        mp.add_gossiped(transfer(f"squatter-{i}", 0, "bob", 1), view(state)).code for i in range(12)
    ]
    assert codes == [0] * 10 + [Code.VASP_QUOTA] * 2
    own = mp.add_gossiped(transfer(VASP_A, 0, "bob", 1), view(state))
    assert (own.code, own.codespace) == (Code.VASP_QUOTA, "mempool")
    # Another VASP's client and a regulator's investor are not affected.
    assert mp.add_gossiped(transfer("b-client", 0, "bob", 1), view(state)).code == 0
    assert mp.add_gossiped(transfer("alice", 0, "bob", 1), view(state)).code == 0
    # Committing frees the share.
    reaped = mp.reap(100, 10**9)
    receipts = commit(state, reaped).receipts
    mp.remove_committed([r.tx_id for r in receipts], view(state, 3))
    assert mp.add_gossiped(transfer("squatter-11", 0, "bob", 1), view(state, 3)).code == 0


def test_sender_share_by_count_and_by_bytes():
    state = squat_world(1)
    mp = Mempool(MempoolLimits(max_txs_per_sender=3), CHAIN_ID)
    codes = [mp.add_gossiped(transfer("alice", n, "bob", 1), view(state)).code for n in range(4)]
    assert codes == [0, 0, 0, Code.SENDER_QUOTA]
    one = tx_footprint(decode_signed_tx(junk("squatter-0", 0)))
    mp = Mempool(MempoolLimits(max_bytes_per_sender=2 * one + 100), CHAIN_ID)
    codes = [mp.add_gossiped(junk("squatter-0", n), view(state)).code for n in range(3)]
    assert codes == [0, 0, Code.SENDER_QUOTA]
    # Institutions have no per-sender share (their nonce window bounds them).
    mp = Mempool(MempoolLimits(max_txs_per_sender=1), CHAIN_ID)
    assert [mp.admit(issue(n), view(state)).code for n in range(3, 6)] == [0, 0, 0]


def test_parking_is_bounded_per_sender_and_in_all():
    state = squat_world(4)
    mp = Mempool(MempoolLimits(max_parked_per_sender=2), CHAIN_ID)
    codes = [mp.add_gossiped(transfer("alice", n, "bob", 1), view(state)).code for n in (1, 2, 3)]
    assert codes == [0, 0, Code.TOO_MANY_PARKED]
    # Filling the gap turns them ready: room for new parked ones again.
    assert mp.add_gossiped(transfer("alice", 0, "bob", 1), view(state)).code == 0
    assert mp.usage()["parked_txs"] == 0
    assert mp.add_gossiped(transfer("alice", 5, "bob", 1), view(state)).code == 0
    limits = MempoolLimits(max_txs=20, parked_share_percent=25, vasp_share_percent=100)
    mp = Mempool(limits, CHAIN_ID)  # 5 parked in all
    codes = [
        mp.add_gossiped(transfer(f"squatter-{i % 4}", 1 + i // 4, "bob", 1), view(state)).code
        for i in range(8)
    ]
    assert codes == [0] * 5 + [Code.TOO_MANY_PARKED] * 3


# ---------------------------------------------------------------------- expiry


def test_expiry_after_ttl_blocks_takes_the_senders_later_nonces():
    state = squat_world(0)
    mp = Mempool(MempoolLimits(ttl_blocks=5), CHAIN_ID)
    first, second = transfer("alice", 0, "bob", 1), transfer("alice", 1, "bob", 1)
    assert mp.admit(first, view(state, 2)).code == 0
    assert mp.admit(transfer("bob", 0, "alice", 1), view(state, 4)).code == 0
    assert mp.admit(second, view(state, 6)).code == 0  # admitted later, but after `first`
    assert mp.remove_committed([], view(state, 6)) == []  # 4 blocks: not yet
    dropped = mp.remove_committed([], view(state, 7))
    assert dropped == [decode_signed_tx(first).tx_id, decode_signed_tx(second).tx_id]
    assert len(mp) == 1
    assert mp.remove_committed([], view(state, 9)) != [] and len(mp) == 0


def test_parked_expiry_leaves_ready_transactions_alone():
    state = squat_world(0)
    mp = Mempool(MempoolLimits(ttl_blocks=100, parked_ttl_blocks=3), CHAIN_ID)
    ready, parked = transfer("alice", 0, "bob", 1), transfer("alice", 2, "bob", 1)
    assert mp.admit(ready, view(state)).code == 0
    assert mp.admit(parked, view(state)).log.startswith("parked")
    assert mp.remove_committed([], view(state, 5)) == [decode_signed_tx(parked).tx_id]
    assert [t.raw for t in mp.reap(10, 10**6)] == [ready]


# ---------------------------------------------------------------------- eviction order


def test_eviction_order_parked_before_ready_newest_first():
    state = squat_world(6)
    limits = MempoolLimits(
        max_txs=10, reserved_percent=0, vasp_share_percent=100, parked_share_percent=100
    )
    mp = Mempool(limits, CHAIN_ID)
    order = []
    for index in range(4):  # ready ones first, oldest
        raw = transfer(f"squatter-{index}", 0, "bob", 1)
        assert mp.add_gossiped(raw, view(state)).code == 0
        order.append(raw)
    parked = []
    for nonce in (2, 3):
        for index in (4, 5):
            raw = transfer(f"squatter-{index}", nonce, "bob", 1)
            assert mp.add_gossiped(raw, view(state)).code == 0
            parked.append(raw)
    for nonce in (1, 2):
        raw = transfer("squatter-0", nonce, "bob", 1)
        assert mp.add_gossiped(raw, view(state)).code == 0
    assert len(mp) == 10
    # A parked newcomer evicts nothing.
    assert mp.add_gossiped(transfer("alice", 3, "bob", 1), view(state)).code == Code.MEMPOOL_FULL
    # A ready newcomer evicts the newest parked transaction of another sender.
    assert mp.add_gossiped(transfer("alice", 0, "bob", 1), view(state)).code == 0
    ids = lambda raws: {decode_signed_tx(r).tx_id for r in raws}  # noqa: E731
    gone = ids(parked) - set(mp.verified_ids)
    assert gone == ids([parked[-1]])  # squatter-5's nonce 3, the newest arrival
    # The regulator (institution) evicts parked first, then ready ones, newest first.
    for nonce in range(3, 7):
        assert mp.admit(freeze(nonce, target=f"squatter-{nonce - 3}"), view(state)).code == 0
    # Three parked ones made room for three freezes; the fourth took the newest ready one
    # (alice's); the oldest ready ones stay.
    kept = order + [transfer("squatter-0", n, "bob", 1) for n in (1, 2)]
    kept += [freeze(n, target=f"squatter-{n - 3}") for n in range(3, 7)]
    assert set(mp.verified_ids) == ids(kept)
    assert mp.usage()["parked_txs"] == 0 and len(mp) == 10


def test_metrics_see_refusals_and_removals():
    class Seen:
        def __init__(self):
            self.refused: list[str] = []
            self.removed: list[tuple[str, int]] = []

        def mempool_refused(self, reason):
            self.refused.append(reason)

        def mempool_removed(self, reason, count):
            self.removed.append((reason, count))

    state = squat_world(0)
    seen = Seen()
    mp = Mempool(MempoolLimits(ttl_blocks=2), CHAIN_ID, metrics=seen)
    assert mp.admit(transfer("alice", 0, "bob", 1, chain_id="x-chain"), view(state)).code != 0
    assert mp.admit(transfer("alice", 0, "bob", 1), view(state)).code == 0
    mp.remove_committed([], view(state, 4))
    assert seen.refused == ["wrong_chain"] and seen.removed == [("expired", 1)]


def test_an_investor_cannot_use_the_reserved_room():
    # An investor cannot claim the reserved room: the role is the account's, in state.
    state = squat_world(0)
    mp = Mempool(MempoolLimits(max_txs=10, reserved_percent=50), CHAIN_ID)
    codes = [mp.add_gossiped(transfer("alice", n, "bob", 1), view(state)).code for n in range(6)]
    assert codes == [0] * 5 + [Code.MEMPOOL_FULL]
    # ... while the central bank (cash issuer) still has the other half.
    assert [mp.admit(issue(n), view(state)).code for n in range(3, 8)] == [0] * 5


def test_a_sender_whose_own_transaction_was_committed_is_still_rechecked():
    # The books move a sender's base when its first waiting transaction is committed, so the
    # state's nonce then agrees with them; its next transaction must be rechecked anyway (the
    # same block may have changed its key).
    import dataclasses

    state = squat_world(0)
    mp = Mempool(MempoolLimits(), CHAIN_ID)
    first, second = transfer("alice", 0, "bob", 1), transfer("alice", 1, "bob", 1)
    for raw in (first, second):
        assert mp.admit(raw, view(state)).code == 0
    receipts = commit(state, [first]).receipts
    account = state.accounts[key("alice").address]
    state.put_account(dataclasses.replace(account, public_key=key("alice-new").public_key))
    dropped = mp.remove_committed([r.tx_id for r in receipts], view(state, 3))
    assert dropped == [decode_signed_tx(second).tx_id] and len(mp) == 0


def test_node_metrics_count_refusals_and_removals_by_reason():
    from node.metrics import Metrics

    metrics = Metrics()
    state = squat_world(0)
    mp = Mempool(MempoolLimits(ttl_blocks=1), CHAIN_ID, metrics=metrics)
    mp.admit(signed("alice", 0, "pay_me", {}).raw, view(state))
    assert mp.admit(transfer("alice", 0, "bob", 1), view(state)).code == 0
    mp.remove_committed([], view(state, 3))
    text = metrics.exposition().decode()
    assert 'khazana_mempool_refused_total{reason="unknown_operation"} 1.0' in text
    assert 'khazana_mempool_refused_total{reason="mempool_full"} 0.0' in text
    assert 'khazana_mempool_removed_total{reason="expired"} 1.0' in text
