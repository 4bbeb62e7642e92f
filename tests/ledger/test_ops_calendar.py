"""Holiday calendars kept on chain by the issuer, and bond payments moved by them."""

from __future__ import annotations

from datetime import date

import pytest

from ledger import codec
from ledger.codes import Code
from ledger.ops import OPERATIONS, POLICY_NAMES
from ledger.types import HolidayCalendar
from tests.ledger.test_ops_harness import Chain

BOND = "PKBOND28"
CAL = "PK-SBP"


def calendar_args(holidays=("2027-01-01",), weekend=("sat", "sun")) -> dict:
    return {"id": CAL, "weekend": list(weekend), "holidays": list(holidays)}


def world(convention: str = "following", **calendar) -> Chain:
    """The harness bond (8 % semi-annual, 2026-01-01 -> 2028-01-01; coupons on Wed 1 Jul 2026,
    Fri 1 Jan 2027, Thu 1 Jul 2027, Sat 1 Jan 2028) with `convention` over a Sat/Sun calendar
    where 1 Jan 2027 is a holiday."""
    chain = Chain()
    chain.cash()
    chain.ok("ministry", "set_holiday_calendar", calendar_args(**calendar))
    chain.bond(business_day_convention=convention, holiday_calendar=CAL)
    chain.investor("alice")
    chain.issue(BOND, "alice", 10)
    chain.issue("PKR", "central-bank", 10**9, issuer="central-bank")
    return chain


def pay(chain: Chain, coupon_date: str, on: date, code: Code = Code.OK):
    args = {"instrument": BOND, "cash": "PKR", "coupon_date": coupon_date}
    chain.at(on)
    if code == Code.OK:
        return chain.ok("central-bank", "pay_coupon", args)
    return chain.expect(code, "central-bank", "pay_coupon", args)


def test_the_calendar_is_a_governed_operation_on_an_existing_rule():
    assert "set_holiday_calendar" in OPERATIONS
    assert POLICY_NAMES["set_holiday_calendar"] == "register_instrument"


def test_issuer_keeps_a_calendar_on_chain():
    chain = Chain()
    receipt = chain.ok(
        "ministry", "set_holiday_calendar", calendar_args(("2027-03-23", "2027-02-05"), ("sun",))
    )
    record = chain.state.calendars[CAL]
    assert record == HolidayCalendar(
        CAL, chain.addr("ministry"), ("sun",), (date(2027, 2, 5), date(2027, 3, 23)), 1
    )
    assert HolidayCalendar.from_map(codec.decode(codec.encode(record.to_map()))) == record
    assert receipt.events[0].attributes["holidays"] == 2
    # Replaced whole by its owner.
    chain.ok("ministry", "set_holiday_calendar", calendar_args((), ("fri", "sat")))
    assert chain.state.calendars[CAL].weekend == ("fri", "sat")
    assert chain.state.calendars[CAL].holidays == ()


@pytest.mark.parametrize(
    ("sender", "args", "code"),
    [
        ("central-bank", calendar_args(), Code.UNAUTHORIZED),  # not an issuer
        ("ministry", calendar_args(weekend=("saturday",)), Code.BAD_FIELD),
        (
            "ministry",
            calendar_args(weekend=("mon", "tue", "wed", "thu", "fri", "sat", "sun")),
            Code.BAD_FIELD,
        ),
        ("ministry", calendar_args(holidays=("2027-02-30",)), Code.BAD_FIELD),
        ("ministry", calendar_args(holidays=("2027-1-1",)), Code.BAD_FIELD),
        ("ministry", calendar_args(holidays=("2027-01-01", "2027-01-01")), Code.BAD_FIELD),
        ("ministry", {**calendar_args(), "extra": 1}, Code.BAD_FIELD),
    ],
)
def test_calendar_refusals(sender, args, code):
    Chain().expect(code, sender, "set_holiday_calendar", args)


def test_following_moves_the_coupon_off_the_holiday():
    chain = world("following")
    pay(chain, "2026-07-01", date(2026, 7, 1))  # a Wednesday: unmoved
    # Fri 1 Jan 2027 is a holiday, then the weekend: due Mon 4 Jan.
    refused = pay(chain, "2027-01-01", date(2027, 1, 3), Code.COUPON_NOT_DUE)
    assert "2027-01-04" in refused.log
    receipt = pay(chain, "2027-01-01", date(2027, 1, 4))
    summary = receipt.events[0].attributes
    assert summary["payment_date"] == "2027-01-04"
    # The amount accrues over unadjusted dates: a regular half-year, 4,000 per unit.
    assert summary["per_unit"] == "4000" and summary["total"] == 40_000


def test_preceding_pays_before_the_date_and_redemption_moves_too():
    chain = world("preceding")
    pay(chain, "2026-07-01", date(2026, 7, 1))
    assert pay(chain, "2027-01-01", date(2026, 12, 31)).events[0].attributes["payment_date"] == (
        "2026-12-31"
    )
    pay(chain, "2027-07-01", date(2027, 7, 1))
    # Maturity Sat 1 Jan 2028: preceding -> Fri 31 Dec 2027, for the coupon and redemption.
    pay(chain, "2028-01-01", date(2027, 12, 31))


def test_a_changed_calendar_moves_the_next_payment():
    chain = world("modified_following", holidays=())
    pay(chain, "2026-07-01", date(2026, 7, 1))
    # The issuer declares 1 Jan 2027 a holiday after registration: the coupon moves.
    chain.ok("ministry", "set_holiday_calendar", calendar_args(("2027-01-01",)))
    pay(chain, "2027-01-01", date(2027, 1, 1), Code.COUPON_NOT_DUE)
    pay(chain, "2027-01-01", date(2027, 1, 4))


def test_redemption_waits_for_the_adjusted_maturity():
    chain = world("following")
    for coupon, on in (
        ("2026-07-01", date(2026, 7, 1)),
        ("2027-01-01", date(2027, 1, 4)),
        ("2027-07-01", date(2027, 7, 1)),
        ("2028-01-01", date(2028, 1, 3)),  # Sat 1 Jan 2028 -> Mon 3 Jan
    ):
        pay(chain, coupon, on)
    args = {"instrument": BOND, "cash": "PKR"}
    chain.at(date(2028, 1, 2)).expect(Code.NOT_MATURED, "central-bank", "redeem", args)
    chain.at(date(2028, 1, 3)).ok("central-bank", "redeem", args)


@pytest.mark.parametrize(
    ("extra", "code", "needle"),
    [
        ({"business_day_convention": "following"}, Code.BAD_FIELD, "go together"),
        ({"holiday_calendar": CAL}, Code.BAD_FIELD, "go together"),
        (
            {"business_day_convention": "unadjusted", "holiday_calendar": CAL},
            Code.BAD_FIELD,
            "absent",
        ),
        ({"business_day_convention": "nearest", "holiday_calendar": CAL}, Code.BAD_FIELD, "one of"),
        (
            {"business_day_convention": "following", "holiday_calendar": "NONE"},
            Code.BAD_FIELD,
            "exist",
        ),
    ],
)
def test_bond_business_day_refusals(extra, code, needle):
    chain = Chain()
    chain.ok("ministry", "set_holiday_calendar", calendar_args())
    args = {
        "id": BOND,
        "kind": "bond",
        "name": "b",
        "isin": "US0378331005",
        "currency": "PKR",
        "face_value": 100_000,
        "decimals": 0,
        "cap": 10,
        "usd_face_value": 1,
        "issue_date": "2026-01-01",
        "maturity_date": "2028-01-01",
        "coupon_rate": "0.08",
        "coupon_frequency": 2,
        "day_count": "ACT/ACT-ICMA",
        **extra,
    }
    assert needle in chain.expect(code, "ministry", "register_instrument", args).log


def test_bonds_without_a_convention_keep_their_receipts():
    # No `payment_date` attribute (nor record fields) unless the bond has a convention.
    chain = Chain()
    chain.cash()
    chain.bond()
    chain.investor("alice")
    chain.issue(BOND, "alice", 1)
    chain.issue("PKR", "central-bank", 10**9, issuer="central-bank")
    summary = pay(chain, "2026-07-01", date(2026, 7, 1)).events[0].attributes
    assert "payment_date" not in summary
    record = chain.state.instruments[BOND].to_map()
    assert "business_day_convention" not in record and "holiday_calendar" not in record
