"""Creating and destroying units: issue, burn, and the reserve attestations behind commodities.

Caps, checked on every issue:
- the instrument cap: supply + amount <= cap (units);
- the programme cap: the USD-equivalent face value outstanding across all non-cash
  instruments (units x `usd_face_value`, US cents) stays within `Programme.cap_usd_cents`;
- for commodities, the latest reserve attestation: it must exist, be no older than the
  `reserve_max_age_s` parameter in block time, and cover supply + amount.
"""

from __future__ import annotations

from dataclasses import replace

from ledger.codes import Code
from ledger.ops.common import (
    Args,
    TxView,
    check_eligible,
    check_limits,
    check_movable,
    credit,
    debit,
    fail,
    get_account,
    get_instrument,
    instrument_id_arg,
    require_approvals,
    show,
)
from ledger.state import State
from ledger.types import (
    CASH,
    COMMODITY,
    BlockContext,
    Event,
    Instrument,
    Programme,
    ReserveAttestation,
)


def _require_issuer(tx: TxView, instrument: Instrument, what: str) -> None:
    if instrument.issuer != tx.sender:
        fail(
            Code.UNAUTHORIZED,
            f"only the issuer of {instrument.id}, {show(instrument.issuer)}, may {what} it",
        )


def issue(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, to, amount}`: create units for an eligible account, within every cap."""
    instrument_id = instrument_id_arg(args)
    to = args.address("to")
    amount = args.amount()
    args.done()
    require_approvals(state, tx, "issue")
    instrument = get_instrument(state, instrument_id)
    _require_issuer(tx, instrument, "issue")
    receiver = get_account(state, to, "recipient")
    check_movable(state, ctx, instrument)
    check_eligible(state, ctx, receiver, instrument, receiving=True)
    check_limits(state, instrument, receiver, amount, sender_leaves=False)
    supply = instrument.supply + amount
    if supply > instrument.cap:
        fail(
            Code.INSTRUMENT_CAP,
            f"issuing {amount} would bring {instrument.id} to {supply} units, cap {instrument.cap}",
        )
    programme = state.programme
    added_usd = amount * instrument.usd_face_value  # 0 for the cash token
    if programme.outstanding_usd_cents + added_usd > programme.cap_usd_cents:
        fail(
            Code.PROGRAMME_CAP,
            f"issuing {amount} units of {instrument.id} adds {added_usd} US cents of face "
            f"value to {programme.outstanding_usd_cents}; the programme cap is "
            f"{programme.cap_usd_cents}",
        )
    if instrument.kind == COMMODITY:
        _check_reserve(state, ctx, instrument, supply)
    state.put_holding(instrument.id, to, credit(state, instrument.id, to, amount))
    state.put_instrument(replace(instrument, supply=supply))
    if added_usd:
        state.put_programme(
            Programme(programme.cap_usd_cents, programme.outstanding_usd_cents + added_usd)
        )
    return [Event("issue", {"instrument": instrument.id, "to": to, "amount": amount})]


def _check_reserve(state: State, ctx: BlockContext, instrument: Instrument, supply: int) -> None:
    reserve = state.reserves.get(instrument.id)
    if reserve is None:
        fail(Code.RESERVE_STALE, f"no reserve has been attested for {instrument.id}")
    age_s = (ctx.time_ms - reserve.time_ms) // 1000
    max_age = state.parameters.reserve_max_age_s
    if age_s > max_age:
        fail(
            Code.RESERVE_STALE,
            f"the reserve attestation of {instrument.id} is {age_s} s old (limit {max_age} s)",
        )
    if supply > reserve.quantity:
        fail(
            Code.RESERVE_EXCEEDED,
            f"{instrument.id} supply would be {supply}, attested reserve is {reserve.quantity}",
        )


def burn(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, amount}`: the issuer destroys units it holds (bought back, or cash
    returned to the central bank). Frozen units cannot be burnt."""
    instrument_id = instrument_id_arg(args)
    amount = args.amount()
    args.done()
    require_approvals(state, tx, "burn")
    instrument = get_instrument(state, instrument_id)
    _require_issuer(tx, instrument, "burn")
    if instrument.paused:
        fail(Code.INSTRUMENT_PAUSED, f"instrument {instrument.id} is paused")
    check_eligible(state, ctx, tx.account, instrument, receiving=False)
    holding = debit(state, instrument.id, tx.sender, amount)
    state.put_holding(instrument.id, tx.sender, holding)
    state.put_instrument(replace(instrument, supply=instrument.supply - amount))
    if instrument.kind != CASH:
        programme = state.programme
        state.put_programme(
            Programme(
                programme.cap_usd_cents,
                programme.outstanding_usd_cents - amount * instrument.usd_face_value,
            )
        )
    return [Event("burn", {"instrument": instrument.id, "from": tx.sender, "amount": amount})]


def attest_reserve(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, quantity, document_hash}`: the reserve custodian's latest count.

    An attestation below the outstanding supply is recorded all the same (it is a fact);
    it stops further issuance and the event says the instrument is under-reserved.
    """
    instrument_id = instrument_id_arg(args)
    quantity = args.integer("quantity")
    document_hash = args.blob("document_hash", 32)
    args.done()
    require_approvals(state, tx, "attest_reserve")
    instrument = get_instrument(state, instrument_id)
    if instrument.kind != COMMODITY:
        fail(
            Code.WRONG_INSTRUMENT_KIND,
            f"{instrument.id} is a {instrument.kind}; reserves back commodities only",
        )
    state.put_reserve(
        ReserveAttestation(
            instrument=instrument.id,
            quantity=quantity,
            document_hash=document_hash,
            custodian=tx.sender,
            time_ms=ctx.time_ms,
            height=ctx.height,
        )
    )
    return [
        Event(
            "reserve_attested",
            {
                "instrument": instrument.id,
                "quantity": quantity,
                "document_hash": document_hash,
                "custodian": tx.sender,
                "supply": instrument.supply,
                "under_reserved": int(quantity < instrument.supply),
            },
        )
    ]
