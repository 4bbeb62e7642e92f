"""Executing transactions: the one path from signed bytes to receipts and changes.

`check_transaction` (dry run: `check_tx`, mempool admission) and `apply_transaction`
(execution in a block) run the same function, `_execute`, so a transaction gets the same code
everywhere. The checks, in order, each with its stable code (`ledger/codes.py`):

1. decode and shape of the envelope (1xx)                     -- `tx.decode_signed_tx`
2. chain id (WRONG_CHAIN)
3. signatures (BAD_SIGNATURE), skipped when the caller already verified them
4. sender authorised: its account exists (ACCOUNT_NOT_FOUND) and its current key signed
   (SENDER_NOT_SIGNED); after a key recovery that is the new key, never the old one
5. nonce: equal to the account's next nonce (NONCE_USED if lower, NONCE_GAP if higher)
6. the operation: its args (BAD_FIELD, UNKNOWN_OPERATION), roles and approvals
   (UNAUTHORIZED, MISSING_APPROVALS), every compliance rule (3xx), then its writes.

A refusal in steps 1-5 gives a receipt with `executed=False`: such a transaction cannot be in
a block at all (a block holding one is invalid: `InvalidBlock`) and consumed no nonce. From step 6 on, a refusal is a receipt with its code: the
transaction stays in the block, consumes its nonce, and changes nothing else. So a refused
transfer can never execute later by surprise.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, fields

from ledger import codec
from ledger.codes import Code, InvalidBlock, InvalidTransaction, LedgerError
from ledger.ops import OPERATIONS, Args, TxView
from ledger.ops.common import address_of, show
from ledger.protocol import BALANCE_CHANGES_VERSION
from ledger.state import State
from ledger.tx import SignedTx, decode_signed_tx, remember_verified, verify_tx_signatures
from ledger.types import BALANCE_CHANGE, Account, BlockContext, Event, Receipt


@dataclass(frozen=True, slots=True)
class BlockResult:
    """What executing a block produced.

    `receipts`: one per included transaction, in block order. `changes`: the encoded state
    changes (`State.take_changes`) for the commitment and the store. `included`: the raw
    transactions that are in the block (all of them, unless `drop_invalid` dropped some);
    `dropped`: the receipts of the dropped ones, for the proposer to evict from its mempool.
    """

    receipts: tuple[Receipt, ...]
    changes: dict[bytes, bytes | None]
    included: tuple[bytes, ...]
    dropped: tuple[Receipt, ...] = ()


class _Everything:
    """The container of every transaction id: the caller verified this transaction itself."""

    def __contains__(self, tx_id: object) -> bool:
        return True


_ALREADY_VERIFIED = _Everything()


def check_transaction(
    state: State,
    tx: bytes | SignedTx,
    ctx: BlockContext,
    *,
    verified: bool = False,
    balance_changes: bool = True,
) -> Receipt:
    """The verdict `tx` would get if executed now, without changing `state`. `verified`: the
    caller checked this transaction's signatures over its exact bytes. `balance_changes`:
    False leaves the `balance_change` events out of the receipt (for a caller that reads
    only the verdict: the mempool's dry run); they are derived from the writes after the
    operation ran, so the verdict and the writes are the same either way."""
    token = state.savepoint()
    try:
        return _execute(state, tx, ctx, _ALREADY_VERIFIED if verified else (), balance_changes)
    finally:
        state.rollback(token)


def apply_transaction(
    state: State,
    tx: bytes | SignedTx,
    ctx: BlockContext,
    *,
    verified: bool = False,
    balance_changes: bool = True,
) -> Receipt:
    """Execute `tx`. If the receipt says `executed=False` nothing changed (not even the nonce);
    on any other refusal only the sender's nonce moved on; on OK the operation applied.
    `balance_changes`: as for `check_transaction` (a block's execution always has them)."""
    return _execute(state, tx, ctx, _ALREADY_VERIFIED if verified else (), balance_changes)


def apply_transactions(
    state: State,
    txs: Sequence[bytes | SignedTx],
    ctx: BlockContext,
    *,
    verified: Container[bytes] = (),
    drop_invalid: bool = False,
) -> BlockResult:
    """Execute a block's transactions (raw or decoded) in order and collect the changes
    (step 4 of a block, ledger/transition.py).

    `verified` holds the ids of transactions whose signatures the caller already checked
    (the mempool does so once). A transaction with a fatal code makes the block invalid:
    `InvalidBlock` is raised and `state` is left as it was -- unless `drop_invalid` (a
    proposer assembling a block), which leaves such transactions out instead.

    The state is changed on return. To execute a block that may still be abandoned (a
    proposal not yet decided), take `token = state.savepoint()` first and later
    `state.release(token)` once it is committed, or `state.rollback(token)` if it is not.
    """
    token = state.savepoint()
    receipts: list[Receipt] = []
    included: list[bytes] = []
    dropped: list[Receipt] = []
    try:
        for index, tx in enumerate(txs):
            receipt = _execute(state, tx, ctx, verified)
            if not receipt.executed:
                if drop_invalid:
                    dropped.append(receipt)
                    continue
                raise InvalidBlock(
                    f"transaction {index} ({receipt.tx_id.hex() or 'undecodable'}) at height "
                    f"{ctx.height}: {Code(receipt.code).name} ({int(receipt.code)}): "
                    f"{receipt.log}"
                )
            receipts.append(receipt)
            included.append(tx.raw if isinstance(tx, SignedTx) else bytes(tx))
    except BaseException:
        state.rollback(token)  # an invalid block (or a bug) leaves the state as it was
        raise
    state.release(token)
    return BlockResult(tuple(receipts), state.take_changes(), tuple(included), tuple(dropped))


def balance_change_events(state: State, token: int, op: str) -> list[Event]:
    """One `balance_change` event per balance the operation changed (protocol version 3):
    `{account, instrument, amount, balance, cause}`, `amount` signed (a credit positive, a
    debit negative), `balance` the balance after, `cause` the operation. Derived from the
    state's journal since `token` (the operation's savepoint), not written by each operation:
    whatever writes a holding is reported, an operation added later included. In the order
    of each holding's first write; one per (account, instrument), net over the operation."""
    events = []
    for instrument_id, address, amount, balance in state.balance_changes_since(token):
        attributes = {
            "account": address,
            "amount": amount,
            "balance": balance,
            "cause": op,
            "instrument": instrument_id,
        }
        # Two of every three events of a block of transfers: made without `Event.__init__`
        # and its scalar check (bytes, ints and strs by construction: an address, two
        # balances, the op and the instrument id), and encoded now, the attributes already in
        # key order, inside the event map's fixed bytes -- what `Event.encoded` would give
        # (tests/ledger/test_balance_changes.py checks it against `codec.encode`).
        event = _new_event(Event)
        _set_event_type(event, BALANCE_CHANGE)
        _set_event_attributes(event, attributes)
        _set_event_encoded(event, _BALANCE_CHANGE_HEAD + _pack(attributes) + _BALANCE_CHANGE_TAIL)
        events.append(event)
    return events


# An event's map is {"attributes": ..., "type": ...}: two entries, in key order.
_BALANCE_CHANGE_HEAD = b"\x82" + codec.encode("attributes")
_BALANCE_CHANGE_TAIL = codec.encode("type") + codec.encode(BALANCE_CHANGE)
_pack = codec.encode_presorted
_new_event = Event.__new__
_set_event_type, _set_event_attributes, _set_event_encoded = (
    Event.__dict__[name].__set__ for name in ("type", "attributes", "_encoded")
)
if {f.name for f in fields(Event)} != {"type", "attributes", "_encoded"}:  # pragma: no cover
    raise ImportError("ledger.execute: Event's fields changed; update balance_change_events")


def _execute(
    state: State,
    tx: bytes | SignedTx,
    ctx: BlockContext,
    verified: Container[bytes],
    balance_changes: bool = True,
) -> Receipt:
    """Steps 1-6 of the module docstring. `verified`: ids of transactions whose signatures
    the caller checked over these exact bytes (step 3 is skipped for them).
    `balance_changes`: False leaves out the `balance_change` events (`check_transaction`)."""
    # 1. decode and shape
    decoded_here = not isinstance(tx, SignedTx)
    if decoded_here:
        try:
            tx = decode_signed_tx(tx)  # type: ignore[arg-type]
        except LedgerError as exc:
            return _refused(b"", exc.code, exc.message)
    tx_id = tx.tx_id
    body = tx.body
    # 2. chain
    if body.chain_id != ctx.chain_id:
        return _refused(
            tx_id,
            Code.WRONG_CHAIN,
            f"transaction is for chain {body.chain_id!r}, this is {ctx.chain_id!r}",
        )
    # 3. signatures
    if tx_id not in verified:
        try:
            verify_tx_signatures(tx)
        except InvalidTransaction as exc:
            return _refused(tx_id, exc.code, exc.message)
        if decoded_here:
            # Verified over exactly these bytes: the block's events and a re-execution after
            # a round change decode them again (the decode cache takes verified content only).
            remember_verified(tx)
    # 4. sender authorised
    sender = body.sender
    account = state.accounts.get(sender)
    if account is None:
        return _refused(tx_id, Code.ACCOUNT_NOT_FOUND, f"sender {show(sender)} has no account")
    public_keys = tuple([sig.public_key for sig in tx.signatures])
    if not _sender_signed(state, account, public_keys):
        return _refused(
            tx_id,
            Code.SENDER_NOT_SIGNED,
            f"the current key of sender {show(sender)} has not signed the transaction",
        )
    # 5. nonce
    if body.nonce != account.nonce:
        code = Code.NONCE_USED if body.nonce < account.nonce else Code.NONCE_GAP
        return _refused(
            tx_id, code, f"nonce {body.nonce}, the next nonce of {show(sender)} is {account.nonce}"
        )
    # 6. the operation, all or nothing
    operation = OPERATIONS.get(body.op)
    token = state.savepoint()
    try:
        if operation is None:
            raise InvalidTransaction(Code.UNKNOWN_OPERATION, f"no operation {body.op!r}")
        events = operation(state, ctx, TxView(sender, account, public_keys), Args(body.args))
        if balance_changes and state.protocol_version >= BALANCE_CHANGES_VERSION:
            events.extend(balance_change_events(state, token, body.op))
    except InvalidTransaction as exc:
        state.rollback(token)
        receipt = Receipt(tx_id, exc.code, exc.message)
    except BaseException:
        # A bug in an operation: undo its writes so the state stays whole, and crash loudly.
        state.rollback(token)
        raise
    else:
        state.release(token)
        receipt = Receipt(tx_id, Code.OK, "", tuple(events))
    # The nonce is consumed whatever the verdict; re-read the account, the operation may
    # have rewritten it (a freeze, a role, a key).
    state.put_account(state.accounts[sender].with_nonce(body.nonce + 1))
    return receipt


def sender_signed(state: State, tx: SignedTx) -> bool:
    """Step 4 alone: does `tx`'s sender have an account whose current key signed `tx`? For a
    caller that already did steps 1-3 and judges the nonce itself (the mempool's gossip
    admission); the same rule as execution."""
    account = state.accounts.get(tx.body.sender)
    if account is None:
        return False
    return _sender_signed(state, account, tuple([sig.public_key for sig in tx.signatures]))


def _sender_signed(state: State, account: Account, public_keys: tuple[bytes, ...]) -> bool:
    """Did the key that currently speaks for `account` sign?"""
    key = account.public_key
    if key is not None:
        return key in public_keys
    # No recovery yet: the key whose address is the account's, unless that key has been
    # bound to another account by a recovery.
    bindings = state.key_bindings
    for public_key in public_keys:
        if public_key not in bindings and address_of(public_key) == account.address:
            return True
    return False


def _refused(tx_id: bytes, code: Code, log: str) -> Receipt:
    return Receipt(tx_id, code, log, (), executed=False)
