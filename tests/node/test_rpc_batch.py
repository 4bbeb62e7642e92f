"""A JSON-RPC batch of `broadcast_tx_sync` calls (node/rpc.py `_handle_batch`): the calls run
concurrently (one slow admission does not hold the others back) and reach the node in the
batch's order (admission order matters for a sender's nonces), answers in the batch's order.

The node is a fake `NodeApi` whose `submit_tx` records the arrival order synchronously -- at
the point where the real driver puts the transaction in its FIFO inbox -- and then waits until
the test releases it, like an admission held while a block is pending."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import trio
import trio.testing

from node.rpc import RpcApp, RpcLimits


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    log: str
    tx_id: bytes
    codespace: str


class HeldNode:
    def __init__(self) -> None:
        self.arrived: list[bytes] = []
        self.release = trio.Event()

    async def submit_tx(self, raw: bytes) -> Result:
        self.arrived.append(raw)  # before any checkpoint, as Driver.submit's inbox send
        await self.release.wait()
        return Result(0, "", raw.ljust(32, b"\x00"), "")


def _call(k: int, raw: bytes) -> dict:
    tx = base64.b64encode(raw).decode()
    return {"jsonrpc": "2.0", "id": k, "method": "broadcast_tx_sync", "params": {"tx": tx}}


def test_batch_admits_in_order_and_concurrently():
    raws = [f"tx-{k:02d}".encode() for k in range(32)]

    async def main() -> None:
        for _ in range(20):  # trio shuffles its run queue: a lucky order must not pass
            node = HeldNode()
            app = RpcApp(node, RpcLimits(max_batch=32))
            answers: list = []

            body = json.dumps([_call(k, raw) for k, raw in enumerate(raws)]).encode()

            async def post(app=app, answers=answers, body=body) -> None:
                answers.append(await app.handle_body(body))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(post)
                await trio.testing.wait_all_tasks_blocked()
                # Every call is waiting in the node at once: none waited for another's answer.
                assert node.arrived == raws
                node.release.set()
            (answer,) = answers
            assert [a["id"] for a in answer] == list(range(32))
            assert all(a["result"]["code"] == 0 for a in answer)

    trio.run(main)
