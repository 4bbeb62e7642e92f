"""A debt office's instruments (protocol version 3, issue 18): their terms and rate fixings.

* `parse_terms` reads a bond's version-3 fields at registration (`register_instrument`):
  `record_business_days`, the floating-rate terms (`rate_index`, `spread_bp`, `fixing_days`,
  `fixing_lookback_days`) and `sukuk`. Before version 3 it reads none of them, so a chain on
  an older version refuses them as unknown fields, exactly as older code does.
* `publish_rate_fixing` records a rate the central bank published (`RateFixing`).
* Amortising bonds (`amortisation` in the terms): `amortise` in ledger/ops/payments.py pays
  each scheduled part of the principal; `outstanding_micro` is the face outstanding over a
  period, what coupons and the final redemption are paid on. From version 4 they may also be
  callable or priced (`AMORTISING_CALLS`): a call cancels the parts from its date on
  (`live_parts`) and redeems the face then outstanding at the call price.
* `floating_rate` is the annual rate of one period of a floating-rate note: the fixing as of
  the period's fixing date plus the spread, never below zero; refused with
  RATE_FIXING_MISSING when nothing was published (never a silent zero).

The rules, with their encodings, are docs/PROTOCOL.md section 10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Context, Decimal, Inexact, localcontext
from fractions import Fraction

from ledger import bondmath
from ledger.business_days import MAX_RECORD_DAYS
from ledger.codes import Code
from ledger.debt_terms import SUKUK_FORMS, DebtTerms, RateFixing
from ledger.ops.common import (
    INSTRUMENT_ID_RE,
    Args,
    TxView,
    fail,
    require_approvals,
    require_role,
)
from ledger.ops.paydates import business_calendar
from ledger.protocol import AMORTISING_CALLS, DEBT_OFFICE
from ledger.schedule import Schedule
from ledger.state import State
from ledger.types import CASH_ISSUER, BlockContext, Event, Instrument

MAX_SPREAD_BP = 10_000  # +-100 %
MAX_FIXING_DAYS = 10
MAX_LOOKBACK_DAYS = 31
MAX_CALL_NOTICE_DAYS = 365
MAX_AMORTISATIONS = 64  # scheduled partial redemptions of one bond
MICRO = 100_000_000  # 100 % of face in millionths of a percent
_DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
PERCENT_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?", re.ASCII)
POLICY_RULE_CALL = "issue"  # ledger.ops.POLICY_NAMES says the same
POLICY_RULE_PUBLISH_FIXING = "register_instrument"  # ledger.ops.POLICY_NAMES says the same
_ZERO = Decimal(0)


def require_debt_office(state: State, op_name: str) -> None:
    """New operations do not exist before version 3: refused as older code refuses them
    (UNKNOWN_OPERATION, the same code and message), so a network of old and new releases
    still agrees on every block of a chain not yet upgraded."""
    if state.protocol_version < DEBT_OFFICE:
        fail(Code.UNKNOWN_OPERATION, f"no operation {op_name!r}")


def parse_terms(
    state: State, args: Args, calendar_id: str, coupon_dates: tuple[date, ...]
) -> DebtTerms | None:
    """The version-3 terms of a bond being registered, None when it states none."""
    if state.protocol_version < DEBT_OFFICE:
        return None  # unread fields: refused by `Args.done` as unknown, as before version 3
    record_days = args.opt_integer("record_business_days", default=0, lo=1, hi=MAX_RECORD_DAYS)
    if record_days and not calendar_id:
        fail(
            Code.BAD_FIELD,
            "record_business_days counts business days of the bond's holiday_calendar: "
            "give business_day_convention and holiday_calendar",
        )
    index = args.opt_text("rate_index", default="", pattern=INSTRUMENT_ID_RE, max_len=32)
    floating = {}
    if index:
        floating = {
            "rate_index": index,
            "spread_bp": args.integer("spread_bp", lo=-MAX_SPREAD_BP, hi=MAX_SPREAD_BP),
            "fixing_days": args.integer("fixing_days", hi=MAX_FIXING_DAYS),
            "fixing_lookback_days": args.integer("fixing_lookback_days", hi=MAX_LOOKBACK_DAYS),
        }
    sukuk = args.opt_text("sukuk", default="", max_len=16)
    asset = ""
    if sukuk:
        if sukuk not in SUKUK_FORMS:
            fail(Code.BAD_FIELD, f"sukuk must be one of {list(SUKUK_FORMS)}, got {sukuk!r}")
        # Investors and the Sharia board must see what is leased: required, not optional.
        asset = args.text("sukuk_asset")
    redemption = _percent(args, "redemption_price")
    notice = args.opt_integer("call_notice_days", default=0, lo=1, hi=MAX_CALL_NOTICE_DAYS)
    call_price = _percent(args, "call_price") if notice else ""
    amortisation = _amortisation(args, coupon_dates)
    if (
        amortisation
        and (sukuk or state.protocol_version < AMORTISING_CALLS)
        and (notice or redemption or sukuk)
    ):
        # Not built: an amortising sukuk; before version 4 also a call or a price other than
        # par on a part-repaid face (docs/PROTOCOL.md section 10.7).
        fail(Code.BAD_FIELD, "an amortising bond has no call, redemption_price or sukuk terms")
    terms = DebtTerms(
        amortisation=amortisation,
        record_business_days=record_days,
        sukuk=sukuk,
        sukuk_asset=asset,
        redemption_price=redemption,
        call_notice_days=notice,
        call_price=call_price,
        **floating,
    )
    return None if terms == DebtTerms() else terms


def _percent(args: Args, name: str) -> str:
    """A percentage of face as decimal text ("101.25"), 1 to 200 with at most 6 decimals;
    "" when an optional one is absent (`call_price` is required with `call_notice_days`)."""
    if name == "redemption_price" and not args.has(name):
        return ""
    text = args.text(name, pattern=PERCENT_RE, max_len=12)
    if not 1 <= Decimal(text) <= 200:
        fail(Code.BAD_FIELD, f"{name} is a percentage of face from 1 to 200, got {text!r}")
    return text


def _amortisation(args: Args, coupon_dates: tuple[date, ...]) -> tuple[tuple[date, str], ...]:
    """`amortisation`: [[date, percent], ...], dates strictly increasing coupon dates before
    maturity, each percent of the original face as decimal text (> 0, at most 6 decimals),
    summing to less than 100: the rest is repaid at maturity."""
    if not args.has("amortisation"):
        return ()
    value = args.raw("amortisation")
    if type(value) is not list or not 1 <= len(value) <= MAX_AMORTISATIONS:
        fail(Code.BAD_FIELD, f"amortisation must be a list of 1 to {MAX_AMORTISATIONS} entries")
    entries: list[tuple[date, str]] = []
    total = 0
    for entry in value:
        if (
            type(entry) is not list
            or len(entry) != 2
            or type(entry[0]) is not str
            or type(entry[1]) is not str
            or not _DAY_RE.fullmatch(entry[0])
            or not PERCENT_RE.fullmatch(entry[1])
        ):
            fail(Code.BAD_FIELD, 'amortisation entries are ["YYYY-MM-DD", "percent"]')
        try:
            day = date.fromisoformat(entry[0])
        except ValueError:
            fail(Code.BAD_FIELD, f"amortisation: {entry[0]!r} is not a date")
        if day not in coupon_dates[:-1]:
            fail(Code.BAD_FIELD, f"amortisation: {day} is not a coupon date before maturity")
        if entries and day <= entries[-1][0]:
            fail(Code.BAD_FIELD, "amortisation dates must be strictly increasing")
        micro = percent_micro(entry[1])
        if micro <= 0:
            fail(Code.BAD_FIELD, f"amortisation: {entry[1]!r} is not a positive percentage")
        total += micro
        entries.append((day, entry[1]))
    if total >= MICRO:
        fail(
            Code.BAD_FIELD,
            "amortisation must repay less than 100 % before maturity (the rest at maturity)",
        )
    return tuple(entries)


def percent_micro(text: str) -> int:
    """A percentage (decimal text with at most 6 decimals) in millionths of a percent: exact."""
    return int(Decimal(text).scaleb(6))


def percent_text(micro: int) -> str:
    """Millionths of a percent as the shortest decimal text ("75", "12.5")."""
    whole, part = divmod(micro, 10**6)
    return f"{whole}.{part:06d}".rstrip("0") if part else str(whole)


def outstanding_micro(instrument: Instrument, before: date | None) -> int:
    """Of the original face, in millionths of a percent, what is outstanding after every
    scheduled amortisation dated before `before` (None: after all of them): what the period
    ending on `before` accrues on, and at maturity what is redeemed. 100 % when not amortising.
    From the schedule, not from what has been paid: `amortise` is refused out of order.
    A called bond's parts dated on or after its call date are never paid (the call redeems
    the face outstanding on the call date at the call price, version 4)."""
    terms = instrument.terms
    if terms is None:
        return MICRO
    return MICRO - sum(
        percent_micro(percent)
        for day, percent in live_parts(terms)
        if before is None or day < before
    )


def live_parts(terms: DebtTerms) -> tuple[tuple[date, str], ...]:
    """The amortisation parts that are paid: all of them, or a called bond's dated before
    its call date (the call redeems the rest)."""
    if terms.called_on is None:
        return terms.amortisation
    return tuple(part for part in terms.amortisation if part[0] < terms.called_on)


_SHIFT = Context(prec=200, traps=[Inexact])  # scaleb rounds to its context's precision


def of_face(face_value: int, micro: int) -> Decimal:
    """`micro` millionths of a percent of `face_value` minor units, exact."""
    return _shifted(Decimal(face_value * micro))


def _shifted(scaled: Decimal) -> Decimal:
    """`scaled` / 10^8, exact, without trailing zeros after the point ("4000", "2666.66668")."""
    value = scaled.scaleb(-8, context=_SHIFT).normalize(_SHIFT)
    return value.quantize(Decimal(1), context=_SHIFT) if value.as_tuple().exponent > 0 else value


def amortised_coupon(bond: Instrument, schedule: bondmath.Schedule, rate: Decimal, day: date):
    """The coupon per unit of an amortising bond for the period ending on `day`: on the face
    outstanding over that period, rounded as every coupon (`bondmath.scheduled_coupon`, to
    50 significant digits, so computing it on face x 10^8 and shifting is the same rounding)."""
    scaled = bond.face_value * outstanding_micro(bond, day)
    per_unit = bondmath.scheduled_coupon(
        scaled, rate, bondmath.DayCount(bond.day_count), schedule, day
    )
    return _shifted(per_unit)


def price_percent(instrument: Instrument) -> Decimal:
    """What one unit redeems at, in percent of face: the call price once called, else the
    stated redemption price, else par."""
    terms = instrument.terms
    if terms is None:
        return Decimal(100)
    if terms.called_on is not None:
        return Decimal(terms.call_price)
    return Decimal(terms.redemption_price or 100)


def redemption_per_unit(instrument: Instrument) -> Decimal:
    """Minor units one unit redeems at: face x price / 100, exact (the price has at most 6
    decimals, so the quotient is a finite decimal); face value itself at par."""
    percent = price_percent(instrument)
    if instrument.terms is not None and instrument.terms.amortising:
        outstanding = outstanding_micro(instrument, None)
        if percent == 100:
            return of_face(instrument.face_value, outstanding)  # at par (all of version 3)
        # The face outstanding at the call or stated price (version 4): exact, as of_face.
        scaled = _SHIFT.multiply(Decimal(instrument.face_value * outstanding), percent)
        return _shifted(_SHIFT.divide(scaled, 100))
    if percent == 100:
        return Decimal(instrument.face_value)
    exact = Fraction(instrument.face_value) * Fraction(percent) / 100
    with localcontext(Context(prec=60)) as context:
        context.traps[Inexact] = True
        return Decimal(exact.numerator) / Decimal(exact.denominator)


def final_date(instrument: Instrument) -> date | None:
    """The date the instrument is redeemed: the call date once called, else maturity."""
    terms = instrument.terms
    if terms is not None and terms.called_on is not None:
        return terms.called_on
    return instrument.maturity_date


def call_bond(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, call_date}`: the issuer calls a callable bond (version 3).

    `call_date` must be one of its unpaid coupon dates and at least `call_notice_days` after
    the block date (CALL_NOTICE_TOO_SHORT); the bond then pays its coupons up to the call date
    and is redeemed on it at `call_price` percent of face; no coupon after it is due. Policy
    rule "issue"; only the bond's own issuer may call it; a bond is called once.
    """
    require_debt_office(state, "call_bond")
    instrument_id = args.text("instrument", pattern=INSTRUMENT_ID_RE, max_len=32)
    call_date = args.day("call_date")
    args.done()
    require_approvals(state, tx, POLICY_RULE_CALL)
    bond = state.instruments.get(instrument_id)
    if bond is None:
        fail(Code.INSTRUMENT_NOT_FOUND, f"no instrument {instrument_id!r}")
    if bond.issuer != tx.sender:
        fail(Code.UNAUTHORIZED, f"only the issuer of {bond.id} may call it")
    terms = bond.terms
    if terms is None or not terms.callable:
        fail(Code.NOT_CALLABLE, f"{bond.id} has no call terms")
    if terms.called_on is not None or bond.redeemed:
        fail(Code.NOT_CALLABLE, f"{bond.id} is already called or redeemed")
    if bond.next_coupon is None or call_date < bond.next_coupon:
        fail(Code.BAD_FIELD, f"{call_date} is not an unpaid coupon date of {bond.id}")
    assert bond.issue_date is not None and bond.maturity_date is not None
    if call_date not in schedule_dates(bond):
        fail(Code.BAD_FIELD, f"{call_date} is not a coupon date of {bond.id}")
    paid = terms.amortisation[: terms.amortised]
    if paid and paid[-1][0] >= call_date:
        # The part of the call date is paid at par already: the call would redeem it again.
        fail(
            Code.AMORTISATION_CALLED,
            f"the part of {paid[-1][0]} on {bond.id} is paid: call it for a later coupon date",
        )
    earliest = ctx.date + timedelta(days=terms.call_notice_days)
    if call_date < earliest:
        fail(
            Code.CALL_NOTICE_TOO_SHORT,
            f"{bond.id} is called with {terms.call_notice_days} days' notice: the earliest "
            f"call date is {earliest}",
        )
    state.put_instrument(replace(bond, terms=replace(terms, called_on=call_date)))
    return [
        Event(
            "bond_called",
            {
                "instrument": bond.id,
                "call_date": call_date.isoformat(),
                "price": terms.call_price,
                "by": tx.sender,
            },
        )
    ]


def is_floating(instrument: Instrument) -> bool:
    return instrument.terms is not None and instrument.terms.floating


def is_sukuk(instrument: Instrument) -> bool:
    return instrument.terms is not None and bool(instrument.terms.sukuk)


# What a payment's events are called: a bond's, or an Ijara sukuk's as its documents name
# them (a periodic rental to the certificate holders, the dissolution amount at maturity).
BOND_NAMES = {
    "coupon_paid": "coupon_paid",
    "coupon_payment": "coupon_payment",
    "redeemed": "redeemed",
    "redemption_payment": "redemption_payment",
    "holders": "holders",
}
SUKUK_NAMES = {
    "coupon_paid": "rental_paid",
    "coupon_payment": "rental_payment",
    "redeemed": "sukuk_dissolved",
    "redemption_payment": "dissolution_payment",
    "holders": "certificate_holders",
}


def event_names(instrument: Instrument) -> dict[str, str]:
    return SUKUK_NAMES if is_sukuk(instrument) else BOND_NAMES


def publish_rate_fixing(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{name, date, rate, document_hash}`: the central bank publishes an index's rate.

    `name` as an instrument id (e.g. "PKR-TB6M"); `date` the day it is the rate of, on or
    before the block date; `rate` a decimal fraction as text (`bondmath.parse_rate`);
    `document_hash` 32 bytes. Published once per (name, date): a correction would change
    coupons already paid from it, so it is refused (RATE_FIXING_EXISTS). Governed by the
    `register_instrument` rule and the cash_issuer role (the central bank, the monetary
    authority whose auctions and rates the fixings are).
    """
    require_debt_office(state, "publish_rate_fixing")
    name = args.text("name", pattern=INSTRUMENT_ID_RE, max_len=32)
    day = args.day("date")
    rate_text = args.text("rate", max_len=20)
    document_hash = args.blob("document_hash", 32)
    args.done()
    try:
        bondmath.parse_rate(rate_text)
    except ValueError as exc:
        fail(Code.BAD_FIELD, f"rate: {exc}")
    if day > ctx.date:
        fail(Code.BAD_FIELD, f"a fixing of {day} cannot be published on {ctx.date}")
    require_approvals(state, tx, POLICY_RULE_PUBLISH_FIXING)
    require_role(tx.account, CASH_ISSUER, "publishing a rate fixing")
    if (name, day) in state.fixings:
        fail(Code.RATE_FIXING_EXISTS, f"{name} is already fixed for {day}")
    state.put_fixing(RateFixing(name, day, rate_text, document_hash, tx.sender, ctx.height))
    return [
        Event(
            "rate_fixing_published",
            {"name": name, "date": day.isoformat(), "rate": rate_text, "by": tx.sender},
        )
    ]


@dataclass(frozen=True, slots=True)
class FloatingRate:
    """One period's rate of a floating-rate note and where it came from."""

    rate: Decimal  # annual, a fraction: max(0, fixing + spread)
    fixing_date: date  # the date the period is fixed on
    fixing: RateFixing  # the published fixing used (its day may precede fixing_date)


def schedule_dates(bond: Instrument) -> tuple[date, ...]:
    from_text = {"": None, "yes": True, "no": False}
    assert bond.issue_date is not None and bond.maturity_date is not None
    return Schedule(
        bond.issue_date,
        bond.maturity_date,
        bond.coupon_frequency,
        bond.first_coupon_date,
        bond.penultimate_coupon_date,
        from_text[bond.end_of_month],
    ).dates()


def fixing_date(state: State, bond: Instrument, period_start: date) -> date:
    """`fixing_days` business days of the bond's calendar before the period's start
    (calendar days when the bond has no holiday calendar)."""
    assert bond.terms is not None
    if bond.holiday_calendar:
        return business_calendar(state, bond).business_days_before(
            period_start, bond.terms.fixing_days
        )
    return period_start - timedelta(days=bond.terms.fixing_days)


def floating_rate(state: State, bond: Instrument, period_start: date) -> FloatingRate:
    """The rate of the period starting on `period_start` (RATE_FIXING_MISSING if unfixed)."""
    terms = bond.terms
    assert terms is not None and terms.floating
    fixed_on = fixing_date(state, bond, period_start)
    for back in range(terms.fixing_lookback_days + 1):
        fixing = state.fixings.get((terms.rate_index, fixed_on - timedelta(days=back)))
        if fixing is not None:
            spread = Decimal(terms.spread_bp).scaleb(-4)
            return FloatingRate(max(_ZERO, Decimal(fixing.rate) + spread), fixed_on, fixing)
    fail(
        Code.RATE_FIXING_MISSING,
        f"{bond.id} resets from {terms.rate_index} fixed on {fixed_on} (looking back "
        f"{terms.fixing_lookback_days} days): no fixing is published",
    )
