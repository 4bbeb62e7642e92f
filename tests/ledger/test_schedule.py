"""Schedules as issued (ledger/schedule.py) and the bond fields that state them.

The [ISDA-EMU] examples of tests/ledger/test_bondmath.py (ISDA, "EMU and market conventions:
recent developments", 1998: long first period, short final period) are restated here as the
bonds they come from, so the coupon the ledger pays for them is checked, not only a year
fraction given by hand.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest

from ledger import codec
from ledger.bondmath import (
    BondMathError,
    DayCount,
    Schedule,
    coupon_schedule,
    scheduled_accrued_interest,
    scheduled_coupon,
)
from ledger.codes import Code
from ledger.types import Instrument
from tests.ledger.test_ops_harness import Chain

ICMA = DayCount.ACT_ACT_ICMA


def coupon(schedule: Schedule, day: date, face: int = 100_000, rate: str = "0.1") -> Fraction:
    return Fraction(scheduled_coupon(face, Decimal(rate), ICMA, schedule, day))


def test_default_schedule_is_the_old_rule():
    for maturity in (date(2035, 8, 30), date(2035, 8, 31), date(2027, 2, 28), date(2030, 3, 29)):
        schedule = Schedule(date(2025, 1, 15), maturity, 2)
        assert schedule.dates() == coupon_schedule(date(2025, 1, 15), maturity, 2)
    assert Schedule(date(2025, 1, 15), date(2027, 2, 28), 2).dates()[:2] == (
        date(2025, 2, 28),
        date(2025, 8, 31),
    )


def test_isda_emu_long_first_coupon_as_a_bond():
    # Semi-annual on 15 Jan / 15 Jul, issued 15 Aug 2002, first coupon 15 Jul 2003 (long):
    # 153/(2x184) + 181/(2x181) of a year. 10 % on 100,000: 10,000 x 0.9157608695... per unit.
    schedule = Schedule(date(2002, 8, 15), date(2005, 1, 15), 2, first_coupon=date(2003, 7, 15))
    assert schedule.dates() == (
        date(2003, 7, 15),
        date(2004, 1, 15),
        date(2004, 7, 15),
        date(2005, 1, 15),
    )
    want = 10_000 * (Fraction(153, 368) + Fraction(1, 2))
    assert coupon(schedule, date(2003, 7, 15)) - want < Fraction(1, 10**44)
    assert f"{float(want) / 10_000:.12f}" == "0.915760869565"
    assert coupon(schedule, date(2004, 1, 15)) == 5_000  # then regular
    # Accrued to 15 Jan 2003 (the notional date inside the long period): 153/368 of a year.
    accrued = scheduled_accrued_interest(100_000, Decimal("0.1"), ICMA, schedule, date(2003, 1, 15))
    assert Fraction(accrued) - 10_000 * Fraction(153, 368) < Fraction(1, 10**44)


def test_isda_emu_short_final_coupon_as_a_bond():
    # Semi-annual on the 30th, penultimate coupon 30 Jan 2000, maturity 30 Jun 2000: the final
    # stub against the notional 30 Jan -> 30 Jul 2000 (182 days): 152/(2x182) = 0.417582...
    schedule = Schedule(
        date(1999, 1, 30), date(2000, 6, 30), 2, penultimate_coupon=date(2000, 1, 30)
    )
    assert schedule.dates() == (date(1999, 7, 30), date(2000, 1, 30), date(2000, 6, 30))
    assert coupon(schedule, date(2000, 1, 30)) == 5_000
    want = 10_000 * Fraction(152, 364)
    assert coupon(schedule, date(2000, 6, 30)) - want < Fraction(1, 10**44)
    # Without the penultimate date the same maturity rolls back on month ends (30 Jun is
    # one): 31 Dec 1999 -> 30 Jun 2000 would be a regular period, 5,000.
    assert coupon(Schedule(date(1999, 1, 30), date(2000, 6, 30), 2), date(2000, 6, 30)) == 5_000


def test_long_last_coupon_spans_two_notional_periods():
    # Quarterly on the 15th, penultimate 15 Feb 2026, maturity 30 Jun 2026: notional 15 Feb ->
    # 15 May (89 days, all) and 15 May -> 15 Aug (92 days, 46 accrued to 30 Jun).
    schedule = Schedule(
        date(2025, 2, 15), date(2026, 6, 30), 4, penultimate_coupon=date(2026, 2, 15)
    )
    want = 10_000 * (Fraction(89, 4 * 89) + Fraction(46, 4 * 92))
    assert coupon(schedule, date(2026, 6, 30)) - want < Fraction(1, 10**44)


def test_end_of_month_no_keeps_the_28th():
    # Maturity 28 Feb 2027 (a common year, so a month end): by default every date is a month
    # end (31 Aug); with end_of_month "no" the bond pays on the 28th, as issued.
    default = Schedule(date(2025, 3, 1), date(2027, 2, 28), 2)
    assert default.dates()[:2] == (date(2025, 8, 31), date(2026, 2, 28))
    on_28th = Schedule(date(2025, 3, 1), date(2027, 2, 28), 2, end_of_month=False)
    assert on_28th.dates() == (
        date(2025, 8, 28),
        date(2026, 2, 28),
        date(2026, 8, 28),
        date(2027, 2, 28),
    )
    # The first (short) period is measured against 28 Feb -> 28 Aug 2025 (181 days).
    assert coupon(on_28th, date(2025, 8, 28)) - 10_000 * Fraction(180, 362) < Fraction(1, 10**44)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"first_coupon": date(2025, 3, 15)}, "not a regular date"),
        ({"first_coupon": date(2025, 1, 1)}, "not after issue"),
        ({"penultimate_coupon": date(2030, 1, 1)}, "not between"),
        ({"end_of_month": True}, "month-end anchor"),
    ],
)
def test_schedule_refusals(kwargs, message):
    with pytest.raises(BondMathError, match=message):
        Schedule(date(2025, 1, 15), date(2027, 8, 30), 2, **kwargs)


def test_a_first_coupon_too_long_to_measure_is_refused_when_the_schedule_is_made():
    # 25 monthly grid periods in the first coupon: more than MAX_NOTIONAL_PERIODS (24). Its
    # coupon could not be computed when due, so the schedule (and the bond) is refused now.
    with pytest.raises(BondMathError, match="notional periods"):
        Schedule(date(2025, 1, 15), date(2030, 1, 15), 12, first_coupon=date(2027, 2, 15))
    Schedule(date(2025, 1, 15), date(2030, 1, 15), 12, first_coupon=date(2027, 1, 15))


def test_registered_bond_with_a_long_first_coupon_pays_it():
    chain = Chain()
    chain.cash()
    chain.bond(
        issue_date="2026-02-01",
        maturity_date="2028-01-01",
        first_coupon_date="2027-01-01",
        end_of_month="no",
    )
    chain.investor("alice")
    chain.issue("PKBOND28", "alice", 10)
    chain.issue("PKR", "central-bank", 10**9, issuer="central-bank")
    bond = chain.state.instruments["PKBOND28"]
    assert bond.next_coupon == date(2027, 1, 1)
    assert (bond.first_coupon_date, bond.end_of_month) == (date(2027, 1, 1), "no")
    receipt = chain.at(date(2027, 1, 1)).ok(
        "central-bank",
        "pay_coupon",
        {"instrument": "PKBOND28", "cash": "PKR", "coupon_date": "2027-01-01"},
    )
    # 8 % of 100,000: 1 Feb -> 1 Jul 2026 is 150 of 181 days of a notional half-year, then
    # a whole half-year: 8,000 x (150/362 + 1/2) = 7,314.9171... per unit; 10 units: 73,149.
    per_unit = Fraction(Decimal(receipt.events[0].attributes["per_unit"]))
    want = 8_000 * (Fraction(150, 362) + Fraction(1, 2))
    assert 0 <= per_unit - want < Fraction(1, 10**44)
    assert receipt.events[1].attributes["amount"] == (want * 10).__floor__() == 73_149


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"first_coupon_date": "2026-03-15"}, "not a regular date"),
        ({"penultimate_coupon_date": "2029-01-01"}, "not between"),
        ({"end_of_month": "maybe"}, "end_of_month"),
        ({"end_of_month": "yes"}, "month-end anchor"),  # maturity 1 Jan is no month end
        ({"first_coupon_date": "2026-7-1"}, "first_coupon_date"),
    ],
)
def test_registration_refuses_a_schedule_that_cannot_be(extra, needle):
    chain = Chain()
    args = {
        "id": "PKBOND28",
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
    receipt = chain.expect(Code.BAD_FIELD, "ministry", "register_instrument", args)
    assert needle in receipt.log


def test_schedule_fields_are_absent_from_the_record_until_set():
    base = Instrument("X", "bond", "n", None, "PKR", 1, 0, 1, 1, b"\x01" * 20)
    assert not {"first_coupon_date", "penultimate_coupon_date", "end_of_month"} & set(base.to_map())
    full = Instrument(
        "X",
        "bond",
        "n",
        None,
        "PKR",
        1,
        0,
        1,
        1,
        b"\x01" * 20,
        first_coupon_date=date(2026, 7, 1),
        penultimate_coupon_date=date(2027, 7, 1),
        end_of_month="no",
    )
    encoded = codec.encode_presorted(full.to_map())
    assert encoded == codec.encode(full.to_map())
    assert Instrument.from_map(codec.decode(encoded)) == full
