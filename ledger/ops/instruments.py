"""Defining instruments and stopping them: register, pause, unpause."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date

from ledger import bondmath, business_days
from ledger.codes import Code
from ledger.ops import debt
from ledger.ops.common import (
    Args,
    TxView,
    fail,
    get_instrument,
    instrument_id_arg,
    require_approvals,
    require_role,
)
from ledger.protocol import DEBT_OFFICE
from ledger.state import State
from ledger.types import (
    BOND,
    CASH,
    CASH_ISSUER,
    COMMODITY,
    INSTRUMENT_KINDS,
    ISSUER,
    REGULATOR,
    TBILL,
    BlockContext,
    Event,
    HolidayCalendar,
    Instrument,
)

ISIN_RE = re.compile(r"[A-Z]{2}[A-Z0-9]{9}[0-9]")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
CATEGORY_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
WEEKDAY_RE = re.compile("|".join(business_days.WEEKDAYS))
POLICY_RULE_SET_CALENDAR = "register_instrument"  # ledger.ops.POLICY_NAMES says the same
MAX_DECIMALS = 18
END_OF_MONTH = {"": None, "yes": True, "no": False}
"""A bond's `end_of_month` field: absent (the rule in force when the anchor is a month end),
"yes" (every coupon date a month end) or "no" (the anchor's day of month, clipped)."""


def isin_is_valid(isin: str) -> bool:
    """ISO 6166: two letters, nine alphanumerics, and a Luhn check digit over the digits
    obtained by replacing each letter with its value (A=10 ... Z=35)."""
    if not ISIN_RE.fullmatch(isin):
        return False
    digits = "".join(str(int(c, 36)) for c in isin)
    total = 0
    # Luhn: from the right, double every second digit (the check digit itself is not doubled).
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def register_instrument(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """Define a bond, T-bill, commodity or cash token. Fields (by kind):

    all: `id`, `kind`, `name`, `currency` (ISO 4217), `face_value` (minor units per unit),
    `decimals`, `cap` (units); optional `allowed_countries`, `allowed_categories`,
    `max_holders`, `max_balance`.
    bond, T-bill, commodity: `usd_face_value` (US cents per unit, for the programme cap).
    bond, T-bill: `isin` (check digit verified), `issue_date`, `maturity_date` (after the
    block date). bond: `coupon_rate` (decimal fraction text), `coupon_frequency` (1, 2, 4,
    12), `day_count`; optional `first_coupon_date`, `penultimate_coupon_date`, `end_of_month`
    ("yes"/"no"), the schedule as issued (`bondmath.Schedule`); optional
    `business_day_convention` with `holiday_calendar` (the issuer's own calendar, see
    `set_holiday_calendar`): payment dates move off its non-business days. commodity: `unit`, optional `isin`.
    cash: `face_value` must be 1 (one cash unit is one minor unit of its currency).
    Bonds, T-bills and commodities are registered by the issuer, cash tokens by the
    cash-token issuer; the registering account is the instrument's issuer.
    """
    instrument_id = instrument_id_arg(args, "id")
    kind = args.text("kind", max_len=16)
    if kind not in INSTRUMENT_KINDS:
        fail(Code.BAD_FIELD, f"kind must be one of {list(INSTRUMENT_KINDS)}, got {kind!r}")
    name = args.text("name")
    currency = args.text("currency", pattern=CURRENCY_RE)
    face_value = args.integer("face_value", lo=1)
    decimals = args.integer("decimals", hi=MAX_DECIMALS)
    cap = args.integer("cap", lo=1)
    allowed_countries = args.countries("allowed_countries")
    allowed_categories = args.text_list("allowed_categories", pattern=CATEGORY_RE, optional=True)
    max_holders = args.opt_integer("max_holders", default=0)
    max_balance = args.opt_integer("max_balance", default=0)
    fields: dict = {}
    if kind == CASH:
        if face_value != 1:
            fail(Code.BAD_FIELD, f"a cash token's face_value is 1 minor unit, got {face_value}")
    else:
        fields["usd_face_value"] = args.integer("usd_face_value", lo=1)
    if kind in (BOND, TBILL):
        fields["isin"] = args.text("isin", max_len=12)
        fields["issue_date"] = issue = args.day("issue_date")
        fields["maturity_date"] = maturity = args.day("maturity_date")
        if maturity <= issue:
            fail(Code.BAD_FIELD, f"maturity {maturity} is not after issue {issue}")
        if maturity <= ctx.date:
            fail(Code.BAD_FIELD, f"maturity {maturity} is not after the block date {ctx.date}")
    if kind == BOND:
        fields.update(
            _coupon_fields(state, args, tx, fields["issue_date"], fields["maturity_date"])
        )
    if kind == COMMODITY:
        fields["unit"] = args.text("unit", max_len=32)
        if args.has("isin"):
            fields["isin"] = args.text("isin", max_len=12)
    args.done()
    isin = fields.get("isin")
    if isin is not None and not isin_is_valid(isin):
        fail(Code.BAD_FIELD, f"ISIN {isin!r} is malformed or its check digit is wrong")
    unknown = sorted(set(allowed_categories) - set(state.parameters.investor_categories))
    if unknown:
        fail(
            Code.BAD_FIELD,
            f"allowed_categories {unknown} are not investor categories "
            f"{list(state.parameters.investor_categories)}",
        )
    require_approvals(state, tx, "register_instrument")
    require_role(tx.account, CASH_ISSUER if kind == CASH else ISSUER, f"registering a {kind}")
    if instrument_id in state.instruments:
        fail(Code.INSTRUMENT_EXISTS, f"instrument {instrument_id} already exists")
    if isin is not None:
        for other in sorted(state.instruments):
            if state.instruments[other].isin == isin:
                fail(Code.INSTRUMENT_EXISTS, f"ISIN {isin} is already instrument {other}")
    instrument = Instrument(
        id=instrument_id,
        kind=kind,
        name=name,
        currency=currency,
        face_value=face_value,
        decimals=decimals,
        cap=cap,
        issuer=tx.sender,
        allowed_countries=allowed_countries,
        allowed_categories=allowed_categories,
        max_holders=max_holders,
        max_balance=max_balance,
        registered_height=ctx.height,
        usd_face_value=fields.pop("usd_face_value", 0),
        isin=fields.pop("isin", None),
        **fields,
    )
    state.put_instrument(instrument)
    return [
        Event(
            "instrument_registered",
            {"instrument": instrument_id, "kind": kind, "issuer": tx.sender, "cap": cap},
        )
    ]


def _coupon_fields(state: State, args: Args, tx: TxView, issue, maturity) -> dict:
    # A floating-rate note (version 3, `debt.parse_terms`) states no fixed coupon_rate.
    floating = state.protocol_version >= DEBT_OFFICE and args.has("rate_index")
    rate_text = "0" if floating else args.text("coupon_rate", max_len=20)
    try:
        rate = bondmath.parse_rate(rate_text)
    except ValueError as exc:
        fail(Code.BAD_FIELD, f"coupon_rate: {exc}")
    if rate <= 0 and not floating:
        fail(Code.BAD_FIELD, f"a bond's coupon_rate must be positive, got {rate_text!r}")
    frequency = args.integer("coupon_frequency", lo=1, hi=12)
    if frequency not in bondmath.FREQUENCIES:
        fail(Code.BAD_FIELD, f"coupon_frequency must be one of {bondmath.FREQUENCIES}")
    day_count = args.text("day_count", max_len=16)
    if day_count not in {d.value for d in bondmath.DayCount}:
        fail(
            Code.BAD_FIELD,
            f"day_count must be one of {[d.value for d in bondmath.DayCount]}, got {day_count!r}",
        )
    first = args.opt_day("first_coupon_date")
    penultimate = args.opt_day("penultimate_coupon_date")
    end_of_month = args.opt_text("end_of_month", default="", max_len=3)
    if end_of_month not in END_OF_MONTH:
        fail(Code.BAD_FIELD, f"end_of_month must be 'yes' or 'no', got {end_of_month!r}")
    try:
        schedule = bondmath.Schedule(
            issue, maturity, frequency, first, penultimate, END_OF_MONTH[end_of_month]
        )
    except ValueError as exc:
        fail(Code.BAD_FIELD, f"coupon schedule: {exc}")
    days = _business_day_fields(state, args, tx)
    return {
        "terms": debt.parse_terms(state, args, days["holiday_calendar"], schedule.dates()),
        "coupon_rate": rate_text,
        "coupon_frequency": frequency,
        "day_count": day_count,
        "next_coupon": schedule.dates()[0],
        "first_coupon_date": first,
        "penultimate_coupon_date": penultimate,
        "end_of_month": end_of_month,
        **days,
    }


def _business_day_fields(state: State, args: Args, tx: TxView) -> dict:
    """`business_day_convention` and `holiday_calendar`: both or neither (absent: unadjusted).

    The calendar must exist and belong to the registering issuer: a bond's payment dates move
    only with a calendar its own issuer keeps.
    """
    convention = args.opt_text("business_day_convention", default="", max_len=32)
    calendar_id = args.opt_text("holiday_calendar", default="", max_len=32)
    # "unadjusted" is the field's absence: one encoding per meaning.
    moving = [name for name in business_days.CONVENTIONS if name != "unadjusted"]
    if convention and convention not in moving:
        fail(
            Code.BAD_FIELD,
            f"business_day_convention must be one of {moving} (absent: unadjusted), "
            f"got {convention!r}",
        )
    if bool(convention) != bool(calendar_id):
        fail(Code.BAD_FIELD, "business_day_convention and holiday_calendar go together")
    if calendar_id:
        calendar = state.calendars.get(calendar_id)
        if calendar is None:
            fail(Code.BAD_FIELD, f"holiday_calendar {calendar_id!r} does not exist")
        if calendar.owner != tx.sender:
            fail(Code.UNAUTHORIZED, f"holiday_calendar {calendar_id!r} belongs to another issuer")
    return {"business_day_convention": convention, "holiday_calendar": calendar_id}


def _set_paused(state: State, tx: TxView, args: Args, paused: bool, op_name: str) -> list[Event]:
    instrument_id = instrument_id_arg(args)
    reason = args.text("reason")
    args.done()
    require_approvals(state, tx, op_name)
    instrument = get_instrument(state, instrument_id)
    if instrument.issuer != tx.sender and REGULATOR not in tx.account.roles:
        fail(
            Code.UNAUTHORIZED,
            f"only the issuer of {instrument_id} or a regulator may {op_name.split('_')[0]} it",
        )
    if instrument.paused == paused:
        fail(Code.BAD_FIELD, f"{instrument_id} is already {'paused' if paused else 'active'}")
    state.put_instrument(replace(instrument, paused=paused))
    return [
        Event(
            "instrument_paused" if paused else "instrument_unpaused",
            {"instrument": instrument_id, "by": tx.sender, "reason": reason},
        )
    ]


def pause_instrument(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, reason}`: stop every movement of the instrument (issuer or regulator)."""
    return _set_paused(state, tx, args, True, "pause_instrument")


def unpause_instrument(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, reason}`: let the instrument move again."""
    return _set_paused(state, tx, args, False, "unpause_instrument")


def set_holiday_calendar(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{id, weekend, holidays}`: create or replace an issuer's business-day calendar.

    `weekend`: weekday names (`mon` ... `sun`, at most 6); `holidays`: `YYYY-MM-DD` dates (at
    most `business_days.MAX_HOLIDAYS`). The whole calendar is replaced; only the issuer that
    created it may change it. Governed by the `register_instrument` policy rule (the same
    approvals as defining an instrument). A change applies to every payment not yet made.
    """
    calendar_id = instrument_id_arg(args, "id")
    weekend = args.text_list("weekend", pattern=WEEKDAY_RE, max_items=6)
    holiday_texts = args.text_list(
        "holidays", pattern=DATE_RE, max_items=business_days.MAX_HOLIDAYS
    )
    holidays = []
    for text in holiday_texts:
        try:
            holidays.append(date.fromisoformat(text))
        except ValueError:
            fail(Code.BAD_FIELD, f"holidays: {text!r} is not a date")
    args.done()
    require_approvals(state, tx, POLICY_RULE_SET_CALENDAR)
    require_role(tx.account, ISSUER, "keeping a holiday calendar")
    existing = state.calendars.get(calendar_id)
    if existing is not None and existing.owner != tx.sender:
        fail(Code.UNAUTHORIZED, f"holiday calendar {calendar_id} belongs to another issuer")
    ordered = tuple(day for day in business_days.WEEKDAYS if day in weekend)
    state.put_calendar(
        HolidayCalendar(calendar_id, tx.sender, ordered, tuple(holidays), ctx.height)
    )
    return [
        Event(
            "holiday_calendar_set",
            {
                "calendar": calendar_id,
                "by": tx.sender,
                "weekend": ",".join(ordered),
                "holidays": len(holidays),
            },
        )
    ]
