"""The `[rpc]` section of config.toml: `RpcConfig` (the JSON-RPC and WebSocket listener, its
limits against hostile clients, anonymous access, credentials and TLS) and its check,
`read_rpc`. node/rpc/limits.py says what each limit bounds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from node.config_values import MIB, ConfigError, HostPort, Reader


@dataclass(frozen=True, slots=True)
class RpcConfig:
    listen: HostPort
    max_body_bytes: int = MIB
    max_batch: int = 32
    max_connections: int = 256
    request_timeout_ms: int = 10_000
    cors_origins: tuple[str, ...] = ()
    commit_timeout_ms: int = 10_000
    """How long `broadcast_tx_commit` waits for inclusion (on top of the request deadline)."""
    ws_max_connections: int = 64
    ws_max_subscriptions: int = 16
    """Per WebSocket connection."""
    ws_queue_size: int = 256
    """Notifications waiting unsent before a slow WebSocket client is dropped (close 1008)."""
    ws_max_message_bytes: int = 64 * 1024
    """Largest message a WebSocket client may send (more: close 1009)."""
    anonymous: str = "public"
    """What a client without credentials reads: "public" (the anonymous row) or "none"."""
    auth_window_ms: int = 30_000
    """A credential's timestamp may be this far (either way) from the node's clock."""
    auth_replay_cache_bytes: int = 32 * MIB
    """Memory for the nonces of credentials accepted inside the window (full: busy)."""
    tls_cert: str = ""
    """PEM certificate (chain) of the RPC listener; relative to the home folder. With
    `tls_key`: the RPC speaks https:// and wss:// only."""
    tls_key: str = ""
    tls_client_ca: str = ""
    """PEM CA: clients must present a certificate it signed (mutual TLS)."""
    # Hostile-client defences: node/rpc/limits.py says what each bounds.
    max_answer_bytes: int = 4 * MIB
    max_batch_answer_bytes: int = 8 * MIB
    max_answer_bytes_in_flight: int = 64 * MIB
    max_events_page: int = 1000
    max_page: int = 100
    max_heavy_reads: int = 4
    max_quotes: int = 2  # `quote` computations at once (worker threads, ledger/quote.py)
    max_requests_per_ip: int = 64
    ws_max_connections_per_ip: int = 16
    keep_alive_timeout_ms: int = 5_000
    send_timeout_ms: int = 10_000
    ws_idle_timeout_ms: int = 60_000
    allowed_hosts: tuple[str, ...] = ()
    """Host headers answered; () = the listen address and localhost names; ["*"] = any."""

    @property
    def url(self) -> str:
        """The URL a client on this machine uses (a wildcard listen address -> loopback)."""
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.listen.dialable()}"


# (name, minimum, maximum) of the section's integer fields; the default is the field's.
RPC_INTS = {
    "max_body_bytes": (1024, 64 * MIB),
    "max_batch": (1, 10_000),
    "max_connections": (1, 100_000),
    "request_timeout_ms": (100, 3_600_000),
    "commit_timeout_ms": (100, 3_600_000),
    "ws_max_connections": (1, 100_000),
    "ws_max_subscriptions": (1, 10_000),
    "ws_queue_size": (1, 1_000_000),
    # Below 1 KiB even a subscribe call with an account and an instrument would not fit.
    "ws_max_message_bytes": (1024, 64 * MIB),
    "auth_window_ms": (1000, 3_600_000),
    "auth_replay_cache_bytes": (64 * 1024, 1 << 34),
    # Hostile-client defences. An answer budget below 64 KiB would refuse ordinary pages.
    "max_answer_bytes": (64 * 1024, 1024 * MIB),
    "max_batch_answer_bytes": (64 * 1024, 1024 * MIB),
    "max_answer_bytes_in_flight": (64 * 1024, 4096 * MIB),
    "max_events_page": (1, 1000),  # ledger.store.MAX_EVENTS_PAGE
    "max_page": (1, 1000),
    "max_heavy_reads": (1, 1024),
    "max_quotes": (1, 1024),
    "max_requests_per_ip": (1, 100_000),
    "ws_max_connections_per_ip": (1, 100_000),
    "keep_alive_timeout_ms": (100, 3_600_000),
    "send_timeout_ms": (100, 3_600_000),
    "ws_idle_timeout_ms": (1000, 86_400_000),
}
RPC_TLS = ("tls_cert", "tls_key", "tls_client_ca")


def read_rpc(path: Path, table: object) -> RpcConfig:
    reader = Reader(
        path,
        "rpc",
        table,
        ["listen", "cors_origins", "allowed_hosts", "anonymous", *RPC_TLS, *RPC_INTS],
    )
    listen = reader.address("listen")
    values = {
        name: reader.integer(name, RpcConfig.__dataclass_fields__[name].default, low, high)
        for name, (low, high) in RPC_INTS.items()
    }
    origins = reader.string_list("cors_origins")
    for index, origin in enumerate(origins):
        # An origin is "*" or scheme://host[:port], exactly what browsers send (no path).
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(
                path,
                f"rpc.cors_origins[{index}]",
                f"must be '*' or http(s)://host[:port], got {origin!r}",
            )
    hosts = reader.string_list("allowed_hosts")
    for index, host in enumerate(hosts):
        # A Host header value: "*", a name or IP, optionally with ":port" ("[v6]:port").
        if host != "*" and not re.fullmatch(
            r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:\d{1,5})?", host
        ):
            raise ConfigError(
                path,
                f"rpc.allowed_hosts[{index}]",
                f"must be '*' or host[:port] as clients send it, got {host!r}",
            )
    anonymous = reader.choice("anonymous", ("public", "none"), "public")
    tls = {name: reader.text(name, "") for name in RPC_TLS}
    if bool(tls["tls_cert"]) != bool(tls["tls_key"]):
        raise reader.error("tls_cert", "tls_cert and tls_key go together (both or neither)")
    if tls["tls_client_ca"] and not tls["tls_cert"]:
        raise reader.error("tls_client_ca", "client certificates need tls_cert and tls_key")
    for name, value in tls.items():
        if value and not (path.parent / value).is_file():  # relative: the home folder's
            raise reader.error(name, f"no such file: {path.parent / value}")
    reader.finish()
    return RpcConfig(
        listen=listen,
        cors_origins=tuple(origins),
        allowed_hosts=tuple(hosts),
        anonymous=anonymous,
        **tls,
        **values,
    )
