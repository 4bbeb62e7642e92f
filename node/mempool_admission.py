"""Admission's verdicts and the checks that need no signature: the cheap checks on the
decoded envelope, the nonce window, and the room a transaction needs in the pool's shares.

What it owns: `AdmissionView`, `AdmissionResult` and their codespaces, and steps 4-9 of
`node.mempool`'s admission (its docstring lists every step and code; "Shares" and "Eviction
priority" there are decided here by `plan_room`). Reads the mempool's `Book`, never changes
it; no signature checks, no dry runs, so everything here is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.codes import Code
from ledger.ops import OPERATIONS
from ledger.state import State
from ledger.tx import SignedTx, tx_footprint
from ledger.types import Account, BlockContext
from node.mempool_book import Book
from node.mempool_limits import MempoolLimits, quota_group, reserved_sender

__all__ = [
    "CODESPACE_LEDGER",
    "CODESPACE_MEMPOOL",
    "AdmissionResult",
    "AdmissionView",
    "Plan",
    "check_nonce",
    "cheap_checks",
    "full",
    "ok",
    "parked",
    "plan_room",
    "refuse",
]

CODESPACE_LEDGER = "ledger"
CODESPACE_MEMPOOL = "mempool"


@dataclass(frozen=True, slots=True)
class AdmissionView:
    """What admission checks against: the COMMITTED state and the context of the NEXT block.

    The caller must not pass a state that holds a pending (executed, undecided) block: the
    verdicts would then depend on a block that may be abandoned.
    """

    state: State
    ctx: BlockContext


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    """The verdict on a submitted transaction: code 0 = in the mempool (docs/NODE.md)."""

    code: int
    log: str
    tx_id: bytes
    codespace: str

    @property
    def ok(self) -> bool:
        return self.code == Code.OK


@dataclass(slots=True)
class Plan:
    """What admitting one transaction needs: its class and the room to make."""

    reserved: bool
    parked: bool
    cost: int
    evict: bool = False  # lower-priority transactions must leave first


def ok(tx_id: bytes) -> AdmissionResult:
    return AdmissionResult(Code.OK, "", tx_id, "")


def parked(tx_id: bytes, expected: int) -> AdmissionResult:
    return AdmissionResult(Code.OK, f"parked: waits for nonce {expected} of its sender", tx_id, "")


def refuse(code: Code, log: str, tx_id: bytes = b"") -> AdmissionResult:
    space = CODESPACE_MEMPOOL if 400 <= code < 500 else CODESPACE_LEDGER
    return AdmissionResult(int(code), log, tx_id, space)


def cheap_checks(
    tx: SignedTx, chain_id: str, book: Book, limits: MempoolLimits
) -> tuple[AdmissionResult | None, int]:
    """Steps 4-7 of admission: what needs the decoded envelope but neither the state nor a
    signature. Returns (refusal or None, the transaction's `tx_footprint`)."""
    tx_id, body = tx.tx_id, tx.body
    if tx_id in book.entries:
        return refuse(Code.ALREADY_IN_MEMPOOL, "transaction is already waiting", tx_id), 0
    if body.chain_id != chain_id:
        return refuse(
            Code.WRONG_CHAIN,
            f"transaction is for chain {body.chain_id!r}, this is {chain_id!r}",
            tx_id,
        ), 0
    if body.op not in OPERATIONS:
        return refuse(
            Code.UNKNOWN_OPERATION,
            f"no operation {body.op!r}: it could only be recorded as refused",
            tx_id,
        ), 0
    bound = limits.max_tx_decoded_bytes
    footprint = tx_footprint(tx, bound)
    if footprint > bound:
        return refuse(
            Code.TX_TOO_COMPLEX,
            f"decoded, the transaction keeps more than {bound} bytes of memory "
            f"({len(tx.raw)} bytes on the wire)",
            tx_id,
        ), footprint
    return None, footprint


def check_nonce(
    tx: SignedTx, base: int, book: Book, limits: MempoolLimits
) -> AdmissionResult | None:
    """A nonce at or above the committed one: inside the window, and not held already."""
    nonce, tx_id = tx.body.nonce, tx.tx_id
    window = limits.nonce_window
    if nonce - base >= window:
        return refuse(
            Code.NONCE_TOO_FAR,
            f"nonce {nonce} is {nonce - base} ahead of the committed nonce {base}; "
            f"the window is {window}",
            tx_id,
        )
    waiting = book.senders.get(tx.body.sender)
    if waiting is not None and nonce in waiting.by_nonce:
        return refuse(
            Code.NONCE_USED,
            f"nonce {nonce} is held by waiting transaction {waiting.by_nonce[nonce].hex()}",
            tx_id,
        )
    return None


def plan_room(
    tx: SignedTx, account: Account, cost: int, book: Book, limits: MempoolLimits
) -> tuple[Plan | None, AdmissionResult | None]:
    """Step 9: is there room for `tx` in its sender's class and shares (no signature has
    been checked yet, so this must stay cheap)? See "Shares" and "Eviction priority"."""
    sender, tx_id = tx.body.sender, tx.tx_id
    waiting = book.senders.get(sender)
    expected = book.expected_nonce(sender, account.nonce)
    parked = tx.body.nonce != expected
    reserved = reserved_sender(account) if waiting is None else waiting.reserved
    plan = Plan(reserved, parked, cost)
    if reserved:
        # Institutions: the whole pool, and they evict everyone else if need be.
        n_over, b_over = book.overflow(limits, True, cost)
        if n_over > 0 or b_over > 0:
            if book.general[0] < n_over or book.general[1] < b_over:
                return None, full(tx_id, book, limits)
            plan.evict = True
        return plan, None
    count = 0 if waiting is None else waiting.count
    held = 0 if waiting is None else waiting.cost
    if count + 1 > limits.max_txs_per_sender or held + cost > limits.max_bytes_per_sender:
        return None, refuse(
            Code.SENDER_QUOTA,
            f"the sender holds {count} txs / {held} bytes of the mempool; its share is "
            f"{limits.max_txs_per_sender} / {limits.max_bytes_per_sender}",
            tx_id,
        )
    group = quota_group(account) if waiting is None else waiting.group
    if group is not None:
        used = book.groups.get(group, (0, 0))
        if used[0] + 1 > limits.vasp_txs or used[1] + cost > limits.vasp_bytes:
            return None, refuse(
                Code.VASP_QUOTA,
                f"the sender's VASP and its investors hold {used[0]} txs / {used[1]} bytes; "
                f"a VASP's share is {limits.vasp_txs} / {limits.vasp_bytes}",
                tx_id,
            )
    if parked:
        mine = 0 if waiting is None else waiting.parked_count
        if mine + 1 > limits.max_parked_per_sender:
            return None, refuse(
                Code.TOO_MANY_PARKED,
                f"the sender has {mine} transactions waiting behind nonce {expected}; "
                f"at most {limits.max_parked_per_sender}",
                tx_id,
            )
        if book.parked[0] + 1 > limits.parked_txs or book.parked[1] + cost > limits.parked_bytes:
            return None, refuse(
                Code.TOO_MANY_PARKED,
                f"{book.parked[0]} txs / {book.parked[1]} bytes already wait behind nonce "
                f"gaps, at most {limits.parked_txs} / {limits.parked_bytes}; send nonce "
                f"{expected} first",
                tx_id,
            )
    n_over, b_over = book.overflow(limits, False, cost)
    if n_over > 0 or b_over > 0:
        # Only a ready transaction evicts, and only other senders' parked ones.
        own_n = 0 if waiting is None else waiting.parked_count
        own_b = 0 if waiting is None else waiting.parked_cost
        if parked or book.parked[0] - own_n < n_over or book.parked[1] - own_b < b_over:
            return None, full(tx_id, book, limits)
        plan.evict = True
    return plan, None


def full(tx_id: bytes, book: Book, limits: MempoolLimits) -> AdmissionResult:
    return refuse(
        Code.MEMPOOL_FULL,
        f"mempool holds {len(book.entries)} txs / {book.cost} bytes (limits "
        f"{limits.max_txs} / {limits.max_bytes}, {limits.reserved_percent}% reserved for "
        "institutions); retry later",
        tx_id,
    )
