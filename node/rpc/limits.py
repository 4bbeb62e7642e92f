"""`RpcLimits`: the RPC listener's address and limits as the server reads them.

The names are `node.config.RpcConfig`'s (the `[rpc]` section of config.toml); docs/OPERATIONS.md
lists each with its default. `max_connections` counts HTTP requests being handled at once
(more -> HTTP 503 at once: hypercorn does not expose a connection cap, idle keep-alive
connections cost little and it is the requests in flight that cost store reads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RpcLimits:
    """The RPC listener's address and limits; the same names as `node.config.RpcConfig`."""

    listen: str = "127.0.0.1:26657"
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 32
    # Requests handled at once; more get HTTP 503 (see the module docstring).
    max_connections: int = 256
    request_timeout_ms: int = 10_000
    commit_timeout_ms: int = 10_000  # broadcast_tx_commit's wait for inclusion
    cors_origins: tuple[str, ...] = ()  # "*" or exact origins ("https://app.example")
    ws_max_connections: int = 64
    ws_max_subscriptions: int = 16  # per connection
    ws_queue_size: int = 256  # notifications waiting unsent before the client is dropped
    ws_max_message_bytes: int = 64 * 1024
    # Authentication and scopes (node/rpc/auth.py, node/rpc/scopes.py).
    anonymous: str = "public"  # "public": the anonymous row; "none": health only
    auth_window_ms: int = 30_000  # a credential's timestamp may be this far from our clock
    auth_replay_cache_bytes: int = 32 * 1024 * 1024  # nonces remembered inside the window
    # TLS (hypercorn): both files or neither; with tls_client_ca, clients need a certificate.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Hostile-client defences (node/rpc/guard.py, node/rpc/budget.py, docs/OPERATIONS.md).
    max_answer_bytes: int = 4 * 1024 * 1024  # one call's answer (JSON bytes)
    max_batch_answer_bytes: int = 8 * 1024 * 1024  # all the answers to one body
    # All answers built and not yet sent, every client together (more: -32000 Server busy).
    max_answer_bytes_in_flight: int = 64 * 1024 * 1024
    max_events_page: int = 1000  # `events` per_page at most
    max_page: int = 100  # `instruments` / `holders` limit at most
    max_heavy_reads: int = 4  # heavy reads (blocks, events, pages, proofs) running at once
    max_quotes: int = 2  # `quote` computations on worker threads at once
    max_requests_per_ip: int = 64  # HTTP requests in flight from one client address
    ws_max_connections_per_ip: int = 16
    keep_alive_timeout_ms: int = 5_000  # an idle HTTP connection (or unfinished headers)
    send_timeout_ms: int = 10_000  # a client that does not read what we send is cut off
    ws_idle_timeout_ms: int = 60_000  # a WebSocket with no subscription and no message
    # Host headers answered (DNS rebinding): () = the listen address and the localhost
    # names, with the port we listen on; "*" answers any.
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: object) -> RpcLimits:
        """The limits of a config object: an `RpcLimits`, a `node.config.RpcConfig`, or a
        `NodeConfig` holding one as `.rpc` (read by attribute name; missing ones default)."""
        if isinstance(config, RpcLimits):
            return config
        section = getattr(config, "rpc", config)
        defaults = cls()
        values = {
            name: getattr(section, name, getattr(defaults, name))
            for name in (
                "max_body_bytes",
                "max_batch",
                "max_connections",
                "request_timeout_ms",
                "commit_timeout_ms",
                "ws_max_connections",
                "ws_max_subscriptions",
                "ws_queue_size",
                "ws_max_message_bytes",
                "anonymous",
                "auth_window_ms",
                "auth_replay_cache_bytes",
                "tls_cert",
                "tls_key",
                "tls_client_ca",
                *GUARD_INTS,
            )
        }
        origins = tuple(getattr(section, "cors_origins", ()) or ())
        hosts = tuple(getattr(section, "allowed_hosts", ()) or ())
        home = getattr(config, "home", None)
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            # Relative paths in config.toml are the home folder's.
            value = str(values[name] or "")
            if value and home is not None and not os.path.isabs(value):
                value = os.path.join(str(home), value)
            values[name] = value
        return cls(
            listen=str(getattr(section, "listen", defaults.listen)),
            cors_origins=origins,
            allowed_hosts=hosts,
            **values,
        )


# The integer limits of the hostile-client defences, by name (read by `from_config`).
GUARD_INTS = (
    "max_answer_bytes",
    "max_batch_answer_bytes",
    "max_answer_bytes_in_flight",
    "max_events_page",
    "max_page",
    "max_heavy_reads",
    "max_quotes",
    "max_requests_per_ip",
    "ws_max_connections_per_ip",
    "keep_alive_timeout_ms",
    "send_timeout_ms",
    "ws_idle_timeout_ms",
)
