"""`Guard`: the ASGI middleware in front of the RPC app that turns strangers away cheaply.

What it owns, checked in this order before the app sees a request (cheap checks first):

    Host        the `Host` header must name this node (`[rpc] allowed_hosts`; by default the
                listen address and localhost / 127.0.0.1 / [::1], at the port the request came
                in on; on a wildcard listen address any IP literal too, since DNS rebinding
                needs a name). Anything else: HTTP 403 (a WebSocket handshake: 403 too). This is
                what stops a web page the operator visits from reading the node through a DNS
                name rebound to 127.0.0.1. "*" turns the check off (behind a proxy that checks).
    Content-Type  a POST must say `application/json` (parameters allowed): HTTP 415 otherwise.
                A browser sends a cross-site POST without a CORS preflight only as a "simple
                request" (text/plain, form encodings): those never reach a method.
    per IP      at most `max_requests_per_ip` HTTP requests in flight and
                `ws_max_connections_per_ip` WebSocket connections from one client address
                (HTTP 429 with a JSON-RPC error / WebSocket close 1013), so one address cannot
                take every slot of `max_connections` / `ws_max_connections`.

Every refusal is counted by reason (`khazana_rpc_refusals_total{reason}`, node/metrics.py)
through `on_refusal`; the guard also hands that counter to the layers below it for the
connection (node/rpc/budget.py `REFUSALS`: answer budgets, WebSocket idle and slow clients).
A missing Host header (HTTP/1.0) is let through: browsers always send one.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

from node.rpc.budget import REFUSALS, hold_answers, release_answers
from node.rpc.errors import SERVER_LIMIT, RpcError, error_response

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")
CLOSE_TRY_AGAIN = 1013


def split_host(value: str) -> tuple[str, int | None]:
    """("name", port) of a Host header or an allowed_hosts entry; IPv6 without brackets;
    port None when absent (and -1 when it is not a number)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
    elif value.count(":") == 1:
        name, _, port_text = value.partition(":")
    else:
        name, port_text = value, None
    if port_text is None:
        return name, None
    # ASCII digits only ("²".isdigit() is true), and no more than a port has.
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    return name, int(port_text) if digits else -1


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostAllowlist:
    """Which Host headers name this node (see the module docstring)."""

    def __init__(self, listen: str, allowed: tuple[str, ...]) -> None:
        self.any = "*" in allowed
        listen_name, _ = split_host(listen)
        self.any_ip = listen_name in WILDCARDS
        # Names answered at the port the request came in on; exact (name, port) pairs.
        self.names = {listen_name, *LOCAL_NAMES}
        self.pairs: set[tuple[str, int]] = set()
        if allowed:
            self.names = set(LOCAL_NAMES)
            for entry in allowed:
                name, port = split_host(entry)
                if port is None:
                    self.names.add(name)
                else:
                    self.pairs.add((name, port))

    def allows(self, host: str | None, server_port: int | None) -> bool:
        if self.any or host is None:
            return True
        name, port = split_host(host)
        if port is not None and (name, port) in self.pairs:
            return True
        # A browser names the port whenever it is not the scheme's default, so a Host
        # without one cannot come from a page that reached us at another port.
        if port is not None and server_port is not None and port != server_port:
            return False
        return name in self.names or (self.any_ip and _is_ip(name))


def _header(scope: dict, wanted: bytes) -> str | None:
    for header, value in scope.get("headers", ()):
        if header.lower() == wanted:
            return value.decode("latin-1")
    return None


def is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class Guard:
    """ASGI middleware: Host allowlist, Content-Type, per-IP caps, then `app`."""

    def __init__(
        self,
        app: Callable,
        limits: Any,  # node.rpc.limits.RpcLimits
        on_refusal: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.hosts = HostAllowlist(limits.listen, tuple(limits.allowed_hosts))
        self._on_refusal = on_refusal
        self.http_per_ip: dict[str, int] = {}  # requests in flight per client address
        self.ws_per_ip: dict[str, int] = {}  # open WebSocket connections per client address

    def refused(self, reason: str) -> None:
        if self._on_refusal is not None:
            self._on_refusal(reason)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = REFUSALS.set(self.refused)  # this connection's task and the tasks it starts
        try:
            await self._guarded(kind, scope, receive, send)
        finally:
            REFUSALS.reset(token)

    async def _guarded(self, kind: str, scope: dict, receive: Callable, send: Callable) -> None:
        server = scope.get("server")
        server_port = server[1] if server and len(server) > 1 else None
        if not self.hosts.allows(_header(scope, b"host"), server_port):
            self.refused("host")
            await _refuse(kind, receive, send, 403, "Host header not allowed", None)
            return
        if kind == "http" and scope["method"] == "POST":
            if not is_json(_header(scope, b"content-type")):
                self.refused("content_type")
                await _respond(send, 415, "Content-Type must be application/json")
                return
        client = scope.get("client")
        address = str(client[0]) if client else ""
        if kind == "http":
            counts, cap = self.http_per_ip, self.limits.max_requests_per_ip
        else:
            counts, cap = self.ws_per_ip, self.limits.ws_max_connections_per_ip
        if counts.get(address, 0) >= cap:
            self.refused("per_ip")
            await _refuse(
                kind, receive, send, 429, "Too many requests from your address", CLOSE_TRY_AGAIN
            )
            return
        counts[address] = counts.get(address, 0) + 1
        # An HTTP answer counts against `max_answer_bytes_in_flight` until it has been sent
        # (the app returns then), not only while it is built.
        held = hold_answers() if kind == "http" else None
        try:
            await self.app(scope, receive, send)
        finally:
            if held is not None:
                release_answers(*held)
            counts[address] -= 1
            if not counts[address]:
                del counts[address]  # the table holds only addresses with work in flight


async def _refuse(
    kind: str, receive: Callable, send: Callable, status: int, reason: str, ws_code: int | None
) -> None:
    if kind == "http":
        await _respond(send, status, reason)
        return
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    if ws_code is None:
        await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": ws_code, "reason": reason.lower()})


async def _respond(send: Callable, status: int, reason: str) -> None:
    """An HTTP refusal with a JSON-RPC error body (code -32000, `data` the reason)."""
    body = json.dumps(error_response(RpcError(SERVER_LIMIT, "Request refused", reason))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
