"""WebSocket `/websocket` against a live node (hypercorn on a loopback port, wsproto clients):
NewBlock / Tx / tx.hash / account / instrument subscriptions receive exactly the right events,
bad queries answer -32602, unsubscribe stops the events, the per-client and connection limits
hold, and a client too slow to read is dropped with close code 1008 while blocks keep
committing and a fast client keeps receiving them."""

from __future__ import annotations

import json
import socket

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)

from ledger.crypto import address_to_text
from ledger.tx import decode_signed_tx
from node.rpc.errors import INVALID_PARAMS
from node.rpc.limits import RpcLimits
from node.rpc.websocket import CLOSE_POLICY, CLOSE_TRY_AGAIN
from tests.node.test_rpc_commit import SIGNER, b64, cash_tx, key, live_node


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class WsClient:
    """A minimal WebSocket client: JSON messages over wsproto on a trio TCP stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list = []
        self.text = ""
        self.held: list[dict] = []  # notifications that arrived while awaiting an answer

    @classmethod
    async def connect(
        cls, port: int, *, rcvbuf: int | None = None, node=None, signer=SIGNER
    ) -> WsClient:
        sock = trio.socket.socket()
        if rcvbuf is not None:  # a small window: the server's writes block early
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(trio.SocketStream(sock))
        headers = []
        if node is not None and signer is not None:  # credentials of the connection
            value = node.authorization(signer, b"", "GET", "/websocket")
            headers = [(b"authorization", value.encode())]
        request = Request(host="127.0.0.1", target="/websocket", extra_headers=headers)
        await client.stream.send_all(client.ws.send(request))
        event = await client._next_event()
        if isinstance(event, RejectConnection):
            raise Closed(event.status_code, "rejected")
        assert isinstance(event, AcceptConnection), event
        return client

    async def _next_event(self):
        while not self.pending:
            data = await self.stream.receive_some(65536)
            if not data:
                raise Closed(1006, "connection lost")
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        return self.pending.pop(0)

    async def send(self, obj) -> None:
        await self.stream.send_all(self.ws.send(Message(data=json.dumps(obj))))

    async def recv(self) -> dict:
        if self.held:
            return self.held.pop(0)
        while True:
            event = await self._next_event()
            if isinstance(event, TextMessage):
                self.text += event.data
                if event.message_finished:
                    text, self.text = self.text, ""
                    return json.loads(text)
            elif isinstance(event, CloseConnection):
                raise Closed(event.code, event.reason)

    async def call(self, request_id, method: str, params=None) -> dict:
        request = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        await self.send(request)
        held = []
        while True:  # notifications may come first (they carry "data" in their result)
            answer = await self.recv()
            result = answer.get("result")
            if isinstance(result, dict) and "data" in result:
                held.append(answer)
            elif answer.get("id") == request_id:
                self.held.extend(held)
                return answer

    async def aclose(self) -> None:
        await self.stream.aclose()


async def notifications(client: WsClient, count: int, timeout: float = 20) -> list[dict]:
    got = []
    with trio.fail_after(timeout):
        while len(got) < count:
            got.append(await client.recv())
    return got


def test_subscriptions_receive_the_right_events(tmp_path):
    central_bank = address_to_text(key("central-bank").address)
    regulator = address_to_text(key("regulator").address)
    raw = cash_tx(0, "PKRC")
    tx_hash = decode_signed_tx(raw).tx_id.hex()

    async def main():
        async with live_node(tmp_path) as node:
            client = await WsClient.connect(node.port, node=node)
            queries = {
                "block": "tm.event='NewBlock'",
                "tx": "tm.event='Tx'",
                "hash": f"tm.event='Tx' AND tx.hash='{tx_hash}'",
                "other-hash": f"tm.event='Tx' AND tx.hash='{'ab' * 32}'",
                "account": f"tm.event='Tx' AND account='{central_bank}'",
                "other-account": f"account='{regulator}'",
                "instrument": "instrument='PKRC'",
            }
            for request_id, query in queries.items():
                answer = await client.call(request_id, "subscribe", {"query": query})
                assert "error" not in answer, answer
            await client.call("block-off", "unsubscribe", {"query": queries["block"]})
            client.held.clear()  # blocks notified before the unsubscribe: none after it
            committed = await node.acall("broadcast_tx_commit", {"tx": b64(raw)})
            height = committed["result"]["height"]
            # Exactly the four Tx subscriptions that match; nothing for the others.
            got = await notifications(client, 4)
            assert sorted(n["id"] for n in got) == ["account", "hash", "instrument", "tx"]
            for n in got:
                value = n["result"]["data"]["value"]
                assert n["result"]["data"]["type"] == "Tx"
                assert value["hash"] == tx_hash and value["height"] == height
                assert value["tx"] == b64(raw) and value["tx_result"]["code"] == 0
                assert value["tx_result"]["events"][0]["attributes"]["instrument"] == "PKRC"
            # NewBlock again: the next blocks arrive with their headers, in height order.
            await client.call("all-off", "unsubscribe_all", {})
            await client.call("block-on", "subscribe", {"query": queries["block"]})
            blocks = await notifications(client, 2)
            heights = [b["result"]["data"]["value"]["block"]["header"]["height"] for b in blocks]
            assert heights[0] > height and heights[1] == heights[0] + 1
            assert all(b["id"] == "block-on" for b in blocks)
            assert blocks[0]["result"]["query"] == queries["block"]
            stored = node.chain.store.blocks.block(heights[0])
            assert blocks[0]["result"]["data"]["value"]["block_id"]["hash"] == stored.hash.hex()
            # Other methods work on the socket too.
            status = await client.call(9, "status")
            assert status["result"]["node_info"]["moniker"] == "v0"
            await client.aclose()

    trio.run(main)


def test_bad_queries_and_limits(tmp_path):
    async def main():
        limits = RpcLimits(ws_max_subscriptions=2)
        async with live_node(tmp_path, limits=limits, max_subscribers=2) as node:
            client = await WsClient.connect(node.port, node=node)
            for query in (
                "tm.event='NewBlocks'",
                "tm.event = NewBlock",
                "tm.event='NewBlock' OR tm.event='Tx'",
                "tm.event='NewBlock' AND account='kz1qqqq'",
                "tx.hash='1234'",
                "account='not-an-address'",
                "height='5'",
                "tm.event='Tx' AND tm.event='Tx'",
                "",
                42,
            ):
                answer = await client.call(1, "subscribe", {"query": query})
                assert answer["error"]["code"] == INVALID_PARAMS, (query, answer)
            answer = await client.call(2, "unsubscribe", {"query": "tm.event='Tx'"})
            assert answer["error"]["code"] == INVALID_PARAMS  # not subscribed
            assert "result" in await client.call(3, "subscribe", {"query": "tm.event='Tx'"})
            again = await client.call(4, "subscribe", {"query": "tm.event = 'Tx'"})
            assert "already subscribed" in again["error"]["data"]
            assert "result" in await client.call(5, "subscribe", {"query": "instrument='X'"})
            third = await client.call(6, "subscribe", {"query": "tm.event='NewBlock'"})
            assert "at most 2" in third["error"]["data"]
            # Connection cap: the bus holds 2 subscribers; the third connection is closed.
            second = await WsClient.connect(node.port, node=node)
            third_client = await WsClient.connect(node.port, node=node)
            try:
                with trio.fail_after(10):
                    await third_client.recv()
                raise AssertionError("the third connection was not closed")
            except Closed as closed:
                assert closed.code == CLOSE_TRY_AGAIN and "too many" in closed.reason
            await second.aclose()
            await client.aclose()

    trio.run(main)


def test_slow_client_is_dropped_while_blocks_keep_committing(tmp_path):
    async def main():
        limits = RpcLimits(ws_queue_size=4)
        async with live_node(tmp_path, limits=limits) as node:
            bus = node.api.events
            slow = await WsClient.connect(node.port, rcvbuf=4096, node=node)
            for n, query in enumerate(("tm.event='NewBlock'", "tm.event='Tx'")):
                await slow.call(n, "subscribe", {"query": query})
            fast = await WsClient.connect(node.port, node=node)
            await fast.call("fast", "subscribe", {"query": "tm.event='NewBlock'"})
            seen: list[int] = []

            async def read_fast():
                while True:
                    note = await fast.recv()
                    seen.append(note["result"]["data"]["value"]["block"]["header"]["height"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_fast)
                # Bulky traffic the slow client does not read: 40 txs, then empty blocks.
                for batch in range(2):
                    calls = [
                        {
                            "jsonrpc": "2.0",
                            "id": i,
                            "method": "broadcast_tx_sync",
                            "params": {"tx": b64(cash_tx(i, f"C{i}"))},
                        }
                        for i in range(batch * 20, batch * 20 + 20)
                    ]
                    body = json.dumps(calls).encode()
                    answers, _ = await trio.to_thread.run_sync(
                        lambda body=body: node.call("", raw_body=body)
                    )
                    assert all(a["result"]["code"] == 0 for a in answers), answers
                with trio.fail_after(30):
                    while bus.dropped == 0:
                        await trio.sleep(0.05)
                dropped_at = node.chain.height
                # Consensus never waited for the slow client: blocks keep coming, and the
                # fast client gets them.
                await node.wait_height(dropped_at + 3, timeout=10)
                with trio.fail_after(10):
                    while not seen or seen[-1] < dropped_at + 3:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            assert seen == list(range(seen[0], seen[0] + len(seen)))  # none lost, in order
            assert len(bus) == 1  # the fast one
            # The slow client, reading at last, finds the close frame after what was sent.
            try:
                with trio.fail_after(20):
                    while True:
                        await slow.recv()
            except Closed as closed:
                assert closed.code == CLOSE_POLICY
                assert closed.reason.startswith("too slow")
            await fast.aclose()
            await slow.aclose()

    trio.run(main)
