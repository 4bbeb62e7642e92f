"""A JSON-RPC batch of `broadcast_tx_sync` calls (node/rpc/ `_handle_batch`): the calls run
concurrently (one slow admission does not hold the others back) and reach the node in the
batch's order (admission order matters for a sender's nonces), answers in the batch's order.

The node is a fake `NodeApi` whose `submit_tx` / `submit_txs` record the arrival order
synchronously -- at the point where the real driver puts the transactions in its FIFO inbox --
and then wait until the test releases them, like an admission held while a block is pending.
Consecutive well-formed `broadcast_tx_sync` calls reach the node as one `submit_txs`."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import trio
import trio.testing

from node.rpc.app import RpcApp
from node.rpc.limits import RpcLimits
from node.rpc.scopes import caller


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    log: str
    tx_id: bytes
    codespace: str


OPERATOR = "ab" * 32  # the node's own key: its operator submits anything (node/rpc/scopes.py)


class _Bus:
    published = 0  # no block is ever committed here


class HeldNode:
    genesis = {"chain_id": "held"}
    node_id = OPERATOR
    store = None
    events = _Bus()

    def __init__(self) -> None:
        self.arrived: list[bytes] = []
        self.release = trio.Event()

        self.groups: list[list[bytes]] = []  # how the transactions arrived: one list a call

    async def submit_tx(self, raw: bytes) -> Result:
        (result,) = await self.submit_txs([raw])
        return result

    async def submit_txs(self, raws: list[bytes]) -> list[Result]:
        self.arrived.extend(raws)  # before any checkpoint, as Driver.submit's inbox send
        self.groups.append(list(raws))
        await self.release.wait()
        return [Result(0, "", raw.ljust(32, b"\x00"), "") for raw in raws]


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
                caller.set(bytes.fromhex(OPERATOR))  # as the app does for a signed request
                answers.append(await app.jsonrpc.handle_body(body))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(post)
                await trio.testing.wait_all_tasks_blocked()
                # Every call is waiting in the node at once: none waited for another's answer.
                assert node.arrived == raws
                node.release.set()
            (answer,) = answers
            assert [a["id"] for a in answer] == list(range(32))
            assert all(a["result"]["code"] == 0 for a in answer)
            assert node.groups == [raws]  # one admission of the whole run

    trio.run(main)


def test_mixed_batch_keeps_the_order_and_groups_only_consecutive_plain_submits():
    raws = [f"tx-{k:02d}".encode() for k in range(8)]
    calls = [_call(k, raw) for k, raw in enumerate(raws)]
    # A notification (no id) and a positional call split the runs; bad base64 is an error.
    calls[2] = {k: v for k, v in calls[2].items() if k != "id"}
    calls[5]["params"] = [base64.b64encode(raws[5]).decode()]
    calls.insert(
        6, {"jsonrpc": "2.0", "id": "bad", "method": "broadcast_tx_sync", "params": {"tx": "***"}}
    )

    async def main() -> None:
        for _ in range(10):
            node = HeldNode()
            app = RpcApp(node, RpcLimits(max_batch=32))
            answers: list = []

            async def post(app=app, answers=answers) -> None:
                caller.set(bytes.fromhex(OPERATOR))
                answers.append(await app.jsonrpc.handle_body(json.dumps(calls).encode()))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(post)
                await trio.testing.wait_all_tasks_blocked()
                assert node.arrived == raws  # batch order, all waiting at once
                assert node.groups == [raws[0:2], raws[2:3], raws[3:6], raws[6:8]]
                node.release.set()
            (answer,) = answers
            assert [a["id"] for a in answer] == [0, 1, 3, 4, 5, "bad", 6, 7]  # no notification
            by_id = {a["id"]: a for a in answer}
            assert by_id["bad"]["error"]["code"] == -32602
            assert all("result" in a for a in answer if a["id"] != "bad")
            assert by_id[5]["result"]["hash"] == raws[5].ljust(32, b"\x00").hex()

    trio.run(main)
