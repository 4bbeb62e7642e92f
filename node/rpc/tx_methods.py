"""Transactions: broadcast_tx_sync (one or a batch's run of them), broadcast_tx_commit,
check_tx, and tx (with its Merkle inclusion proof). Admission goes through the driver;
a refused transaction is a result with `code != 0`, not an error.

A transaction submitted again after it was committed gets ALREADY_COMMITTED and the `height`
(and `index`) it was committed at, not the ledger's NONCE_USED: NONCE_USED invites building
the transaction again, which for a forced transfer would be a second legal order. The store is
asked only when admission said NONCE_USED (one indexed read)."""

from __future__ import annotations

from typing import Any

from ledger.block import decode_block, tx_inclusion_proof
from ledger.codes import Code
from ledger.store import TxRecord
from node.rpc.budget import expect_answer_bytes, page_bytes
from node.rpc.errors import COMMIT_TIMEOUT, INTERNAL_ERROR, NOT_FOUND, RpcError
from node.rpc.framing import Method
from node.rpc.nodeview import NodeView
from node.rpc.params import bool_param, hash_param, tx_param
from node.rpc.render import CODESPACE, b64, render_admission, render_receipt
from node.rpc.scopes import Scopes


class TxMethods:
    """Submitting and reading transactions."""

    def __init__(self, node: NodeView, commit_timeout_ms: int, scopes: Scopes) -> None:
        self.node = node
        self.commit_timeout_ms = commit_timeout_ms
        self.scopes = scopes

    async def _permitted(self, raw: bytes) -> bytes:
        """`raw` if the caller may submit it (scopes.submission_refusals), else the refusal."""
        refusal = (await self.scopes.submission_refusals([raw]))[0]
        if refusal is not None:
            raise refusal
        return raw

    def table(self) -> dict[str, Method]:
        return {
            "broadcast_tx_sync": Method(self.broadcast_tx_sync, ("tx",), ("tx",)),
            "broadcast_tx_commit": Method(
                self.broadcast_tx_commit, ("tx",), ("tx",), self.commit_timeout_ms
            ),
            "check_tx": Method(self.check_tx, ("tx",), ("tx",)),
            "tx": Method(self.tx, ("hash", "prove"), ("hash",)),
        }

    async def broadcast_tx_sync(self, tx: Any) -> dict:
        raw = await self._permitted(tx_param(tx))
        return await self._answer(await self.node.submit_tx(raw))

    async def _answer(self, admitted: Any) -> dict:
        """An admission verdict as JSON; NONCE_USED of a transaction that is itself
        committed becomes ALREADY_COMMITTED with its height (module docstring)."""
        answer = render_admission(admitted)
        record = await self._committed(admitted)
        if record is not None:
            answer.update(
                code=int(Code.ALREADY_COMMITTED),
                codespace=CODESPACE,
                log=(
                    f"transaction {record.tx_id.hex()} is already committed at height "
                    f"{record.height} (index {record.index}), which is final: do not build it "
                    "again; read it with tx"
                ),
                height=record.height,
                index=record.index,
            )
        return answer

    async def _committed(self, admitted: Any) -> TxRecord | None:
        if admitted.code != Code.NONCE_USED or not admitted.tx_id:
            return None
        return await self.node.store.read(lambda s: s.blocks.tx(admitted.tx_id))

    async def broadcast_tx_sync_many(self, raws: list[bytes]) -> list[dict | RpcError]:
        """`broadcast_tx_sync` of several already-decoded transactions, admitted together in
        this order (consecutive calls of one JSON-RPC batch, see `JsonRpc._handle_batch`);
        a transaction the caller may not submit gets its refusal (an RpcError) instead."""
        refusals = await self.scopes.submission_refusals(raws)
        allowed = [raw for raw, refusal in zip(raws, refusals, strict=True) if refusal is None]
        admitted = iter(await self.node.submit_txs(allowed) if allowed else [])
        return [
            await self._answer(next(admitted)) if refusal is None else refusal
            for refusal in refusals
        ]

    async def broadcast_tx_commit(self, tx: Any) -> dict:
        """Admission, then wait for the tx to be committed (at most `commit_timeout_ms`).
        A refused tx answers at once with its `check_tx` verdict, `height` 0 and no
        `tx_result`; a tx not committed in time answers COMMIT_TIMEOUT with its hash."""
        raw = await self._permitted(tx_param(tx))
        admitted = await self.node.submit_tx(raw)
        check = await self._answer(admitted)
        check_tx = {"code": check["code"], "codespace": check["codespace"], "log": check["log"]}
        committed = await self._committed(admitted)
        if committed is not None:
            # Sent again (a retry after a timeout, say): the result it got, as if it had been
            # committed now, with check_tx saying ALREADY_COMMITTED.
            receipt = render_receipt(committed)
            receipt["events"] = await self.scopes.tx_view(committed.raw, receipt["events"])
            return {
                "hash": committed.tx_id.hex(),
                "height": committed.height,
                "index": committed.index,
                "check_tx": check_tx,
                "tx_result": receipt,
            }
        if admitted.code != 0:
            return {"hash": check["hash"], "height": 0, "check_tx": check_tx, "tx_result": None}
        record = await self.node.wait_committed(admitted.tx_id, self.commit_timeout_ms / 1000)
        if record is None:
            raise RpcError(
                COMMIT_TIMEOUT,
                "timed out waiting for commit",
                {"hash": admitted.tx_id.hex(), "timeout_ms": self.commit_timeout_ms},
            )
        return {
            "hash": record.tx_id.hex(),
            "height": record.height,
            "index": record.index,
            "check_tx": check_tx,
            "tx_result": render_receipt(record),
        }

    async def check_tx(self, tx: Any) -> dict:
        return await self._answer(await self.node.check_tx(await self._permitted(tx_param(tx))))

    async def tx(self, hash: Any, prove: Any = False) -> dict:
        tx_id = hash_param(hash)
        prove = bool_param("prove", prove)
        store = self.node.store
        record = await store.read(lambda s: s.blocks.tx(tx_id))
        if record is None:
            raise RpcError(NOT_FOUND, "Not found", f"no committed transaction {hash}")
        # Measured from the stored bytes first (node/rpc/budget.py); a proof adds a path.
        expect_answer_bytes(len(record.raw) * 4 // 3 + page_bytes([record.receipt]))
        receipt = render_receipt(record)
        # Refuses a tx the caller may not read; shows it only the events it may read.
        receipt["events"] = await self.scopes.tx_view(record.raw, receipt["events"])
        result = {
            "hash": record.tx_id.hex(),
            "height": record.height,
            "index": record.index,
            "tx": b64(record.raw),
            "tx_result": receipt,
        }
        if prove:
            stored = await store.read(lambda s: s.blocks.block(record.height))
            certificate = await store.read(lambda s: s.blocks.commit(record.height))
            if stored is None or certificate is None:
                raise RpcError(INTERNAL_ERROR, "Internal error")
            txs = decode_block(stored.block).txs
            result["proof"] = {
                "height": record.height,
                "header": b64(stored.header),
                "commit": b64(certificate),
                # The Merkle audit path of the raw tx to the header's txs_hash (RFC 6962).
                "total": len(txs),
                "path": [h.hex() for h in tx_inclusion_proof(txs, record.index)],
            }
        return result
