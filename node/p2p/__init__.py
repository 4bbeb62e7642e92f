"""Authenticated, encrypted peer links: Noise XX handshake bound to Ed25519 identities,
length-prefixed encrypted frames, and the `PeerManager` that dials, accepts and fans out.

Modules: `noise` (the sans-IO Noise state machine), `connection` (handshake, frames,
`PeerConnection`), `admission` (`InboundGate`: allowlist, pending pools, per-IP caps,
eviction), `manager` (`PeerManager`), `errors` (codes and exceptions).
See `docs/P2P.md` for the wire format and the policies (limits, backoff, penalties).
"""

from node.p2p.connection import (
    IDENTITY_TAG,
    PeerConnection,
    handshake_initiator,
    handshake_responder,
)
from node.p2p.errors import ConnectionClosed, PeerCode, PeerProtocolError
from node.p2p.manager import (
    PeerAddress,
    PeerManager,
    PeerManagerConfig,
    PeerStatus,
    backoff_delay_ms,
    tcp_connect,
)

__all__ = [
    "IDENTITY_TAG",
    "ConnectionClosed",
    "PeerAddress",
    "PeerCode",
    "PeerConnection",
    "PeerManager",
    "PeerManagerConfig",
    "PeerProtocolError",
    "PeerStatus",
    "backoff_delay_ms",
    "handshake_initiator",
    "handshake_responder",
    "tcp_connect",
]
