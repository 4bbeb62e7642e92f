"""Paying holders in the cash token: coupons, amortisation and redemption at maturity.

The paying agent pays every holder of the instrument from its own cash-token holding. The
register it pays from is the register at the record date: from the record date (coupon or
maturity date minus `closed_period_days`) until the payment is made, units of the instrument
cannot move (`common.check_movable`), so the current holders are the record-date holders.

A cash-token unit is one minor unit of its currency (enforced at registration), so the
per-unit amounts of `bondmath` (minor units) are cash units directly; each holder is paid
`floor(per_unit x units)` and the rounding residual is reported in the receipt.

Units are what is paid on, frozen or not; when a redemption extinguishes frozen units, the
cash paid for them is frozen in their place, so a legal freeze survives maturity.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

from ledger import bondmath
from ledger.codes import Code
from ledger.ops import debt
from ledger.ops.common import (
    Args,
    TxView,
    check_eligible,
    fail,
    get_instrument,
    instrument_id_arg,
    require_approvals,
    show,
)
from ledger.ops.instruments import END_OF_MONTH
from ledger.ops.paydates import payment_date
from ledger.protocol import BALANCE_CHANGES_VERSION
from ledger.state import State
from ledger.types import (
    BOND,
    CASH,
    TBILL,
    BlockContext,
    Event,
    Holding,
    Instrument,
    Programme,
)


def bond_schedule(bond: Instrument) -> bondmath.Schedule:
    """The coupon schedule of a registered bond, as its record defines it."""
    assert bond.issue_date is not None and bond.maturity_date is not None
    return bondmath.Schedule(
        bond.issue_date,
        bond.maturity_date,
        bond.coupon_frequency,
        bond.first_coupon_date,
        bond.penultimate_coupon_date,
        END_OF_MONTH[bond.end_of_month],
    )


def _coupon_v1(bond: Instrument, coupon_date: date) -> tuple[Decimal, date | None]:
    """Protocol version 1's coupon (ledger/protocol.py): the period measured from its two
    dates alone, which overpays some irregular ACT/ACT-ICMA first periods (docs/PROTOCOL.md
    section 9). Kept only so that a chain started before version 2 replays as it ran."""
    assert bond.issue_date is not None and bond.maturity_date is not None
    periods = bondmath.coupon_periods(bond.issue_date, bond.maturity_date, bond.coupon_frequency)
    index = next(i for i, (_, end) in enumerate(periods) if end == coupon_date)
    start, end = periods[index]
    per_unit = bondmath.coupon_per_unit(
        bond.face_value,
        bondmath.parse_rate(bond.coupon_rate),
        bond.coupon_frequency,
        bondmath.DayCount(bond.day_count),
        start,
        end,
    )
    following = periods[index + 1][1] if index + 1 < len(periods) else None
    return per_unit, following


def _cash_for(state: State, cash_id: str, instrument: Instrument) -> Instrument:
    cash = get_instrument(state, cash_id)
    if cash.kind != CASH:
        fail(Code.WRONG_INSTRUMENT_KIND, f"{cash_id} is a {cash.kind}, payments are in cash")
    if cash.currency != instrument.currency:
        fail(
            Code.WRONG_INSTRUMENT_KIND,
            f"{instrument.id} pays in {instrument.currency}, {cash_id} is {cash.currency}",
        )
    if cash.paused:
        fail(Code.INSTRUMENT_PAUSED, f"the cash token {cash.id} is paused")
    return cash


def _pay(
    state: State,
    ctx: BlockContext,
    tx: TxView,
    instrument: Instrument,
    cash: Instrument,
    per_unit: Decimal,
) -> tuple[bondmath.Distribution, dict[bytes, Holding], int]:
    """Check the payer can pay `per_unit` on every unit held; return what to write.

    Returns the distribution, the new cash holdings of every payee and of the payer, and
    what leaves the payer (a payer that holds the instrument pays itself nothing net).
    """
    if instrument.paused:
        fail(Code.INSTRUMENT_PAUSED, f"instrument {instrument.id} is paused")
    check_eligible(state, ctx, tx.account, cash, receiving=False)
    holders = state.holdings[instrument.id]
    distribution = bondmath.distribute(
        per_unit, {address: holding.balance for address, holding in holders.items()}
    )
    payer = tx.sender
    own_share = next((amount for holder, amount in distribution.payments if holder == payer), 0)
    outflow = distribution.total - own_share
    cash_holdings = state.holdings[cash.id]
    payer_holding = cash_holdings.get(payer)
    balance = 0 if payer_holding is None else payer_holding.balance
    frozen = 0 if payer_holding is None else payer_holding.frozen
    if balance < outflow:
        fail(
            Code.INSUFFICIENT_BALANCE,
            f"paying {instrument.id} needs {outflow} units of {cash.id}; "
            f"{show(payer)} holds {balance}",
        )
    if balance - frozen < outflow:
        fail(
            Code.INSUFFICIENT_UNFROZEN_BALANCE,
            f"paying {instrument.id} needs {outflow} units of {cash.id}; {show(payer)} holds "
            f"{balance} of which {frozen} are frozen",
        )
    writes: dict[bytes, Holding] = {}
    for holder, amount in distribution.payments:
        if holder == payer:
            continue
        current = cash_holdings.get(holder)
        writes[holder] = (
            Holding(amount, 0)
            if current is None
            else Holding(current.balance + amount, current.frozen)
        )
    if outflow:
        writes[payer] = Holding(balance - outflow, frozen)
    return distribution, writes, outflow


def _payment_events(
    state: State,
    kind: str,
    instrument: Instrument,
    cash: Instrument,
    distribution: bondmath.Distribution,
) -> list[Event]:
    """One event per holder paid. From protocol version 3 `instrument` is what `to` was
    credited (the cash token, as in a transfer or an issue) and `security` what it was paid
    on: before, `instrument` named the bond, so a reader keyed on `to` and `instrument`
    booked a deposit of bonds (issue 17)."""
    if state.protocol_version >= BALANCE_CHANGES_VERSION:
        return [
            Event(
                kind,
                {"amount": amount, "instrument": cash.id, "security": instrument.id, "to": holder},
            )
            for holder, amount in distribution.payments
        ]
    return [
        Event(kind, {"instrument": instrument.id, "cash": cash.id, "to": holder, "amount": amount})
        for holder, amount in distribution.payments
    ]


def pay_coupon(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, cash, coupon_date}`: pay the bond's next coupon to every holder.

    Coupons are paid in order, on or after their date, each once; the coupon for the period
    ending on `coupon_date` is `bondmath.scheduled_coupon` of the bond's schedule. For an Ijara
    sukuk the coupon is the periodic rental paid to the certificate holders (its events are
    named so, `debt.SUKUK_NAMES`), at the rental rate `coupon_rate` or a floating one.
    """
    instrument_id = instrument_id_arg(args)
    cash_id = instrument_id_arg(args, "cash")
    coupon_date = args.day("coupon_date")
    args.done()
    require_approvals(state, tx, "pay_coupon")
    bond = get_instrument(state, instrument_id)
    if bond.kind != BOND:
        fail(Code.WRONG_INSTRUMENT_KIND, f"{bond.id} is a {bond.kind}; only bonds pay coupons")
    cash = _cash_for(state, cash_id, bond)
    if bond.next_coupon is None:
        fail(Code.COUPON_NOT_DUE, f"every coupon of {bond.id} has been paid")
    if coupon_date != bond.next_coupon:
        fail(
            Code.COUPON_NOT_DUE,
            f"the next unpaid coupon of {bond.id} is on {bond.next_coupon}, not {coupon_date}",
        )
    due = payment_date(state, bond, coupon_date)
    if ctx.date < due:
        fail(
            Code.COUPON_NOT_DUE,
            f"coupon of {coupon_date} is not due until {due} (block date {ctx.date})",
        )
    floating: dict = {}  # a floating-rate note's reset, reported in its event
    if state.protocol_version < 2:
        per_unit, following = _coupon_v1(bond, coupon_date)
    else:
        schedule = bond_schedule(bond)
        dates = schedule.dates()
        index = dates.index(coupon_date)
        following = dates[index + 1] if index + 1 < len(dates) else None
        if bond.terms is not None and bond.terms.called_on == coupon_date:
            following = None  # called: no coupon after the call date (version 3)
        rate = bondmath.parse_rate(bond.coupon_rate)
        if debt.is_floating(bond):
            # A floating-rate note: this period's fixing plus the spread (version 3).
            reset = debt.floating_rate(
                state, bond, bond.issue_date if index == 0 else dates[index - 1]
            )
            rate = reset.rate
            floating = {
                "rate": str(reset.rate),
                "fixing_date": reset.fixing_date.isoformat(),
                "fixing": reset.fixing.rate,
                "fixing_of": reset.fixing.day.isoformat(),
            }
        # The amount comes from the schedule as a whole: an irregular period is measured
        # against the schedule's own grid (issue 18: measuring a period from its two dates
        # alone guessed the grid and overpaid first coupons that fall on a clipped month end).
        if bond.terms is not None and bond.terms.amortising:
            _amortised_first(bond, coupon_date)
            per_unit = debt.amortised_coupon(bond, schedule, rate, coupon_date)
        else:
            per_unit = bondmath.scheduled_coupon(
                bond.face_value, rate, bondmath.DayCount(bond.day_count), schedule, coupon_date
            )
    distribution, writes, outflow = _pay(state, ctx, tx, bond, cash, per_unit)
    for holder, holding in sorted(writes.items()):
        state.put_holding(cash.id, holder, holding)
    state.put_instrument(replace(bond, next_coupon=following, last_coupon_paid=coupon_date))
    names = debt.event_names(bond)
    summary = Event(
        names["coupon_paid"],
        {
            "instrument": bond.id,
            "cash": cash.id,
            "coupon_date": coupon_date.isoformat(),
            "per_unit": str(per_unit),
            "total": distribution.total,
            "paid_out": outflow,
            "residual": str(distribution.residual),
            names["holders"]: len(distribution.payments),
            "paying_agent": tx.sender,
            # Only for bonds with a business-day convention: receipts of the others stay
            # byte for byte what they were.
            **({"payment_date": due.isoformat()} if bond.business_day_convention else {}),
            **floating,
        },
    )
    return [summary, *_payment_events(state, names["coupon_payment"], bond, cash, distribution)]


def redeem(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, cash}`: at maturity pay face value on every unit and burn the units.
    For an Ijara sukuk this is its dissolution (`debt.SUKUK_NAMES`): the obligor buys the
    asset back at the dissolution amount (face value) and the certificates are cancelled."""
    instrument_id = instrument_id_arg(args)
    cash_id = instrument_id_arg(args, "cash")
    args.done()
    require_approvals(state, tx, "redeem")
    instrument = get_instrument(state, instrument_id)
    if instrument.kind not in (BOND, TBILL):
        fail(
            Code.WRONG_INSTRUMENT_KIND,
            f"{instrument.id} is a {instrument.kind}; only bonds and T-bills are redeemed",
        )
    cash = _cash_for(state, cash_id, instrument)
    if instrument.redeemed:
        fail(Code.INSTRUMENT_MATURED, f"{instrument.id} has already been redeemed")
    final = debt.final_date(instrument)  # maturity, or the call date once called
    assert final is not None
    due = payment_date(state, instrument, final)
    if ctx.date < due:
        fail(
            Code.NOT_MATURED,
            f"{instrument.id} matures on {final}, payable {due} (block date {ctx.date})",
        )
    if instrument.next_coupon is not None:
        fail(
            Code.COUPON_UNPAID,
            f"the coupon of {instrument.next_coupon} on {instrument.id} must be paid first",
        )
    if instrument.terms is not None and instrument.terms.amortising:
        _amortised_first(instrument, final)
    per_unit = debt.redemption_per_unit(instrument)
    distribution, writes, outflow = _pay(state, ctx, tx, instrument, cash, per_unit)
    holders = sorted(state.holdings[instrument.id].items())
    _freeze_cash_for_frozen_units(writes, holders, per_unit)
    for holder, holding in sorted(writes.items()):
        state.put_holding(cash.id, holder, holding)
    for address, _ in holders:
        state.put_holding(instrument.id, address, None)
    state.put_instrument(replace(instrument, supply=0, redeemed=True))
    programme = state.programme
    state.put_programme(
        Programme(
            programme.cap_usd_cents,
            programme.outstanding_usd_cents - instrument.supply * instrument.usd_face_value,
        )
    )
    names = debt.event_names(instrument)
    summary = Event(
        names["redeemed"],
        {
            "instrument": instrument.id,
            "cash": cash.id,
            "units": instrument.supply,
            "total": distribution.total,
            "paid_out": outflow,
            "residual": str(distribution.residual),
            names["holders"]: len(holders),
            "paying_agent": tx.sender,
        },
    )
    events = _payment_events(state, names["redemption_payment"], instrument, cash, distribution)
    return [summary, *events]


def _freeze_cash_for_frozen_units(
    writes: dict[bytes, Holding], holders: list[tuple[bytes, Holding]], per_unit: Decimal
) -> None:
    """Principal paid on frozen units is frozen cash: a legal freeze survives repayment."""
    for address, holding in holders:
        if holding.frozen and address in writes:
            new = writes[address]
            extra = int(Fraction(per_unit) * holding.frozen)  # floor: amounts are positive
            writes[address] = Holding(new.balance, min(new.balance, new.frozen + extra))


def _amortised_first(bond: Instrument, day: date) -> None:
    """A coupon or the redemption on `day` waits for every amortisation dated on or before
    it: the amortisation on a coupon date is paid while that coupon's record-date freeze
    still holds, so it goes to the record-date holders too."""
    terms = bond.terms
    assert terms is not None
    parts = debt.live_parts(terms)  # a called bond's parts from its call date on: none due
    if terms.amortised < len(parts) and parts[terms.amortised][0] <= day:
        fail(
            Code.AMORTISATION_UNPAID,
            f"the amortisation of {parts[terms.amortised][0]} on {bond.id} must be paid first",
        )


def amortise(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, cash, date}`: pay an amortising bond's scheduled partial redemption due
    on `date` (version 3, policy rule "redeem").

    Each holder gets floor(face x percent / 100 x units) (the same rounding as a redemption,
    the residual reported); units stay, their outstanding face is reduced, so later coupons
    and the final redemption are paid on what remains (`debt.outstanding_micro`). Paid in
    order, on or after the (business-day adjusted) date, once, and before the coupon of the
    same date: the coupon's record-date freeze then covers the amortisation too.
    """
    debt.require_debt_office(state, "amortise")
    instrument_id = instrument_id_arg(args)
    cash_id = instrument_id_arg(args, "cash")
    day = args.day("date")
    args.done()
    require_approvals(state, tx, "redeem")
    bond = get_instrument(state, instrument_id)
    terms = bond.terms
    if bond.kind != BOND or terms is None or not terms.amortising:
        fail(Code.WRONG_INSTRUMENT_KIND, f"{bond.id} is not an amortising bond")
    cash = _cash_for(state, cash_id, bond)
    if bond.redeemed:
        fail(Code.INSTRUMENT_MATURED, f"{bond.id} has already been redeemed")
    if terms.amortised >= len(terms.amortisation):
        fail(Code.AMORTISATION_NOT_DUE, f"every scheduled amortisation of {bond.id} is paid")
    scheduled, percent = terms.amortisation[terms.amortised]
    if terms.called_on is not None and scheduled >= terms.called_on:
        # Version 4: the call redeems the face outstanding on its date at the call price.
        fail(
            Code.AMORTISATION_CALLED,
            f"{bond.id} is called for {terms.called_on}: its part of {scheduled} is redeemed "
            "by the call",
        )
    if day != scheduled:
        fail(
            Code.AMORTISATION_NOT_DUE,
            f"the next unpaid amortisation of {bond.id} is on {scheduled}, not {day}",
        )
    if bond.next_coupon != day:
        fail(Code.COUPON_UNPAID, f"the coupon of {bond.next_coupon} on {bond.id} is unpaid")
    due = payment_date(state, bond, day)
    if ctx.date < due:
        fail(
            Code.AMORTISATION_NOT_DUE,
            f"the amortisation of {day} is not due until {due} (block date {ctx.date})",
        )
    per_unit = debt.of_face(bond.face_value, debt.percent_micro(percent))
    distribution, writes, outflow = _pay(state, ctx, tx, bond, cash, per_unit)
    _freeze_cash_for_frozen_units(writes, sorted(state.holdings[bond.id].items()), per_unit)
    for holder, holding in sorted(writes.items()):
        state.put_holding(cash.id, holder, holding)
    state.put_instrument(replace(bond, terms=replace(terms, amortised=terms.amortised + 1)))
    outstanding = debt.outstanding_micro(bond, day + timedelta(days=1))  # after this one
    summary = Event(
        "amortised",
        {
            "instrument": bond.id,
            "cash": cash.id,
            "date": day.isoformat(),
            "percent": percent,
            "outstanding_percent": debt.percent_text(outstanding),
            "per_unit": str(per_unit),
            "total": distribution.total,
            "paid_out": outflow,
            "residual": str(distribution.residual),
            "holders": len(distribution.payments),
            "paying_agent": tx.sender,
            **({"payment_date": due.isoformat()} if bond.business_day_convention else {}),
        },
    )
    return [summary, *_payment_events(state, "amortisation_payment", bond, cash, distribution)]


def _sukuk_only(state: State, args: Args, op_name: str) -> None:
    """The sukuk names of the payments exist from version 3 and only for sukuk."""
    debt.require_debt_office(state, op_name)
    if not args.has("instrument"):
        return  # pay_coupon / redeem refuse the missing field themselves
    instrument = state.instruments.get(args.raw_peek("instrument"))
    if instrument is not None and not debt.is_sukuk(instrument):
        fail(Code.WRONG_INSTRUMENT_KIND, f"{instrument.id} is not a sukuk: {op_name} pays sukuk")


def pay_rental(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, cash, coupon_date}`: an Ijara sukuk's periodic rental to its certificate
    holders; `pay_coupon` under the name its documents use (policy rule "pay_coupon")."""
    _sukuk_only(state, args, "pay_rental")
    return pay_coupon(state, ctx, tx, args)


def dissolve_sukuk(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, cash}`: an Ijara sukuk's dissolution at maturity; `redeem` under the name
    its documents use (policy rule "redeem")."""
    _sukuk_only(state, args, "dissolve_sukuk")
    return redeem(state, ctx, tx, args)
