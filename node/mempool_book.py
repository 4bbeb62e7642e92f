"""The mempool's books: its waiting transactions and what each class of sender holds.

What it owns: the entries (in arrival order), each sender's nonce run (ready and parked), and
the counters admission reads to keep every bound without walking the pool: totals, the part
held by senders without an institutional role ("general"), the part of that parked behind
nonce gaps, and each VASP's part. Every change goes through `add` and `remove`, which keep
the counters exact; `node.mempool` decides what to add and remove (see its docstring), and
`reap` reads the order for a block. Pure bookkeeping: no state, no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ledger.tx import SignedTx
from node.mempool_limits import MempoolLimits

__all__ = ["Book", "Entry", "SenderQueue"]


@dataclass(frozen=True, slots=True)
class Entry:
    tx: SignedTx
    size: int  # wire bytes (what a block carries)
    cost: int  # memory charged to the pool (`tx_footprint`)
    height: int  # the height of the block it was admitted for (expiry)


@dataclass(slots=True)
class SenderQueue:
    """A sender's waiting transactions: committed nonce `base`, nonce -> tx id, and what it
    holds. `reserved` (institutional role) and `group` (VASP share) are read from the account
    when its first waiting transaction arrives and kept while it has any."""

    base: int
    reserved: bool
    group: bytes | None
    by_nonce: dict[int, bytes] = field(default_factory=dict)
    ready: int = 0  # nonces base .. base+ready-1 are waiting
    count: int = 0
    cost: int = 0
    parked_count: int = 0
    parked_cost: int = 0


class Book:
    """Entries and counters. `general`, `parked` and each `groups` value are [count, cost]
    of senders without an institutional role; `gapped` names the senders with parked txs."""

    def __init__(self) -> None:
        # tx id -> entry, in arrival order (dicts keep insertion order: deterministic). The
        # driver admits against ever higher heights, so this is also admission-height order.
        self.entries: dict[bytes, Entry] = {}
        self.senders: dict[bytes, SenderQueue] = {}
        self.wire_bytes = 0
        self.cost = 0
        self.general = [0, 0]
        self.parked = [0, 0]
        self.groups: dict[bytes, list[int]] = {}
        self.gapped: set[bytes] = set()

    def usage(self) -> dict[str, int]:
        return {
            "txs": len(self.entries),
            "memory": self.cost,
            "wire_bytes": self.wire_bytes,
            "general_txs": self.general[0],
            "general_memory": self.general[1],
            "parked_txs": self.parked[0],
            "parked_memory": self.parked[1],
        }

    def expected_nonce(self, sender: bytes, base: int) -> int:
        """The first nonce from `base` up that no waiting transaction of `sender` holds."""
        waiting = self.senders.get(sender)
        if waiting is not None:
            if waiting.base == base:
                return base + waiting.ready
            while base in waiting.by_nonce:
                base += 1
        return base

    def ready_txs(self, sender: bytes, base: int) -> list[SignedTx]:
        waiting = self.senders.get(sender)
        out: list[SignedTx] = []
        if waiting is None:
            return out
        by_nonce = waiting.by_nonce
        nonce = base
        while nonce in by_nonce:
            out.append(self.entries[by_nonce[nonce]].tx)
            nonce += 1
        return out

    def overflow(self, limits: MempoolLimits, reserved: bool, cost: int) -> tuple[int, int]:
        """How many transactions and bytes too many the pool would hold with one more of
        `cost` in the given class (<= 0: it fits). Institutions are bound by the whole pool;
        everyone else also by the pool less the reserved room."""
        n_over = len(self.entries) + 1 - limits.max_txs
        b_over = self.cost + cost - limits.max_bytes
        if not reserved:
            n_over = max(n_over, self.general[0] + 1 - limits.general_txs)
            b_over = max(b_over, self.general[1] + cost - limits.general_bytes)
        return n_over, b_over

    # ------------------------------------------------------------------ changes

    def add(self, entry: Entry, base: int, reserved: bool, group: bytes | None) -> None:
        """Add a transaction; `base`, `reserved` and `group` describe its sender if it has
        nothing waiting yet (else the sender's record keeps its own)."""
        tx = entry.tx
        sender = tx.body.sender
        waiting = self.senders.get(sender)
        if waiting is None:
            waiting = self.senders[sender] = SenderQueue(base, reserved, group)
        nonce = tx.body.nonce
        waiting.by_nonce[nonce] = tx.tx_id
        self.entries[tx.tx_id] = entry
        self._account(waiting, entry, +1)
        if nonce == waiting.base + waiting.ready and not waiting.parked_count:
            waiting.ready += 1  # the common case, in order and no gap: nothing to recount
        else:
            self._resettle(sender, waiting)

    def remove(self, tx_id: bytes, *, later: bool = False) -> list[bytes]:
        """Take a transaction out (and with `later`, its sender's higher nonces, which could
        not execute before it). Returns the ids removed ([] if it was not here)."""
        entry = self.entries.get(tx_id)
        if entry is None:
            return []
        sender = entry.tx.body.sender
        waiting = self.senders[sender]
        nonce = entry.tx.body.nonce
        doomed = [tx_id]
        if later:
            doomed.extend(i for n, i in waiting.by_nonce.items() if n > nonce)
        for doomed_id in doomed:
            gone = self.entries.pop(doomed_id)
            del waiting.by_nonce[gone.tx.body.nonce]
            self._account(waiting, gone, -1)
        self._resettle(sender, waiting)
        return doomed

    def remove_committed(self, tx_id: bytes) -> bytes | None:
        """Take out a transaction a committed block holds. Its nonce is committed, so when it
        is its sender's first (the common case) the sender's base moves past it, and nothing
        needs recounting (`rebase` confirms the base against the state afterwards). Returns
        its sender (None if it was not here)."""
        entry = self.entries.get(tx_id)
        if entry is None:
            return None
        sender = entry.tx.body.sender
        waiting = self.senders[sender]
        nonce = entry.tx.body.nonce
        if nonce != waiting.base:
            self.remove(tx_id)
            return sender
        del self.entries[tx_id]
        del waiting.by_nonce[nonce]
        self._account(waiting, entry, -1)
        waiting.base = nonce + 1
        waiting.ready -= 1
        if not waiting.by_nonce:
            del self.senders[sender]
            self.gapped.discard(sender)
        return sender

    def rebase(self, sender: bytes, base: int) -> list[bytes]:
        """The sender's committed nonce is now `base`: drop its transactions below it and
        recount. Returns the ids dropped."""
        waiting = self.senders[sender]
        dropped = []
        for tx_id in [i for n, i in waiting.by_nonce.items() if n < base]:
            dropped.extend(self.remove(tx_id))
        if sender in self.senders:
            waiting.base = base
            self._resettle(sender, waiting)
        return dropped

    def _account(self, waiting: SenderQueue, entry: Entry, sign: int) -> None:
        """Add (`sign` +1) or take away (-1) an entry's count and cost everywhere but parking."""
        cost = sign * entry.cost
        self.wire_bytes += sign * entry.size
        self.cost += cost
        waiting.count += sign
        waiting.cost += cost
        if waiting.reserved:
            return
        self.general[0] += sign
        self.general[1] += cost
        if waiting.group is not None:
            used = self.groups.setdefault(waiting.group, [0, 0])
            used[0] += sign
            used[1] += cost
            if used[0] == 0:
                del self.groups[waiting.group]

    def _resettle(self, sender: bytes, waiting: SenderQueue) -> None:
        """Recount a sender's ready run and parked transactions after any change (O(its
        waiting transactions), at most `nonce_window`)."""
        by_nonce = waiting.by_nonce
        ready = 0
        while waiting.base + ready in by_nonce:
            ready += 1
        waiting.ready = ready
        parked_count = len(by_nonce) - ready
        parked_cost = 0
        if parked_count:
            limit = waiting.base + ready
            entries = self.entries
            parked_cost = sum(entries[i].cost for n, i in by_nonce.items() if n > limit)
        if not waiting.reserved:
            self.parked[0] += parked_count - waiting.parked_count
            self.parked[1] += parked_cost - waiting.parked_cost
        waiting.parked_count, waiting.parked_cost = parked_count, parked_cost
        if parked_count:
            self.gapped.add(sender)
        else:
            self.gapped.discard(sender)
        if not by_nonce:
            del self.senders[sender]

    # ------------------------------------------------------------------ orders

    def eviction_candidates(self, sender: bytes, parked_only: bool) -> Iterator[bytes]:
        """Other general senders' transactions (parked ones only, or all), newest arrival
        first. Iterates a snapshot: the caller removes some as it goes."""
        for tx_id in list(reversed(self.entries)):
            entry = self.entries.get(tx_id)
            if entry is None:
                continue
            owner = entry.tx.body.sender
            waiting = self.senders[owner]
            if owner == sender or waiting.reserved:
                continue
            if parked_only and entry.tx.body.nonce < waiting.base + waiting.ready:
                continue
            yield tx_id

    def older_than(self, height: int, ttl: int) -> list[bytes]:
        """Ids admitted `ttl` or more heights before `height` (the oldest entries only)."""
        old: list[bytes] = []
        for tx_id, entry in self.entries.items():
            if height - entry.height < ttl:
                break
            old.append(tx_id)
        return old

    def parked_older_than(self, height: int, ttl: int) -> list[bytes]:
        """Ids of parked transactions admitted `ttl` or more heights before `height` (reads
        the senders with a gap only)."""
        old: list[bytes] = []
        for sender in sorted(self.gapped):
            waiting = self.senders[sender]
            limit = waiting.base + waiting.ready
            for nonce, tx_id in waiting.by_nonce.items():
                if nonce > limit and height - self.entries[tx_id].height >= ttl:
                    old.append(tx_id)
        return old

    def reap(self, max_txs: int, max_bytes: int) -> list[SignedTx]:
        """See `Mempool.reap`."""
        out: list[SignedTx] = []
        used = 0
        next_nonce: dict[bytes, int] = {}
        blocked: set[bytes] = set()
        entries, senders = self.entries, self.senders
        for entry in entries.values():
            if len(out) >= max_txs:
                break
            sender = entry.tx.body.sender
            if sender in blocked:
                continue
            waiting = senders[sender]
            nonce = next_nonce.get(sender, waiting.base)
            tx_id = waiting.by_nonce.get(nonce)
            if tx_id is None:  # no ready transaction left for this sender (gap or done)
                blocked.add(sender)
                continue
            candidate = entries[tx_id]
            if used + candidate.size > max_bytes:
                blocked.add(sender)
                continue
            out.append(candidate.tx)
            used += candidate.size
            next_nonce[sender] = nonce + 1
        return out
