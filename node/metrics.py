"""The node's Prometheus metrics: one `Metrics` object per node and its own HTTP listener.

What it owns: the metric names and what they mean, and `serve_metrics`, an ASGI app on
hypercorn that answers `GET /metrics` with the text exposition format. Metrics live in their
own `CollectorRegistry` (not prometheus-client's global one), so several nodes in one process
(tests, simulations) never mix their numbers, and the listener is separate from the RPC port
so an operator can expose one without the other.

The driver, mempool and peer manager call the update methods; nothing here reads a clock, and
nothing here affects state (a block interval is measured by the caller and only observed).

    khazana_height                      gauge      last committed height
    khazana_round                       gauge      current consensus round
    khazana_round_changes_total         counter    rounds started past round 0
    khazana_block_interval_seconds      histogram  time between consecutive commits
    khazana_blocks_committed_total      counter
    khazana_txs_committed_total         counter
    khazana_mempool_size                gauge      transactions waiting
    khazana_mempool_bytes               gauge      their bytes (wire)
    khazana_mempool_memory_bytes        gauge      memory they keep (what mempool.max_bytes bounds)
    khazana_mempool_parked              gauge      of them, waiting behind a nonce gap
    khazana_mempool_refused_total       counter    admission refusals, label reason (code name)
    khazana_mempool_removed_total       counter    removals other than by a committed block,
                                                   label reason (expired, parked_expired,
                                                   evicted, recheck, proposer)
    khazana_decode_cache_bytes          gauge      memory of the decode cache (ledger.tx)
    khazana_peers                       gauge      connected peers
    khazana_catching_up                 gauge      1 while block sync runs, else 0
    khazana_peer_handshakes_pending     gauge      inbound P2P connections mid-handshake
    khazana_peer_inbound_refused_total  counter    inbound P2P connections that never became a
                                                   peer link, by `reason` (docs/P2P.md)
    khazana_rpc_refusals_total{reason}  counter    RPC requests / connections turned away by
                                                   the hostile-client defences: host,
                                                   content_type, per_ip, budget, ws_idle,
                                                   ws_slow, send_timeout (docs/OPERATIONS.md)
    khazana_signer_up                   gauge      1 while the remote signer answers ([signer])
    khazana_signer_failures_total       counter    signatures not obtained, by `reason`
                                                   (unavailable, double_sign, wrong_chain, ...)
    khazana_signer_sign_seconds         histogram  round trip of one signature via the signer
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from ledger.codes import Code
from node.asgi import answer_lifespan, serve_asgi
from node.p2p.admission import REASONS as PEER_REFUSAL_REASONS

# Block interval buckets (seconds): a healthy network commits every ~1 s under load and at the
# heartbeat interval when idle; the long tail shows stalls and round changes.
# Why the RPC turned a request or connection away (node/rpc/guard.py, budget.py, websocket.py,
# node/asgi.py's send deadline).
REFUSAL_REASONS = (
    "host",
    "content_type",
    "per_ip",
    "budget",
    "ws_idle",
    "ws_slow",
    "send_timeout",
)
INTERVAL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)

# Why the mempool removes a transaction other than by a committed block (node/mempool.py).
REMOVAL_REASONS = ("expired", "parked_expired", "evicted", "recheck", "proposer")
PRESET_REFUSALS = tuple(
    code.name.lower()
    for code in Code
    if 400 <= code < 500 or code in (Code.WRONG_CHAIN, Code.BAD_SIGNATURE, Code.UNKNOWN_OPERATION)
)


class Metrics:
    """The metrics of one node (one registry per node; only the refusals carry a label)."""

    def __init__(self, namespace: str = "khazana") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The standard process_* (CPU, memory, file descriptors) and python_* (GC, version)
        # series, on this node's own registry.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.height = Gauge(
            "height", "Last committed block height", namespace=namespace, registry=r
        )
        self.round = Gauge("round", "Current consensus round", namespace=namespace, registry=r)
        self.round_changes = Counter(
            "round_changes", "Rounds started after round 0", namespace=namespace, registry=r
        )
        self.block_interval = Histogram(
            "block_interval_seconds",
            "Seconds between consecutive committed blocks",
            namespace=namespace,
            registry=r,
            buckets=INTERVAL_BUCKETS,
        )
        self.blocks_committed = Counter(
            "blocks_committed", "Blocks committed by this node", namespace=namespace, registry=r
        )
        self.txs_committed = Counter(
            "txs_committed", "Transactions in committed blocks", namespace=namespace, registry=r
        )
        self.mempool_size = Gauge(
            "mempool_size", "Transactions in the mempool", namespace=namespace, registry=r
        )
        self.mempool_bytes = Gauge(
            "mempool_bytes", "Bytes of transactions in the mempool", namespace=namespace, registry=r
        )
        self.mempool_memory = Gauge(
            "mempool_memory_bytes",
            "Memory the mempool's transactions keep (raw bytes and decoded objects)",
            namespace=namespace,
            registry=r,
        )
        self.mempool_parked = Gauge(
            "mempool_parked",
            "Mempool transactions waiting behind a nonce gap",
            namespace=namespace,
            registry=r,
        )
        self.mempool_refusals = Counter(
            "mempool_refused",
            "Transactions refused at admission, by reason (the code's name)",
            ["reason"],
            namespace=namespace,
            registry=r,
        )
        self.mempool_removals = Counter(
            "mempool_removed",
            "Transactions removed from the mempool other than by a committed block, by reason",
            ["reason"],
            namespace=namespace,
            registry=r,
        )
        # Series exist from the start (a dashboard sees 0, not nothing): the admission
        # limits' reasons and every removal reason; other codes appear when first seen.
        for reason in PRESET_REFUSALS:
            self.mempool_refusals.labels(reason)
        for reason in REMOVAL_REASONS:
            self.mempool_removals.labels(reason)
        self.decode_cache_bytes = Gauge(
            "decode_cache_bytes",
            "Memory of the decoded-transaction cache (verified transactions only)",
            namespace=namespace,
            registry=r,
        )
        self.peers = Gauge("peers", "Connected peers", namespace=namespace, registry=r)
        self.peer_handshakes_pending = Gauge(
            "peer_handshakes_pending",
            "Inbound P2P connections whose handshake is under way",
            namespace=namespace,
            registry=r,
        )
        self.peer_inbound_refused = Counter(
            "peer_inbound_refused",
            "Inbound P2P connections refused, evicted or timed out before becoming a peer link",
            ["reason"],
            namespace=namespace,
            registry=r,
        )
        for reason in PEER_REFUSAL_REASONS:  # every reason exported, at 0 until it happens
            self.peer_inbound_refused.labels(reason=reason)
        self._p2p_refused_seen: dict[str, int] = {}
        self.catching_up = Gauge(
            "catching_up",
            "1 while the node syncs blocks from peers",
            namespace=namespace,
            registry=r,
        )
        self.state_held_back = Gauge(
            "state_held_back",
            "State changes the store's state log holds back from its state table (in memory)",
            namespace=namespace,
            registry=r,
        )
        self.state_slices = Gauge(
            "state_slices",
            "Slices the store's state log cuts the state into (1: every change written at once)",
            namespace=namespace,
            registry=r,
        )

        self.rpc_refusals = Counter(
            "rpc_refusals",
            "RPC requests or connections refused by the hostile-client defences, by reason",
            ["reason"],
            namespace=namespace,
            registry=r,
        )
        for reason in REFUSAL_REASONS:  # exported at 0 from the start: alerts see a rate
            self.rpc_refusals.labels(reason=reason)
        self.signer_up = Gauge(
            "signer_up", "1 while the remote signer answers", namespace=namespace, registry=r
        )
        self.signer_failures = Counter(
            "signer_failures",
            "Signatures the remote signer did not give, by reason",
            ["reason"],
            namespace=namespace,
            registry=r,
        )
        self.signer_failures.labels(reason="unavailable")  # exported at 0: alerts see a rate
        self.signer_sign_seconds = Histogram(
            "signer_sign_seconds",
            "Round trip of one signature through the remote signer",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            namespace=namespace,
            registry=r,
        )

    # The calls the node makes.

    def rpc_refused(self, reason: str) -> None:
        """The RPC turned a request or connection away (node/rpc/guard.py lists reasons)."""
        self.rpc_refusals.labels(reason=reason).inc()

    def block_committed(self, height: int, n_txs: int, interval_s: float | None = None) -> None:
        """A block was committed; `interval_s` since the previous commit (None for the first
        block after start, which has no meaningful interval)."""
        self.height.set(height)
        self.blocks_committed.inc()
        if n_txs:
            self.txs_committed.inc(n_txs)
        if interval_s is not None:
            self.block_interval.observe(interval_s)

    def set_round(self, round_: int) -> None:
        """The consensus round now running; a round above 0 counts one round change."""
        if round_ > 0:
            self.round_changes.inc()
        self.round.set(round_)

    def set_mempool(
        self, n_txs: int, total_bytes: int, usage: dict[str, int] | None = None
    ) -> None:
        """The pool's size after a block; `usage` is `Mempool.usage()` (memory, parked)."""
        self.mempool_size.set(n_txs)
        self.mempool_bytes.set(total_bytes)
        if usage is not None:
            self.mempool_memory.set(usage["memory"])
            self.mempool_parked.set(usage["parked_txs"])

    def set_decode_cache(self, used_bytes: int) -> None:
        self.decode_cache_bytes.set(used_bytes)

    # `node.mempool.MempoolMetrics`: the mempool calls these itself.

    def mempool_refused(self, reason: str) -> None:
        self.mempool_refusals.labels(reason).inc()

    def mempool_removed(self, reason: str, count: int) -> None:
        self.mempool_removals.labels(reason).inc(count)

    def set_peers(self, n_peers: int) -> None:
        self.peers.set(n_peers)

    def set_p2p_inbound(self, refused: Mapping[str, int], pending: int) -> None:
        """The peer manager's totals of refused inbound connections by reason (since start)
        and its pending handshakes now; the counter grows by what is new since the last call."""
        self.peer_handshakes_pending.set(pending)
        for reason in sorted(refused):
            new = refused[reason] - self._p2p_refused_seen.get(reason, 0)
            child = self.peer_inbound_refused.labels(reason=reason)
            if new > 0:
                child.inc(new)
            self._p2p_refused_seen[reason] = refused[reason]

    def signer_signed(self, seconds: float) -> None:
        self.signer_sign_seconds.observe(seconds)

    def signer_failed(self, reason: str) -> None:
        self.signer_failures.labels(reason=reason).inc()

    def set_signer_up(self, up: bool) -> None:
        self.signer_up.set(1 if up else 0)

    def set_catching_up(self, catching_up: bool) -> None:
        self.catching_up.set(1 if catching_up else 0)

    def set_state_log(self, slices: int, held_back: int) -> None:
        """The store's state log after a commit (ledger/state_log.py)."""
        self.state_slices.set(slices)
        self.state_held_back.set(held_back)

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


class MetricsApp:
    """ASGI: `GET /metrics` -> the exposition; anything else 404 (405 for other methods)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            status, body, content_type = 404, b"not found\n", b"text/plain; charset=utf-8"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, content_type = 405, b"GET /metrics\n", b"text/plain; charset=utf-8"
        else:
            status, body = 200, self.metrics.exposition()
            content_type = CONTENT_TYPE_LATEST.encode()
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def serve_metrics(
    metrics: Metrics, listen: object, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `GET /metrics` on `listen` ("host:port" or a `node.config.HostPort`) until
    cancelled; reports the bound port (an int) through `task_status`."""
    await serve_asgi(MetricsApp(metrics), str(listen), name="metrics", task_status=task_status)
