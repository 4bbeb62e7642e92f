"""Node and block reads: health, status, net_info, genesis, validators, block, commit,
num_unconfirmed_txs. Blocks and commits come from the store (committed only)."""

from __future__ import annotations

from typing import Any

from ledger.block import decode_block
from ledger.validator_history import UnknownValidatorSet
from node.rpc.budget import expect_answer_bytes
from node.rpc.errors import NOT_FOUND, RpcError
from node.rpc.framing import Method
from node.rpc.nodeview import NodeView, Store
from node.rpc.params import int_param
from node.rpc.render import b64, render_commit, render_header
from node.rpc.scopes import Scopes

# A block's answer besides its txs: header, block id, the last commit's signatures.
BLOCK_OVERHEAD_BYTES = 8192


async def committed_height(store: Store, height: Any) -> int:
    """`height` checked against the committed chain (the latest when None)."""
    latest = await store.read(lambda s: s.blocks.latest_height()) or 0
    if height is None:
        if latest < 1:
            raise RpcError(NOT_FOUND, "Not found", "no block has been committed yet")
        return latest
    height = int_param("height", height, 1)
    if height > latest:
        raise RpcError(
            NOT_FOUND, "Not found", f"height {height} is after the latest block {latest}"
        )
    return height


class ChainMethods:
    """The node's and the chain's public reads."""

    def __init__(self, node: NodeView, scopes: Scopes) -> None:
        self.node = node
        self.scopes = scopes

    def table(self) -> dict[str, Method]:
        return {
            "health": Method(self.health, ()),
            "status": Method(self.status, ()),
            "net_info": Method(self.net_info, ()),
            "genesis": Method(self.genesis, ()),
            "validators": Method(self.validators, ("height",)),
            "block": Method(self.block, ("height",)),
            "commit": Method(self.commit, ("height",)),
            "num_unconfirmed_txs": Method(self.num_unconfirmed_txs, ()),
        }

    async def health(self) -> dict:
        return {}

    async def status(self) -> dict:
        return await self.node.status()

    async def net_info(self) -> dict:
        peers = self.node.peers()
        return {"listening": True, "n_peers": len(peers), "peers": peers}

    async def genesis(self) -> dict:
        return {"genesis": self.node.genesis}

    async def validators(self, height: Any = None) -> dict:
        if height is not None:
            height = await committed_height(self.node.store, height)
        try:
            block_height, validators = await self.node.validators(height)
        except UnknownValidatorSet as exc:
            raise RpcError(NOT_FOUND, "Not found", str(exc)) from None
        return {"block_height": block_height, "validators": validators, "total": len(validators)}

    async def num_unconfirmed_txs(self) -> dict:
        n_txs, total_bytes = self.node.mempool_stats()
        return {"n_txs": n_txs, "total_bytes": total_bytes}

    async def block(self, height: Any = None) -> dict:
        height = await committed_height(self.node.store, height)
        store = self.node.store
        stored = await store.read(lambda s: s.blocks.block(height))
        if stored is None:
            raise RpcError(NOT_FOUND, "Not found", f"no block at height {height}")
        # Bodies only for those who may read every transaction (the others: "txs": null);
        # refused from its stored size before it is decoded and rendered (base64: 4/3).
        txs = None
        if await self.scopes.may_read_bodies():
            expect_answer_bytes(len(stored.block) * 4 // 3 + BLOCK_OVERHEAD_BYTES)
            txs = [b64(raw) for raw in decode_block(stored.block).txs]
        last_commit = (
            await store.read(lambda s: s.blocks.commit(height - 1)) if height > 1 else None
        )
        return {
            "block_id": {"hash": stored.hash.hex()},
            "block": {
                "header": render_header(stored.header),
                "txs": txs,
                "last_commit": render_commit(last_commit),
            },
        }

    async def commit(self, height: Any = None) -> dict:
        height = await committed_height(self.node.store, height)
        store = self.node.store
        stored = await store.read(lambda s: s.blocks.block(height))
        certificate = await store.read(lambda s: s.blocks.commit(height))
        if stored is None or certificate is None:
            raise RpcError(NOT_FOUND, "Not found", f"no commit at height {height}")
        return {
            "signed_header": {
                "header": render_header(stored.header),
                "commit": render_commit(certificate),
            },
            "block_id": {"hash": stored.hash.hex()},
            "canonical": True,
        }
