"""Admission batching: transactions admitted to the mempool in the driver task, a request
at a time, held while a block is pending, and gossiped onwards in batches.

An `Admission` is the transactions to admit together, in order (a client's call, a client's
JSON-RPC batch, or one peer's gossip message): one inbox item for many transactions. The
mempool checks against the committed state only, so while a block is pending
(`Chain.pending`) a request is held -- at most `max_held_admissions` transactions, refused as
"node busy" beyond -- until the block is committed or abandoned (`flush`), or until the
oldest has waited `admission_hold_ms` (`hold_expired`: the driver then abandons the block).

Newly admitted transactions join the outgoing gossip; the driver sends it (`send_gossip`)
when its inbox is drained, the list is long or the oldest has waited `GOSSIP_DELAY_S`
(`gossip_due`), so a busy node sends a few large `TxGossip` messages, not one per transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from ledger.chain import Chain
from ledger.codes import Code
from node import messages
from node.driver_parts import DriverConfig, PeerNet
from node.mempool import CODESPACE_MEMPOOL, AdmissionResult, AdmissionView, Mempool
from node.messages import TxGossip
from node.proposal_timer import ProposalTimer

GOSSIP_CHUNK_BYTES = 1024 * 1024  # well under messages.MAX_MESSAGE_SIZE with the framing
GOSSIP_DELAY_S = 0.02  # a busy node's admitted txs wait at most about this long to be gossiped


class Admission:
    """Transactions to admit together, in order (a client's call, a client's JSON-RPC batch,
    or one peer's gossip message), and where their verdicts go (filled in by the driver
    task). One inbox item for many transactions: a batch costs one channel send, one wakeup
    and one event, not one of each per transaction."""

    __slots__ = ("check_only", "done", "peer", "raws", "results", "since")

    def __init__(
        self, raws: Sequence[bytes], peer: bytes | None, check_only: bool, since: float
    ) -> None:
        self.raws = raws
        self.peer = peer
        self.check_only = check_only
        self.since = since
        self.results: list[AdmissionResult] = []
        # Nobody waits for a gossiped transaction's verdict: no event to allocate and set.
        self.done: trio.Event | None = trio.Event() if peer is None else None

    def finish(self, results: list[AdmissionResult]) -> None:
        self.results = results
        if self.done is not None:
            self.done.set()


def broadcast_gossip(net: PeerNet, txs: list[bytes]) -> None:
    """Broadcast `txs` in `TxGossip` messages of at most MAX_GOSSIP_TXS transactions and
    about GOSSIP_CHUNK_BYTES each (a peer's message size limit bounds them)."""
    start, size = 0, 0
    for end, raw in enumerate(txs):
        if end > start and (
            end - start >= messages.MAX_GOSSIP_TXS or size + len(raw) > GOSSIP_CHUNK_BYTES
        ):
            net.broadcast(messages.encode(TxGossip(tuple(txs[start:end]))))
            start, size = end, 0
        size += len(raw)
    if start < len(txs):
        net.broadcast(messages.encode(TxGossip(tuple(txs[start:]))))


class AdmissionBatcher:
    """Admits requests (or holds them while a block is pending) and batches the gossip."""

    def __init__(
        self,
        chain: Chain,
        mempool: Mempool,
        net: PeerNet,
        config: DriverConfig,
        proposals: ProposalTimer,
        metrics: Any | None,  # node.metrics.Metrics
    ) -> None:
        self._chain = chain
        self._mempool = mempool
        self._net = net
        self._max_held = config.max_held_admissions
        self._hold_s = config.admission_hold_ms / 1000
        self._proposals = proposals
        self._metrics = metrics
        self._held: list[Admission] = []
        self._held_txs = 0  # transactions in `_held` (bounded by max_held_admissions)
        self._gossip_out: list[bytes] = []  # admitted, not yet gossiped (bounded by the pool)
        self._gossip_since = 0.0  # when the oldest of them was admitted

    def admit(self, request: Admission) -> None:
        """Admit a request's transactions in order (or hold the request while a block is
        pending). Newly admitted transactions join the outgoing gossip (sent by the run loop,
        see `send_gossip`)."""
        chain = self._chain
        if chain.pending is not None:
            # The mempool checks against the committed state only; hold the request.
            count = len(request.raws)
            if self._held_txs + count > self._max_held:
                busy = AdmissionResult(
                    int(Code.MEMPOOL_FULL),
                    "node busy: too many waiting admissions",
                    b"",
                    CODESPACE_MEMPOOL,
                )
                request.finish([busy] * count)
                if self._metrics is not None:
                    self._metrics.mempool_refused("node_busy")
                return
            self._held.append(request)
            self._held_txs += count
            return
        view = AdmissionView(
            chain.state, chain.context(chain.height + 1, self._proposals.clock.next_time_ms())
        )
        if request.check_only:
            request.finish([self._mempool.check(raw, view) for raw in request.raws])
            return
        admit = self._mempool.admit if request.peer is None else self._mempool.add_gossiped
        results = []
        admitted = False
        for raw in request.raws:
            result = admit(raw, view)
            results.append(result)
            if result.ok:
                # Newly admitted only: a transaction crosses each link once.
                if not self._gossip_out:
                    self._gossip_since = trio.current_time()
                self._gossip_out.append(raw)
                admitted = True
        request.finish(results)
        if admitted:
            self._proposals.note_admitted()

    def flush(self) -> None:
        """Admit the held requests (the pending block is committed or abandoned)."""
        held, self._held = self._held, []
        self._held_txs = 0
        for request in held:
            self.admit(request)

    def hold_expired(self) -> bool:
        """Has the oldest held request waited `admission_hold_ms`?"""
        return bool(self._held) and trio.current_time() - self._held[0].since >= self._hold_s

    def gossip_due(self, inbox_empty: bool) -> bool:
        return bool(self._gossip_out) and (
            inbox_empty
            or len(self._gossip_out) >= messages.MAX_GOSSIP_TXS
            or trio.current_time() - self._gossip_since >= GOSSIP_DELAY_S
        )

    def send_gossip(self) -> None:
        """Send the transactions admitted since the last call. The run loop calls it when the
        inbox is drained (or the list is long), so a busy node sends a few large `TxGossip`
        messages, not one message (one frame, one encryption, one inbox item at each peer)
        per transaction (nor does any wait longer than GOSSIP_DELAY_S, if an item is handled by
        then); an idle node still sends each at once."""
        txs, self._gossip_out = self._gossip_out, []
        broadcast_gossip(self._net, txs)
