"""Serving an ASGI application with hypercorn's trio worker: the RPC and the metrics listeners
share it.

Slow clients (issue 13): hypercorn closes a connection idle between requests, or still sending
its headers, after `keep_alive_timeout`; the RPC app puts a deadline on a request body itself.
What hypercorn does not bound is a client that does not READ: it writes every frame with a
shielded `send_all`, so a WebSocket subscriber or an HTTP client that stops reading holds its
connection (and the app task waiting to send) for as long as it likes. With `send_timeout_ms`
each connection's stream gets a send deadline (`DeadlineStream`): a write not taken by the
client within it closes the socket, which ends the shielded write, the connection and the app
task -- a non-reading client is gone within `send_timeout_ms` and its slot is free again.

That needs hypercorn's TCP server built with our stream (`_serve_with_send_deadline`, the
plain-HTTP part of `hypercorn.trio.run.worker_serve`, without lifespan events: our apps have
nothing to start or stop); without `send_timeout_ms`, hypercorn's own `serve` is used.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

log = logging.getLogger("khazana.http")


class DeadlineStream(trio.abc.HalfCloseableStream):
    """A trio `SocketStream` whose `send_all` gives up after `timeout_s`: the socket is then
    closed and `BrokenResourceError` raised (hypercorn treats it as the client gone)."""

    def __init__(
        self, stream: trio.SocketStream, timeout_s: float, on_timeout: Callable[[], None]
    ) -> None:
        self.stream = stream
        self.socket = stream.socket  # hypercorn reads the peer's address from it
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # A deadline of its own: it fires even inside hypercorn's shielded scope.
        with trio.move_on_after(self.timeout_s) as scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            self.on_timeout()
            await self.stream.aclose()
            raise trio.BrokenResourceError("the client did not read within the send timeout")

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def answer_lifespan(receive: Callable, send: Callable) -> None:
    """The ASGI lifespan protocol for an app with nothing to start or stop: acknowledge
    startup and shutdown (hypercorn's trio worker waits for both)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_asgi(
    app: Any,
    listen: str,
    *,
    name: str,
    max_ws_message: int | None = None,
    tls_cert: str = "",
    tls_key: str = "",
    tls_client_ca: str = "",
    keep_alive_timeout_ms: int | None = None,
    send_timeout_ms: int | None = None,
    on_send_timeout: Callable[[], None] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` with hypercorn's trio worker on `listen` ("host:port", "[v6]:port");
    reports the bound port (an int) through `task_status`, so port 0 works.

    TLS when `tls_cert` and `tls_key` (PEM files) are given; `tls_client_ca` (PEM) then also
    requires a client certificate signed by it (mutual TLS).
    `keep_alive_timeout_ms`: an idle connection (or one still sending its request headers) is
    closed after it. `send_timeout_ms`: a client that does not take what we send within it is
    disconnected (`on_send_timeout` is called for each)."""
    config = HypercornConfig()
    config.bind = [listen]
    if tls_cert:
        config.certfile = tls_cert
        config.keyfile = tls_key
        if tls_client_ca:
            config.ca_certs = tls_client_ca
            config.verify_mode = ssl.CERT_REQUIRED
    config.accesslog = None
    config.errorlog = logging.getLogger(f"khazana.{name}.http")
    if max_ws_message is not None:
        config.websocket_max_message_size = max_ws_message
    if keep_alive_timeout_ms is not None:
        config.keep_alive_timeout = keep_alive_timeout_ms / 1000
    async with trio.open_nursery() as nursery:
        if send_timeout_ms is None:
            binds = await nursery.start(partial(hypercorn_serve, app, config))
        else:
            binds = await nursery.start(
                _serve_with_send_deadline,
                app,
                config,
                send_timeout_ms / 1000,
                on_send_timeout or (lambda: None),
            )
        port = int(binds[0].rsplit(":", 1)[1])
        log.info("%s listening on %s", name, binds[0])
        task_status.started(port)


async def _serve_with_send_deadline(
    app: Any,
    config: HypercornConfig,
    timeout_s: float,
    on_timeout: Callable[[], None],
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    sockets = config.create_sockets()
    listeners = []
    binds = []
    # TLS (hypercorn puts the sockets of a config with a certificate among the secure ones):
    # the TLS stream sits on top of the deadline stream, so the deadline bounds the bytes on
    # the wire and hypercorn still sees an `SSLStream` (it asks it for ALPN and the socket).
    ssl_context = config.create_ssl_context() if sockets.secure_sockets else None
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        scheme = "https" if sock in sockets.secure_sockets else "http"
        binds.append(f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}")
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)

    async def connection(stream: trio.SocketStream) -> None:
        guarded: trio.abc.Stream = DeadlineStream(stream, timeout_s, on_timeout)
        if ssl_context is not None:
            guarded = trio.SSLStream(guarded, ssl_context, server_side=True, https_compatible=True)
        await TCPServer(wrapped, config, context, ConnectionState({}), guarded).run()

    async with trio.open_nursery() as nursery:
        task_status.started(binds)
        await trio.serve_listeners(connection, listeners, handler_nursery=nursery)
