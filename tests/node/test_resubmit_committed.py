"""A transaction submitted again after its commit (issue 17): ALREADY_COMMITTED with the
height it was committed at, on every submission path, instead of the ledger's NONCE_USED
("build the transaction again" would make a second forced transfer of a multi-signature
order); a *different* transaction reusing the nonce is still NONCE_USED."""

from __future__ import annotations

import json

import trio

from ledger.codes import Code
from ledger.tx import decode_signed_tx
from node.client.core import ALREADY_COMMITTED
from node.client.errors import TxRejected
from tests.node.test_rpc_commit import b64, cash_tx, live_node


def test_a_committed_transaction_sent_again_is_answered_already_committed(tmp_path):
    assert ALREADY_COMMITTED == Code.ALREADY_COMMITTED == 408

    async def main():
        async with live_node(tmp_path) as node:
            raw = cash_tx(0, "PKRC")
            first = (await node.acall("broadcast_tx_commit", {"tx": b64(raw)}))["result"]
            height, tx_hash = first["height"], first["hash"]
            assert first["tx_result"]["code"] == 0 and height >= 1
            await node.wait_height(height + 1)  # it stays committed at its height

            for method in ("broadcast_tx_sync", "check_tx"):
                answer = (await node.acall(method, {"tx": b64(raw)}))["result"]
                assert answer["code"] == Code.ALREADY_COMMITTED, answer
                assert (answer["height"], answer["index"], answer["hash"]) == (height, 0, tx_hash)
                assert answer["codespace"] == "khazana"
                assert f"height {height}" in answer["log"]
                assert "build" in answer["log"] and "again" in answer["log"]  # "do not ..."

            # broadcast_tx_commit: the result it got, idempotently, flagged in check_tx.
            again = (await node.acall("broadcast_tx_commit", {"tx": b64(raw)}))["result"]
            assert again["check_tx"]["code"] == Code.ALREADY_COMMITTED
            assert (again["hash"], again["height"]) == (tx_hash, height)
            assert again["tx_result"] == first["tx_result"]

            # In a batch of submissions, each answer on its own.
            other = cash_tx(0, "USDC")  # the same nonce, another transaction
            fresh = cash_tx(1, "EURC")
            batch = [
                {"jsonrpc": "2.0", "id": i, "method": "broadcast_tx_sync", "params": [b64(t)]}
                for i, t in enumerate((raw, other, fresh))
            ]
            body = json.dumps(batch).encode()
            answers, _ = await trio.to_thread.run_sync(lambda: node.call("", raw_body=body))
            codes = [a["result"]["code"] for a in sorted(answers, key=lambda a: a["id"])]
            assert codes == [Code.ALREADY_COMMITTED, Code.NONCE_USED, 0]
            assert "height" not in answers[1]["result"]  # not committed: no height to give
            assert decode_signed_tx(other).tx_id.hex() == answers[1]["result"]["hash"]

    trio.run(main)


def test_the_sdk_takes_a_retried_commit_as_committed(tmp_path):
    from node.client import AsyncClient

    async def main():
        async with live_node(tmp_path) as node:
            from tests.node.test_rpc_commit import SIGNER

            client = AsyncClient(node.url, key=SIGNER)
            raw = cash_tx(0, "PKRC")
            first = await client.broadcast_commit(raw)
            retried = await client.broadcast_commit(raw)  # e.g. after a lost answer
            assert (retried.hash, retried.height, retried.ok) == (first.hash, first.height, True)
            try:
                await client.broadcast(raw)
            except TxRejected as refused:
                assert refused.code == Code.ALREADY_COMMITTED
            else:
                raise AssertionError("a committed transaction was admitted again")

    trio.run(main)
