"""`NodeView`: the typed protocol of what the RPC layer may ask of a running node.

node/api.py's `NodeApi` implements it for a real node; tests implement it with fakes. Reads go
to `store` (committed state only, an `ledger.store.AsyncStore` in a node); admission and proofs
go through the driver task; `events` is the event bus of the WebSocket subscriptions (None on
a node without one). Structural typing (`typing.Protocol`) keeps node/rpc free of imports of
the driver, so the RPC can be tested without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ledger.store import TxRecord

T = TypeVar("T")


class Store(Protocol):
    """The committed-state reads the RPC uses: `ledger.store.AsyncStore.read`, which runs
    `fn(store, *args)` with the node's `ledger.store.Store` on the store's worker thread (in
    the read lane, behind the driver's commits), e.g.
    `await store.read(lambda s: s.blocks.block(height))`."""

    async def read(self, fn: Callable[..., T], *args: Any) -> T: ...


class NodeView(Protocol):
    """What a running node offers the RPC (see node/api.py for the meaning of each)."""

    genesis: dict
    store: Store
    # The node's public key (hex): credentials are bound to it, and its key is the node's
    # operator's (node/rpc/auth.py, node/rpc/scopes.py).
    node_id: str

    async def status(self) -> dict: ...

    def peers(self) -> list[dict]: ...

    def mempool_stats(self) -> tuple[int, int]: ...

    async def validators(self, height: int | None) -> tuple[int, list[dict]]: ...

    # An `AdmissionResult` (node/mempool.py): `.code`, `.log`, `.tx_id`.
    async def submit_tx(self, raw: bytes) -> Any: ...

    async def submit_txs(self, raws: list[bytes]) -> list[Any]: ...

    async def check_tx(self, raw: bytes) -> Any: ...

    async def wait_committed(self, tx_id: bytes, timeout_s: float) -> TxRecord | None: ...

    # `node.state_proofs.StateProofs`: `.height`, `.app_hash`, `.proofs`.
    async def prove(self, keys: list[bytes]) -> Any: ...
