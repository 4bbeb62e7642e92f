"""Amortising bonds that are also callable or redeemed at a stated price (protocol version 4).

The rule (docs/PROTOCOL.md 10.7): a call redeems the face outstanding on the call date at
the call price; parts dated on or after the call date are never paid (AMORTISATION_CALLED);
a bond whose part of a date is already paid cannot be called for that date (the call would
repay it twice). Amounts by hand below; tests/ledger/test_bond_oracle.py checks thousands
against QuantLib's amortising instruments.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from ledger.codes import Code
from ledger.protocol import AMORTISING_CALLS, LATEST_VERSION
from ledger.quote import quote_instrument
from tests.ledger.test_ops_debt import BOND, _bond_args, coupon, settled, world

PARTS = [["2026-07-01", "25"], ["2027-01-01", "12.5"], ["2027-07-01", "10"]]


def amortising_callable(**extra):
    """The harness bond (face 100,000, 8 % semi-annual, 2026-01-01 -> 2028-01-01) repaying
    25 %, 12.5 % and 10 % on its first three coupon dates, callable with 30 days' notice at
    101.5; alice 7 units, bob 3."""
    chain = world(calendar=False, id="FIXED", isin="GB0002634946")
    args = {**_bond_args(), "id": BOND, "isin": "US0378331005", "amortisation": PARTS}
    args |= {"call_notice_days": 30, "call_price": "101.5", **extra}
    chain.ok("ministry", "register_instrument", args)
    chain.issue(BOND, "alice", 7)
    chain.issue(BOND, "bob", 3)
    return chain


def amortise(chain, day: str, code: Code = Code.OK):
    args = {"instrument": BOND, "cash": "PKR", "date": day}
    on = chain.at(date.fromisoformat(day))
    return (
        on.ok("central-bank", "amortise", args)
        if code == Code.OK
        else on.expect(code, "central-bank", "amortise", args)
    )


def test_version_4_is_the_latest_and_the_rule_change_is_gated():
    assert AMORTISING_CALLS == 4 <= LATEST_VERSION


def test_a_call_redeems_the_face_outstanding_at_the_call_price():
    chain = amortising_callable()
    chain.ok("ministry", "call_bond", {"instrument": BOND, "call_date": "2027-01-01"})
    amortise(chain, "2026-07-01")  # 25 % at par: 25,000 per unit
    coupon(chain, "2026-07-01")
    # The part of the call date is redeemed by the call, not by `amortise`.
    amortise(chain, "2027-01-01", Code.AMORTISATION_CALLED)
    receipt = coupon(chain, "2027-01-01")  # not AMORTISATION_UNPAID: that part is called
    # The coupon of 1 Jul 2026 -> 1 Jan 2027 is on the 75 % outstanding: 75,000 x 4 %.
    assert receipt.events[0].attributes["per_unit"] == "3000"
    assert chain.state.instruments[BOND].next_coupon is None
    receipt = chain.ok("central-bank", "redeem", {"instrument": BOND, "cash": "PKR"})
    # 75,000 outstanding x 101.5 % = 76,125 per unit.
    alice, bob = chain.addr("alice"), chain.addr("bob")
    paid = settled(chain, receipt, units={alice: 7, bob: 3})
    assert paid == {alice: 7 * 76_125, bob: 3 * 76_125}
    assert receipt.events[0].attributes["residual"] == "0"
    amortise(chain, "2027-07-01", Code.INSTRUMENT_MATURED)


def test_a_call_for_the_date_of_a_paid_part_is_refused_with_its_own_code():
    # The part of 1 Jul 2026 paid, its coupon not yet: a call for 1 Jul 2026 would redeem
    # at the call price a part already repaid at par.
    chain = amortising_callable()
    amortise(chain, "2026-07-01")
    call = {"instrument": BOND, "call_date": "2026-07-01"}
    receipt = chain.expect(Code.AMORTISATION_CALLED, "ministry", "call_bond", call)
    assert "is paid" in receipt.log
    chain.ok("ministry", "call_bond", {**call, "call_date": "2027-01-01"})


def test_uncalled_it_redeems_at_its_stated_price_on_what_is_left():
    chain = amortising_callable(redemption_price="100.25", face_value=99_999)
    for day, _ in PARTS:
        amortise(chain, day)
        coupon(chain, day)
    coupon(chain, "2028-01-01")
    receipt = chain.ok("central-bank", "redeem", {"instrument": BOND, "cash": "PKR"})
    # 99,999 x 52.5 % x 100.25 % = 52,630.7369375 per unit: alice 368,415.1585...
    per_unit = Decimal(99_999) * Decimal("0.525") * Decimal("1.0025")
    alice, bob = chain.addr("alice"), chain.addr("bob")
    paid = settled(chain, receipt, units={alice: 7, bob: 3})
    assert paid == {alice: int(per_unit * 7), bob: int(per_unit * 3)}
    assert Decimal(receipt.events[0].attributes["residual"]) == per_unit * 10 - sum(paid.values())


def test_quotes_follow_the_call_and_the_parts():
    chain = amortising_callable()
    bond = chain.state.instruments[BOND]
    to_maturity = quote_instrument(bond, date(2026, 3, 1), yield_="0.08")
    chain.ok("ministry", "call_bond", {"instrument": BOND, "call_date": "2027-01-01"})
    to_call = quote_instrument(chain.state.instruments[BOND], date(2026, 3, 1), yield_="0.08")
    # Same accrued interest; the call at 101.5 on 75 % outstanding adds value at 8 %.
    assert to_call.accrued == to_maturity.accrued
    assert to_call.clean_price > to_maturity.clean_price
