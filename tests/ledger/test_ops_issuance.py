"""register_instrument, issue, burn, attest_reserve, pause/unpause: accepted and refused."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from ledger.codes import Code
from ledger.ops.instruments import isin_is_valid
from tests.ledger.test_ops_harness import ISIN_A, ISIN_B, ISIN_C, Chain, day_ms

BOND = "PKBOND28"
DOC = bytes(range(32))


# ---------------------------------------------------------------------------------------
# ISIN check digits


@pytest.mark.parametrize("isin", ["US0378331005", "AU0000XVGZA3", "GB0002634946", "DE000BAY0017"])
def test_real_isins_pass_the_check_digit(isin):
    assert isin_is_valid(isin)


@pytest.mark.parametrize(
    "isin", ["US0378331006", "AU0000XVGZA4", "us0378331005", "US037833100", "US03783310055"]
)
def test_wrong_check_digit_or_shape_fails(isin):
    assert not isin_is_valid(isin)


# ---------------------------------------------------------------------------------------
# register_instrument


def test_each_kind_registers_with_its_fields():
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.tbill()
    chain.gold()
    bond = chain.state.instruments[BOND]
    assert (bond.kind, bond.isin, bond.face_value, bond.coupon_rate) == (
        "bond",
        ISIN_A,
        100_000,
        "0.08",
    )
    assert bond.issuer == chain.addr("ministry")
    assert bond.next_coupon == date(2026, 7, 1)  # first of the semi-annual schedule
    assert chain.state.instruments["PKR"].issuer == chain.addr("central-bank")
    assert chain.state.instruments["PKTB26"].next_coupon is None
    assert chain.state.instruments["PKGOLD"].unit == "troy oz"
    assert chain.state.supply(BOND) == 0


def bond_args(**changes) -> dict:
    args = {
        "id": "PKB2",
        "kind": "bond",
        "name": "Bond",
        "isin": ISIN_C,
        "currency": "PKR",
        "face_value": 100_000,
        "decimals": 0,
        "cap": 1000,
        "usd_face_value": 360,
        "issue_date": "2026-01-01",
        "maturity_date": "2029-01-01",
        "coupon_rate": "0.05",
        "coupon_frequency": 2,
        "day_count": "30/360",
    }
    for key, value in changes.items():
        if value is None:
            del args[key]
        else:
            args[key] = value
    return args


REGISTER_REFUSALS = [
    ("unknown kind", "ministry", bond_args(kind="stock"), Code.BAD_FIELD),
    ("bad check digit", "ministry", bond_args(isin="GB0002634947"), Code.BAD_FIELD),
    ("missing isin", "ministry", bond_args(isin=None), Code.BAD_FIELD),
    ("lower-case currency", "ministry", bond_args(currency="pkr"), Code.BAD_FIELD),
    ("zero face value", "ministry", bond_args(face_value=0), Code.BAD_FIELD),
    ("zero cap", "ministry", bond_args(cap=0), Code.BAD_FIELD),
    ("maturity before issue", "ministry", bond_args(maturity_date="2025-12-31"), Code.BAD_FIELD),
    (
        "matured already",
        "ministry",
        bond_args(issue_date="2020-01-01", maturity_date="2025-06-01"),
        Code.BAD_FIELD,
    ),
    ("rate as a percentage", "ministry", bond_args(coupon_rate="5"), Code.BAD_FIELD),
    ("float-like rate", "ministry", bond_args(coupon_rate="5e-2"), Code.BAD_FIELD),
    ("zero rate", "ministry", bond_args(coupon_rate="0"), Code.BAD_FIELD),
    ("frequency 3", "ministry", bond_args(coupon_frequency=3), Code.BAD_FIELD),
    ("unknown day count", "ministry", bond_args(day_count="ACT/999"), Code.BAD_FIELD),
    ("date not ISO", "ministry", bond_args(issue_date="20260101"), Code.BAD_FIELD),
    ("unknown category", "ministry", bond_args(allowed_categories=["whale"]), Code.BAD_FIELD),
    ("bad country", "ministry", bond_args(allowed_countries=["PAK"]), Code.BAD_FIELD),
    ("unassigned country", "ministry", bond_args(allowed_countries=["PK", "ZZ"]), Code.BAD_FIELD),
    ("field of another kind", "ministry", bond_args(unit="bbl"), Code.BAD_FIELD),
    ("regulator", "regulator", bond_args(), Code.UNAUTHORIZED),
    ("cash issuer registering a bond", "central-bank", bond_args(), Code.UNAUTHORIZED),
    ("existing id", "ministry", bond_args(id=BOND), Code.INSTRUMENT_EXISTS),
    ("existing ISIN", "ministry", bond_args(isin=ISIN_A), Code.INSTRUMENT_EXISTS),
]


@pytest.mark.parametrize(
    "sender,args,code", [c[1:] for c in REGISTER_REFUSALS], ids=[c[0] for c in REGISTER_REFUSALS]
)
def test_register_refusals(sender, args, code):
    chain = Chain()
    chain.bond()
    chain.expect(code, sender, "register_instrument", args)


def test_cash_token_rules():
    chain = Chain()
    cash = {
        "id": "PKR",
        "kind": "cash",
        "name": "Rupee",
        "currency": "PKR",
        "decimals": 2,
        "cap": 10**12,
    }
    chain.expect(Code.BAD_FIELD, "central-bank", "register_instrument", {**cash, "face_value": 100})
    chain.expect(Code.UNAUTHORIZED, "ministry", "register_instrument", {**cash, "face_value": 1})
    chain.ok("central-bank", "register_instrument", {**cash, "face_value": 1})


def test_tbill_takes_no_coupon_fields():
    chain = Chain()
    chain.tbill()
    args = bond_args(kind="tbill", id="PKTB2")
    chain.expect(Code.BAD_FIELD, "ministry", "register_instrument", args)  # coupon fields


# ---------------------------------------------------------------------------------------
# issue


def world() -> Chain:
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.investor("alice")
    return chain


def issue_args(chain: Chain, amount: int = 10, to: str = "alice", instrument: str = BOND) -> dict:
    return {"instrument": instrument, "to": chain.addr(to), "amount": amount}


def test_issue_creates_units_and_counts_against_the_programme():
    chain = world()
    receipt = chain.ok("ministry", "issue", issue_args(chain, 1000))
    assert chain.balance(BOND, "alice") == 1000
    assert chain.state.supply(BOND) == 1000
    assert chain.state.programme.outstanding_usd_cents == 1000 * 360
    assert receipt.events[0].attributes == {
        "instrument": BOND,
        "to": chain.addr("alice"),
        "amount": 1000,
    }


def test_cash_is_outside_the_programme_cap():
    chain = world()
    chain.issue("PKR", "alice", 10**12, issuer="central-bank")
    assert chain.state.programme.outstanding_usd_cents == 0


def test_programme_cap_spans_instruments_and_is_inclusive():
    chain = world()
    # $10M of face per unit: 200 units are exactly the $2bn programme.
    chain.bond("BIG1", isin=ISIN_B, usd_face_value=10**9, cap=1000)
    chain.bond("BIG2", isin=ISIN_C, usd_face_value=10**9, cap=1000)
    chain.ok("ministry", "issue", issue_args(chain, 150, instrument="BIG1"))
    chain.expect(Code.PROGRAMME_CAP, "ministry", "issue", issue_args(chain, 51, instrument="BIG2"))
    chain.ok("ministry", "issue", issue_args(chain, 50, instrument="BIG2"))
    assert chain.state.programme.outstanding_usd_cents == 200_000_000_000


def _gold_with_reserve(chain: Chain, quantity: int = 500) -> None:
    chain.gold()
    chain.ok(
        "auditor",
        "attest_reserve",
        {"instrument": "PKGOLD", "quantity": quantity, "document_hash": DOC},
    )


def _expire_kyc(chain: Chain) -> None:
    chain.investor("alice", expiry="2026-02-01")
    chain.at(date(2026, 2, 2))


def _suspended_client(chain: Chain) -> None:
    chain.vasp("exchange")
    chain.investor("alice", vasp="exchange")
    chain.ok("regulator", "suspend_vasp", {"vasp": chain.addr("exchange"), "reason": "audit"})


ISSUE_REFUSALS = [
    ("zero", None, "ministry", lambda c: issue_args(c, 0), Code.INVALID_AMOUNT),
    ("no recipient", None, "ministry", lambda c: {"instrument": BOND, "amount": 1}, Code.BAD_FIELD),
    ("regulator", None, "regulator", issue_args, Code.UNAUTHORIZED),
    ("not this instrument's issuer", None, "central-bank", issue_args, Code.UNAUTHORIZED),
    (
        "unknown instrument",
        None,
        "ministry",
        lambda c: issue_args(c, instrument="NOPE"),
        Code.INSTRUMENT_NOT_FOUND,
    ),
    (
        "unknown recipient",
        None,
        "ministry",
        lambda c: issue_args(c, to="nobody"),
        Code.ACCOUNT_NOT_FOUND,
    ),
    (
        "paused",
        lambda c: c.ok("regulator", "pause_instrument", {"instrument": BOND, "reason": "x"}),
        "ministry",
        issue_args,
        Code.INSTRUMENT_PAUSED,
    ),
    ("matured", lambda c: c.at(date(2028, 1, 2)), "ministry", issue_args, Code.INSTRUMENT_MATURED),
    (
        "closed period",
        lambda c: c.at(date(2026, 6, 20)),
        "ministry",
        issue_args,
        Code.CLOSED_PERIOD,
    ),
    (
        "frozen recipient",
        lambda c: c.ok(
            "regulator",
            "freeze",
            {"account": c.addr("alice"), "reason_code": 1, "legal_reference": "L"},
        ),
        "ministry",
        issue_args,
        Code.ACCOUNT_FROZEN,
    ),
    (
        "no KYC",
        lambda c: c.ok(
            "regulator",
            "grant_role",
            {"account": c.addr("carol"), "role": "investor"},
            cosigners=("ministry",),
        ),
        "ministry",
        lambda c: issue_args(c, to="carol"),
        Code.KYC_MISSING,
    ),
    ("KYC expired", _expire_kyc, "ministry", issue_args, Code.KYC_EXPIRED),
    ("VASP suspended", _suspended_client, "ministry", issue_args, Code.VASP_SUSPENDED),
    (
        "country",
        lambda c: c.bond("PKB3", isin=ISIN_B, allowed_countries=["GB"]),
        "ministry",
        lambda c: issue_args(c, instrument="PKB3"),
        Code.COUNTRY_NOT_ALLOWED,
    ),
    (
        "category",
        lambda c: c.bond("PKB3", isin=ISIN_B, allowed_categories=["institutional"]),
        "ministry",
        lambda c: issue_args(c, instrument="PKB3"),
        Code.CATEGORY_NOT_ALLOWED,
    ),
    (
        "holder limit",
        lambda c: (c.bond("PKB3", isin=ISIN_B, max_holders=1), c.issue("PKB3", "ministry", 1)),
        "ministry",
        lambda c: issue_args(c, instrument="PKB3"),
        Code.HOLDER_LIMIT,
    ),
    (
        "balance limit",
        lambda c: c.bond("PKB3", isin=ISIN_B, max_balance=9),
        "ministry",
        lambda c: issue_args(c, instrument="PKB3"),
        Code.BALANCE_LIMIT,
    ),
    ("instrument cap", None, "ministry", lambda c: issue_args(c, 1_000_001), Code.INSTRUMENT_CAP),
    (
        "no reserve",
        lambda c: c.gold(),
        "ministry",
        lambda c: issue_args(c, instrument="PKGOLD"),
        Code.RESERVE_STALE,
    ),
    (
        "stale reserve",
        lambda c: (_gold_with_reserve(c), c.at(date(2026, 1, 1) + timedelta(days=31))),
        "ministry",
        lambda c: issue_args(c, instrument="PKGOLD"),
        Code.RESERVE_STALE,
    ),
    (
        "beyond reserve",
        _gold_with_reserve,
        "ministry",
        lambda c: issue_args(c, 501, instrument="PKGOLD"),
        Code.RESERVE_EXCEEDED,
    ),
]


@pytest.mark.parametrize(
    "setup,sender,args,code", [c[1:] for c in ISSUE_REFUSALS], ids=[c[0] for c in ISSUE_REFUSALS]
)
def test_issue_refusals(setup, sender, args, code):
    chain = world()
    if setup is not None:
        setup(chain)
    chain.expect(code, sender, "issue", args(chain))


def test_commodity_issuance_within_a_fresh_reserve():
    chain = world()
    _gold_with_reserve(chain)
    assert chain.state.reserves["PKGOLD"].time_ms == day_ms(date(2026, 1, 1))
    # Exactly 30 days (the default limit) after the attestation it is still fresh.
    chain.at(date(2026, 1, 31)).ok("ministry", "issue", issue_args(chain, 500, instrument="PKGOLD"))
    assert chain.state.supply("PKGOLD") == 500


# ---------------------------------------------------------------------------------------
# burn


def test_burn_destroys_the_issuers_own_units():
    chain = world()
    chain.issue(BOND, "ministry", 100)
    chain.ok("ministry", "burn", {"instrument": BOND, "amount": 40})
    assert chain.state.supply(BOND) == 60
    assert chain.balance(BOND, "ministry") == 60
    assert chain.state.programme.outstanding_usd_cents == 60 * 360


def _ministry_holds(chain: Chain) -> None:
    chain.issue(BOND, "ministry", 100)


BURN_REFUSALS = [
    ("zero", None, "ministry", {"instrument": BOND, "amount": 0}, Code.INVALID_AMOUNT),
    (
        "unknown field",
        None,
        "ministry",
        {"instrument": BOND, "amount": 1, "from": b"x"},
        Code.BAD_FIELD,
    ),
    ("not the issuer", None, "central-bank", {"instrument": BOND, "amount": 1}, Code.UNAUTHORIZED),
    ("unknown", None, "ministry", {"instrument": "NOPE", "amount": 1}, Code.INSTRUMENT_NOT_FOUND),
    (
        "more than held",
        _ministry_holds,
        "ministry",
        {"instrument": BOND, "amount": 101},
        Code.INSUFFICIENT_BALANCE,
    ),
    (
        "frozen",
        lambda c: (
            _ministry_holds(c)
            or c.ok(
                "regulator",
                "freeze",
                {
                    "account": c.addr("ministry"),
                    "instrument": BOND,
                    "amount": 100,
                    "reason_code": 1,
                    "legal_reference": "L",
                },
            )
        ),
        "ministry",
        {"instrument": BOND, "amount": 1},
        Code.INSUFFICIENT_UNFROZEN_BALANCE,
    ),
    (
        "paused",
        lambda c: (
            _ministry_holds(c)
            or c.ok("ministry", "pause_instrument", {"instrument": BOND, "reason": "x"})
        ),
        "ministry",
        {"instrument": BOND, "amount": 1},
        Code.INSTRUMENT_PAUSED,
    ),
]


@pytest.mark.parametrize(
    "setup,sender,args,code", [c[1:] for c in BURN_REFUSALS], ids=[c[0] for c in BURN_REFUSALS]
)
def test_burn_refusals(setup, sender, args, code):
    chain = world()
    if setup is not None:
        setup(chain)
    chain.expect(code, sender, "burn", args)


# ---------------------------------------------------------------------------------------
# attest_reserve


def test_attestation_below_supply_is_recorded_and_flagged():
    chain = world()
    _gold_with_reserve(chain, 100)
    chain.issue("PKGOLD", "alice", 100)
    receipt = chain.ok(
        "auditor", "attest_reserve", {"instrument": "PKGOLD", "quantity": 90, "document_hash": DOC}
    )
    assert receipt.events[0].attributes["under_reserved"] == 1
    assert chain.state.reserves["PKGOLD"].quantity == 90
    chain.expect(
        Code.RESERVE_EXCEEDED, "ministry", "issue", issue_args(chain, 1, instrument="PKGOLD")
    )


ATTEST_REFUSALS = [
    (
        "short hash",
        "auditor",
        {"instrument": "PKGOLD", "quantity": 1, "document_hash": DOC[:31]},
        Code.BAD_FIELD,
    ),
    (
        "negative",
        "auditor",
        {"instrument": "PKGOLD", "quantity": -1, "document_hash": DOC},
        Code.BAD_FIELD,
    ),
    (
        "not the custodian",
        "ministry",
        {"instrument": "PKGOLD", "quantity": 1, "document_hash": DOC},
        Code.UNAUTHORIZED,
    ),
    (
        "a bond",
        "auditor",
        {"instrument": BOND, "quantity": 1, "document_hash": DOC},
        Code.WRONG_INSTRUMENT_KIND,
    ),
    (
        "unknown",
        "auditor",
        {"instrument": "NOPE", "quantity": 1, "document_hash": DOC},
        Code.INSTRUMENT_NOT_FOUND,
    ),
]


@pytest.mark.parametrize(
    "sender,args,code", [c[1:] for c in ATTEST_REFUSALS], ids=[c[0] for c in ATTEST_REFUSALS]
)
def test_attest_refusals(sender, args, code):
    chain = world()
    chain.gold()
    chain.expect(code, sender, "attest_reserve", args)


# ---------------------------------------------------------------------------------------
# pause / unpause


def test_pause_and_unpause_by_issuer_or_regulator():
    chain = world()
    chain.issue(BOND, "alice", 10)
    chain.ok("regulator", "pause_instrument", {"instrument": BOND, "reason": "incident 7"})
    assert chain.state.instruments[BOND].paused
    chain.ok("ministry", "unpause_instrument", {"instrument": BOND, "reason": "resolved"})
    assert not chain.state.instruments[BOND].paused
    chain.ok("ministry", "pause_instrument", {"instrument": BOND, "reason": "again"})


PAUSE_REFUSALS = [
    ("no reason", "ministry", "pause_instrument", {"instrument": BOND}, Code.BAD_FIELD),
    (
        "already active",
        "ministry",
        "unpause_instrument",
        {"instrument": BOND, "reason": "x"},
        Code.BAD_FIELD,
    ),
    (
        "auditor",
        "auditor",
        "pause_instrument",
        {"instrument": BOND, "reason": "x"},
        Code.UNAUTHORIZED,
    ),
    (
        "another issuer's instrument",
        "central-bank",
        "pause_instrument",
        {"instrument": BOND, "reason": "x"},
        Code.UNAUTHORIZED,
    ),
    (
        "unknown",
        "ministry",
        "pause_instrument",
        {"instrument": "NOPE", "reason": "x"},
        Code.INSTRUMENT_NOT_FOUND,
    ),
]


@pytest.mark.parametrize(
    "sender,op,args,code", [c[1:] for c in PAUSE_REFUSALS], ids=[c[0] for c in PAUSE_REFUSALS]
)
def test_pause_refusals(sender, op, args, code):
    chain = world()
    chain.expect(code, sender, op, args)
