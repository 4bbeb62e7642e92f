"""WebSocket `/websocket`: JSON-RPC 2.0 subscriptions to committed blocks and transactions.

What it owns: one ASGI WebSocket connection (hypercorn's trio worker) from handshake to close,
the `subscribe {query}` / `unsubscribe {query}` / `unsubscribe_all` methods, and the JSON form
of the notifications. Queries and the per-client queue are node/events.py's; any other method
sent on the socket is answered by the JSON-RPC handler (node/rpc/framing.py), so a client can
`status` or `broadcast_tx_sync` on the same connection.

The socket answers as HTTP does: the same JSON (no NaN), the same ids (string, any finite
number, or null; a valid id is echoed even on an Invalid Request, e.g. one without
`"jsonrpc": "2.0"`), notifications unanswered. A batch may hold subscription calls: its calls
are then answered one after another in order under one answer budget
(`JsonRpc.handle_batch_with`), with the batch limits of HTTP.

A notification answers the subscribe call's `id` (as CometBFT does), once per matched event:

    {"jsonrpc": "2.0", "id": <id of the subscribe>, "result": {"query": "tm.event='Tx'",
     "data": {"type": "Tx", "value": {"hash", "height", "index", "tx", "tx_result"}}}}
    {"jsonrpc": "2.0", "id": ..., "result": {"query": "tm.event='NewBlock'",
     "data": {"type": "NewBlock", "value": {"block_id": {"hash"}, "block": {"header", "txs"}}}}}

Who may subscribe to what is node/rpc/scopes.py's (`check_subscription`): NewBlock for whoever
may read block headers, with the transactions only for those who may read every one (others
get `"txs": null`); Tx for the institutions, for the others only with `account=` an account
they may read. The check is made again for every notification, with the rights the chain gives
the connection's key at that block: a suspended VASP stops receiving its clients' events from
the first block after its suspension. A Tx notification to anyone but an institution carries
only the events that name an account it may read.

Limits and closes (the close frame carries the code and a reason):

    connections       `ws_max_connections` (the event bus's subscriber cap): the next one is
                      accepted and closed at once with 1013 "try again later"
    subscriptions     `ws_max_subscriptions` per connection: subscribe answers -32602
    queue             `ws_queue_size` notifications waiting unsent: the client is dropped,
                      close 1008 with the reason "too slow: ..." (the driver never waits)
    message size      `ws_max_message_bytes` per client message: close 1009
    idle              `ws_idle_timeout_ms` with no subscription and no message from the
                      client: close 1001 "idle" (an idle socket must not hold a slot forever)

A client that stops reading altogether: hypercorn writes each frame with a shielded
`send_all`; the stream's send deadline (`[rpc] send_timeout_ms`, node/asgi.py) closes the
socket once a frame has waited that long, which ends this connection and frees its slot (the
per-IP count of node/rpc/guard.py included). Drops and idle closes are counted as refusals
`ws_slow` and `ws_idle` (node/rpc/budget.py `count_refusal`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

import trio

from node.events import (
    NEW_BLOCK,
    BusFull,
    EventBus,
    Notification,
    QueryError,
    Subscriber,
    parse_query,
)
from node.rpc.budget import count_refusal
from node.rpc.errors import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, BadRequest, RpcError
from node.rpc.framing import WEBSOCKET_ONLY, refuse_constant, valid_id
from node.rpc.render import CODESPACE, b64, render_header, to_json
from node.rpc.scopes import Scopes

log = logging.getLogger("khazana.websocket")

CLOSE_NORMAL = 1000
CLOSE_IDLE = 1001  # "going away": no subscription and no message for ws_idle_timeout_ms
CLOSE_POLICY = 1008  # the client is too slow to read its events
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # too many connections, or no event bus on this node

SUBSCRIPTION_METHODS = WEBSOCKET_ONLY


def render_notification(notification: Notification, bodies: bool = True) -> dict:
    """The `result` of one notification (see the module docstring); `bodies`: a NewBlock's
    transactions (else `"txs": null`)."""
    block, tx = notification.block, notification.tx
    if tx is None:
        value = {
            "block_id": {"hash": block.hash.hex()},
            "block": {
                "header": render_header(block.header),
                "txs": [b64(t.raw) for t in block.txs] if bodies else None,
            },
        }
        kind = NEW_BLOCK
    else:
        value = {
            "hash": tx.hash.hex(),
            "height": tx.height,
            "index": tx.index,
            "tx": b64(tx.raw),
            "tx_result": {
                "code": tx.code,
                "codespace": CODESPACE if tx.code else "",
                "log": tx.log,
                "events": [to_json(e.to_map()) for e in tx.events],
            },
        }
        kind = "Tx"
    return {"query": notification.query, "data": {"type": kind, "value": value}}


def _is_subscription(call: Any) -> bool:
    return isinstance(call, dict) and call.get("method") in SUBSCRIPTION_METHODS


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _error(error: RpcError, request_id: Any = None) -> dict:
    return {"jsonrpc": "2.0", "error": error.to_obj(), "id": request_id}


class _Connection:
    """One accepted client: its subscriber, the subscribe ids, a lock so frames never mix."""

    def __init__(
        self,
        send: Callable,
        subscriber: Subscriber,
        handle_body: Callable,
        scopes: Scopes,
        handle_batch: Callable | None = None,
    ) -> None:
        self.send = send
        self.subscriber = subscriber
        self.handle_body = handle_body
        self.handle_batch = handle_batch  # framing.JsonRpc.handle_batch_with
        self.scopes = scopes
        self.ids: dict[str, Any] = {}  # canonical query text -> the subscribe call's id
        self.lock = trio.Lock()

    async def send_text(self, obj: Any) -> None:
        text = _dumps(obj)
        async with self.lock:
            await self.send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        async with self.lock:
            await self.send({"type": "websocket.close", "code": code, "reason": reason})

    async def pump_notifications(self) -> None:
        """Notifications out, in order; returns when the subscriber's queue is closed."""
        async for notification in self.subscriber.receive:
            if notification.query not in self.subscriber.queries:
                continue  # unsubscribed while it was queued
            result = await self.scoped(notification)
            if result is None:
                continue  # the key may not read it (any more)
            if notification.query not in self.subscriber.queries:
                continue  # unsubscribed while its rights were being checked
            request_id = self.ids.get(notification.query)
            await self.send_text({"jsonrpc": "2.0", "id": request_id, "result": result})

    async def scoped(self, notification: Notification) -> dict | None:
        """The notification as this connection's key may see it now, None if not at all."""
        query = self.subscriber.queries.get(notification.query)
        if query is None:
            return None
        try:
            await self.scopes.check_subscription(query)
            if notification.tx is None:
                return render_notification(notification, await self.scopes.may_read_bodies())
            result = render_notification(notification)
            value = result["data"]["value"]
            events = value["tx_result"]["events"]
            value["tx_result"]["events"] = await self.scopes.tx_view(notification.tx.raw, events)
        except RpcError:
            return None
        return result

    async def on_message(self, text: str) -> None:
        try:
            # The same JSON as over HTTP (framing.py): no NaN or Infinity.
            message = json.loads(text, parse_constant=refuse_constant)
        except (ValueError, RecursionError):
            await self.send_text(_error(BadRequest(PARSE_ERROR, "Parse error")))
            return
        if _is_subscription(message):
            answer = await self.subscription_call(message)
        elif isinstance(message, list) and any(_is_subscription(call) for call in message):
            answer = await self.mixed_batch(message, text)
        else:
            answer = await self.handle_body(text.encode("utf-8"))
        if answer is not None:
            await self.send_text(answer)

    async def mixed_batch(self, calls: list, text: str) -> Any:
        """A batch holding subscription calls: each call answered in turn, in the batch's
        order, as it would be alone (the others by the JSON-RPC handler, under one answer
        budget); notifications get no answer and an all-notification batch none at all, as
        over HTTP."""
        if self.handle_batch is None:  # no batch handler given: the body handler's answer
            return await self.handle_body(text.encode("utf-8"))
        return await self.handle_batch(calls, _is_subscription, self.subscription_call)

    async def subscription_call(self, request: dict) -> dict | None:
        # Checked as framing.JsonRpc.handle_request checks any call, so the socket answers
        # what HTTP answers: a valid id is echoed even when the request is refused.
        request_id = request.get("id")
        if (
            request.get("jsonrpc") != "2.0"
            or ("id" in request and not valid_id(request_id))
            or not isinstance(request.get("params", []), (list, dict))
        ):
            echoed = request_id if valid_id(request_id) else None
            return _error(BadRequest(INVALID_REQUEST, "Invalid Request"), echoed)
        params = request.get("params", {})
        if isinstance(params, list):
            if len(params) > 1:
                return _error(
                    BadRequest(INVALID_PARAMS, "Invalid params", "at most 1 positional param"),
                    request_id,
                )
            params = dict(zip(("query",), params, strict=False))
        method = request["method"]
        try:
            if set(params) - {"query"}:
                raise QueryError(f"unknown params {sorted(set(params) - {'query'})}")
            if method == "unsubscribe_all":
                self.subscriber.unsubscribe_all()
                self.ids.clear()
            else:
                query = parse_query(params.get("query"))
                if method == "subscribe":
                    await self.scopes.check_subscription(query)
                    self.subscriber.subscribe(query)
                    self.ids[query.text] = request_id
                else:
                    self.subscriber.unsubscribe(query)
                    self.ids.pop(query.text, None)
        except QueryError as exc:
            if "id" not in request:
                return None
            return _error(BadRequest(INVALID_PARAMS, "Invalid params", str(exc)), request_id)
        except RpcError as refused:  # not the caller's to read
            return None if "id" not in request else _error(refused, request_id)
        if "id" not in request:
            return None  # a notification: done, no answer
        if method == "subscribe":
            return {"jsonrpc": "2.0", "id": request_id, "result": {"query": query.text}}
        return {"jsonrpc": "2.0", "id": request_id, "result": {}}


async def serve_websocket(
    scope: dict,
    receive: Callable,
    send: Callable,
    *,
    bus: EventBus | None,
    handle_body: Callable,
    limits: Any,  # node.rpc.limits.RpcLimits
    scopes: Scopes,
    handle_batch: Callable | None = None,
) -> None:
    """Run one WebSocket connection until either side closes it."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if bus is None:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN, "reason": "no event bus"})
        return
    try:
        subscriber = bus.open(limits.ws_queue_size, limits.ws_max_subscriptions)
    except BusFull:
        await send({"type": "websocket.accept"})
        await send(
            {
                "type": "websocket.close",
                "code": CLOSE_TRY_AGAIN,
                "reason": f"too many websocket connections (at most {bus.max_subscribers})",
            }
        )
        return
    connection = _Connection(send, subscriber, handle_body, scopes, handle_batch)
    try:
        await send({"type": "websocket.accept"})
        async with trio.open_nursery() as nursery:

            async def notifications() -> None:
                await connection.pump_notifications()
                # The queue ended: we closed it (client gone) or the bus dropped the client.
                if subscriber.dropped is not None:
                    log.info("websocket client dropped: %s", subscriber.dropped)
                    count_refusal("ws_slow")
                    await connection.close(CLOSE_POLICY, subscriber.dropped)
                nursery.cancel_scope.cancel()

            nursery.start_soon(notifications)
            await _read_loop(
                connection,
                receive,
                limits.ws_max_message_bytes,
                limits.ws_idle_timeout_ms / 1000,
            )
            nursery.cancel_scope.cancel()
    finally:
        subscriber.close()


async def _read_loop(
    connection: _Connection, receive: Callable, max_bytes: int, idle_s: float = math.inf
) -> None:
    while True:
        # Only a connection without subscriptions can be idle: a subscriber may stay silent.
        deadline = idle_s if not connection.subscriber.queries else math.inf
        message = None
        with trio.move_on_after(deadline):
            message = await receive()
        if message is None:
            count_refusal("ws_idle")
            await connection.close(CLOSE_IDLE, f"idle for {idle_s:g} s with no subscription")
            return
        kind = message["type"]
        if kind == "websocket.disconnect":
            return
        if kind != "websocket.receive":
            continue
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                await connection.send_text(_error(BadRequest(PARSE_ERROR, "Parse error")))
                continue
        if len(text) > max_bytes:
            await connection.close(CLOSE_TOO_BIG, f"message larger than {max_bytes} bytes")
            return
        await connection.on_message(text)
