"""Quotes (ledger/quote.py) against QuantLib's BondFunctions over generated bonds
(tests/ledger/quote_oracle.py), and the rules a quote keeps on its own."""

from __future__ import annotations

import dataclasses
import random
from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest
import QuantLib as ql

from ledger import bondmath
from ledger.codes import Code
from ledger.quote import QuoteError, quote, quote_instrument
from tests.ledger import quote_oracle
from tests.ledger.test_ops_harness import Chain

SUITE_SEED = 20261206
SUITE_COUNT = 500
ICMA = bondmath.DayCount.ACT_ACT_ICMA


def test_quotes_agree_with_quantlib_over_generated_bonds():
    count, differences = quote_oracle.check(SUITE_COUNT, SUITE_SEED)
    assert count == SUITE_COUNT and differences == []


def test_the_oracle_notices_a_wrong_time_measure(monkeypatch):
    # Negative control: stretch every cash flow's time by 0.1 % and the oracle must object.
    from ledger import quote as module

    original = module._flows

    def skewed(rate, convention, schedule, settlement, principal):
        accrued, flows = original(rate, convention, schedule, settlement, principal)
        return accrued, [(amount, time * Fraction(1001, 1000)) for amount, time in flows]

    monkeypatch.setattr(module, "_flows", skewed)
    rng = random.Random(5)
    assert any(quote_oracle.check_one(quote_oracle.quotable(rng), rng) for _ in range(20))


def test_at_the_coupon_rate_on_a_coupon_date_a_regular_bond_is_at_par():
    schedule = bondmath.Schedule(date(2026, 1, 15), date(2036, 1, 15), 2)
    answer = quote(Decimal("0.05"), ICMA, schedule, date(2028, 7, 15), yield_=Decimal("0.05"))
    assert answer.accrued == 0
    assert answer.clean_price == answer.dirty_price == Decimal("100.000000000000")
    back = quote(Decimal("0.05"), ICMA, schedule, date(2028, 7, 15), clean_price=Decimal(100))
    assert back.yield_ == Decimal("0.050000000000")


def test_mid_period_the_dirty_price_carries_the_accrued_interest():
    # 5 % semi-annual, settlement 15 Apr 2028: 91 of 182 days of the period 15 Jan -> 15 Jul.
    schedule = bondmath.Schedule(date(2026, 1, 15), date(2036, 1, 15), 2)
    answer = quote(Decimal("0.05"), ICMA, schedule, date(2028, 4, 15), yield_=Decimal("0.05"))
    assert answer.accrued == Decimal("1.250000000000")  # 100 x 5 % / 2 x 91/182
    assert answer.dirty_price == answer.clean_price + answer.accrued


@pytest.mark.parametrize(
    ("settlement", "price", "yield_", "needle"),
    [
        (date(2026, 1, 14), None, Decimal("0.05"), "settlement"),  # before issue
        (date(2036, 1, 15), None, Decimal("0.05"), "settlement"),  # at maturity
        (date(2028, 1, 1), None, None, "either"),
        (date(2028, 1, 1), Decimal(99), Decimal("0.05"), "either"),
        (date(2028, 1, 1), Decimal(0), None, "positive"),
        (date(2028, 1, 1), Decimal("0.000001"), None, "no yield"),  # needs over 1000 %
    ],
)
def test_quote_refusals(settlement, price, yield_, needle):
    schedule = bondmath.Schedule(date(2026, 1, 15), date(2036, 1, 15), 2)
    with pytest.raises(QuoteError, match=needle):
        quote(Decimal("0.05"), ICMA, schedule, settlement, clean_price=price, yield_=yield_)


def test_quote_of_a_registered_instrument():
    chain = Chain()
    chain.cash()
    chain.bond()  # 8 % semi-annual ACT/ACT-ICMA, 2026-01-01 -> 2028-01-01
    bond = chain.state.instruments["PKBOND28"]
    answer = quote_instrument(bond, date(2026, 1, 1), yield_="0.08")
    assert answer.clean_price == Decimal("100.000000000000")
    assert quote_instrument(bond, date(2026, 1, 1), clean_price="100").yield_ == Decimal(
        "0.080000000000"
    )
    for bad in ({"yield_": "8%"}, {"yield_": "1e-2"}, {"clean_price": "-1"}):
        with pytest.raises(QuoteError):
            quote_instrument(bond, date(2026, 1, 1), **bad)
    with pytest.raises(QuoteError, match="only bonds"):
        quote_instrument(chain.state.instruments["PKR"], date(2026, 1, 1), yield_="0.05")


# ---------------------------------------------------------------------------------------
# Floating-rate notes: the current period at its fixing, later ones at the index held flat

FLOATING_COUNT = 300


def test_floating_rate_note_quotes_agree_with_quantlib():
    before = dataclasses.replace(quote_oracle.FLOATING)
    count, differences = quote_oracle.check_floating(FLOATING_COUNT, SUITE_SEED)
    assert count == FLOATING_COUNT and differences == []
    after = quote_oracle.FLOATING
    # What the seed exercises: refusals for a missing current fixing, later periods already
    # fixed by settlement, projected periods and coupons floored at zero.
    assert after.refused > before.refused and after.known > before.known
    assert after.projected > before.projected and after.floored > before.floored


@pytest.mark.parametrize("mistake", ["current_rate_forever", "no_spread"])
def test_the_floating_oracle_notices_a_wrong_projection(monkeypatch, mistake):
    # Negative controls: project the current coupon (not the latest fixing), or forget the
    # spread on the projected coupons, and the oracle must object.
    from ledger import quote as module

    if mistake == "current_rate_forever":
        monkeypatch.setattr(module.Floating, "rate_of", lambda self, start: self.current.rate)
    else:
        monkeypatch.setattr(
            module.Floating, "projected", property(lambda self: Decimal(self.latest.rate))
        )
    found = quote_oracle.check_floating(40, 11)[1]
    assert found


def _frn_chain():
    from tests.ledger.test_ops_debt import BOND, CAL, INDEX, fixing, frn

    chain = frn()  # 6M T-bill + 75 bp, 2 business days before each period, 7 days' lookback

    def quote_at(settlement: date, **given):
        state = chain.state
        return quote_instrument(
            state.instruments[BOND],
            settlement,
            fixings={d: f for (name, d), f in state.fixings.items() if name == INDEX},
            calendar=state.calendars[CAL],
            **given,
        )

    return chain, quote_at, fixing


def test_a_regular_note_at_the_projected_rate_on_a_coupon_date_is_at_par():
    # Fixed on Fri 26 Jun 2026 for the period from Wed 1 Jul (two business days before it,
    # Tue 30 Jun a holiday): 11.25 % + 75 bp = 12 %; the
    # index held there, every coupon is 12 %, and at a 12 % yield a regular ACT/ACT-ICMA
    # bond is at par on a coupon date.
    chain, quote_at, fixing = _frn_chain()
    chain.at(date(2026, 6, 26)).ok("central-bank", "publish_rate_fixing", fixing("2026-06-26"))
    answer = quote_at(date(2026, 7, 1), yield_="0.12")
    assert answer.accrued == 0 and answer.clean_price == Decimal("100.000000000000")
    assert answer.floating is not None and answer.floating["projected_rate"] == "0.1200"
    # A later fixing moves the assumption, not the current coupon: at 13 % (12.25 % + 75 bp)
    # for the later coupons the note is above par at 12 %.
    chain.at(date(2026, 7, 1)).ok(
        "central-bank", "publish_rate_fixing", fixing("2026-07-01", "0.1225")
    )
    moved = quote_at(date(2026, 7, 1), yield_="0.12")
    assert moved.floating is not None and moved.floating["current_rate"] == "0.1200"
    assert moved.floating["latest_fixing"] == {"date": "2026-07-01", "rate": "0.1225"}
    assert moved.clean_price > 100
    # The discount margin is the yield over the assumed index (at par near the 75 bp spread:
    # only the current coupon, at 12 %, is not at the assumption).
    at_par = quote_at(date(2026, 7, 1), clean_price="100")
    assert at_par.floating is not None
    assert Decimal(at_par.floating["discount_margin"]) == at_par.yield_ - Decimal("0.1225")


def test_a_note_without_its_current_fixing_is_refused_with_the_ledgers_code():
    chain, quote_at, fixing = _frn_chain()
    # Published 8 days before the fixing date (Fri 26 Jun): beyond the 7 days' lookback.
    chain.at(date(2026, 6, 18)).ok("central-bank", "publish_rate_fixing", fixing("2026-06-18"))
    with pytest.raises(QuoteError, match="RATE_FIXING_MISSING") as refused:
        quote_at(date(2026, 8, 1), clean_price="100")
    assert refused.value.code == Code.RATE_FIXING_MISSING


@pytest.mark.parametrize(
    ("compounding", "least"),
    [("Simple", 3e-3), ("Continuous", 3e-3), ("Compounded", 1e-5)],
)
def test_why_the_oracle_gives_quantlib_fixings_not_a_flat_curve(compounding, least):
    # quote_oracle's docstring: QuantLib forecasts a floating coupon's fixing as the simple
    # forward over the index's own span on Actual/360 from a curve, so a flat forward curve
    # at the latest fixing L projects each 6-month period (181 to 184 days) at a rate other
    # than L -- by far more than the oracle's 1e-9 in price -- whatever its compounding.
    today = ql.Date(1, 4, 2026)
    before = ql.Settings.instance().evaluationDate
    ql.Settings.instance().evaluationDate = today
    try:
        rates = _flat_curve_rates(today, compounding)
    finally:
        ql.Settings.instance().evaluationDate = before
    fixing = 0.12
    assert rates[0] == pytest.approx(fixing + 0.0075, abs=1e-15)  # the historic fixing
    assert all(abs(rate - (fixing + 0.0075)) > least for rate in rates[1:])


def _flat_curve_rates(today: ql.Date, compounding: str) -> list[float]:
    """The coupon rates of a 2-year semi-annual FRN (+75 bp) fixed at 12 % on 1 Jan 2026,
    projected from a flat forward curve at 12 %."""
    fixing = 0.12
    curve = ql.YieldTermStructureHandle(
        ql.FlatForward(today, fixing, ql.Actual360(), getattr(ql, compounding), ql.Semiannual)
    )
    index = ql.IborIndex(
        "FLAT", ql.Period(6, ql.Months), 0, ql.USDCurrency(), ql.NullCalendar(),
        ql.Unadjusted, False, ql.Actual360(), curve,
    )  # fmt: skip
    schedule = ql.Schedule(
        ql.Date(1, 1, 2026), ql.Date(1, 1, 2028), ql.Period(6, ql.Months), ql.NullCalendar(),
        ql.Unadjusted, ql.Unadjusted, ql.DateGeneration.Backward, False,
    )  # fmt: skip
    index.addFixing(ql.Date(1, 1, 2026), fixing)
    bond = ql.FloatingRateBond(
        0, 100, schedule, index, ql.ActualActual(ql.ActualActual.ISMA), ql.Unadjusted, 0,
        [1.0], [0.0075],
    )  # fmt: skip
    return [ql.as_floating_rate_coupon(c).rate() for c in bond.cashflows()[:-1]]
