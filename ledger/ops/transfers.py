"""Moving units between accounts: transfer, delivery-versus-payment, forced transfer."""

from __future__ import annotations

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
from ledger.receipts import event_in_key_order
from ledger.state import State
from ledger.types import CASH, Account, BlockContext, Event, Holding, Instrument


def check_move(
    state: State,
    ctx: BlockContext,
    instrument: Instrument,
    sender: Account,
    receiver: Account,
    amount: int,
) -> tuple[Holding | None, Holding]:
    """Every rule of an ordinary movement, in the order the codes are documented.

    Returns the sender's and the receiver's holdings after the movement, for `write_move`.
    """
    if sender.address == receiver.address:
        fail(Code.BAD_FIELD, f"{show(sender.address)} cannot transfer to itself")
    check_movable(state, ctx, instrument)
    check_eligible(state, ctx, sender, instrument, receiving=False)
    check_eligible(state, ctx, receiver, instrument, receiving=True)
    sender_holding = debit(state, instrument.id, sender.address, amount)
    check_limits(state, instrument, receiver, amount, sender_leaves=sender_holding is None)
    return sender_holding, credit(state, instrument.id, receiver.address, amount)


def write_move(
    state: State,
    instrument_id: str,
    sender: bytes,
    receiver: bytes,
    holdings: tuple[Holding | None, Holding],
) -> None:
    state.put_holding(instrument_id, sender, holdings[0])
    state.put_holding(instrument_id, receiver, holdings[1])


def move_event(instrument_id: str, sender: bytes, receiver: bytes, amount: int) -> Event:
    # Attributes in key order (a literal with sorted keys): encoded now, without a sort.
    return event_in_key_order(
        "transfer", {"amount": amount, "from": sender, "instrument": instrument_id, "to": receiver}
    )


def transfer(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, to, amount}`: move units from the sender to `to`."""
    instrument_id = instrument_id_arg(args)
    to = args.address("to")
    amount = args.amount()
    args.done()
    instrument = get_instrument(state, instrument_id)
    receiver = get_account(state, to, "recipient")
    holdings = check_move(state, ctx, instrument, tx.account, receiver, amount)
    write_move(state, instrument_id, tx.sender, to, holdings)
    return [move_event(instrument_id, tx.sender, to, amount)]


def dvp(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """Delivery versus payment: `{seller, buyer, asset, asset_amount, cash, cash_amount}`.

    The asset leg (seller -> buyer) and the cash leg (buyer -> seller, in a cash token) are
    both checked in full before either is written: both settle or neither. The sender is one
    of the two parties and the other must have signed the same transaction.
    """
    seller_address = args.address("seller")
    buyer_address = args.address("buyer")
    asset_id = instrument_id_arg(args, "asset")
    asset_amount = args.amount("asset_amount")
    cash_id = instrument_id_arg(args, "cash")
    cash_amount = args.amount("cash_amount")
    args.done()
    if tx.sender not in (seller_address, buyer_address):
        fail(Code.UNAUTHORIZED, f"the sender {show(tx.sender)} is neither seller nor buyer")
    counterparty = buyer_address if tx.sender == seller_address else seller_address
    if counterparty not in tx.signer_accounts(state):
        fail(
            Code.MISSING_APPROVALS,
            f"the counterparty {show(counterparty)} has not signed the settlement",
        )
    asset = get_instrument(state, asset_id)
    cash = get_instrument(state, cash_id)
    if asset.kind == CASH:
        fail(Code.WRONG_INSTRUMENT_KIND, f"the asset leg {asset_id} is a cash token")
    if cash.kind != CASH:
        fail(Code.WRONG_INSTRUMENT_KIND, f"the cash leg {cash_id} is a {cash.kind}, not cash")
    seller = get_account(state, seller_address, "seller")
    buyer = get_account(state, buyer_address, "buyer")
    asset_leg = check_move(state, ctx, asset, seller, buyer, asset_amount)
    cash_leg = check_move(state, ctx, cash, buyer, seller, cash_amount)
    write_move(state, asset.id, seller.address, buyer.address, asset_leg)
    write_move(state, cash.id, buyer.address, seller.address, cash_leg)
    return [
        Event(
            "dvp",
            {
                "seller": seller.address,
                "buyer": buyer.address,
                "asset": asset.id,
                "asset_amount": asset_amount,
                "cash": cash.id,
                "cash_amount": cash_amount,
            },
        ),
        move_event(asset.id, seller.address, buyer.address, asset_amount),
        move_event(cash.id, buyer.address, seller.address, cash_amount),
    ]


def forced_transfer(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{instrument, from, to, amount, reason_code, legal_reference}`, by institutions.

    A legal order overrides the investor rules: it moves frozen units and ignores pauses,
    closed periods and freezes. What it cannot do is move units that do not exist. Frozen
    units that leave the account stop being frozen (the freeze never exceeds the balance).
    """
    instrument_id = instrument_id_arg(args)
    source = args.address("from")
    to = args.address("to")
    amount = args.amount()
    reason_code = args.integer("reason_code", hi=65535)
    legal_reference = args.text("legal_reference")
    args.done()
    require_approvals(state, tx, "forced_transfer")
    instrument = get_instrument(state, instrument_id)
    get_account(state, source, "source account")
    get_account(state, to, "recipient")
    if source == to:
        fail(Code.BAD_FIELD, "source and recipient are the same account")
    holding = state.holdings[instrument.id].get(source)
    balance = 0 if holding is None else holding.balance
    if balance < amount:
        fail(
            Code.INSUFFICIENT_BALANCE,
            f"{show(source)} holds {balance} units of {instrument.id}, order is for {amount}",
        )
    left = balance - amount
    state.put_holding(
        instrument.id,
        source,
        Holding(left, min(holding.frozen, left)) if left else None,
    )
    state.put_holding(instrument.id, to, credit(state, instrument.id, to, amount))
    return [
        Event(
            "forced_transfer",
            {
                "instrument": instrument.id,
                "from": source,
                "to": to,
                "amount": amount,
                "reason_code": reason_code,
                "legal_reference": legal_reference,
            },
        )
    ]
