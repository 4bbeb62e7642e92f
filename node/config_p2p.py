"""The `[p2p]` section of config.toml: `P2PConfig` (where the node listens and is reached, its
persistent peers, the observers it accepts, the IP allowlist, and the limits the connection
admission of node/p2p/ enforces) and its check, `read_p2p`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from node.config_values import (
    MIB,
    NAME_PATTERN,
    ConfigError,
    HostPort,
    Reader,
    public_key_value,
)


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A persistent peer: the node dials `address` and expects the Ed25519 key `pub_key`."""

    name: str
    pub_key: bytes
    address: HostPort


@dataclass(frozen=True, slots=True)
class P2PConfig:
    listen: HostPort
    external_address: HostPort
    peers: tuple[PeerConfig, ...] = ()
    observers: tuple[bytes, ...] = ()
    """Ed25519 public keys of observers this node accepts links from (beyond genesis)."""
    handshake_timeout_ms: int = 5_000
    first_message_timeout_ms: int = 2_000
    """An accepted connection must deliver its first handshake message this soon
    (an honest node sends it at once); at most `handshake_timeout_ms`."""
    frame_timeout_ms: int = 30_000
    """A peer frame (at most 64 KiB) must be complete this long after its first byte."""
    connect_timeout_ms: int = 5_000
    backoff_base_ms: int = 250
    backoff_cap_ms: int = 30_000
    send_queue_size: int = 256
    max_message_bytes: int = 4 * MIB
    max_pending_handshakes: int = 32
    """Unfinished inbound handshakes from IPs that are not a configured peer's."""
    reserved_pending_handshakes: int = 16
    """Unfinished inbound handshakes from configured peers' IPs (strangers never use these)."""
    max_pending_per_ip: int = 8
    max_inbound_peers: int = 64
    """Inbound links of keys other than genesis validators and configured peers."""
    max_inbound_per_ip: int = 8
    allow_ips: tuple[str, ...] = ()
    """CIDR networks allowed to connect to the P2P port (normalised); empty: any address."""


# (name, minimum, maximum) of the section's integer fields; the default is the field's.
P2P_INTS = {
    "handshake_timeout_ms": (100, 600_000),
    "connect_timeout_ms": (100, 600_000),
    "backoff_base_ms": (1, 600_000),
    "backoff_cap_ms": (1, 3_600_000),
    "send_queue_size": (1, 1_000_000),
    "max_message_bytes": (64 * 1024, 64 * MIB),
    "first_message_timeout_ms": (100, 600_000),
    "frame_timeout_ms": (100, 600_000),
    "max_pending_handshakes": (1, 100_000),
    "reserved_pending_handshakes": (1, 100_000),
    "max_pending_per_ip": (1, 100_000),
    "max_inbound_peers": (1, 100_000),
    "max_inbound_per_ip": (1, 100_000),
}


def read_p2p(path: Path, table: object) -> P2PConfig:
    known = ["listen", "external_address", "peers", "observers", "allow_ips", *P2P_INTS]
    reader = Reader(path, "p2p", table, known)
    listen = reader.address("listen")
    external = reader.address("external_address", None)
    if external is None:
        if listen.is_wildcard:
            raise reader.error(
                "external_address",
                f"required when listening on the wildcard address {listen}: "
                "the host:port other nodes dial to reach this one",
            )
        external = listen
    elif external.is_wildcard:
        raise reader.error("external_address", f"{external} cannot be dialled by other nodes")
    ints = {
        name: reader.integer(name, P2PConfig.__dataclass_fields__[name].default, low, high)
        for name, (low, high) in P2P_INTS.items()
    }
    if ints["first_message_timeout_ms"] > ints["handshake_timeout_ms"]:
        raise reader.error("first_message_timeout_ms", "larger than p2p.handshake_timeout_ms")
    allow_ips = []
    for index, text in enumerate(reader.string_list("allow_ips")):
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ConfigError(
                path, f"p2p.allow_ips[{index}]", f"not a CIDR network: {exc}"
            ) from None
        allow_ips.append(str(network))
    observers = []
    for index, text in enumerate(reader.string_list("observers")):
        key = public_key_value(reader, f"p2p.observers[{index}]", text)
        if key in observers:
            raise ConfigError(path, f"p2p.observers[{index}]", f"{text} is listed twice")
        observers.append(key)
    peers_value = reader.take("peers", [])
    if not isinstance(peers_value, list):
        raise reader.error("peers", "must be an array of tables ([[p2p.peers]])")
    peers: list[PeerConfig] = []
    for index, entry in enumerate(peers_value):
        peer = _peer(path, f"p2p.peers[{index}]", entry)
        for earlier in peers:
            if peer.pub_key == earlier.pub_key or peer.name == earlier.name:
                raise ConfigError(
                    path, f"p2p.peers[{index}]", f"same name or key as peer {earlier.name!r}"
                )
        peers.append(peer)
    reader.finish()
    return P2PConfig(
        listen=listen,
        external_address=external,
        peers=tuple(peers),
        observers=tuple(observers),
        allow_ips=tuple(allow_ips),
        **ints,
    )


def _peer(path: Path, prefix: str, entry: object) -> PeerConfig:
    reader = Reader(path, prefix, entry, ["name", "pub_key", "address"])
    name = reader.text("name")
    if not NAME_PATTERN.fullmatch(name):
        raise reader.error("name", f"must be 1-64 of A-Z a-z 0-9 . _ - (not first), got {name!r}")
    pub_key = public_key_value(reader, reader.key("pub_key"), reader.take("pub_key"))
    address = reader.address("address")
    if address.is_wildcard:
        raise reader.error("address", f"{address} cannot be dialled")
    reader.finish()
    return PeerConfig(name=name, pub_key=pub_key, address=address)
