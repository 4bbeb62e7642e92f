"""Who may hold what: VASP licences, investor onboarding, freezes and key recovery."""

from __future__ import annotations

from dataclasses import replace

from ledger.codes import Code
from ledger.crypto import PUBLIC_KEY_BYTES, address_from_public_key, is_strict_public_key
from ledger.ops.common import (
    Args,
    TxView,
    check_vasp_active,
    fail,
    get_account,
    get_instrument,
    instrument_id_arg,
    require_approvals,
    show,
)
from ledger.state import State
from ledger.types import (
    INVESTOR,
    REGULATOR,
    VASP,
    Account,
    BlockContext,
    Event,
    Freeze,
    Holding,
    KeyBinding,
    Kyc,
    Vasp,
)


def _add_role(account: Account, role: str) -> Account:
    if role in account.roles:
        return account
    return replace(account, roles=tuple(sorted((*account.roles, role))))


def _account_or_new(state: State, address: bytes) -> Account:
    return state.accounts.get(address) or Account(address)


# ---------------------------------------------------------------------------------------
# VASPs


def license_vasp(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{vasp, name}`: license a VASP (or reinstate a suspended one); grants the vasp role."""
    address = args.address("vasp")
    name = args.text("name")
    args.done()
    require_approvals(state, tx, "license_vasp")
    current = state.vasps.get(address)
    if current is not None and not current.suspended:
        fail(Code.BAD_FIELD, f"VASP {show(address)} is already licensed")
    state.put_vasp(Vasp(address, name, suspended=False, reason="", height=ctx.height))
    state.put_account(_add_role(_account_or_new(state, address), VASP))
    return [Event("vasp_licensed", {"account": address, "name": name, "by": tx.sender})]


def suspend_vasp(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{vasp, reason}`: suspend a licence. The VASP and every investor it onboarded stop:
    their transfers are refused with VASP_SUSPENDED until the licence is reinstated."""
    address = args.address("vasp")
    reason = args.text("reason")
    args.done()
    require_approvals(state, tx, "suspend_vasp")
    current = state.vasps.get(address)
    if current is None:
        fail(Code.VASP_NOT_LICENSED, f"{show(address)} is not a licensed VASP")
    if current.suspended:
        fail(Code.VASP_SUSPENDED, f"VASP {show(address)} is already suspended")
    state.put_vasp(replace(current, suspended=True, reason=reason, height=ctx.height))
    return [Event("vasp_suspended", {"account": address, "reason": reason, "by": tx.sender})]


# ---------------------------------------------------------------------------------------
# Investors


def onboard_investor(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{investor, country, category, kyc_expiry, vasp?}`: create or renew an investor's KYC.

    Attested by the regulator (who names the investor's VASP, if any) or by a licensed VASP
    (which becomes the investor's VASP: it may only onboard its own clients).
    """
    address = args.address("investor")
    country = args.country("country")
    category = args.text("category", max_len=32)
    expiry = args.day("kyc_expiry")
    vasp = args.opt_address("vasp")
    args.done()
    if category not in state.parameters.investor_categories:
        fail(
            Code.BAD_FIELD,
            f"category {category!r} is not one of {list(state.parameters.investor_categories)}",
        )
    if expiry < ctx.date:
        fail(Code.BAD_FIELD, f"kyc_expiry {expiry} is before the block date {ctx.date}")
    require_approvals(state, tx, "onboard_investor")
    if REGULATOR not in tx.account.roles:
        # A VASP attests for its own clients only, and only while licensed.
        if vasp is not None and vasp != tx.sender:
            fail(Code.UNAUTHORIZED, f"VASP {show(tx.sender)} cannot onboard for {show(vasp)}")
        vasp = tx.sender
        check_vasp_active(state, tx.sender)
    elif vasp is not None:
        check_vasp_active(state, vasp)
    account = _account_or_new(state, address)
    if account.is_institution:
        fail(Code.BAD_FIELD, f"{show(address)} is an institution; institutions need no KYC")
    if (
        REGULATOR not in tx.account.roles
        and account.kyc is not None
        and account.kyc.vasp != tx.sender
    ):
        # Moving a client between VASPs is the regulator's call, not the new VASP's.
        fail(Code.UNAUTHORIZED, f"{show(address)} is not a client of VASP {show(tx.sender)}")
    account = replace(
        _add_role(account, INVESTOR),
        kyc=Kyc(
            country=country, category=category, expiry=expiry, attested_by=tx.sender, vasp=vasp
        ),
    )
    state.put_account(account)
    return [
        Event(
            "investor_onboarded",
            {
                "account": address,
                "country": country,
                "category": category,
                "kyc_expiry": expiry.isoformat(),
                "vasp": vasp,
                "by": tx.sender,
            },
        )
    ]


# ---------------------------------------------------------------------------------------
# Freezes


def freeze(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{account, reason_code, legal_reference, instrument?, amount?}`.

    Without `instrument` the whole account is frozen: it can neither send nor receive.
    With `instrument` and `amount` that many units of its holding are frozen: they cannot
    move (except by a forced transfer) until unfrozen.
    """
    address, reason_code, legal_reference, instrument_id, amount = _freeze_args(args)
    require_approvals(state, tx, "freeze")
    account = get_account(state, address)
    record = Freeze(reason_code, legal_reference, ctx.height)
    if instrument_id is None:
        if account.frozen is not None:
            fail(Code.ACCOUNT_FROZEN, f"account {show(address)} is already frozen")
        state.put_account(replace(account, frozen=record))
    else:
        get_instrument(state, instrument_id)
        holding = state.holdings[instrument_id].get(address) or Holding(0, 0)
        free = holding.balance - holding.frozen
        if amount > free:
            fail(
                Code.INSUFFICIENT_UNFROZEN_BALANCE,
                f"{show(address)} has {free} unfrozen units of {instrument_id}; "
                f"cannot freeze {amount}",
            )
        state.put_holding(instrument_id, address, Holding(holding.balance, holding.frozen + amount))
    return [_freeze_event("frozen", address, reason_code, legal_reference, instrument_id, amount)]


def unfreeze(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{account, reason_code, legal_reference, instrument?, amount?}`: lift a freeze."""
    address, reason_code, legal_reference, instrument_id, amount = _freeze_args(args)
    require_approvals(state, tx, "unfreeze")
    account = get_account(state, address)
    if instrument_id is None:
        if account.frozen is None:
            fail(Code.BAD_FIELD, f"account {show(address)} is not frozen")
        state.put_account(replace(account, frozen=None))
    else:
        get_instrument(state, instrument_id)
        holding = state.holdings[instrument_id].get(address) or Holding(0, 0)
        if amount > holding.frozen:
            fail(
                Code.INVALID_AMOUNT,
                f"{show(address)} has {holding.frozen} frozen units of {instrument_id}; "
                f"cannot unfreeze {amount}",
            )
        state.put_holding(instrument_id, address, Holding(holding.balance, holding.frozen - amount))
    return [_freeze_event("unfrozen", address, reason_code, legal_reference, instrument_id, amount)]


def _freeze_args(args: Args) -> tuple[bytes, int, str, str | None, int]:
    address = args.address("account")
    reason_code = args.integer("reason_code", hi=65535)
    legal_reference = args.text("legal_reference")
    instrument_id = instrument_id_arg(args) if args.has("instrument") else None
    if instrument_id is not None:
        amount = args.amount()
    elif args.has("amount"):
        fail(Code.BAD_FIELD, "amount needs an instrument")
    else:
        amount = 0
    args.done()
    return address, reason_code, legal_reference, instrument_id, amount


def _freeze_event(kind, address, reason_code, legal_reference, instrument_id, amount) -> Event:
    attributes = {
        "account": address,
        "reason_code": reason_code,
        "legal_reference": legal_reference,
    }
    if instrument_id is not None:
        attributes["instrument"] = instrument_id
        attributes["amount"] = amount
    return Event(kind, attributes)


# ---------------------------------------------------------------------------------------
# Key recovery


def recover_key(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{account, new_public_key}`: replace an account's authorised key; the address stays.

    From the next transaction on, only the new key speaks for the account (as sender and
    as approver); the old key authorises nothing. The new key must not already speak for
    another account.
    """
    address = args.address("account")
    new_key = args.blob("new_public_key", PUBLIC_KEY_BYTES)
    args.done()
    if not is_strict_public_key(new_key):
        fail(Code.BAD_FIELD, f"new_public_key {new_key.hex()} is not a valid Ed25519 key")
    require_approvals(state, tx, "key_recovery")
    account = get_account(state, address)
    derived = address_from_public_key(new_key)
    bound = state.key_bindings.get(new_key)
    if (bound is not None and bound.address != address) or (
        derived != address and derived in state.accounts
    ):
        fail(Code.BAD_FIELD, f"key {new_key.hex()} already authorises another account")
    if account.public_key is not None:
        state.put_key_binding(account.public_key, None)  # the old key is dead
    if derived == address:
        # Recovering the key the address was derived from: back to the original state.
        state.put_account(replace(account, public_key=None))
    else:
        state.put_key_binding(new_key, KeyBinding(address))
        state.put_account(replace(account, public_key=new_key))
    return [Event("key_recovered", {"account": address, "new_public_key": new_key})]
