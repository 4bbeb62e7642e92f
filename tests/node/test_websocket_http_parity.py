"""The WebSocket answers as HTTP does (issue 17 part 4): the same request gets the same id and
the same error code on `/websocket` (node/rpc/websocket.py) as over HTTP (node/rpc/framing.py),
whether it is a subscription call or an ordinary one; fractional ids are ids on both; a batch
on the socket may hold `subscribe` calls and is answered in order; over HTTP `subscribe` is
not found and the error says where it is.

In process: a connection object with a capturing `send`, the real JSON-RPC handler, an
anonymous caller (scopes need no store for NewBlock), no server.
"""

from __future__ import annotations

import json

import pytest
import trio

from node.events import CommittedBlock, EventBus
from node.rpc.errors import INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR
from node.rpc.framing import JsonRpc, Method
from node.rpc.scopes import Scopes
from node.rpc.websocket import _Connection

NEW_BLOCK = "tm.event='NewBlock'"


async def _health() -> dict:
    return {}


def make_rpc(max_batch: int = 4) -> JsonRpc:
    async def submit_many(raws):
        raise AssertionError("no submissions here")

    return JsonRpc(
        {"health": Method(_health, ())},
        submit_many,
        max_batch=max_batch,
        request_timeout_ms=5_000,
    )


class Socket:
    """One in-process WebSocket connection: `ask(obj)` sends a text frame, returns what the
    server sent back (decoded), [] when nothing."""

    def __init__(self, rpc: JsonRpc) -> None:
        self.sent: list = []
        self.bus = EventBus()
        self.subscriber = self.bus.open()

        async def send(message: dict) -> None:
            self.sent.append(json.loads(message["text"]))

        self.connection = _Connection(
            send, self.subscriber, rpc.handle_body, Scopes(None), rpc.handle_batch_with
        )

    async def ask(self, message) -> list:
        self.sent.clear()
        text = message if isinstance(message, str) else json.dumps(message)
        await self.connection.on_message(text)
        return list(self.sent)


async def http(rpc: JsonRpc, message) -> object:
    text = message if isinstance(message, str) else json.dumps(message)
    return await rpc.handle_body(text.encode())


def shape(answer) -> object:
    """What must agree: the id and the error code (or that it succeeded)."""
    if isinstance(answer, list):
        return [shape(a) for a in answer]
    if answer is None:
        return None
    code = answer["error"]["code"] if "error" in answer else 0
    return (answer["id"], type(answer["id"]).__name__, code)


# Envelopes, each sent once as `subscribe` on the socket and as `health` over HTTP.
ENVELOPES = [
    pytest.param({"jsonrpc": "2.0", "id": 7}, id="ok"),
    pytest.param({"id": 7}, id="no-jsonrpc"),
    pytest.param({"jsonrpc": "1.0", "id": "a"}, id="wrong-jsonrpc"),
    pytest.param({"jsonrpc": "2.0", "id": 1.5}, id="fractional-id"),
    pytest.param({"id": 2.5}, id="fractional-id-no-jsonrpc"),
    pytest.param({"jsonrpc": "2.0", "id": None}, id="null-id"),
    pytest.param({"jsonrpc": "2.0", "id": True}, id="bool-id"),
    pytest.param({"jsonrpc": "2.0", "id": [1]}, id="array-id"),
    pytest.param({"jsonrpc": "2.0", "id": 3, "params": "x"}, id="params-not-structured"),
]


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_a_subscribe_is_answered_with_the_id_and_code_http_gives(envelope):
    async def main():
        rpc = make_rpc()
        socket = Socket(rpc)
        subscribe = {**envelope, "method": "subscribe"}
        if "params" not in envelope:
            subscribe["params"] = {"query": NEW_BLOCK}
        health = {**envelope, "method": "health"}
        if "params" in envelope:
            health["params"] = envelope["params"]
        (ws_answer,) = await socket.ask(subscribe)
        assert shape(ws_answer) == shape(await http(rpc, health))
        # An ordinary method on the socket: the same answer again.
        (ws_health,) = await socket.ask(health)
        assert shape(ws_health) == shape(ws_answer)

    trio.run(main)


def test_a_fractional_id_subscribes_and_its_notifications_carry_it():
    async def main():
        socket = Socket(make_rpc())
        (answer,) = await socket.ask(
            {"jsonrpc": "2.0", "id": 1.5, "method": "subscribe", "params": [NEW_BLOCK]}
        )
        assert answer == {"jsonrpc": "2.0", "id": 1.5, "result": {"query": NEW_BLOCK}}

    trio.run(main)


def test_nan_is_not_json_on_either():
    async def main():
        rpc = make_rpc()
        text = '{"jsonrpc": "2.0", "id": NaN, "method": "subscribe", "params": ["x"]}'
        (answer,) = await Socket(rpc).ask(text)
        assert answer["error"]["code"] == PARSE_ERROR
        assert (await http(rpc, text.replace("subscribe", "health")))["error"]["code"] == (
            PARSE_ERROR
        )

    trio.run(main)


def test_subscribe_inside_a_batch_is_answered_in_order():
    async def main():
        socket = Socket(make_rpc())
        batch = [
            {"jsonrpc": "2.0", "id": "h1", "method": "health"},
            {"jsonrpc": "2.0", "id": 9, "method": "subscribe", "params": {"query": NEW_BLOCK}},
            {"jsonrpc": "2.0", "method": "health"},  # a notification: no answer
            {"id": 4, "method": "subscribe", "params": {"query": NEW_BLOCK}},  # no jsonrpc
        ]
        (answers,) = await socket.ask(batch)
        assert answers == [
            {"jsonrpc": "2.0", "result": {}, "id": "h1"},
            {"jsonrpc": "2.0", "id": 9, "result": {"query": NEW_BLOCK}},
            {
                "jsonrpc": "2.0",
                "error": {"code": INVALID_REQUEST, "message": "Invalid Request"},
                "id": 4,
            },
        ]
        assert list(socket.subscriber.queries) == [NEW_BLOCK]
        # The subscription is live: a block reaches the queue under the subscribe call's id.
        socket.bus.publish(CommittedBlock(1, b"\x01" * 32, b"", ()))
        notification = socket.subscriber.receive.receive_nowait()
        assert notification.query == NEW_BLOCK and socket.connection.ids[NEW_BLOCK] == 9
        # unsubscribe_all in a batch of notifications only: done, nothing answered.
        assert await socket.ask([{"jsonrpc": "2.0", "method": "unsubscribe_all"}]) == []
        assert not socket.subscriber.queries

    trio.run(main)


def test_a_batch_with_subscribe_keeps_the_http_batch_limits():
    async def main():
        rpc = make_rpc(max_batch=2)
        call = {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": [NEW_BLOCK]}
        (answer,) = await Socket(rpc).ask([call] * 3)
        http_answer = await http(rpc, [{"jsonrpc": "2.0", "id": 1, "method": "health"}] * 3)
        assert answer == http_answer
        assert answer["error"]["code"] == INVALID_REQUEST

    trio.run(main)


def test_subscribe_over_http_says_where_it_is_served():
    async def main():
        answer = await http(make_rpc(), {"jsonrpc": "2.0", "id": 1, "method": "subscribe"})
        assert answer["error"]["code"] == METHOD_NOT_FOUND
        assert "/websocket" in answer["error"]["data"]

    trio.run(main)
