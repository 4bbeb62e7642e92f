"""What the driver (node/driver.py) is built from: its timings and bounds (`DriverConfig`),
the peer network it needs (`PeerNet`), the objects it drives (`DriverParts`) and the optional
outputs and test hooks of one instance (`DriverOptions`).

Kept apart from the driver so the driver's helpers (node/admission_batch.py,
node/proposal_timer.py, ...) can name them without importing the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from consensus.core import CoreConfig
from ledger.chain import Chain
from ledger.store import AsyncStore
from node.events import EventBus
from node.mempool import Mempool


class PeerNet(Protocol):
    """What the driver needs of the `PeerManager` (an in-memory hub in tests)."""

    inbound: trio.MemoryReceiveChannel[tuple[bytes, bytes]]

    def broadcast(self, message: bytes) -> int: ...
    def send_to(self, key: bytes, message: bytes) -> bool: ...
    def report_misbehaviour(self, key: bytes, reason: str, penalty: int = ...) -> None: ...
    def peers(self) -> tuple[Any, ...]: ...  # items with a `.key`


@dataclass(frozen=True, slots=True)
class DriverConfig:
    core: CoreConfig = field(default_factory=CoreConfig)
    max_block_txs: int = 2000
    max_block_bytes: int = 2 * 1024 * 1024
    heartbeat_ms: int = 1000  # an empty block at most this often; < core.timeout_propose_ms
    min_block_interval_ms: int = 0  # a non-empty proposal at least this long after our commit
    max_future_ms: int = 5000  # a proposal's time may be this far ahead of our clock
    tick_ms: int = 500  # status broadcast and sync deadlines
    sync_batch: int = 16
    sync_timeout_ms: int = 3000
    sync_max_bytes: int = 3 * 1024 * 1024
    inbox_size: int = 256
    admission_hold_ms: int = 1000  # longest a tx waits for a pending block to end
    max_held_admissions: int = 4096

    def __post_init__(self) -> None:
        if self.heartbeat_ms >= self.core.timeout_propose_ms:
            raise ValueError("heartbeat_ms must be below the core's timeout_propose_ms")
        if not 0 <= self.min_block_interval_ms < self.core.timeout_propose_ms:
            raise ValueError("min_block_interval_ms must be below the core's timeout_propose_ms")


@dataclass(frozen=True, slots=True)
class DriverParts:
    """The objects the driver drives: the chain and its store (the store's worker thread),
    the peer network, the mempool, and the clock block times come from."""

    chain: Chain
    store: AsyncStore
    net: PeerNet
    mempool: Mempool
    clock_ms: Callable[[], int]


@dataclass(frozen=True, slots=True)
class DriverOptions:
    """One driver's name (in its logs) and its optional outputs and test hooks."""

    name: str = "node"
    failpoints: frozenset[str] = frozenset()  # crash tests only (node/driver.py)
    metrics: Any | None = None  # node.metrics.Metrics
    events: EventBus | None = None  # committed blocks are published here
    byzantine: Any | None = None  # node.byzantine.Byzantine: tests only, double-signs
