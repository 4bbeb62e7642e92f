"""The SDK's sans-IO WebSocket session: subscriptions to a node's `/websocket`.

`WsSession` is the protocol state of one client connection -- the WebSocket framing (by
`wsproto`, a sans-IO WebSocket library: no framing is written here), the JSON-RPC calls in
flight, and a bounded queue of received events per subscription. It never touches a socket
or a clock: a transport feeds it the bytes it reads (`receive_data`) and writes what it
asks (`data_to_send`). The blocking `WebSocket` (node/client/sync.py) and the trio
`AsyncWebSocket` (node/client/aio.py) are such transports, and share all of the logic here.

What the node sends (docs/RPC.md, "WebSocket subscriptions"): the answer to each call with
the call's `id`; then, per matched event, a notification carrying the `id` of the subscribe
call and `result: {"query", "data": {"type", "value"}}`. The session gives each subscribe
its own id, so notifications are routed by id; an answer is told from a notification by
`data`. A notification may arrive before its subscribe's answer (the node registers the
query first): it is kept all the same.

How a session ends, as the caller sees it: after our own `close()` (or an unsubscribe), a
subscription's events simply end; a close by the node, a lost connection or a refused
handshake is a `SubscriptionClosed` with the close code and reason (1008 "too slow: ..."
when the node dropped us, 1013 when it has too many connections, 1006 when the connection
was lost without a close frame).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError as WsProtocolError

from node.client.core import MAX_RESPONSE_BYTES, Endpoint
from node.client.errors import ProtocolError, QueryRefused, RpcError, SubscriptionClosed

INVALID_PARAMS = -32602
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_LOST = 1006  # no close frame: the connection broke
WS_PATH = "websocket"
# Events received but not yet taken, per subscription. A caller that reads one subscription
# and never another would otherwise grow the other's queue forever; past this the session
# gives up, as the node gives up on a client too slow to read (close 1008).
MAX_PENDING_EVENTS = 1024

PENDING = object()
"""`take_answer`'s value while the answer has not arrived."""


@dataclass(frozen=True, slots=True)
class Event:
    """One notification: `kind` is "NewBlock" or "Tx", `value` the node's JSON of it."""

    query: str
    kind: str
    value: dict = field(repr=False)

    @property
    def height(self) -> int:
        if self.kind == "Tx":
            return self.value["height"]
        return self.value["block"]["header"]["height"]

    @property
    def hash(self) -> str:
        """The transaction's hash (Tx) or the block's (NewBlock), hex."""
        if self.kind == "Tx":
            return self.value["hash"]
        return self.value["block_id"]["hash"]

    def to_json(self) -> dict:
        return {"query": self.query, "type": self.kind, "value": self.value}


def websocket_target(endpoint: Endpoint) -> str:
    """The WebSocket path next to the JSON-RPC path (`/` -> `/websocket`, `/rpc/` too)."""
    base = endpoint.path if endpoint.path.endswith("/") else endpoint.path + "/"
    return base + WS_PATH


class WsSession:
    """The protocol state of one WebSocket connection to a node (see the module docstring).

    Handshake: queued at construction; `opened` turns true when the node accepts it.
    Calls: `call()` queues a request and returns its id; `take_answer(id)` is the result,
    PENDING, or raises the call's RpcError. Subscriptions: `subscribe()` is a call whose id
    also names the subscription; `take_event(id)` is the next Event, None while none is
    waiting, or raises once the session has ended (or returns `ENDED` when it ended by us).
    """

    ENDED = object()

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        max_pending: int = MAX_PENDING_EVENTS,
        max_message_bytes: int = MAX_RESPONSE_BYTES,
        authorization: str | None = None,
    ) -> None:
        self.max_pending = max_pending
        self.max_message_bytes = max_message_bytes
        self._ws = WSConnection(ConnectionType.CLIENT)
        # Credentials of the whole connection: signed over "GET <target>" and an empty body.
        headers = [] if authorization is None else [(b"authorization", authorization.encode())]
        request = Request(
            host=endpoint.host_header, target=websocket_target(endpoint), extra_headers=headers
        )
        self._out = bytearray(self._ws.send(request))
        self.opened = False
        self.ended = False
        self.ended_by_us = False
        self.error: Exception | None = None  # why it ended, when not by us
        self._message: list[str] = []
        self._message_size = 0
        self._next_id = 0
        self._awaiting: dict[int, str | None] = {}  # call id -> subscribe query (None: a call)
        self._answers: dict[int, tuple[bool, Any]] = {}  # call id -> (ok, result or error)
        self._events: dict[int, deque[Event]] = {}  # subscribe id -> events not yet taken

    # -- bytes in and out

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the connection; b"" when it has reached its end."""
        if self.ended and self._ws_closed():
            return
        try:
            self._ws.receive_data(data or None)
            for event in self._ws.events():
                self._on_ws_event(event)
        except WsProtocolError as exc:
            self._end(ProtocolError(f"bad WebSocket data from the node: {exc}"))

    def _ws_closed(self) -> bool:
        return self._ws.state.name == "CLOSED"

    def _on_ws_event(self, event: object) -> None:
        if isinstance(event, AcceptConnection):
            self.opened = True
        elif isinstance(event, RejectConnection):
            self._end(SubscriptionClosed(event.status_code, "the node refused the WebSocket"))
        elif isinstance(event, TextMessage | BytesMessage):
            chunk = event.data if isinstance(event.data, str) else event.data.decode("utf-8")
            self._message_size += len(chunk)
            if self._message_size > self.max_message_bytes:
                self._end(ProtocolError(f"a message larger than {self.max_message_bytes} bytes"))
                self._send_close(CLOSE_POLICY, "message too large")
                return
            self._message.append(chunk)
            if event.message_finished:
                text = "".join(self._message)
                self._message, self._message_size = [], 0
                self._on_message(text)
        elif isinstance(event, Ping):
            self._out += self._ws.send(event.response())
        elif isinstance(event, CloseConnection):
            if self._ws.state.name == "REMOTE_CLOSING":
                self._out += self._ws.send(event.response())
            if not self.ended:
                self._end(SubscriptionClosed(event.code, event.reason or ""))

    def _end(self, error: Exception | None) -> None:
        if self.ended:
            return
        self.ended = True
        self.error = error
        self.ended_by_us = error is None

    # -- JSON-RPC

    def _on_message(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            self._end(ProtocolError(f"the node sent a message that is not JSON: {text[:80]!r}"))
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            self._end(ProtocolError("the node sent a message that is not JSON-RPC 2.0"))
            return
        request_id = message.get("id")
        result = message.get("result")
        if isinstance(result, dict) and "data" in result:
            self._on_notification(request_id, result)
        elif request_id in self._awaiting:
            query = self._awaiting.pop(request_id)
            self._answers[request_id] = self._answer(message, query)
            if query is not None and not self._answers[request_id][0]:
                self._events.pop(request_id, None)  # a refused subscription gets nothing
        else:
            # An error with id null: the node could not read one of our messages at all.
            error = message.get("error")
            self._end(ProtocolError(f"unexpected message from the node: {error or message}"))

    @staticmethod
    def _answer(message: dict, query: str | None) -> tuple[bool, Any]:
        error = message.get("error")
        if error is None:
            if "result" not in message:
                return False, ProtocolError("JSON-RPC answer with neither result nor error")
            return True, message["result"]
        if not isinstance(error, dict) or type(error.get("code")) is not int:
            return False, ProtocolError("malformed JSON-RPC error object")
        code, text, data = error["code"], str(error.get("message", "")), error.get("data")
        if query is not None and code == INVALID_PARAMS:
            return False, QueryRefused(query, code, text, data)
        return False, RpcError(code, text, data)

    def _on_notification(self, request_id: Any, result: dict) -> None:
        queue = self._events.get(request_id)
        if queue is None:
            return  # unsubscribed while the node had it queued
        data = result["data"]
        if not isinstance(data, dict) or not isinstance(data.get("value"), dict):
            self._end(ProtocolError("a notification without data.type and data.value"))
            return
        queue.append(Event(str(result.get("query", "")), str(data.get("type")), data["value"]))
        if len(queue) > self.max_pending:
            reason = f"more than {self.max_pending} events waiting unread"
            self._end(SubscriptionClosed(CLOSE_POLICY, reason))
            self._send_close(CLOSE_POLICY, "too slow: " + reason)

    def call(self, method: str, params: dict | None = None, *, subscribe: str | None = None) -> int:
        """Queue one JSON-RPC request; its id (for `take_answer`)."""
        if self.ended:
            raise self.error or SubscriptionClosed(CLOSE_NORMAL, "closed by this client")
        self._next_id += 1
        request_id = self._next_id
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        text = json.dumps(request, separators=(",", ":"))
        self._out += self._ws.send(TextMessage(data=text))
        self._awaiting[request_id] = subscribe
        return request_id

    def subscribe(self, query: str) -> int:
        """Queue a subscribe call; its id also names the subscription."""
        request_id = self.call("subscribe", {"query": query}, subscribe=query)
        self._events[request_id] = deque()
        return request_id

    def take_answer(self, request_id: int) -> Any:
        """The call's result; PENDING while it has not come; raises its error."""
        if request_id in self._answers:
            ok, value = self._answers.pop(request_id)
            if not ok:
                raise value
            return value
        if self.ended:
            raise self.error or SubscriptionClosed(CLOSE_NORMAL, "closed by this client")
        return PENDING

    def take_event(self, subscription_id: int) -> Event | object | None:
        """The subscription's next Event; None while none waits; ENDED after our own close
        or unsubscribe; raises the reason once the node ended the session."""
        queue = self._events.get(subscription_id)
        if queue:
            return queue.popleft()
        if queue is None or self.ended_by_us:
            return self.ENDED
        if self.ended:
            raise self.error
        return None

    def forget(self, subscription_id: int | None = None) -> None:
        """Stop keeping events of one subscription (all of them when None)."""
        if subscription_id is None:
            self._events.clear()
        else:
            self._events.pop(subscription_id, None)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Queue our close frame; events stop (`ended_by_us` unless it had ended already)."""
        self._end(None)
        self._send_close(code, reason)

    def _send_close(self, code: int, reason: str) -> None:
        if self._ws.state.name == "OPEN":
            self._out += self._ws.send(CloseConnection(code=code, reason=reason))

    @property
    def finished(self) -> bool:
        """True once nothing more will be read: the close handshake is over or lost."""
        return self._ws_closed() or (self.ended and not self.opened)
