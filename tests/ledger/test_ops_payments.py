"""pay_coupon and redeem: the paying agent pays holders in the cash token."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from ledger.codes import Code
from tests.ledger.test_ops_harness import Chain

BOND = "PKBOND28"
TBILL = "PKTB26"
COUPON_DATES = ["2026-07-01", "2027-01-01", "2027-07-01", "2028-01-01"]


def world(agent_cash: int = 10**9) -> Chain:
    """alice 60 and bob 40 units of a 1,000.00-rupee 8 % semi-annual bond (coupon 40.00 =
    4000 minor units per unit); the paying agent holds `agent_cash` cash units."""
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.investor("alice")
    chain.investor("bob")
    chain.issue(BOND, "alice", 60)
    chain.issue(BOND, "bob", 40)
    chain.issue("PKR", "central-bank", agent_cash, issuer="central-bank")
    return chain


def coupon(coupon_date: str = "2026-07-01", instrument: str = BOND, cash: str = "PKR") -> dict:
    return {"instrument": instrument, "cash": cash, "coupon_date": coupon_date}


def test_coupon_pays_every_holder_of_the_record_date():
    chain = world()
    chain.at(date(2026, 7, 1))
    receipt = chain.ok("central-bank", "pay_coupon", coupon())
    assert chain.balance("PKR", "alice") == 60 * 4000
    assert chain.balance("PKR", "bob") == 40 * 4000
    assert chain.balance("PKR", "central-bank") == 10**9 - 400_000
    summary = receipt.events[0]
    assert summary.type == "coupon_paid"
    assert summary.attributes["total"] == 400_000
    assert summary.attributes["residual"] == "0"
    payments = [e for e in receipt.events if e.type == "coupon_payment"]
    assert [(e.attributes["to"], e.attributes["amount"]) for e in payments] == sorted(
        [(chain.addr("alice"), 240_000), (chain.addr("bob"), 160_000)]
    )
    # What the holders were credited is cash, named as the instrument (protocol version 3):
    # a reader keyed on `to` and `instrument` books cash, not bonds.
    assert {(e.attributes["instrument"], e.attributes["security"]) for e in payments} == {
        ("PKR", BOND)
    }
    changes = [e.attributes for e in receipt.events if e.type == "balance_change"]
    assert sorted((c["account"], c["instrument"], c["amount"], c["balance"]) for c in changes) == (
        sorted(
            [
                (chain.addr("alice"), "PKR", 240_000, 240_000),
                (chain.addr("bob"), "PKR", 160_000, 160_000),
                (chain.addr("central-bank"), "PKR", -400_000, 10**9 - 400_000),
            ]
        )
    )
    assert {c["cause"] for c in changes} == {"pay_coupon"}
    bond = chain.state.instruments[BOND]
    assert (bond.next_coupon, bond.last_coupon_paid) == (date(2027, 1, 1), date(2026, 7, 1))


def test_rounding_residual_is_reported():
    # 1,001 minor units at 5 % quarterly (ACT/ACT-ICMA regular period): 12.5125 per unit.
    chain = Chain()
    chain.cash()
    chain.bond(face_value=1001, coupon_rate="0.05", coupon_frequency=4)
    chain.investor("alice")
    chain.investor("bob")
    chain.issue(BOND, "alice", 3)
    chain.issue(BOND, "bob", 1)
    chain.issue("PKR", "central-bank", 1000, issuer="central-bank")
    chain.at(date(2026, 4, 1))
    receipt = chain.ok("central-bank", "pay_coupon", coupon("2026-04-01"))
    assert chain.balance("PKR", "alice") == 37  # floor(37.5375)
    assert chain.balance("PKR", "bob") == 12  # floor(12.5125)
    attributes = receipt.events[0].attributes
    assert Decimal(attributes["per_unit"]) == Decimal("12.5125")
    assert attributes["total"] == 49
    assert Decimal(attributes["residual"]) == Decimal("1.05")


def test_closed_period_lasts_until_the_coupon_is_paid():
    chain = world()
    to_bob = {"instrument": BOND, "to": chain.addr("bob"), "amount": 1}
    chain.at(date(2026, 7, 2))
    chain.expect(Code.CLOSED_PERIOD, "alice", "transfer", to_bob)
    chain.ok("central-bank", "pay_coupon", coupon())
    chain.ok("alice", "transfer", to_bob)  # the next record date is 2026-12-17


def test_a_paying_agent_that_holds_the_bond_pays_itself_nothing_net():
    chain = world()
    chain.ok(
        "alice", "transfer", {"instrument": BOND, "to": chain.addr("central-bank"), "amount": 10}
    )
    chain.at(date(2026, 7, 1))
    receipt = chain.ok("central-bank", "pay_coupon", coupon())
    assert receipt.events[0].attributes["paid_out"] == 90 * 4000
    assert chain.balance("PKR", "central-bank") == 10**9 - 90 * 4000


def _unfunded(chain: Chain) -> None:
    chain.ok("central-bank", "burn", {"instrument": "PKR", "amount": 10**9 - 399_999})


def _frozen_cash(chain: Chain) -> None:
    chain.ok(
        "regulator",
        "freeze",
        {
            "account": chain.addr("central-bank"),
            "instrument": "PKR",
            "amount": 10**9 - 1,
            "reason_code": 1,
            "legal_reference": "L",
        },
    )


COUPON_REFUSALS = [
    ("bad date", None, "central-bank", coupon("2026-7-1"), Code.BAD_FIELD),
    ("not the paying agent", None, "ministry", coupon(), Code.UNAUTHORIZED),
    ("unknown bond", None, "central-bank", coupon(instrument="NOPE"), Code.INSTRUMENT_NOT_FOUND),
    (
        "a T-bill",
        lambda c: c.tbill(maturity_date="2027-01-01"),
        "central-bank",
        coupon(instrument=TBILL),
        Code.WRONG_INSTRUMENT_KIND,
    ),
    ("paid in a bond", None, "central-bank", coupon(cash=BOND), Code.WRONG_INSTRUMENT_KIND),
    (
        "paid in another currency",
        lambda c: c.cash("USDC", currency="USD"),
        "central-bank",
        coupon(cash="USDC"),
        Code.WRONG_INSTRUMENT_KIND,
    ),
    (
        "before the date",
        lambda c: c.at(date(2026, 6, 30)),
        "central-bank",
        coupon(),
        Code.COUPON_NOT_DUE,
    ),
    ("not the next coupon", None, "central-bank", coupon("2027-01-01"), Code.COUPON_NOT_DUE),
    ("not a coupon date", None, "central-bank", coupon("2026-07-02"), Code.COUPON_NOT_DUE),
    (
        "bond paused",
        lambda c: c.ok("ministry", "pause_instrument", {"instrument": BOND, "reason": "x"}),
        "central-bank",
        coupon(),
        Code.INSTRUMENT_PAUSED,
    ),
    (
        "cash paused",
        lambda c: c.ok("central-bank", "pause_instrument", {"instrument": "PKR", "reason": "x"}),
        "central-bank",
        coupon(),
        Code.INSTRUMENT_PAUSED,
    ),
    (
        "agent frozen",
        lambda c: c.ok(
            "regulator",
            "freeze",
            {"account": c.addr("central-bank"), "reason_code": 1, "legal_reference": "L"},
        ),
        "central-bank",
        coupon(),
        Code.ACCOUNT_FROZEN,
    ),
    ("agent short of cash", _unfunded, "central-bank", coupon(), Code.INSUFFICIENT_BALANCE),
    (
        "agent's cash frozen",
        _frozen_cash,
        "central-bank",
        coupon(),
        Code.INSUFFICIENT_UNFROZEN_BALANCE,
    ),
]


@pytest.mark.parametrize(
    "setup,sender,args,code", [c[1:] for c in COUPON_REFUSALS], ids=[c[0] for c in COUPON_REFUSALS]
)
def test_coupon_refusals(setup, sender, args, code):
    chain = world()
    chain.at(date(2026, 7, 1))
    if setup is not None:
        setup(chain)
    chain.expect(code, sender, "pay_coupon", args)


def test_every_coupon_once_then_redemption():
    chain = world()
    for when in COUPON_DATES:
        chain.at(date.fromisoformat(when)).ok("central-bank", "pay_coupon", coupon(when))
    chain.expect(Code.COUPON_NOT_DUE, "central-bank", "pay_coupon", coupon("2028-01-01"))
    chain.ok("central-bank", "redeem", {"instrument": BOND, "cash": "PKR"})
    # 4 coupons of 4000 and the face value of 100,000 per unit.
    assert chain.balance("PKR", "alice") == 60 * (4 * 4000 + 100_000)
    assert chain.balance("PKR", "bob") == 40 * (4 * 4000 + 100_000)
    assert chain.state.holders(BOND) == []
    assert chain.state.instruments[BOND].redeemed
    assert chain.state.supply(BOND) == 0
    assert chain.state.programme.outstanding_usd_cents == 0


# ---------------------------------------------------------------------------------------
# redeem


def tbill_world() -> Chain:
    chain = world()
    chain.tbill()
    chain.issue(TBILL, "alice", 7)
    chain.issue(TBILL, "bob", 3)
    return chain


def redeem_args(instrument: str = TBILL, cash: str = "PKR") -> dict:
    return {"instrument": instrument, "cash": cash}


def test_tbill_redemption_pays_face_value_and_burns():
    chain = tbill_world()
    before = chain.state.programme.outstanding_usd_cents
    chain.at(date(2026, 7, 1))
    receipt = chain.ok("central-bank", "redeem", redeem_args())
    assert chain.balance("PKR", "alice") == 700_000
    assert chain.balance("PKR", "bob") == 300_000
    assert chain.balance(TBILL, "alice") == 0
    assert chain.state.programme.outstanding_usd_cents == before - 10 * 360
    assert receipt.events[0].attributes["units"] == 10


def test_frozen_units_become_frozen_cash_at_redemption():
    chain = tbill_world()
    chain.ok(
        "regulator",
        "freeze",
        {
            "account": chain.addr("alice"),
            "instrument": TBILL,
            "amount": 2,
            "reason_code": 9,
            "legal_reference": "AML 5",
        },
    )
    chain.at(date(2026, 7, 1)).ok("central-bank", "redeem", redeem_args())
    assert chain.state.frozen_amount("PKR", chain.addr("alice")) == 200_000


REDEEM_REFUSALS = [
    ("missing cash", None, "central-bank", {"instrument": TBILL}, Code.BAD_FIELD),
    ("not the paying agent", None, "regulator", redeem_args(), Code.UNAUTHORIZED),
    ("unknown", None, "central-bank", redeem_args("NOPE"), Code.INSTRUMENT_NOT_FOUND),
    (
        "a commodity",
        lambda c: c.gold(),
        "central-bank",
        redeem_args("PKGOLD", "PKR"),
        Code.WRONG_INSTRUMENT_KIND,
    ),
    (
        "before maturity",
        lambda c: c.at(date(2026, 6, 30)),
        "central-bank",
        redeem_args(),
        Code.NOT_MATURED,
    ),
    (
        "twice",
        lambda c: c.ok("central-bank", "redeem", redeem_args()),
        "central-bank",
        redeem_args(),
        Code.INSTRUMENT_MATURED,
    ),
    (
        "coupons unpaid",
        lambda c: c.at(date(2028, 1, 1)),
        "central-bank",
        redeem_args(BOND),
        Code.COUPON_UNPAID,
    ),
    (
        "agent short of cash",
        lambda c: c.ok("central-bank", "burn", {"instrument": "PKR", "amount": 10**9 - 1}),
        "central-bank",
        redeem_args(),
        Code.INSUFFICIENT_BALANCE,
    ),
]


@pytest.mark.parametrize(
    "setup,sender,args,code", [c[1:] for c in REDEEM_REFUSALS], ids=[c[0] for c in REDEEM_REFUSALS]
)
def test_redeem_refusals(setup, sender, args, code):
    chain = tbill_world()
    chain.at(date(2026, 7, 1))
    if setup is not None:
        setup(chain)
    chain.expect(code, sender, "redeem", args)


def test_matured_tbill_cannot_move_before_redemption():
    chain = tbill_world()
    chain.at(date(2026, 7, 1))
    chain.expect(
        Code.INSTRUMENT_MATURED,
        "alice",
        "transfer",
        {"instrument": TBILL, "to": chain.addr("bob"), "amount": 1},
    )


def test_tbill_closed_period_before_maturity():
    chain = tbill_world()
    to_bob = {"instrument": TBILL, "to": chain.addr("bob"), "amount": 1}
    chain.at(date(2026, 6, 15)).ok("alice", "transfer", to_bob)
    chain.at(date(2026, 6, 16)).expect(Code.CLOSED_PERIOD, "alice", "transfer", to_bob)
