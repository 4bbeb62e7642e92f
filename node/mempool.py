"""The mempool: which transactions wait for a block, in what order, for how long, and why
others were refused or removed.

Pure bookkeeping, no I/O, no clock: the driver and the RPC call these synchronous methods
from trio tasks on one thread, so there are no locks. Time is committed heights (the height
of the block a transaction was admitted for), so expiry is the same on every replay.

Admission (`admit`, `add_gossiped`, and `check` which stores nothing) runs the cheap checks
first, so bytes from anyone cost little and leave nothing behind; each refusal has its stable
code (`ledger/codes.py`):

1. size above `max_tx_bytes`                                        TX_TOO_LARGE
2. exactly these bytes waiting (no decoding)                         ALREADY_IN_MEMPOOL
3. decode the envelope (bounded by `max_tx_bytes` and the codec's
   depth limit; nothing decoded here is cached)                      1xx
4. the same transaction (same id) already waiting                   ALREADY_IN_MEMPOOL
5. chain id                                                          WRONG_CHAIN
6. the operation exists (an unknown one could only ever be recorded
   as refused: junk that costs every validator a block's room)       UNKNOWN_OPERATION
7. memory of the decoded transaction (`ledger.tx.tx_footprint`) above
   `max_tx_decoded_bytes`: 64 KiB of nested empty maps keep ~5 MiB   TX_TOO_COMPLEX
8. the sender has no account (the ledger's code, before signatures,
   so made-up senders cost a lookup, not a verification)            ACCOUNT_NOT_FOUND
   the sender's nonce, when it is not committed yet:
   `nonce_window` or more ahead                                      NONCE_TOO_FAR
   held by another waiting transaction of the sender                NONCE_USED
9. room (see "Shares" below), before any signature is checked       MEMPOOL_FULL,
                                                                     SENDER_QUOTA, VASP_QUOTA,
                                                                     TOO_MANY_PARKED
10. signatures, verified ONCE: the hash of the exact raw bytes goes
    into a bounded LRU set, so a transaction seen again (gossip from
    several peers, a block proposal) is not verified again          BAD_SIGNATURE
11. a nonce already committed: the ledger's own verdict              NONCE_USED
12. the dry run, `ledger.execute.check_transaction`, the same function as execution, so the
    codes agree (2xx, 3xx); without the `balance_change` events (`balance_changes=False`):
    only the verdict is read, and those events are derived after the operation ran.

Only a transaction that passes every step is kept, and only then is it handed to the
decode cache (`ledger.tx.remember_verified`): the cache holds verified content only.

Gossip (`add_gossiped`) differs in two places, both because nobody reads a gossip verdict and
each transaction reaches a validator up to three times: a copy whose nonce is already
committed is refused before its signatures are checked, and step 12 is only the sender's-key
rule (`ledger.execute.sender_signed`), not the operation's dry run -- the node that took the
transaction from its client ran that, and the block records whatever verdict execution gives.
Copies of waiting or recently committed bytes are dropped by the driver before admission
(`knows`).

The nonce view. A sender's waiting transactions hold nonces `base, base+1, ...` where `base`
is the account's committed nonce: those are *ready* (a block can take them). The *expected*
nonce is `base + number of ready txs`. A transaction with exactly that nonce is dry-run on
the committed state after replaying the sender's ready transactions inside a savepoint (then
rolled back), so it sees its own predecessors' effects (an `issue` after its
`register_instrument`, a balance already spent) -- but not other senders' waiting ones, which
may be ordered either way. The replay costs at most `nonce_window` executions (no signature
checks). A transaction must get code 0 from that dry run to be admitted.

Parking. A nonce ahead of the expected one (but inside the window) is *parked*, not refused,
so a client that pipelines transactions over several connections is not punished for
arrival order. A parked transaction is dry-run the same way with the account's nonce set to
its own, and needs only to pass the steps that decide whether it can be in a block at all
(chain, signatures, sender's key, `executed=True`). Parking is bounded: at most
`max_parked_per_sender` per sender and `parked_share_percent` of the pool in all (for
senders without an institutional role), and a transaction still parked `parked_ttl_blocks`
after its admission is dropped. They become ready when the gap is filled.

Shares. Senders holding an institutional role (`node.mempool_limits.RESERVED_ROLES`: issuer,
registrar, paying agent, cash issuer, regulator, reserve custodian, auditor, validator
operator -- not a VASP) may use the whole pool. Everyone else together may use the pool
less `reserved_percent` (count and bytes), each sender at most `max_txs_per_sender` /
`max_bytes_per_sender`, and each VASP -- its own transactions and those of the investors
its KYC files name -- at most `vasp_share_percent`. Bytes are memory (`tx_footprint`). So
investors who fill their room behind nonce gaps cannot keep a regulator's `freeze` or a
`forced_transfer` out: the reserved room is theirs, and beyond it they evict.

Eviction priority, when a new transaction does not fit: an institution's transaction evicts
other senders' transactions, parked ones first, then ready ones, newest arrival first; a
ready transaction of anyone else evicts parked ones of other senders (newest first); a parked
one evicts nothing. Each evicted transaction takes its sender's later nonces with it (they
could not execute before it). Shares (per sender, per VASP) never evict: they refuse.

Committed blocks (`remove_committed`): the included ids leave the pool; then, per sender, the
cheap recheck reads the account's committed nonce (one dict lookup) and drops every waiting
transaction below it (committed elsewhere under another id). Given the block's state changes
(`changes=`, what the driver passes), only the waiting senders whose account record the block
wrote are read: a nonce moves, and an account changes, only through a write of its record,
so the others are as they were after the last recheck (the cost is the block's, not the
pool's: ~1 ms a block less at 2,000 waiting senders, on the block path). Only for senders whose nonce
moved, the first waiting transaction is re-checked; it is dropped if it can no longer be in
a block at all (`executed=False`: the sender's key changed, the account went), which the
envelope's checks decide without running the operation (`can_be_in_block`). A
compliance refusal on recheck is kept: the block records its verdict and consumes its nonce,
which gives the client a definite answer and does not strand the sender's later transactions
behind a gap. Later transactions of a sender are not rechecked (the proposer drops the ones
that cannot be in a block and `evict`s them). Then expiry: a transaction admitted
`ttl_blocks` heights ago leaves (with its sender's later nonces), and so does a parked one
`parked_ttl_blocks` old. Arrival order is admission-height order, so expiry reads only the
oldest entries; parked expiry reads only senders with a gap.

Verified signatures and blocks: the ledger skips signature checks for ids in `verified=`.
A transaction id names the body only, so the same id can travel with other signatures (a
forged approver's signature added to a genuine transaction). `verified_ids` is therefore the
ids of the transactions *in the pool*, whose exact bytes were verified here -- safe for
`Chain.build_block` with what `reap` returned. For a proposal from another node use
`verified_for(block.txs)`, which matches the exact raw bytes.

Metrics (optional, `MempoolMetrics`): every refusal by its code's name, every removal other
than by a committed block by its reason (`expired`, `parked_expired`, `evicted`,
`recheck`, `proposer`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, KeysView, Mapping, Sequence
from typing import Protocol

from ledger.codes import Code, InvalidTransaction, LedgerError
from ledger.crypto import hash256
from ledger.execute import apply_transaction, check_transaction, sender_signed
from ledger.state import ACCOUNT, State
from ledger.tx import (
    SignedTx,
    decode_signed_tx,
    remember_verified,
    set_decode_cache_bytes,
    verify_tx_signatures,
)
from ledger.types import BlockContext
from node.mempool_admission import (
    CODESPACE_LEDGER,
    CODESPACE_MEMPOOL,
    AdmissionResult,
    AdmissionView,
    Plan,
    cheap_checks,
    check_nonce,
    ok,
    parked,
    plan_room,
    refuse,
)
from node.mempool_book import Book, Entry
from node.mempool_limits import MempoolLimits, quota_group

__all__ = [
    "CODESPACE_LEDGER",
    "CODESPACE_MEMPOOL",
    "AdmissionResult",
    "AdmissionView",
    "Mempool",
    "MempoolLimits",
    "MempoolMetrics",
]


class MempoolMetrics(Protocol):
    """What the mempool reports (`node.metrics.Metrics` implements it)."""

    def mempool_refused(self, reason: str) -> None: ...
    def mempool_removed(self, reason: str, count: int) -> None: ...


class Mempool:
    """Waiting transactions, bounded by count and memory, shared fairly, per-sender nonce order."""

    def __init__(
        self, limits: MempoolLimits, chain_id: str, metrics: MempoolMetrics | None = None
    ) -> None:
        self.limits = limits
        self.chain_id = chain_id
        self.metrics = metrics
        # The decode cache is the process's (ledger.tx); its bound is this node's setting.
        set_decode_cache_bytes(limits.decode_cache_bytes)
        self._book = Book()
        # hash256(raw) -> tx id of envelopes whose signatures verified, least recent first.
        self._verified: OrderedDict[bytes, bytes] = OrderedDict()
        # Ids of recently committed transactions (bounded like `_verified`): a gossiped copy
        # that arrives after its block is dropped by `knows` without being decoded.
        self._committed: OrderedDict[bytes, None] = OrderedDict()

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return len(self._book.entries)

    def has_ready(self) -> bool:
        """True when some transaction could go into the next block: its sender's committed
        nonce is followed without a gap. Parked transactions alone are not enough, or a
        proposer would commit empty blocks as fast as it can while they wait for their gap."""
        return any(sender.ready for sender in self._book.senders.values())

    @property
    def total_bytes(self) -> int:
        """Wire bytes of the waiting transactions."""
        return self._book.wire_bytes

    def usage(self) -> dict[str, int]:
        """Counters for tests and diagnostics: totals, the general (non-institutional) part,
        the parked part."""
        return self._book.usage()

    def has(self, tx_id: bytes) -> bool:
        return tx_id in self._book.entries

    def get(self, tx_id: bytes) -> SignedTx | None:
        entry = self._book.entries.get(tx_id)
        return None if entry is None else entry.tx

    @property
    def verified_ids(self) -> KeysView[bytes]:
        """Ids of the waiting transactions (all verified here); for `build_block` on `reap`.
        A live view (no copy): use it at once, as `build_block` does, synchronously."""
        return self._book.entries.keys()

    def is_verified(self, raw: bytes) -> bool:
        """Were the signatures of exactly these bytes verified (and still remembered)?"""
        return hash256(bytes(raw)) in self._verified

    def knows(self, raw: bytes) -> bool:
        """Are exactly these bytes verified here and either still waiting or recently
        committed? Gossip brings each transaction from several peers, often while a block
        is pending or after it committed: such copies can be dropped unseen (no decoding, no
        verdict owed to anyone). Reads the pool's bookkeeping only, never the state, so it is
        safe while a block is pending."""
        tx_id = self._verified.get(hash256(raw))
        return tx_id is not None and (tx_id in self._book.entries or tx_id in self._committed)

    def verified_for(self, raws: Iterable[bytes]) -> set[bytes]:
        """The ids among `raws` (a proposal's transactions) whose exact bytes were verified:
        pass as `Chain.execute_block(verified=...)`."""
        out = set()
        for raw in raws:
            tx_id = self._verified.get(hash256(bytes(raw)))
            if tx_id is not None:
                out.add(tx_id)
        return out

    # ------------------------------------------------------------------ admission

    def admit(self, raw: bytes, view: AdmissionView) -> AdmissionResult:
        """Check `raw` and, if it passes, add it to the pool (code 0)."""
        result, tx, plan = self._evaluate(raw, view)
        if tx is not None and plan is not None:
            self._insert(tx, view, plan)
        return result

    def add_gossiped(self, raw: bytes, view: AdmissionView) -> AdmissionResult:
        """A transaction from a peer: the same checks as `admit`, with two shortcuts. The caller
        re-gossips it only when the code is 0 (newly admitted), so a transaction crosses each
        link once.

        First, a copy whose nonce is already committed is refused (NONCE_USED) before
        its signatures are checked. Most such copies are gossip arriving after the block that
        holds them (a validator sees a transaction first in a proposal, verifies it there,
        then receives it up to three times from its peers); verifying them again would be
        wasted, and nobody reads a gossip verdict. Second, the operation is not dry-run
        (`_check_gossiped`). A client's `admit` keeps the ledger's own order of checks and
        codes."""
        result, tx, plan = self._evaluate(raw, view, gossip=True)
        if tx is not None and plan is not None:
            self._insert(tx, view, plan)
        return result

    def check(self, raw: bytes, view: AdmissionView) -> AdmissionResult:
        """The verdict `admit` would give, storing nothing in the pool (`check_tx`)."""
        result, _, _ = self._evaluate(raw, view)
        return result

    def _evaluate(
        self, raw: bytes, view: AdmissionView, *, gossip: bool = False
    ) -> tuple[AdmissionResult, SignedTx | None, Plan | None]:
        tx: SignedTx | None = None
        plan: Plan | None = None
        result = self._judge(raw, view, gossip)
        if isinstance(result, tuple):
            result, tx, plan = result
        elif self.metrics is not None:
            self.metrics.mempool_refused(Code(result.code).name.lower())
        return result, tx, plan

    def _judge(
        self, raw: bytes, view: AdmissionView, gossip: bool
    ) -> AdmissionResult | tuple[AdmissionResult, SignedTx, Plan]:
        """A refusal, or (code 0, the transaction, the plan to insert it)."""
        limits, book = self.limits, self._book
        size = len(raw)
        if size > limits.max_tx_bytes:
            return refuse(
                Code.TX_TOO_LARGE, f"transaction is {size} bytes, limit {limits.max_tx_bytes}"
            )
        # Gossip brings each transaction from several peers: exactly these bytes, verified here
        # and still waiting, get their verdict without being decoded again.
        known = self._verified.get(hash256(raw)) if type(raw) is bytes else None
        if known is not None and known in book.entries:
            return refuse(Code.ALREADY_IN_MEMPOOL, "transaction is already waiting", known)
        try:
            tx = decode_signed_tx(raw)
        except LedgerError as exc:
            return refuse(exc.code, exc.message)
        refusal, footprint = cheap_checks(tx, self.chain_id, book, limits)
        if refusal is not None:
            return refusal
        state, body = view.state, tx.body
        account = state.accounts.get(body.sender)
        plan: Plan | None = None
        if account is None:
            # No such sender: the ledger's verdict, before any signature is checked (the
            # ledger itself checks signatures first; here a flood of made-up senders must
            # cost a dictionary lookup, not a verification each).
            receipt = check_transaction(state, tx, view.ctx, verified=True)
            return refuse(Code(receipt.code), receipt.log, tx.tx_id)
        if body.nonce >= account.nonce:
            refusal = check_nonce(tx, account.nonce, book, limits)
            if refusal is None:
                plan, refusal = plan_room(tx, account, footprint, book, limits)
            if refusal is not None:
                return refusal
        elif gossip:
            return refuse(
                Code.NONCE_USED,
                f"nonce {body.nonce} is already committed (next {account.nonce})",
                tx.tx_id,
            )
        refusal = self._verify_once(tx)
        if refusal is not None:
            return refusal
        if plan is None:
            # Already committed: the ledger's own verdict and code.
            receipt = check_transaction(state, tx, view.ctx, verified=True)
            if receipt.code == Code.OK:  # cannot happen: the nonce check refuses it
                raise AssertionError(f"committed nonce {body.nonce} of {tx.tx_id.hex()} accepted")
            return refuse(Code(receipt.code), receipt.log, tx.tx_id)
        if gossip:
            result = _check_gossiped(tx, state, plan)
        else:
            result = _check_rules(tx, view, plan, book)
        return (result, tx, plan) if result.ok else result

    def _verify_once(self, tx: SignedTx) -> AdmissionResult | None:
        key = hash256(tx.raw)
        if key in self._verified:
            self._verified.move_to_end(key)
            return None
        try:
            verify_tx_signatures(tx)
        except InvalidTransaction as exc:
            return refuse(exc.code, exc.message, tx.tx_id)
        self._verified[key] = tx.tx_id
        if len(self._verified) > self.limits.verified_cache:
            self._verified.popitem(last=False)
        return None

    # ------------------------------------------------------------------ bookkeeping

    def _insert(self, tx: SignedTx, view: AdmissionView, plan: Plan) -> None:
        if plan.evict:
            self._make_room(tx.body.sender, plan)
        account = view.state.accounts[tx.body.sender]
        group = None if plan.reserved else quota_group(account)
        entry = Entry(tx, len(tx.raw), plan.cost, view.ctx.height)
        self._book.add(entry, account.nonce, plan.reserved, group)
        # Verified, admitted content: the proposal and the block's events decode these bytes.
        remember_verified(tx, plan.cost)

    def _make_room(self, sender: bytes, plan: Plan) -> None:
        """Evict by priority (module docstring) until `plan`'s transaction fits."""
        book = self._book
        evicted: list[bytes] = []
        for parked_only in (True, False) if plan.reserved else (True,):
            for tx_id in book.eviction_candidates(sender, parked_only):
                n_over, b_over = book.overflow(self.limits, plan.reserved, plan.cost)
                if n_over <= 0 and b_over <= 0:
                    break
                evicted.extend(book.remove(tx_id, later=True))
        self._note_removed("evicted", len(evicted))

    def _note_removed(self, reason: str, count: int) -> None:
        if count and self.metrics is not None:
            self.metrics.mempool_removed(reason, count)

    # ------------------------------------------------------------------ blocks

    def reap(self, max_txs: int, max_bytes: int) -> list[SignedTx]:
        """The next block's transactions, without removing them: ready transactions only,
        senders in the arrival order of their transactions, each sender's in nonce order.

        Walking the pool in arrival order, each transaction met stands for "the next ready
        transaction of its sender": so senders interleave as they arrived, and a sender's
        transactions come out in nonce order even when they arrived out of order. A sender
        whose next transaction does not fit in `max_bytes` contributes nothing more (a later
        nonce cannot go before it); other senders may still fill the block.
        """
        return self._book.reap(max_txs, max_bytes)

    def evict(self, tx_id: bytes) -> bool:
        """Remove one transaction (a proposer found it cannot be in a block). Later
        transactions of its sender stay, parked behind the gap. False if it was not here."""
        removed = self._book.remove(tx_id)
        self._note_removed("proposer", len(removed))
        return bool(removed)

    def remove_committed(
        self,
        tx_ids: Iterable[bytes],
        view: AdmissionView,
        changes: Mapping[bytes, object] | None = None,
    ) -> list[bytes]:
        """After a block is committed: drop its transactions, then the cheap recheck and the
        expiry described in the module docstring. `view` is the new committed state and the
        next block's context; `changes`, the block's state changes (keys are state keys):
        when given, only the senders whose account the block wrote are rechecked. Returns
        the ids dropped by the recheck and expiry (not the committed ones)."""
        committed = self._committed
        remove = self._book.remove_committed
        moved: set[bytes] = set()  # senders whose nonce this block moved
        for tx_id in tx_ids:
            sender = remove(tx_id)
            if sender is not None:
                moved.add(sender)
            committed[tx_id] = None
        while len(committed) > self.limits.verified_cache:
            committed.popitem(last=False)
        dropped = self._recheck(view, moved, _written_accounts(changes))
        self._note_removed("recheck", len(dropped))
        expired = self._expire(view.ctx.height)
        dropped.extend(expired)
        return dropped

    def _recheck(
        self, view: AdmissionView, moved: set[bytes], written: set[bytes] | None
    ) -> list[bytes]:
        """`moved`: senders whose own waiting transactions the block committed (the books
        moved their base already); every other sender's nonce is compared with the state --
        of the senders in `written` (accounts the block wrote) only, when it is given."""
        state, ctx = view.state, view.ctx
        book = self._book
        dropped: list[bytes] = []
        senders = book.senders
        if written is None:
            candidates = list(senders)
        else:  # sorted: the same order on every node (the recheck's drops are logged)
            candidates = sorted(written.intersection(senders))
        for sender in candidates:
            waiting = senders[sender]
            account = state.accounts.get(sender)
            if account is None:  # the sender's account is gone: nothing of it can execute
                for tx_id in list(waiting.by_nonce.values()):
                    dropped.extend(book.remove(tx_id))
                continue
            base = account.nonce
            if base != waiting.base:
                dropped.extend(book.rebase(sender, base))
                if sender not in book.senders:
                    continue
            elif sender not in moved:
                continue
            first = waiting.by_nonce.get(base)
            if first is not None and not can_be_in_block(state, ctx, book.entries[first].tx):
                dropped.extend(book.remove(first))
        return dropped

    def _expire(self, height: int) -> list[bytes]:
        """Drop what was admitted `ttl_blocks` ago (with its sender's later nonces), then
        parked transactions `parked_ttl_blocks` old."""
        book, limits = self._book, self.limits
        expired: list[bytes] = []
        for tx_id in book.older_than(height, limits.ttl_blocks):
            expired.extend(book.remove(tx_id, later=True))
        self._note_removed("expired", len(expired))
        parked: list[bytes] = []
        for tx_id in book.parked_older_than(height, limits.parked_ttl_blocks):
            parked.extend(book.remove(tx_id))
        self._note_removed("parked_expired", len(parked))
        return expired + parked


def can_be_in_block(state: State, ctx: BlockContext, tx: SignedTx) -> bool:
    """`check_transaction(state, tx, ctx, verified=True).executed`, without running the
    operation: a receipt with `executed=False` comes from the envelope's steps only
    (ledger/execute.py: 2 the chain, 4 the sender's account and current key, 5 the nonce;
    1 and 3 were passed at admission), while the operation (step 6) always gives an
    executed receipt, refused or not. The recheck after a block asks this of every sender
    the block moved, so it no longer dry-runs one operation per such sender."""
    body = tx.body
    account = state.accounts.get(body.sender)
    return (
        body.chain_id == ctx.chain_id
        and account is not None
        and body.nonce == account.nonce
        and sender_signed(state, tx)
    )


def _written_accounts(changes: Mapping[bytes, object] | None) -> set[bytes] | None:
    """The addresses whose account record `changes` (a block's state changes) wrote."""
    if changes is None:
        return None
    cut = len(ACCOUNT)
    return {key[cut:] for key in changes if key[:cut] == ACCOUNT}


def _check_rules(tx: SignedTx, view: AdmissionView, plan: Plan, book: Book) -> AdmissionResult:
    state, ctx = view.state, view.ctx
    tx_id, sender = tx.tx_id, tx.body.sender
    base = state.accounts[sender].nonce
    ready = book.ready_txs(sender, base)
    expected = base + len(ready)
    receipt = _dry_run(state, ctx, tx, ready, adjust_nonce=plan.parked)
    if not plan.parked:
        if receipt.code != Code.OK:
            return refuse(Code(receipt.code), receipt.log, tx_id)
        return ok(tx_id)
    if not receipt.executed:
        return refuse(Code(receipt.code), receipt.log, tx_id)
    return parked(tx_id, expected)


def _check_gossiped(tx: SignedTx, state: State, plan: Plan) -> AdmissionResult:
    """A peer's transaction, past decoding, chain, signatures and the nonce window: only
    what decides whether a block can hold it (its sender's current key signed it); the
    operation is not dry-run. The node that took it from a client dry-ran it, and its
    compliance verdict is the block's to give (a refused operation is recorded, consumes
    its nonce and changes nothing else), so a second dry run here would only cost time:
    about a third of a validator's admission work, three quarters of whose transactions
    arrive by gossip."""
    tx_id = tx.tx_id
    if not sender_signed(state, tx):
        return refuse(
            Code.SENDER_NOT_SIGNED,
            "the current key of the sender has not signed the transaction",
            tx_id,
        )
    if plan.parked:
        return parked(tx_id, state.accounts[tx.body.sender].nonce)
    return ok(tx_id)


def _dry_run(
    state: State,
    ctx: BlockContext,
    tx: SignedTx,
    predecessors: Sequence[SignedTx],
    *,
    adjust_nonce: bool,
):
    """`check_transaction` of `tx` after the sender's ready `predecessors`, state untouched.

    `adjust_nonce`: a parked transaction; the account's nonce is set to its own so the
    checks before the operation (sender, key, nonce) can be judged.
    """
    token = state.savepoint()
    try:
        # Only the verdict is read: no `balance_change` events (derived after the operation
        # ran, they change neither the verdict nor the writes; a third of a transfer's dry run).
        for previous in predecessors:
            apply_transaction(state, previous, ctx, verified=True, balance_changes=False)
        if adjust_nonce:
            account = state.accounts[tx.body.sender]
            state.put_account(account.with_nonce(tx.body.nonce))
        return check_transaction(state, tx, ctx, verified=True, balance_changes=False)
    finally:
        state.rollback(token)
