"""Authenticated, encrypted peer links: Noise XX handshake bound to Ed25519 identities,
length-prefixed encrypted frames, and the `PeerManager` that dials, accepts and fans out.

See `docs/P2P.md` for the wire format and the policies (limits, backoff, penalties).
"""
