"""Errors of the peer transport, with stable numeric codes.

Two kinds, following h11 (see STYLE.md):

* `PeerProtocolError` -- the remote misbehaved: bad MAC, oversize or truncated frame,
  garbage, a handshake that authenticates the wrong chain or an unknown key. The caller
  closes that one connection (and may penalise the peer); the node never crashes from it.
* `ConnectionClosed` -- the remote went away cleanly (EOF at a message boundary) or the
  socket broke. Nobody misbehaved; the caller forgets the connection and may reconnect.

Anything else raised from this package is our own bug and should crash loudly.

The codes live in the 5xx range, next to the ledger's 1xx-4xx codes in `ledger/codes.py`
(which this package may not edit); they are part of the operator-visible contract (logs,
`net_info`), so never renumber one, only append.
"""

from __future__ import annotations

from enum import IntEnum

from consensus.errors import RemoteProtocolError


class PeerCode(IntEnum):
    FRAME_TOO_LARGE = 500  # a length prefix above the Noise limit of 65535 bytes
    TRUNCATED_FRAME = 501  # EOF inside a frame or inside a chunked message
    BAD_MAC = 502  # authentication of a Noise message failed (tampering, garbage)
    MALFORMED_FRAME = 503  # a decrypted frame that breaks the framing rules
    MESSAGE_TOO_LARGE = 504  # reassembled application message above the configured limit
    BAD_HANDSHAKE = 505  # a handshake message or payload of the wrong shape
    BAD_IDENTITY_SIGNATURE = 506  # the Ed25519 signature over the Noise static key is invalid
    WRONG_CHAIN = 507  # the remote is on another chain id
    UNKNOWN_PEER = 508  # the remote's Ed25519 key is not allowed (not in genesis, banned, us)
    HANDSHAKE_TIMEOUT = 509  # the handshake did not finish before its deadline
    BAD_KEY = 510  # an X25519 public key that yields no shared secret (low order point)
    NONCE_EXHAUSTED = 511  # 2**64-1 messages on one key: the connection must end
    FRAME_TIMEOUT = 512  # a frame began but its remaining bytes did not come in time


class PeerProtocolError(RemoteProtocolError):
    """The remote broke the protocol: close this connection, never crash the node."""

    def __init__(self, code: PeerCode, message: str) -> None:
        super().__init__(f"{code.name} ({int(code)}): {message}")
        self.code = code
        self.message = message


class ConnectionClosed(Exception):
    """The connection ended without anyone breaking the protocol (EOF, broken socket)."""
