"""`NodeView`: the typed protocol of what the RPC layer may ask of a running node.

node/api.py's `NodeApi` implements it for a real node; tests implement it with fakes. Reads go
to `store` (committed state only, an `ledger.store.AsyncStore` in a node); admission and proofs
go through the driver task; `events` is the event bus of the WebSocket subscriptions (None on
a node without one). Structural typing (`typing.Protocol`) keeps node/rpc free of imports of
the driver, so the RPC can be tested without one.
"""

from __future__ import annotations

from typing import Any, Protocol

from ledger.store import EventRecord, StoredBlock, TxRecord


class Store(Protocol):
    """The committed-state reads the RPC uses (`ledger.store.AsyncStore`'s signatures)."""

    async def latest_height(self) -> int | None: ...

    async def block(self, height: int) -> StoredBlock | None: ...

    async def commit(self, height: int) -> bytes | None: ...

    async def tx(self, tx_id: bytes) -> TxRecord | None: ...

    async def get_state(self, key: bytes) -> bytes | None: ...

    # `fn(connection, *args)` on the store's thread: the supervision index's reads.
    async def read_with(self, fn: Any, *args: Any) -> Any: ...

    async def history_at(self, keys: list[bytes], height: int) -> list[bytes | None]: ...

    async def history_of(self, key: bytes, limit: int, offset: int) -> list[Any]: ...

    async def scan_prefix(
        self, prefix: bytes, limit: int | None = None, after: bytes | None = None
    ) -> list[tuple[bytes, bytes]]: ...

    async def events(
        self,
        account: bytes | None = None,
        instrument: str | None = None,
        from_height: int | None = None,
        to_height: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRecord]: ...


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
