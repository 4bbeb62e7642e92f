"""The mempool: which transactions wait for a block, in what order, and why others were refused.

Pure bookkeeping, no I/O: the driver and the RPC call these synchronous methods from trio
tasks on one thread, so there are no locks.

Admission (`admit`, `add_gossiped`, and `check` which stores nothing), in order, each refusal
with its stable code (`ledger/codes.py`):

1. size above `MempoolLimits.max_tx_bytes`                       TX_TOO_LARGE
2. decode the envelope                                              1xx
3. the same transaction (same id) already waiting                  ALREADY_IN_MEMPOOL
4. the pool is full by count or by bytes (checked before the costly
   steps, so a flood costs no signature checks)                     MEMPOOL_FULL
5. chain id                                                         WRONG_CHAIN
6. signatures, verified ONCE: the hash of the exact raw bytes goes
   into a bounded LRU set, so a transaction seen again (gossip from
   several peers, a block proposal) is not verified again          BAD_SIGNATURE
7. sender and nonce against the committed state: a nonce below the
   account's committed nonce (already committed) gets the ledger's
   own verdict                                                      NONCE_USED, ACCOUNT_NOT_FOUND...
   a nonce held by another waiting transaction of the sender       NONCE_USED
   a nonce `nonce_window` or more ahead of the committed nonce     NONCE_TOO_FAR
8. the dry run, `ledger.execute.check_transaction`, the same function as execution, so the
   codes agree (2xx, 3xx).

Gossip (`add_gossiped`) differs in two places, both because nobody reads a gossip verdict and
each transaction reaches a validator up to three times: a copy whose nonce is already
committed is refused before its signatures are checked (step 6), and step 8 is only the
sender's-key rule (`ledger.execute.sender_signed`), not the operation's dry run -- the node
that took the transaction from its client ran that, and the block records whatever verdict
execution gives. Copies of waiting or recently committed bytes are dropped by the driver
before admission (`knows`).

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
(chain, signatures, sender's key, `executed=True`); its compliance verdict is not known until
its predecessors exist, and a block records it either way. Parked transactions count against
the bounds like any other; the window bounds them per sender. They become ready when the
gap is filled, and are never reaped before.

Committed blocks (`remove_committed`): the included ids leave the pool; then, per sender, the
cheap recheck reads the account's committed nonce (one dict lookup) and drops every waiting
transaction below it (committed elsewhere under another id). Only for senders whose nonce
moved, the first waiting transaction is fully re-checked; it is dropped if it can no longer
be in a block at all (`executed=False`: the sender's key changed, the account went). A
compliance refusal on recheck is kept: the block records its verdict and consumes its nonce,
which gives the client a definite answer and does not strand the sender's later transactions
behind a gap. Later transactions of a sender are not rechecked (the proposer drops the ones
that cannot be in a block and `evict`s them).

Verified signatures and blocks: the ledger skips signature checks for ids in `verified=`.
A transaction id names the body only, so the same id can travel with other signatures (a
forged approver's signature added to a genuine transaction). `verified_ids` is therefore the
ids of the transactions *in the pool*, whose exact bytes were verified here -- safe for
`Chain.build_block` with what `reap` returned. For a proposal from another node use
`verified_for(block.txs)`, which matches the exact raw bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, KeysView, Sequence
from dataclasses import dataclass, field

from ledger.codes import Code, InvalidTransaction, LedgerError
from ledger.crypto import hash256
from ledger.execute import apply_transaction, check_transaction, sender_signed
from ledger.state import State
from ledger.tx import MAX_TX_BYTES, SignedTx, decode_signed_tx, verify_tx_signatures
from ledger.types import BlockContext

__all__ = ["AdmissionResult", "AdmissionView", "Mempool", "MempoolLimits"]

CODESPACE_LEDGER = "ledger"
CODESPACE_MEMPOOL = "mempool"


@dataclass(frozen=True, slots=True)
class MempoolLimits:
    """Bounds of the pool. `nonce_window`: how far ahead of a sender's committed nonce a
    transaction may be (so at most that many waiting transactions per sender);
    `verified_cache`: how many verified transactions are remembered."""

    max_txs: int = 5_000
    max_bytes: int = 32 * 1024 * 1024
    max_tx_bytes: int = MAX_TX_BYTES
    nonce_window: int = 64
    verified_cache: int = 20_000

    def __post_init__(self) -> None:
        for name in ("max_txs", "max_bytes", "max_tx_bytes", "nonce_window", "verified_cache"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"mempool limit {name} must be a positive int, got {value!r}")


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


@dataclass(frozen=True, slots=True)
class _Entry:
    tx: SignedTx
    size: int


@dataclass(slots=True)
class _Sender:
    """A sender's waiting transactions: committed nonce `base` and nonce -> tx id."""

    base: int
    by_nonce: dict[int, bytes] = field(default_factory=dict)

    def ready_count(self) -> int:
        count = 0
        while self.base + count in self.by_nonce:
            count += 1
        return count


def _ok(tx_id: bytes) -> AdmissionResult:
    return AdmissionResult(Code.OK, "", tx_id, "")


def _parked(tx_id: bytes, expected: int) -> AdmissionResult:
    return AdmissionResult(Code.OK, f"parked: waits for nonce {expected} of its sender", tx_id, "")


def _refuse(code: Code, log: str, tx_id: bytes = b"") -> AdmissionResult:
    space = CODESPACE_MEMPOOL if 400 <= code < 500 else CODESPACE_LEDGER
    return AdmissionResult(int(code), log, tx_id, space)


class Mempool:
    """Waiting transactions, bounded by count and bytes, per-sender nonce order."""

    def __init__(self, limits: MempoolLimits, chain_id: str) -> None:
        self.limits = limits
        self.chain_id = chain_id
        # tx id -> entry, in arrival order (dicts keep insertion order: deterministic).
        self._entries: dict[bytes, _Entry] = {}
        self._senders: dict[bytes, _Sender] = {}
        self._bytes = 0
        # hash256(raw) -> tx id of envelopes whose signatures verified, least recent first.
        self._verified: OrderedDict[bytes, bytes] = OrderedDict()
        # Ids of recently committed transactions (bounded like `_verified`): a gossiped copy
        # that arrives after its block is dropped by `knows` without being decoded.
        self._committed: OrderedDict[bytes, None] = OrderedDict()

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return len(self._entries)

    def has_ready(self) -> bool:
        """True when some transaction could go into the next block: its sender's committed
        nonce is followed without a gap. Parked transactions alone are not enough, or a
        proposer would commit empty blocks as fast as it can while they wait for their gap."""
        return any(sender.base in sender.by_nonce for sender in self._senders.values())

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def has(self, tx_id: bytes) -> bool:
        return tx_id in self._entries

    def get(self, tx_id: bytes) -> SignedTx | None:
        entry = self._entries.get(tx_id)
        return None if entry is None else entry.tx

    @property
    def verified_ids(self) -> KeysView[bytes]:
        """Ids of the waiting transactions (all verified here); for `build_block` on `reap`.
        A live view (no copy): use it at once, as `build_block` does, synchronously."""
        return self._entries.keys()

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
        return tx_id is not None and (tx_id in self._entries or tx_id in self._committed)

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
        result, tx = self._evaluate(raw, view)
        if tx is not None:
            self._insert(tx, view.state)
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
        result, tx = self._evaluate(raw, view, gossip=True)
        if tx is not None:
            self._insert(tx, view.state)
        return result

    def check(self, raw: bytes, view: AdmissionView) -> AdmissionResult:
        """The verdict `admit` would give, storing nothing in the pool (`check_tx`)."""
        result, _ = self._evaluate(raw, view)
        return result

    def _evaluate(
        self, raw: bytes, view: AdmissionView, *, gossip: bool = False
    ) -> tuple[AdmissionResult, SignedTx | None]:
        limits = self.limits
        size = len(raw)
        if size > limits.max_tx_bytes:
            return _refuse(
                Code.TX_TOO_LARGE, f"transaction is {size} bytes, limit {limits.max_tx_bytes}"
            ), None
        # Gossip brings each transaction from several peers: exactly these bytes, verified here
        # and still waiting, get their verdict without being decoded again.
        known = self._verified.get(hash256(raw)) if type(raw) is bytes else None
        if known is not None and known in self._entries:
            return _refuse(Code.ALREADY_IN_MEMPOOL, "transaction is already waiting", known), None
        try:
            tx = decode_signed_tx(raw)
        except LedgerError as exc:
            return _refuse(exc.code, exc.message), None
        tx_id = tx.tx_id
        if tx_id in self._entries:
            return _refuse(Code.ALREADY_IN_MEMPOOL, "transaction is already waiting", tx_id), None
        if len(self._entries) >= limits.max_txs or self._bytes + size > limits.max_bytes:
            return _refuse(
                Code.MEMPOOL_FULL,
                f"mempool holds {len(self._entries)} txs / {self._bytes} bytes, limits "
                f"{limits.max_txs} / {limits.max_bytes}; retry later",
                tx_id,
            ), None
        body = tx.body
        if body.chain_id != self.chain_id:
            return _refuse(
                Code.WRONG_CHAIN,
                f"transaction is for chain {body.chain_id!r}, this is {self.chain_id!r}",
                tx_id,
            ), None
        if gossip:
            account = view.state.accounts.get(body.sender)
            if account is not None and body.nonce < account.nonce:
                return _refuse(
                    Code.NONCE_USED,
                    f"nonce {body.nonce} is already committed (next {account.nonce})",
                    tx_id,
                ), None
        refusal = self._verify_once(tx)
        if refusal is not None:
            return refusal, None
        return self._check_nonce_and_rules(tx, view, gossip)

    def _verify_once(self, tx: SignedTx) -> AdmissionResult | None:
        key = hash256(tx.raw)
        if key in self._verified:
            self._verified.move_to_end(key)
            return None
        try:
            verify_tx_signatures(tx)
        except InvalidTransaction as exc:
            return _refuse(exc.code, exc.message, tx.tx_id)
        self._verified[key] = tx.tx_id
        if len(self._verified) > self.limits.verified_cache:
            self._verified.popitem(last=False)
        return None

    def _check_nonce_and_rules(
        self, tx: SignedTx, view: AdmissionView, gossip: bool = False
    ) -> tuple[AdmissionResult, SignedTx | None]:
        state, ctx = view.state, view.ctx
        tx_id, sender, nonce = tx.tx_id, tx.body.sender, tx.body.nonce
        account = state.accounts.get(sender)
        if account is None or nonce < account.nonce:
            # Already committed (or no such sender): the ledger's own verdict and code.
            receipt = check_transaction(state, tx, ctx, verified=True)
            if receipt.code == Code.OK:  # cannot happen: the nonce check refuses it
                raise AssertionError(f"committed nonce {nonce} of {tx_id.hex()} accepted")
            return _refuse(Code(receipt.code), receipt.log, tx_id), None
        base = account.nonce
        if nonce - base >= self.limits.nonce_window:
            return _refuse(
                Code.NONCE_TOO_FAR,
                f"nonce {nonce} is {nonce - base} ahead of the committed nonce {base}; "
                f"the window is {self.limits.nonce_window}",
                tx_id,
            ), None
        waiting = self._senders.get(sender)
        if waiting is not None and nonce in waiting.by_nonce:
            return _refuse(
                Code.NONCE_USED,
                f"nonce {nonce} is held by waiting transaction {waiting.by_nonce[nonce].hex()}",
                tx_id,
            ), None
        if gossip:
            return self._check_gossiped(tx, state, waiting, base)
        ready = self._ready_txs(sender, base)
        expected = base + len(ready)
        receipt = self._dry_run(state, ctx, tx, ready, adjust_nonce=nonce != expected)
        if nonce == expected:
            if receipt.code != Code.OK:
                return _refuse(Code(receipt.code), receipt.log, tx_id), None
            return _ok(tx_id), tx
        if not receipt.executed:
            return _refuse(Code(receipt.code), receipt.log, tx_id), None
        return _parked(tx_id, expected), tx

    @staticmethod
    def _check_gossiped(
        tx: SignedTx, state: State, waiting: _Sender | None, base: int
    ) -> tuple[AdmissionResult, SignedTx | None]:
        """A peer's transaction, past decoding, chain, signatures and the nonce window: only
        what decides whether a block can hold it (its sender's current key signed it); the
        operation is not dry-run. The node that took it from a client dry-ran it, and its
        compliance verdict is the block's to give (a refused operation is recorded, consumes
        its nonce and changes nothing else), so a second dry run here would only cost time:
        about a third of a validator's admission work, three quarters of whose transactions
        arrive by gossip."""
        tx_id = tx.tx_id
        if not sender_signed(state, tx):
            return _refuse(
                Code.SENDER_NOT_SIGNED,
                "the current key of the sender has not signed the transaction",
                tx_id,
            ), None
        expected = base + (0 if waiting is None else waiting.ready_count())
        if tx.body.nonce == expected:
            return _ok(tx_id), tx
        return _parked(tx_id, expected), tx

    def _ready_txs(self, sender: bytes, base: int) -> list[SignedTx]:
        waiting = self._senders.get(sender)
        out: list[SignedTx] = []
        if waiting is None:
            return out
        by_nonce = waiting.by_nonce
        nonce = base
        while nonce in by_nonce:
            out.append(self._entries[by_nonce[nonce]].tx)
            nonce += 1
        return out

    @staticmethod
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
            for previous in predecessors:
                apply_transaction(state, previous, ctx, verified=True)
            if adjust_nonce:
                account = state.accounts[tx.body.sender]
                state.put_account(account.with_nonce(tx.body.nonce))
            return check_transaction(state, tx, ctx, verified=True)
        finally:
            state.rollback(token)

    def _insert(self, tx: SignedTx, state: State) -> None:
        sender = tx.body.sender
        waiting = self._senders.get(sender)
        if waiting is None:
            waiting = self._senders[sender] = _Sender(state.accounts[sender].nonce)
        waiting.by_nonce[tx.body.nonce] = tx.tx_id
        self._entries[tx.tx_id] = _Entry(tx, len(tx.raw))
        self._bytes += len(tx.raw)

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
        out: list[SignedTx] = []
        used = 0
        next_nonce: dict[bytes, int] = {}
        blocked: set[bytes] = set()
        for entry in self._entries.values():
            if len(out) >= max_txs:
                break
            sender = entry.tx.body.sender
            if sender in blocked:
                continue
            waiting = self._senders[sender]
            nonce = next_nonce.get(sender, waiting.base)
            tx_id = waiting.by_nonce.get(nonce)
            if tx_id is None:  # no ready transaction left for this sender (gap or done)
                blocked.add(sender)
                continue
            candidate = self._entries[tx_id]
            if used + candidate.size > max_bytes:
                blocked.add(sender)
                continue
            out.append(candidate.tx)
            used += candidate.size
            next_nonce[sender] = nonce + 1
        return out

    def evict(self, tx_id: bytes) -> bool:
        """Remove one transaction (a proposer found it cannot be in a block). Later
        transactions of its sender stay, parked behind the gap. False if it was not here."""
        entry = self._entries.pop(tx_id, None)
        if entry is None:
            return False
        self._bytes -= entry.size
        sender = entry.tx.body.sender
        waiting = self._senders[sender]
        del waiting.by_nonce[entry.tx.body.nonce]
        if not waiting.by_nonce:
            del self._senders[sender]
        return True

    def remove_committed(self, tx_ids: Iterable[bytes], view: AdmissionView) -> list[bytes]:
        """After a block is committed: drop its transactions, then the cheap recheck described
        in the module docstring. `view` is the new committed state and the next block's
        context. Returns the ids dropped by the recheck (not the committed ones)."""
        committed = self._committed
        for tx_id in tx_ids:
            self.evict(tx_id)
            committed[tx_id] = None
        while len(committed) > self.limits.verified_cache:
            committed.popitem(last=False)
        state, ctx = view.state, view.ctx
        dropped: list[bytes] = []
        for sender, waiting in list(self._senders.items()):
            account = state.accounts.get(sender)
            if account is None:  # the sender's account is gone: nothing of it can execute
                dropped.extend(self._drop_where(waiting, lambda nonce: True))
                continue
            if account.nonce == waiting.base:
                continue
            base = account.nonce
            dropped.extend(self._drop_where(waiting, lambda nonce, base=base: nonce < base))
            waiting.base = base
            first = waiting.by_nonce.get(base)
            if first is not None:
                receipt = check_transaction(state, self._entries[first].tx, ctx, verified=True)
                if not receipt.executed:
                    self.evict(first)
                    dropped.append(first)
        return dropped

    def _drop_where(self, waiting: _Sender, predicate) -> list[bytes]:
        doomed = [tx_id for nonce, tx_id in waiting.by_nonce.items() if predicate(nonce)]
        for tx_id in doomed:
            self.evict(tx_id)
        return doomed
