"""The execution pipeline: order of checks, check == apply, blocks, and the State itself."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.codes import Code, InvalidBlock
from ledger.execute import apply_transaction, apply_transactions, check_transaction
from ledger.genesis import state_from_genesis
from ledger.ops import OPERATIONS
from ledger.state import State, account_key, holders_prefix, holding_key
from ledger.tx import Signature, SignedTx, encode_signed_tx
from ledger.types import BlockContext, Holding
from tests.ledger.test_ops_harness import CHAIN_ID, Chain, day_ms

BOND = "PKBOND28"


def world() -> Chain:
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.investor("alice")
    chain.investor("bob")
    chain.issue(BOND, "alice", 100)
    return chain


def to_bob(chain: Chain, amount: int = 1) -> dict:
    return {"instrument": BOND, "to": chain.addr("bob"), "amount": amount}


def tampered(tx: SignedTx) -> SignedTx:
    sig = tx.signatures[0]
    bad = Signature(sig.public_key, bytes([sig.signature[0] ^ 1]) + sig.signature[1:])
    forged = SignedTx(tx.body, (bad,), b"", tx.tx_id)
    return SignedTx(tx.body, (bad,), encode_signed_tx(forged), tx.tx_id)


def snapshot(state: State) -> list[tuple[bytes, bytes]]:
    return list(state.items())


# ---------------------------------------------------------------------------------------
# the order of the checks, each with its code


def test_each_stage_has_its_code_and_only_execution_consumes_a_nonce():
    chain = world()
    ctx = chain.ctx
    good = chain.sign("alice", "transfer", to_bob(chain))
    cases = [
        (b"\xc1", Code.MALFORMED),
        (codec.encode({"body": 1}), Code.BAD_FIELD),
        (chain.sign("alice", "transfer", to_bob(chain), chain_id="other-chain"), Code.WRONG_CHAIN),
        (tampered(good), Code.BAD_SIGNATURE),
        (chain.sign("nobody", "transfer", to_bob(chain)), Code.ACCOUNT_NOT_FOUND),
        (
            chain.sign("alice", "transfer", to_bob(chain), signer=chain.key("bob")),
            Code.SENDER_NOT_SIGNED,
        ),
        (chain.sign("alice", "transfer", to_bob(chain), nonce=5), Code.NONCE_GAP),
    ]
    for tx, code in cases:
        before = snapshot(chain.state)
        receipt = apply_transaction(chain.state, tx, ctx)
        assert (receipt.code, receipt.executed) == (code, False), receipt.log
        assert snapshot(chain.state) == before
    nonce = chain.account("alice").nonce
    receipt = apply_transaction(chain.state, chain.sign("alice", "mint_money", {}), ctx)
    assert (receipt.code, receipt.executed) == (Code.UNKNOWN_OPERATION, True)
    assert chain.account("alice").nonce == nonce + 1
    replay = chain.sign("alice", "transfer", to_bob(chain), nonce=nonce)
    assert apply_transaction(chain.state, replay, ctx).code == Code.NONCE_USED


def test_earlier_checks_win():
    chain = world()
    ctx = chain.ctx
    # Wrong chain and a bad signature: the chain is checked first.
    tx = tampered(chain.sign("alice", "transfer", to_bob(chain), chain_id="other"))
    assert apply_transaction(chain.state, tx, ctx).code == Code.WRONG_CHAIN
    # A nonce gap and an unknown operation: the nonce is checked first.
    tx = chain.sign("alice", "nope", {}, nonce=99)
    assert apply_transaction(chain.state, tx, ctx).code == Code.NONCE_GAP
    # Bad args and a missing role: args first.
    tx = chain.sign("alice", "issue", {"instrument": BOND})
    assert apply_transaction(chain.state, tx, ctx).code == Code.BAD_FIELD


def test_verified_skips_signature_checks_only():
    chain = world()
    tx = tampered(chain.sign("alice", "transfer", to_bob(chain)))
    assert check_transaction(chain.state, tx, chain.ctx).code == Code.BAD_SIGNATURE
    assert check_transaction(chain.state, tx, chain.ctx, verified=True).code == Code.OK


def test_check_transaction_changes_nothing_and_agrees_with_apply():
    chain = world()
    chain.state.take_changes()
    txs = [
        chain.sign("alice", "transfer", to_bob(chain, 10)),
        chain.sign("bob", "transfer", to_bob(chain)),  # to itself
        chain.sign("alice", "transfer", to_bob(chain, 1000), nonce=1),
        chain.sign("alice", "transfer", to_bob(chain, 5), nonce=2),
    ]
    for tx in txs:
        before, dirty = snapshot(chain.state), chain.state.dirty_keys
        checked = check_transaction(chain.state, tx, chain.ctx)
        assert snapshot(chain.state) == before
        assert chain.state.dirty_keys == dirty
        applied = apply_transaction(chain.state, tx, chain.ctx)
        assert (checked.code, checked.log, checked.events) == (
            applied.code,
            applied.log,
            applied.events,
        )
    assert chain.balance(BOND, "bob") == 15


# ---------------------------------------------------------------------------------------
# blocks


def test_apply_transactions_returns_receipts_and_sorted_changes():
    chain = world()
    chain.state.take_changes()
    txs = [
        chain.sign("alice", "transfer", to_bob(chain, 10), nonce=0),
        chain.sign("alice", "transfer", to_bob(chain, 1000), nonce=1),  # refused, still in
        chain.sign("bob", "transfer", {**to_bob(chain, 3), "to": chain.addr("alice")}, nonce=0),
    ]
    result = apply_transactions(chain.state, [tx.raw for tx in txs], chain.ctx)
    assert [r.code for r in result.receipts] == [Code.OK, Code.INSUFFICIENT_BALANCE, Code.OK]
    assert result.included == tuple(tx.raw for tx in txs)
    assert list(result.changes) == sorted(result.changes)
    alice, bob = chain.addr("alice"), chain.addr("bob")
    assert set(result.changes) == {
        account_key(alice),
        account_key(bob),
        holding_key(BOND, alice),
        holding_key(BOND, bob),
    }
    assert codec.decode(result.changes[holding_key(BOND, bob)])["balance"] == 7
    assert chain.state.take_changes() == {}


def test_invalid_block_leaves_the_state_as_it_was():
    chain = world()
    chain.state.take_changes()
    before = snapshot(chain.state)
    txs = [
        chain.sign("alice", "transfer", to_bob(chain), nonce=0),
        chain.sign("alice", "transfer", to_bob(chain), nonce=0),  # a replay
    ]
    with pytest.raises(InvalidBlock, match="NONCE_USED"):
        apply_transactions(chain.state, txs, chain.ctx)
    assert snapshot(chain.state) == before
    assert chain.state.take_changes() == {}


def test_proposer_drops_what_cannot_be_included():
    chain = world()
    good = chain.sign("alice", "transfer", to_bob(chain), nonce=0)
    gap = chain.sign("alice", "transfer", to_bob(chain), nonce=7)
    result = apply_transactions(chain.state, [gap, good], chain.ctx, drop_invalid=True)
    assert result.included == (good.raw,)
    assert [r.code for r in result.dropped] == [Code.NONCE_GAP]


def test_block_level_verified_ids_skip_verification():
    chain = world()
    tx = tampered(chain.sign("alice", "transfer", to_bob(chain)))
    with pytest.raises(InvalidBlock, match="BAD_SIGNATURE"):
        apply_transactions(chain.state, [tx.raw], chain.ctx)
    result = apply_transactions(chain.state, [tx.raw], chain.ctx, verified={tx.tx_id})
    assert result.receipts[0].code == Code.OK


def test_abandoned_block_rolls_back_with_an_outer_savepoint():
    chain = world()
    chain.state.take_changes()
    before = snapshot(chain.state)
    token = chain.state.savepoint()
    result = apply_transactions(
        chain.state, [chain.sign("alice", "transfer", to_bob(chain))], chain.ctx
    )
    assert result.changes
    chain.state.rollback(token)
    assert snapshot(chain.state) == before
    assert chain.state.take_changes() == {}


# ---------------------------------------------------------------------------------------
# the state


def test_state_round_trips_through_its_items():
    chain = world()
    chain.vasp("exchange")
    chain.ok(
        "regulator",
        "freeze",
        {"account": chain.addr("bob"), "reason_code": 1, "legal_reference": "L"},
    )
    items = snapshot(chain.state)
    rebuilt = State.from_items(items)
    assert list(rebuilt.items()) == items
    assert rebuilt.dirty_keys == []
    assert rebuilt.accounts == chain.state.accounts
    assert rebuilt.instruments == chain.state.instruments


def test_genesis_state_is_all_dirty_and_matches_its_export():
    chain = Chain()
    state = state_from_genesis(chain.genesis)
    changes = state.take_changes()
    assert list(changes.items()) == list(state.items())


def test_holdings_of_one_instrument_share_a_prefix_no_other_id_has():
    a, b = b"\x01" * 20, b"\xff" * 20
    assert holding_key("AB", a).startswith(holders_prefix("AB"))
    assert holding_key("AB", b).startswith(holders_prefix("AB"))
    # "A" is a prefix of "AB" as text but not as a key range.
    assert not holding_key("AB", a).startswith(holders_prefix("A"))


def test_nested_savepoints():
    chain = world()
    state = chain.state
    state.take_changes()
    outer = state.savepoint()
    chain.run("alice", "transfer", to_bob(chain, 10))
    inner = state.savepoint()
    chain.run("alice", "transfer", to_bob(chain, 20))
    state.rollback(inner)
    assert chain.balance(BOND, "bob") == 10
    state.release(outer)
    assert chain.balance(BOND, "bob") == 10
    assert holding_key(BOND, chain.addr("bob")) in state.take_changes()


def test_block_context_date_is_the_utc_day():
    assert BlockContext(CHAIN_ID, 1, day_ms(date(2026, 2, 28))).date == date(2026, 2, 28)
    assert BlockContext(CHAIN_ID, 1, 0).date == date(1970, 1, 1)
    assert BlockContext(CHAIN_ID, 1, 86_400_000 - 1).date == date(1970, 1, 1)


@settings(max_examples=30)
@given(st.lists(st.tuples(st.sampled_from(["alice", "bob"]), st.integers(-2, 60)), max_size=12))
def test_supply_is_conserved_and_receipts_match_checks(moves):
    chain = world()
    nonces = {"alice": 0, "bob": 0}
    for sender, amount in moves:
        other = "bob" if sender == "alice" else "alice"
        args = {"instrument": BOND, "to": chain.addr(other), "amount": amount}
        tx = chain.sign(sender, "transfer", args, nonce=nonces[sender])
        checked = check_transaction(chain.state, tx, chain.ctx)
        applied = apply_transaction(chain.state, tx, chain.ctx)
        assert checked.code == applied.code
        nonces[sender] += 1
    assert chain.balance(BOND, "alice") + chain.balance(BOND, "bob") == 100
    assert chain.state.supply(BOND) == 100


def test_a_dry_run_registration_leaves_no_trace():
    chain = Chain()
    tx = chain.sign(
        "central-bank",
        "register_instrument",
        {
            "id": "PKR",
            "kind": "cash",
            "name": "Rupee",
            "currency": "PKR",
            "face_value": 1,
            "decimals": 2,
            "cap": 10**12,
        },
    )
    assert check_transaction(chain.state, tx, chain.ctx).code == Code.OK
    assert "PKR" not in chain.state.instruments
    assert "PKR" not in chain.state.holdings
    assert apply_transaction(chain.state, tx, chain.ctx).code == Code.OK
    assert chain.state.holders("PKR") == []


def test_invariants_hold_through_a_lifecycle_and_a_corruption_is_caught():
    chain = world()
    chain.issue("PKR", "central-bank", 10**9, issuer="central-bank")
    chain.ok(
        "regulator",
        "freeze",
        {
            "account": chain.addr("alice"),
            "instrument": BOND,
            "amount": 10,
            "reason_code": 1,
            "legal_reference": "L",
        },
    )
    chain.ok("alice", "transfer", to_bob(chain, 50))
    for when in ["2026-07-01", "2027-01-01", "2027-07-01", "2028-01-01"]:
        chain.at(date.fromisoformat(when)).ok(
            "central-bank", "pay_coupon", {"instrument": BOND, "cash": "PKR", "coupon_date": when}
        )
        assert chain.state.invariant_violations() == []
    chain.ok("central-bank", "redeem", {"instrument": BOND, "cash": "PKR"})
    assert chain.state.invariant_violations() == []
    # Negative control: units that appear from nowhere break supply conservation.
    chain.state.put_holding("PKR", chain.addr("bob"), Holding(1))
    assert any("supply" in p for p in chain.state.invariant_violations())


def test_events_name_their_accounts_and_instruments():
    chain = world()
    chain.issue("PKR", "alice", 10, issuer="central-bank")
    chain.issue("PKR", "bob", 10, issuer="central-bank")
    args = {
        "seller": chain.addr("alice"),
        "buyer": chain.addr("bob"),
        "asset": BOND,
        "asset_amount": 1,
        "cash": "PKR",
        "cash_amount": 5,
    }
    dvp_event = chain.ok("alice", "dvp", args, cosigners=("bob",)).events[0]
    assert dvp_event.accounts() == sorted([chain.addr("alice"), chain.addr("bob")])
    assert dvp_event.instruments() == ["PKBOND28", "PKR"]


FIELDS = [
    "instrument",
    "to",
    "amount",
    "from",
    "seller",
    "buyer",
    "asset",
    "asset_amount",
    "cash",
    "cash_amount",
    "reason_code",
    "legal_reference",
    "id",
    "kind",
    "name",
    "isin",
    "currency",
    "face_value",
    "decimals",
    "cap",
    "usd_face_value",
    "issue_date",
    "maturity_date",
    "coupon_rate",
    "coupon_frequency",
    "day_count",
    "unit",
    "quantity",
    "document_hash",
    "coupon_date",
    "vasp",
    "reason",
    "investor",
    "country",
    "category",
    "kyc_expiry",
    "account",
    "new_public_key",
    "role",
    "value",
    "operation",
    "roles",
    "min",
    "changes",
]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from(
        [
            "PKBOND28",
            "PKR",
            "2026-07-01",
            "0.05",
            "bond",
            "cash",
            "retail",
            "PK",
            "issuer",
            "closed_period_days",
            "freeze",
            "ACT/360",
            "",
        ]
    ),
    st.text(max_size=8),
    st.binary(max_size=33),
    st.lists(st.sampled_from(["retail", "PK", "regulator"]), max_size=3),
)


@settings(max_examples=150)
@given(
    op=st.sampled_from(sorted(OPERATIONS)),
    sender=st.sampled_from(["ministry", "central-bank", "regulator", "alice"]),
    args=st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8),
)
def test_any_args_give_a_receipt_and_refusals_change_only_the_nonce(op, sender, args):
    chain = world()
    chain.state.take_changes()
    before = chain.state.accounts[chain.addr(sender)]
    receipt = chain.run(sender, op, args, cosigners=("regulator",) if sender != "regulator" else ())
    assert receipt.executed
    changes = chain.state.take_changes()
    if receipt.code != Code.OK:
        assert receipt.log
        assert list(changes) == [account_key(before.address)]
    assert chain.state.invariant_violations() == []


def test_a_crashing_operation_leaves_the_state_whole(monkeypatch):
    # A bug (not a refusal) must crash loudly without leaving half its writes behind.
    chain = world()
    chain.state.take_changes()
    before = snapshot(chain.state)

    def buggy(state, ctx, tx, args):
        state.put_holding(BOND, tx.sender, None)
        raise KeyError("bug")

    monkeypatch.setitem(OPERATIONS, "transfer", buggy)
    with pytest.raises(KeyError):
        apply_transactions(chain.state, [chain.sign("alice", "transfer", to_bob(chain))], chain.ctx)
    assert snapshot(chain.state) == before
    assert chain.state.take_changes() == {}
    monkeypatch.undo()
    chain.ok("alice", "transfer", to_bob(chain))  # savepoints are balanced again
