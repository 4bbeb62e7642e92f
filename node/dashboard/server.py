"""`khazana dashboard`: the supervision dashboard's own small web server.

What it owns: serving the page (static files in `static/`, Chart.js vendored there: this
network reaches no CDN) and `GET /api/overview` (node/dashboard/figures.py) to the
institutions' staff, and who may load them.

Why a process of its own and not a page served by the node: the page's reads are
institution-only (docs/RPC.md "Who may read what"), so something must sign them with an
institution's key. A browser holding that key would put it in every staff member's browser;
here the key stays in this process (`--key`, encrypted files accepted), which signs its RPC
calls like any SDK client, and the node needs no new surface.

Who may load it: whoever holds the access token printed at start (as Jupyter does), or
written to `--token-file`. `/?token=T` sets it as an HttpOnly, SameSite=Strict cookie and
redirects to `/` (the token leaves the address bar and the history); every other path needs
the cookie, compared in constant time. It listens on 127.0.0.1 by default; a `Host` header
other than the listen address or localhost is refused (DNS rebinding), pages may not be
framed, and the Content-Security-Policy admits only this origin's scripts.

Load on the node: one overview is gathered at most every `REFRESH_S` whatever the number of
viewers (a shared, bounded cache); each of its calls is bounded by the node's own paging.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trio

from node.asgi import answer_lifespan, serve_asgi
from node.dashboard.figures import HeightHistory, overview

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "kzdash"
REFRESH_S = 2.0  # at most one overview from the node per this many seconds
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Dashboard:
    """The ASGI application: static page, `/api/overview`, token and Host checks."""

    def __init__(self, call, token: str, allowed_hosts: set[str]) -> None:
        self._call = call  # an SDK `call(method, params)` signed with the institution's key
        self._token = token.encode()
        self.allowed_hosts = allowed_hosts
        self._history = HeightHistory()
        self._cached: bytes | None = None
        self._cached_at = -REFRESH_S
        self._lock = trio.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)  # nothing to start or stop: acknowledge both
            return
        if scope["type"] != "http":
            return  # no WebSocket
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.allowed_hosts:
            await _answer(send, 403, b"text/plain", b"foreign Host header refused\n")
            return
        if scope["method"] != "GET":
            await _answer(send, 405, b"text/plain", b"GET only\n")
            return
        path = scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if path == "/" and "token" in query:
            if not self._is_token(query["token"][0].encode()):
                await _answer(send, 401, b"text/plain", b"wrong token\n")
                return
            cookie = b"%s=%s; HttpOnly; SameSite=Strict; Path=/" % (COOKIE.encode(), self._token)
            await _answer(
                send, 303, b"text/plain", b"", [(b"location", b"/"), (b"set-cookie", cookie)]
            )
            return
        if not self._is_token(_cookie(headers.get(b"cookie", b""), COOKIE)):
            await _answer(
                send,
                401,
                b"text/plain",
                b"open the address khazana dashboard printed (it carries the access token)\n",
            )
            return
        if path == "/api/overview":
            await _answer(send, 200, b"application/json", await self._overview(), no_store=True)
            return
        await self._static(send, "index.html" if path == "/" else path.removeprefix("/static/"))

    def _is_token(self, given: bytes) -> bool:
        return hmac.compare_digest(given, self._token)

    async def _overview(self) -> bytes:
        async with self._lock:  # one gathering at a time; viewers share its result
            if self._cached is None or trio.current_time() - self._cached_at >= REFRESH_S:
                document = await overview(self._call, self._history)
                self._cached = json.dumps(document, separators=(",", ":")).encode()
                self._cached_at = trio.current_time()
            return self._cached

    async def _static(self, send: Any, name: str) -> None:
        target = (STATIC / name).resolve()
        if STATIC not in target.parents or not target.is_file():
            await _answer(send, 404, b"text/plain", b"not found\n")
            return
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        await _answer(send, 200, kind.encode(), target.read_bytes())


def _cookie(header: bytes, name: str) -> bytes:
    for part in header.split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name.encode():
            return value
    return b""


async def _answer(
    send: Any,
    status: int,
    content_type: bytes,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    no_store: bool = False,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += SECURITY_HEADERS + (extra or [])
    if no_store:
        headers.append((b"cache-control", b"no-store"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def allowed_hosts(host: str, port: int) -> set[str]:
    names = {host, "localhost", "127.0.0.1", "[::1]"}
    return {f"{name}:{port}" for name in names} | {name for name in names if port == 80}


async def run_dashboard(call, listen_host: str, listen_port: int, token: str, say) -> None:
    """Serve until cancelled; `say(url)` gets the address to open (with the token) once
    listening (port 0 picks a free one)."""
    dashboard = Dashboard(call, token, set())  # no Host admitted until the port is known
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_asgi(
                dashboard, f"{listen_host}:{listen_port}", name="dashboard", task_status=task_status
            )
        )
        dashboard.allowed_hosts.update(allowed_hosts(listen_host, port))
        say(f"http://{listen_host}:{port}/?token={token}")
