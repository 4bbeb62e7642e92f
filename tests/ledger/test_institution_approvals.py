"""Maker-checker counts institutions, not keys (issue 14).

The escalation a probe found, replayed: once the regulator held a second regulator key
(granted once, with the ministry's co-signature), its two keys alone committed a forced
transfer, granted the regulator the registrar role and changed the forced-transfer policy to
one approval. Each step must now be refused with nothing changed but the sender's nonce, both
under the rules (`apply_transaction`, the harness) and in a committed block of a real chain.

Also here: how an account joins an institution (`grant_role` naming it, with its signature),
why two institutions cannot make a key count as a third, and keys of no institution.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ledger.chain import Chain as LedgerChain
from ledger.codes import Code
from ledger.tx import TxBody, sign_tx
from ledger.types import Account
from tests.ledger.test_ops_harness import Chain, day_ms

BOND = "PKBOND28"


def grant(chain: Chain, name: str, role: str, institution: str | None = None) -> dict:
    args = {"account": chain.addr(name), "role": role}
    if institution is not None:
        args["institution"] = institution
    return args


def order(chain: Chain, amount: int = 5) -> dict:
    return {
        "instrument": BOND,
        "from": chain.addr("alice"),
        "to": chain.addr("bob"),
        "amount": amount,
        "reason_code": 3,
        "legal_reference": "Court order 2026/117",
    }


def with_second_regulator_key() -> Chain:
    """The probe's starting point: the regulator's second key, granted once with the
    ministry's co-signature; a bond held by alice; bob onboarded."""
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.investor("alice")
    chain.investor("bob")
    chain.issue(BOND, "alice", 10)
    chain.ok(
        "regulator",
        "grant_role",
        grant(chain, "regulator-2", "regulator", "regulator"),
        cosigners=("ministry",),
    )
    assert chain.account("regulator-2").institution == "regulator"
    return chain


# ---------------------------------------------------------------------------------------
# The escalation


def test_the_regulators_two_keys_cannot_force_a_transfer():
    chain = with_second_regulator_key()
    receipt = chain.expect(
        Code.MISSING_APPROVALS,
        "regulator",
        "forced_transfer",
        order(chain),
        cosigners=("regulator-2",),
    )
    # The refusal names what was counted: one institution from two keys.
    assert "got 1: ['regulator']" in receipt.log
    assert "2 keys signed" in receipt.log
    assert chain.balance(BOND, "alice") == 10
    # Either key as the sender: the same.
    chain.expect(
        Code.MISSING_APPROVALS,
        "regulator-2",
        "forced_transfer",
        order(chain),
        cosigners=("regulator",),
    )
    # Positive control: the second institution's signature is what was missing.
    chain.ok("regulator-2", "forced_transfer", order(chain), cosigners=("ministry",))
    assert chain.balance(BOND, "bob") == 5


def test_the_regulator_alone_cannot_grant_itself_the_registrar_role():
    chain = with_second_regulator_key()
    for target in ("regulator", "regulator-2"):
        chain.expect(
            Code.MISSING_APPROVALS,
            "regulator",
            "grant_role",
            grant(chain, target, "registrar", "regulator"),
            cosigners=("regulator-2",),
        )
    # Nor a third key of its own, nor a key it claims for another institution.
    chain.expect(
        Code.MISSING_APPROVALS,
        "regulator",
        "grant_role",
        grant(chain, "regulator-3", "regulator", "regulator"),
        cosigners=("regulator-2",),
    )
    chain.expect(
        Code.MISSING_APPROVALS,
        "regulator-2",
        "grant_role",
        grant(chain, "fake-ministry", "issuer", "ministry"),
        cosigners=("regulator",),
    )
    assert "registrar" not in chain.account("regulator").roles
    assert "fake-ministry" not in [a.name for a in chain.state.accounts.values()]
    assert chain.addr("regulator-3") not in chain.state.accounts


def test_the_regulator_alone_cannot_change_the_policy():
    chain = with_second_regulator_key()
    # A third key too (set_policy needs three): under a count of keys its three would pass.
    chain.ok(
        "regulator",
        "grant_role",
        grant(chain, "regulator-3", "regulator", "regulator"),
        cosigners=("ministry",),
    )
    before = chain.state.policy
    for minimum in (1, 2):
        receipt = chain.expect(
            Code.MISSING_APPROVALS,
            "regulator",
            "set_policy",
            {"operation": "forced_transfer", "roles": ["regulator"], "min": minimum},
            cosigners=("regulator-2", "regulator-3"),
        )
        assert "got 1: ['regulator']" in receipt.log
    assert chain.state.policy == before


def test_the_escalation_fails_to_commit_in_a_real_chain(tmp_path):
    """The same three transactions in committed blocks of `ledger.chain.Chain` (the node's
    ledger): each block commits, each of the three receipts is MISSING_APPROVALS, and the
    reopened database holds neither the transfer, nor the role, nor the policy change."""
    harness = with_second_regulator_key()  # keys and set-up transactions
    chain = LedgerChain.open(tmp_path / "node.db", harness.genesis)
    try:
        nonces: dict[str, int] = {}

        def tx(sender: str, op: str, args: dict, cosigners: tuple[str, ...] = ()) -> bytes:
            nonce = nonces.get(sender, 0)
            nonces[sender] = nonce + 1
            body = TxBody(harness.genesis["chain_id"], harness.addr(sender), nonce, op, args)
            return sign_tx(body, [harness.key(n) for n in (sender, *cosigners)]).raw

        def block(txs: list[bytes], day: int) -> list[int]:
            time_ms = day_ms(harness.day) + day * 86_400_000
            pending = chain.build_block(txs, time_ms, b"p" * 20)
            assert not pending.dropped
            chain.commit(pending, b"cert")
            return [r.code for r in pending.receipts]

        setup = [
            tx("central-bank", "register_instrument", _cash_args()),
            tx("ministry", "register_instrument", _bond_args()),
            tx("regulator", "onboard_investor", _kyc(harness, "alice")),
            tx("regulator", "onboard_investor", _kyc(harness, "bob")),
            tx(
                "ministry", "issue", {"instrument": BOND, "to": harness.addr("alice"), "amount": 10}
            ),
            tx(
                "regulator",
                "grant_role",
                grant(harness, "regulator-2", "regulator", "regulator"),
                ("ministry",),
            ),
        ]
        assert block(setup, 1) == [Code.OK] * len(setup)
        escalation = [
            tx("regulator", "forced_transfer", order(harness), ("regulator-2",)),
            tx(
                "regulator",
                "grant_role",
                grant(harness, "regulator", "registrar", "regulator"),
                ("regulator-2",),
            ),
            tx(
                "regulator",
                "set_policy",
                {"operation": "forced_transfer", "roles": ["regulator"], "min": 1},
                ("regulator-2",),
            ),
        ]
        assert block(escalation, 2) == [Code.MISSING_APPROVALS] * 3
        app_hash = chain.app_hash
    finally:
        chain.close()
    chain = LedgerChain.open(tmp_path / "node.db", harness.genesis)
    try:
        assert chain.app_hash == app_hash
        state = chain.state
        assert state.balance(BOND, harness.addr("alice")) == 10
        assert "registrar" not in state.accounts[harness.addr("regulator")].roles
        assert state.policy.rules["forced_transfer"].min == 2
    finally:
        chain.close()


def _cash_args() -> dict:
    return {
        "id": "PKR",
        "kind": "cash",
        "name": "Digital rupee",
        "currency": "PKR",
        "face_value": 1,
        "decimals": 2,
        "cap": 10**15,
    }


def _bond_args() -> dict:
    return {
        "id": BOND,
        "kind": "bond",
        "name": "Sovereign bond 2028",
        "isin": "US0378331005",
        "currency": "PKR",
        "face_value": 100_000,
        "decimals": 0,
        "cap": 1_000_000,
        "usd_face_value": 360,
        "issue_date": "2026-01-01",
        "maturity_date": "2028-01-01",
        "coupon_rate": "0.08",
        "coupon_frequency": 2,
        "day_count": "ACT/ACT-ICMA",
    }


def _kyc(chain: Chain, name: str) -> dict:
    return {
        "investor": chain.addr(name),
        "country": "PK",
        "category": "retail",
        "kyc_expiry": "2030-01-01",
    }


# ---------------------------------------------------------------------------------------
# Joining an institution


def test_two_institutions_cannot_make_a_key_count_as_a_third():
    """The regulator and the central bank bind a key to "ministry" without the ministry:
    refused. Otherwise two institutions would reach a rule that needs three (set_policy)."""
    chain = Chain()
    receipt = chain.expect(
        Code.MISSING_APPROVALS,
        "regulator",
        "grant_role",
        grant(chain, "puppet", "issuer", "ministry"),
        cosigners=("central-bank",),
    )
    assert "'ministry' itself" in receipt.log
    # Nor an institution that does not exist: nobody can sign for it.
    chain.expect(
        Code.MISSING_APPROVALS,
        "regulator",
        "grant_role",
        grant(chain, "puppet", "issuer", "shadow-ministry"),
        cosigners=("central-bank",),
    )
    # With the ministry's signature the key is the ministry's (its own decision).
    chain.ok(
        "regulator",
        "grant_role",
        grant(chain, "ministry-2", "issuer", "ministry"),
        cosigners=("ministry",),
    )
    assert chain.account("ministry-2").institution == "ministry"


def test_a_key_belongs_to_one_institution_for_good():
    chain = with_second_regulator_key()
    receipt = chain.expect(
        Code.INSTITUTION_MISMATCH,
        "regulator",
        "grant_role",
        grant(chain, "regulator-2", "issuer", "ministry"),
        cosigners=("ministry",),
    )
    assert "'regulator'" in receipt.log and "'ministry'" in receipt.log
    # A genesis institution's account too.
    chain.expect(
        Code.INSTITUTION_MISMATCH,
        "regulator",
        "grant_role",
        grant(chain, "ministry", "auditor", "auditor"),
        cosigners=("ministry", "auditor"),
    )
    # Naming its own institution, or none, is fine once it has one.
    chain.ok(
        "regulator",
        "grant_role",
        grant(chain, "regulator-2", "auditor", "regulator"),
        cosigners=("ministry",),
    )
    chain.ok(
        "regulator",
        "grant_role",
        grant(chain, "regulator-2", "registrar"),
        cosigners=("ministry",),
    )
    # Losing every role does not free it either.
    for role in ("auditor", "registrar", "regulator"):
        chain.ok(
            "regulator",
            "revoke_role",
            grant(chain, "regulator-2", role),
            cosigners=("ministry",),
        )
    assert chain.account("regulator-2").roles == ()
    chain.expect(
        Code.INSTITUTION_MISMATCH,
        "regulator",
        "grant_role",
        grant(chain, "regulator-2", "issuer", "ministry"),
        cosigners=("ministry",),
    )


def test_an_institutional_role_needs_an_institution_named():
    chain = Chain()
    receipt = chain.expect(
        Code.BAD_FIELD,
        "regulator",
        "grant_role",
        grant(chain, "newcomer", "auditor"),
        cosigners=("ministry",),
    )
    assert "institution" in receipt.log
    # The investor role is no institution's: no institution needed.
    chain.ok(
        "regulator", "grant_role", grant(chain, "newcomer", "investor"), cosigners=("ministry",)
    )
    assert chain.account("newcomer").institution == ""


@pytest.mark.parametrize("bad", ["", "x" * 65, 7, b"ministry"])
def test_a_malformed_institution_is_a_bad_field(bad):
    chain = Chain()
    args = grant(chain, "newcomer", "auditor")
    args["institution"] = bad
    chain.expect(Code.BAD_FIELD, "regulator", "grant_role", args, cosigners=("ministry",))


def test_a_key_stripped_of_its_roles_does_not_speak_for_its_institution():
    """Its consent no longer binds new keys: an institution revokes a lost key's roles."""
    chain = with_second_regulator_key()
    chain.ok(
        "ministry",
        "revoke_role",
        grant(chain, "regulator-2", "regulator"),
        cosigners=("central-bank",),
    )
    chain.expect(
        Code.MISSING_APPROVALS,
        "ministry",
        "grant_role",
        grant(chain, "regulator-3", "regulator", "regulator"),
        cosigners=("central-bank", "regulator-2"),
    )


def test_a_recovered_key_keeps_its_institution():
    chain = with_second_regulator_key()
    new_key = chain.key("regulator-2-new")
    chain.ok(
        "regulator",
        "recover_key",
        {"account": chain.addr("regulator-2"), "new_public_key": new_key.public_key},
        cosigners=("central-bank",),
    )
    assert chain.account("regulator-2").institution == "regulator"
    # The new key still counts as the regulator, once, beside the regulator's first key.
    chain.expect(
        Code.MISSING_APPROVALS,
        "regulator",
        "forced_transfer",
        order(chain),
        cosigners=("regulator-2-new",),
    )


def test_a_key_of_no_institution_never_counts():
    """A state written before institutions were counted may hold a key granted a role with
    no institution (the probe's second regulator key): it approves nothing."""
    chain = with_second_regulator_key()
    legacy = chain.addr("legacy")
    chain.state.put_account(replace(chain.account("regulator-2"), address=legacy, name=""))
    chain.state.take_changes()
    assert chain.account("legacy").institution == ""
    receipt = chain.expect(
        Code.MISSING_APPROVALS,
        "regulator",
        "forced_transfer",
        order(chain),
        cosigners=("legacy",),
    )
    assert "got 1: ['regulator']" in receipt.log
    # It may still send what needs only the sender's role (min 1), as before.
    chain.ok(
        "legacy",
        "freeze",
        {"account": chain.addr("bob"), "reason_code": 1, "legal_reference": "Order 1"},
    )
    # As a sender of a maker-checker operation it needs two institutions besides itself.
    chain.expect(
        Code.MISSING_APPROVALS,
        "legacy",
        "forced_transfer",
        order(chain),
        cosigners=("regulator",),
    )
    chain.ok("legacy", "forced_transfer", order(chain), cosigners=("regulator", "ministry"))


def test_a_genesis_institution_is_its_accounts_name():
    chain = Chain()
    for name in ("ministry", "central-bank", "regulator", "auditor"):
        assert chain.account(name).institution == name


def test_a_key_of_no_institution_joins_one_by_a_grant_of_a_role_it_holds():
    """The way out for a state written before institutions counted: grant the key a role it
    already holds, naming its institution (which signs), and it counts for it from then on."""
    chain = with_second_regulator_key()
    legacy = chain.addr("legacy")
    chain.state.put_account(Account(legacy, roles=("regulator",)))
    chain.state.take_changes()
    # Without a second institution, or without the named institution's signature: refused.
    for sender, cosigners, institution in (
        ("regulator", (), "regulator"),
        ("ministry", ("central-bank",), "regulator"),
    ):
        chain.expect(
            Code.MISSING_APPROVALS,
            sender,
            "grant_role",
            grant(chain, "legacy", "regulator", institution),
            cosigners=cosigners,
        )
    # A held role with no institution named is still "already held".
    chain.expect(
        Code.BAD_FIELD,
        "regulator",
        "grant_role",
        grant(chain, "legacy", "regulator"),
        cosigners=("ministry",),
    )
    receipt = chain.ok(
        "ministry",
        "grant_role",
        grant(chain, "legacy", "regulator", "regulator"),
        cosigners=("regulator",),
    )
    assert receipt.events[0].attributes["institution"] == "regulator"
    assert chain.account("legacy").roles == ("regulator",)
    assert chain.account("legacy").institution == "regulator"
    # Now bound: a held role is refused again, whatever institution is named.
    chain.expect(
        Code.BAD_FIELD,
        "ministry",
        "grant_role",
        grant(chain, "legacy", "regulator", "regulator"),
        cosigners=("regulator",),
    )
