"""Serving an ASGI application with hypercorn's trio worker: the RPC and the metrics listeners
share it."""

from __future__ import annotations

import logging
import ssl
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

log = logging.getLogger("khazana.http")


async def serve_asgi(
    app: Any,
    listen: str,
    *,
    name: str,
    max_ws_message: int | None = None,
    tls_cert: str = "",
    tls_key: str = "",
    tls_client_ca: str = "",
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` with hypercorn's trio worker on `listen` ("host:port", "[v6]:port");
    reports the bound port (an int) through `task_status`, so port 0 works.

    TLS when `tls_cert` and `tls_key` (PEM files) are given; `tls_client_ca` (PEM) then also
    requires a client certificate signed by it (mutual TLS)."""
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
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn_serve, app, config))
        port = int(binds[0].rsplit(":", 1)[1])
        log.info("%s listening on %s", name, binds[0])
        task_status.started(port)
