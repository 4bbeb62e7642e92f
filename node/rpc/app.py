"""The node's JSON-RPC 2.0 interface over HTTP: a hand-written ASGI app served by hypercorn.

What it owns: the HTTP surface of one node (`POST /` for JSON-RPC, the GET form of the read
methods -- `GET /status`, `GET /block?height=5`, `GET /health`, answered in a JSON-RPC envelope
with id -1 as CometBFT does --, CORS, the WebSocket handshake at `/websocket`), the HTTP limits, and serving (`serve_rpc`). The
JSON-RPC rules are node/rpc/framing.py's, the methods node/rpc/methods.py's, and everything is
asked of the node through the `NodeView` protocol (node/rpc/nodeview.py); reads are of
committed state only, never a pending block. The package's modules: node/rpc/__init__.py.

A rejected transaction is NOT an error: `broadcast_tx_sync` and `check_tx` return a result with
`code != 0`, `codespace` "khazana" and a human `log` (codes from `ledger.codes.Code`); errors
are node/rpc/errors.py's.

Limits (`RpcLimits`, the `[rpc]` section of config.toml): body size (larger -> HTTP 413 with
a JSON-RPC error body), calls per batch, `max_connections` counted as HTTP requests being
handled at once once their body is in (more -> HTTP 503 at once), and a deadline per HTTP
request (a body not received by then -> HTTP 408; calls not finished by then answer -32000).
Answer byte budgets and the heavy-read gate are node/rpc/budget.py's; the Host allowlist,
Content-Type and per-IP caps node/rpc/guard.py's, a middleware `serve_rpc` puts in front. `broadcast_tx_commit` waits up to `commit_timeout_ms` on top
of that deadline and answers -32002 "timed out waiting for commit" (with the hash in `data`).

Verifiable reads (`account` / `tx` with `prove: true`): the result gains a `proof` object
holding the committed header (base64 of its canonical bytes) and its commit certificate
(base64 of the consensus wire encoding) and, for an account, the state proofs of the account
record and of each listed balance against that header's app_hash (base64 of
`Proof.to_bytes()`, with the proven record bytes); for a tx, the Merkle audit path of its raw
bytes to the header's `txs_hash` (`ledger.block.tx_inclusion_proof`). node/verify.py checks
them with no network.

Authentication (node/rpc/auth.py) and scopes (node/rpc/scopes.py): each HTTP request's
credentials (`Authorization: Khazana-Ed25519 ...`) are checked once, before any call of it
runs (bad ones: HTTP 401 and a -32004 `unauthorized` error); the verified key is the
`scopes.caller` of every call in the body. A WebSocket's credentials come with its handshake
(the header, or `?auth=` for browsers) and hold for the connection; what they may read is
read again from the chain for every call and every notification.

CORS: `cors_origins` ("*" or exact origins) adds `Access-Control-Allow-Origin` to answers to
an allowed `Origin` and answers preflight `OPTIONS`; a WebSocket handshake from a browser
origin not allowed is refused (HTTP 403).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import trio

from node.asgi import answer_lifespan, serve_asgi
from node.rpc.auth import (
    QUERY_PARAM,
    Authenticator,
    AuthError,
    ReplayCacheFull,
    token_from_header,
)
from node.rpc.budget import CallGuard
from node.rpc.errors import INTERNAL_ERROR, INVALID_REQUEST, SERVER_LIMIT, RpcError, error_response
from node.rpc.framing import JsonRpc
from node.rpc.guard import Guard
from node.rpc.limits import RpcLimits
from node.rpc.methods import RpcMethods
from node.rpc.nodeview import NodeView
from node.rpc.params import query_params
from node.rpc.scopes import Scopes, caller
from node.rpc.websocket import serve_websocket

log = logging.getLogger("khazana.rpc")

GET_ID = -1  # the id of a GET form's answer (CometBFT answers its URI calls with id -1)


class RpcApp:
    """The ASGI application: routes HTTP, applies the limits, runs JSON-RPC calls."""

    def __init__(self, api: NodeView, limits: RpcLimits | None = None) -> None:
        self.limits = limits or RpcLimits()
        self.api = api
        self.scopes, self.auth = _access(api, self.limits)
        self.methods = RpcMethods(api, self.limits, self.scopes)
        self.jsonrpc = JsonRpc(
            self.methods.table,
            self.methods.txs.broadcast_tx_sync_many,
            max_batch=self.limits.max_batch,
            request_timeout_ms=self.limits.request_timeout_ms,
            guard=CallGuard.of(self.limits),
        )
        self._in_flight = trio.CapacityLimiter(self.limits.max_connections)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await answer_lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _websocket(self, scope: dict, receive: Callable, send: Callable) -> None:
        origin = _origin(scope)
        if scope.get("path") != "/websocket" or (
            origin is not None and self._allowed_origin(origin) is None
        ):
            # Closing during the handshake answers HTTP 403.
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        try:
            identity = self._authenticate(scope, b"", query=True)
        except RpcError:
            await receive()
            await send({"type": "websocket.close", "code": 1008})  # HTTP 403
            return
        caller.set(identity)  # this task's, and its children's (the connection's tasks)
        await serve_websocket(
            scope,
            receive,
            send,
            bus=getattr(self.api, "events", None),
            handle_body=self.jsonrpc.handle_body,
            limits=self.limits,
            scopes=self.scopes,
            handle_batch=self.jsonrpc.handle_batch_with,
        )

    def _authenticate(self, scope: dict, body: bytes, query: bool = False) -> bytes | None:
        """The key that signed this request, None without credentials; bad ones raise the
        RpcError to answer (`unauthorized`, or busy when the replay cache is full)."""
        token = None
        for header, value in scope.get("headers", ()):
            if header.lower() == b"authorization":
                token = value.decode("latin-1")
                break
        try:
            if token is not None:
                token = token_from_header(token)
            elif query:
                token = _query_token(scope.get("query_string", b""))
            if token is None:
                return None
            return self.auth.verify(token, scope.get("method", "GET"), signed_path(scope), body)
        except AuthError as refused:
            raise self.scopes.no_credentials(
                refused.rule, refused.detail, time_ms=self.auth.clock_ms()
            ) from None
        except ReplayCacheFull as full:
            raise RpcError(SERVER_LIMIT, "Server busy", f"authentication: {full}") from None

    def _allowed_origin(self, origin: str) -> str | None:
        """The `Access-Control-Allow-Origin` value for `origin`, None if not allowed."""
        origins = self.limits.cors_origins
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        method, path = scope["method"], scope["path"]
        origin = _origin(scope)
        allow_origin = None if origin is None else self._allowed_origin(origin)
        cors: list[tuple[bytes, bytes]] = []
        if allow_origin is not None:
            cors = [(b"access-control-allow-origin", allow_origin.encode()), (b"vary", b"origin")]
        send = _with_headers(send, cors)
        get_method = self._get_method(path)
        if path != "/" and get_method is None:
            await _respond(send, 404, b"not found\n", b"text/plain; charset=utf-8")
            return
        if method == "OPTIONS":
            # CORS preflight: the allowed origin gets the methods and headers it may use;
            # any other origin gets no CORS headers, so its browser refuses the call.
            if allow_origin is not None:
                send = _with_headers(
                    send,
                    [
                        (b"access-control-allow-methods", b"POST, GET, OPTIONS"),
                        (b"access-control-allow-headers", b"content-type, authorization"),
                        (b"access-control-max-age", b"600"),
                    ],
                )
            await _respond(send, 204, b"", None, allow=b"POST, GET, OPTIONS")
            return
        if get_method is not None:
            if method not in ("GET", "HEAD"):
                await _respond(
                    send,
                    405,
                    b"GET /<method>?param=value\n",
                    b"text/plain; charset=utf-8",
                    allow=b"GET",
                )
                return
            await self._get(scope, send, get_method)
            return
        if method != "POST":
            await _respond(
                send, 405, b"JSON-RPC: POST to /\n", b"text/plain; charset=utf-8", allow=b"POST"
            )
            return
        # A client dribbling its body (slowloris) must not hold a slot: the body is read
        # BEFORE a `max_connections` slot is taken (what reads bodies at once is bounded per
        # client address by node/rpc/guard.py), within the request's time budget.
        body = b""
        with trio.move_on_after(self.limits.request_timeout_ms / 1000) as reading:
            body = await _read_body(scope, receive, self.limits.max_body_bytes)
        if reading.cancelled_caught:
            slow = RpcError(SERVER_LIMIT, "Request timed out", "body not received in time")
            await _respond_json(send, 408, error_response(slow))
            return
        if body is None:
            too_large = RpcError(
                INVALID_REQUEST,
                "Invalid Request",
                f"body larger than {self.limits.max_body_bytes} bytes",
            )
            await _respond_json(send, 413, error_response(too_large))
            return
        try:
            identity = self._authenticate(scope, body)
        except RpcError as refused:
            await _respond_json(send, 401, error_response(refused))
            return
        await self._answer(send, identity, body)

    def _get_method(self, path: str) -> str | None:
        """The method a GET path names (`/status`, `/health`), None if none may be."""
        name = path[1:]
        return name if name in self.methods.get_methods else None

    async def _get(self, scope: dict, send: Callable, name: str) -> None:
        """CometBFT's GET form: `GET /block?height=5` is the call {"method": "block",
        "params": {"height": "5"}, "id": -1}, answered in a JSON-RPC envelope. Everything a
        POST passes applies to it: the guard in front (Host, per-IP caps), the credentials
        (signed over "GET <path>?<query>" and an empty body), the method's scope rule, the
        answer budgets and the requests-in-flight cap."""
        try:
            params = query_params(scope.get("query_string", b""), self.limits.max_body_bytes)
        except RpcError as bad:
            await _respond_json(send, 200, error_response(bad, GET_ID))
            return
        try:
            identity = self._authenticate(scope, b"")
        except RpcError as refused:
            await _respond_json(send, 401, error_response(refused, GET_ID))
            return
        request = {"jsonrpc": "2.0", "id": GET_ID, "method": name, "params": params}
        await self._answer(send, identity, json.dumps(request).encode())

    async def _answer(self, send: Callable, identity: bytes | None, body: bytes) -> None:
        """Run the JSON-RPC `body` as `identity` within the requests-in-flight cap."""
        try:
            self._in_flight.acquire_nowait()
        except trio.WouldBlock:
            busy = RpcError(SERVER_LIMIT, "Server busy", "too many requests in flight")
            await _respond_json(send, 503, error_response(busy))
            return
        try:
            token = caller.set(identity)
            try:
                answer = await self.jsonrpc.handle_body(body)
            finally:
                caller.reset(token)
            if answer is None:
                await _respond(send, 204, b"", None)
            else:
                await _respond_json(send, 200, answer)
        finally:
            self._in_flight.release()


def _access(api: NodeView, limits: RpcLimits) -> tuple[Scopes, Authenticator]:
    """The node's read rules and its credential checker, bound to its chain and node ids."""
    chain_id = str(api.genesis.get("chain_id", ""))
    node_id = str(getattr(api, "node_id", ""))
    bus = getattr(api, "events", None)
    scopes = Scopes(
        api.store,
        generation=None if bus is None else (lambda: bus.published),
        changed_since=getattr(bus, "changed_since", None),
        anonymous=limits.anonymous,
        chain_id=chain_id,
        node_id=node_id,
    )
    auth = Authenticator(
        chain_id,
        node_id,
        window_ms=limits.auth_window_ms,
        cache_bytes=limits.auth_replay_cache_bytes,
    )
    return scopes, auth


def signed_path(scope: dict) -> str:
    """The <path> a credential signs: the path, and for a plain HTTP request its query string
    as sent ("/block?height=5"), so a signed GET cannot be replayed with other params. (A
    WebSocket handshake signs its path alone: its query carries the credential itself.)"""
    query = scope.get("query_string", b"")
    if scope["type"] == "http" and query:
        return f"{scope['path']}?{query.decode('latin-1')}"
    return scope["path"]


def _query_token(query_string: bytes) -> str | None:
    """The `auth=` parameter of a WebSocket URL (browsers cannot set its headers)."""
    for part in query_string.decode("latin-1").split("&"):
        name, _, value = part.partition("=")
        if name == QUERY_PARAM:
            return value
    return None


def _origin(scope: dict) -> str | None:
    for header, value in scope.get("headers", ()):
        if header.lower() == b"origin":
            return value.decode("latin-1")
    return None


def _with_headers(send: Callable, extra: list[tuple[bytes, bytes]]) -> Callable:
    """`send` adding `extra` headers to the response start (CORS)."""
    if not extra:
        return send

    async def sender(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return sender


async def _read_body(scope: dict, receive: Callable, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes."""
    for header, value in scope.get("headers", ()):
        if header.lower() == b"content-length":
            try:
                if int(value) > limit:
                    return None
            except ValueError:
                pass
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(
    send: Callable, status: int, body: bytes, content_type: bytes | None, allow: bytes = b""
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if allow:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Callable, status: int, obj: Any) -> None:
    try:
        # ASCII output: a lone surrogate a client smuggled in as a JSON escape (and that an
        # error message echoes) goes back escaped instead of failing to encode.
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError):
        # A result the node handed over that is not JSON (bytes, a float NaN...): a bug of
        # ours, answered like any other internal error.
        log.exception("rpc result is not JSON")
        text = json.dumps(error_response(RpcError(INTERNAL_ERROR, "Internal error")))
    body = text.encode("utf-8")
    await _respond(send, status, body, b"application/json")


# --------------------------------------------------------------------------- serving


async def serve_rpc(
    api: NodeView,
    config: Any,
    metrics: Any = None,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve JSON-RPC for the node behind `api` until cancelled.

    `config`: `RpcLimits`, or the node's config (its `rpc` section is read by attribute name,
    see `RpcLimits.from_config`). `metrics`: a `node.metrics.Metrics` counting refusals, or
    None. Reports the bound port through `task_status`. The app is served behind the guard
    (node/rpc/guard.py: Host allowlist, Content-Type, per-IP caps) with hypercorn's idle
    timeout and a send deadline for clients that do not read (node/asgi.py).
    """
    limits = RpcLimits.from_config(config)
    on_refusal = None if metrics is None else metrics.rpc_refused
    await serve_asgi(
        Guard(RpcApp(api, limits), limits, on_refusal),
        limits.listen,
        name="rpc",
        # hypercorn refuses larger frames itself; ours is checked again per message.
        max_ws_message=limits.ws_max_message_bytes + 1024,
        tls_cert=limits.tls_cert,
        tls_key=limits.tls_key,
        tls_client_ca=limits.tls_client_ca,
        keep_alive_timeout_ms=limits.keep_alive_timeout_ms,
        send_timeout_ms=limits.send_timeout_ms,
        on_send_timeout=None if on_refusal is None else lambda: on_refusal("send_timeout"),
        task_status=task_status,
    )
