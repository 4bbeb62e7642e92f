"""The benchmark's block watcher outlives a node that dies and comes back (scripts/benchlib/rpc.py).

`scripts/bench.py --rate 300` against a localnet whose first validator was killed and restarted
every 7 s ended with `RuntimeError: called 'started' twice on the same task status`: the
watcher's `run` reported itself started a second time when its WebSocket broke after the first
subscription had already reported it. Here a fake node on 127.0.0.1 (JSON-RPC `status` and
`block` over HTTP, NewBlock notifications over a WebSocket) is stopped -- every socket closed,
the port refusing connections -- and started again on the same port, twice, while a
`BlockWatcher` runs. The watcher must keep running and deliver every height exactly once, in
order (the heights produced while the node was down are fetched with `block` when it is back).
And the benchmark's start height waits for a validator that is restarting when it is asked.

Real sockets on the real clock (a MockClock would jump past the client's deadlines while the
kernel moves bytes), every wait bounded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Request,
    TextMessage,
)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402  (scripts/bench.py)
from benchlib.rpc import BlockWatcher  # noqa: E402

BLOCK_S = 0.05  # the fake chain's block interval


def block_of(height: int) -> dict:
    return {"header": {"height": height}, "txs": [f"tx-{height}"]}


class FakeNode:
    """A chain that grows one block per BLOCK_S while the node is up or down (the other
    validators go on), and a server that can be stopped and started on one port."""

    def __init__(self) -> None:
        self.height = 1
        self.port = 0
        self.scope: trio.CancelScope | None = None
        self.websockets_served = 0

    async def grow(self) -> None:
        while True:
            await trio.sleep(BLOCK_S)
            self.height += 1

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen (on the same port as before, if any) until `stop()`."""
        with trio.CancelScope() as scope:
            self.scope = scope
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    def stop(self) -> None:
        """The node dies: its listener and every connection close at once."""
        assert self.scope is not None
        self.scope.cancel()

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(1 << 16)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            if head.startswith(b"GET /websocket"):
                await self._websocket(stream, data)
                return
            length = 0
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            while len(rest) < length:
                rest += await stream.receive_some(1 << 16)
            request = json.loads(rest[:length])
            await stream.send_all(http_answer(self.answer(request)))

    def answer(self, request: dict) -> dict:
        method, params = request["method"], request.get("params") or {}
        if method == "status":
            result = {
                "node_info": {"network": "fake", "moniker": "fake", "role": "validator"},
                "sync_info": {
                    "latest_block_height": self.height,
                    "latest_block_hash": "00",
                    "latest_app_hash": "00",
                    "latest_block_time": 0,
                    "catching_up": False,
                },
            }
        elif method == "block" and 1 <= params.get("height", 0) <= self.height:
            result = {"block": block_of(params["height"])}
        else:
            return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32001}}
        return {"jsonrpc": "2.0", "id": request["id"], "result": result}

    async def _websocket(self, stream: trio.SocketStream, data: bytes) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(data)
        subscribed_at = None
        self.websockets_served += 1
        while subscribed_at is None:
            for event in ws.events():
                if isinstance(event, Request):
                    await stream.send_all(ws.send(AcceptConnection()))
                elif isinstance(event, TextMessage):
                    request = json.loads(event.data)
                    answer = {"jsonrpc": "2.0", "id": request["id"], "result": {}}
                    await stream.send_all(ws.send(Message(data=json.dumps(answer))))
                    subscribed_at = self.height
                elif isinstance(event, CloseConnection):
                    return
            if subscribed_at is None:
                chunk = await stream.receive_some(1 << 16)
                if not chunk:
                    return
                ws.receive_data(chunk)
        sent = subscribed_at
        while True:  # a NewBlock notification for every height from the subscription on
            while sent < self.height:
                sent += 1
                value = {"type": "NewBlock", "value": {"block": block_of(sent)}}
                note = {"jsonrpc": "2.0", "id": 1, "result": {"data": value}}
                await stream.send_all(ws.send(Message(data=json.dumps(note))))
            await trio.sleep(BLOCK_S / 2)


def http_answer(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _watch_through_restarts() -> None:
    node = FakeNode()
    delivered: list[tuple[int, list[str]]] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.grow)
            await nursery.start(node.serve)
            url = f"http://127.0.0.1:{node.port}"
            watcher = BlockWatcher(url, lambda h, txs, _t: delivered.append((h, txs)), 1)
            await nursery.start(watcher.run)
            for _ in range(2):
                # Long enough for the watcher to poll (1 s) and subscribe again after the last
                # restart, so the node dies under a live subscription every time.
                await trio.sleep(1.5)
                node.stop()  # the node dies with the watcher subscribed ...
                await trio.sleep(0.5)  # ... the chain goes on without it ...
                await nursery.start(node.serve)  # ... and it comes back on the same port
            # Subscribed again after the last restart, and caught up with the chain.
            while node.websockets_served < 3 or delivered[-1][0] < node.height - 2:
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    heights = [h for h, _ in delivered]
    assert heights == list(range(2, heights[-1] + 1)), heights  # every height once, in order
    assert all(txs == [f"tx-{h}"] for h, txs in delivered)
    assert heights[-1] >= 60  # blocks of all three lives of the node were delivered
    assert node.websockets_served >= 3  # it subscribed again after each restart
    assert watcher.source == "websocket+poll"  # the missed heights were fetched


def test_block_watcher_outlives_node_restarts():
    trio.run(_watch_through_restarts)


async def _tip_while_restarting() -> None:
    node = FakeNode()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.serve)  # learn a port, then die before the benchmark asks
            node.stop()
            await trio.sleep(0.1)
            node.height = 7
            url = f"http://127.0.0.1:{node.port}"
            dead = "http://127.0.0.1:9"  # another validator that never answers

            async def come_back() -> None:
                await trio.sleep(0.8)
                await nursery.start(node.serve)

            nursery.start_soon(come_back)
            began = trio.current_time()
            assert await bench.tip_height([dead, url]) == 7
            assert trio.current_time() - began >= 0.7  # it waited for the node to come back
            nursery.cancel_scope.cancel()


def test_bench_start_height_waits_for_a_restarting_node():
    # The benchmark's start height came from one `status` call to the first validator, so a
    # validator restarting at that moment ended the run (NodeUnreachable).
    trio.run(_tip_while_restarting)
