"""Client authentication on the RPC: who signed this request (docs/RPC.md, "Authentication").

What it owns: the wire scheme (the bytes a client signs, the credential token and its two
carriers -- the `Authorization` header and, for a browser's WebSocket, the `auth` query
parameter), checking a token (time window, replay, signature), and the bounded cache of nonces
seen. What a signer may then read is node/rpc/scopes.py's business; this module only says
*which key* signed, never what that key is allowed.

The scheme. A client signs, with the Ed25519 key it already signs transactions with, these
ASCII lines joined by "\\n" (no trailing newline):

    khazana-rpc-auth-v1
    <chain id>                    `status` node_info.network
    <node id>                     `status` node_info.id (64 lowercase hex): binds it to the node
    <HTTP method> <path>          "POST /" for JSON-RPC, "GET /websocket" for a subscription
    <timestamp>                   ms since the Unix epoch, decimal
    <nonce>                       32 lowercase hex (16 random bytes), never reused
    <SHA-256 of the body>         64 lowercase hex (of b"" for the WebSocket handshake)

and sends `Authorization: Khazana-Ed25519 <public key hex>.<timestamp>.<nonce>.<signature
hex>` (the token after the scheme name also travels as `?auth=<token>` on the WebSocket URL,
since browsers cannot set headers there). The node accepts a token whose timestamp is within
`auth_window_ms` of its own clock and whose (key, nonce) it has not seen; it remembers the
nonces it accepted until their timestamp leaves the window, in a cache bounded by
`auth_replay_cache_bytes` (full: the request is refused as busy, never let through). One
verification per HTTP request: a batch of calls costs one.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ledger.crypto import KeyPair, is_strict_public_key, verify_signature

DOMAIN = "khazana-rpc-auth-v1"
SCHEME = "Khazana-Ed25519"
QUERY_PARAM = "auth"
NONCE_BYTES = 16
# What one remembered nonce costs: its key tuple (32 + 16 bytes in two bytes objects), the
# dict slot, the deque entry and the expiry int, rounded up. The cache holds at most
# auth_replay_cache_bytes // ENTRY_BYTES nonces.
ENTRY_BYTES = 256
MAX_TOKEN_CHARS = 64 + 1 + 20 + 1 + 32 + 1 + 128
_TOKEN = re.compile(r"([0-9a-f]{64})\.(0|[1-9][0-9]{0,17})\.([0-9a-f]{32})\.([0-9a-f]{128})")

# Rules a refusal names (`data.rule` of a -32004 `unauthorized`).
BAD_TOKEN = "auth.malformed"
BAD_SIGNATURE = "auth.signature"
STALE = "auth.timestamp"
REPLAY = "auth.replay"


class AuthError(Exception):
    """A token that does not authenticate: `rule` names which check refused it."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail


class ReplayCacheFull(Exception):
    """Every slot of the nonce cache holds a nonce still inside the window."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def signing_bytes(
    chain_id: str, node_id: str, method: str, path: str, timestamp_ms: int, nonce: str, body: bytes
) -> bytes:
    """The exact bytes a client signs (see the module docstring)."""
    lines = (DOMAIN, chain_id, node_id, f"{method} {path}", str(timestamp_ms), nonce)
    return ("\n".join(lines) + "\n" + body_digest(body)).encode("utf-8")


def make_token(
    key: KeyPair,
    *,
    chain_id: str,
    node_id: str,
    method: str,
    path: str,
    body: bytes,
    timestamp_ms: int | None = None,
    nonce: str | None = None,
) -> str:
    """The credential token of one request (the header value without the scheme name)."""
    if timestamp_ms is None:
        timestamp_ms = time.time_ns() // 1_000_000
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES).hex()
    message = signing_bytes(chain_id, node_id, method, path, timestamp_ms, nonce, body)
    signature = key.sign(message)
    return f"{key.public_key.hex()}.{timestamp_ms}.{nonce}.{signature.hex()}"


def authorization_header(key: KeyPair, **request: object) -> str:
    """`Authorization` header value: the scheme name and `make_token(key, **request)`."""
    return f"{SCHEME} {make_token(key, **request)}"  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Token:
    public_key: bytes
    timestamp_ms: int
    nonce: str
    signature: bytes


def parse_token(text: str) -> Token:
    """A token's fields, strictly (lowercase hex, canonical decimal), or AuthError."""
    if len(text) > MAX_TOKEN_CHARS:
        raise AuthError(BAD_TOKEN, "credential token too long")
    match = _TOKEN.fullmatch(text)
    if match is None:
        raise AuthError(BAD_TOKEN, "credential token is not <key>.<timestamp>.<nonce>.<sig>")
    key_hex, ts, nonce, sig = match.groups()
    return Token(bytes.fromhex(key_hex), int(ts), nonce, bytes.fromhex(sig))


def token_from_header(value: str) -> str:
    scheme, _, token = value.strip().partition(" ")
    if scheme != SCHEME:
        raise AuthError(BAD_TOKEN, f"Authorization scheme must be {SCHEME}")
    return token.strip()


class NonceCache:
    """The (key, nonce) pairs accepted and still inside the window, bounded in entries.

    Entries leave in arrival order once their expiry (timestamp + window) has passed; an
    entry can only be replayed within the window, so nothing older needs remembering."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._seen: dict[tuple[bytes, str], int] = {}
        self._order: deque[tuple[int, tuple[bytes, str]]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, entry: tuple[bytes, str]) -> bool:
        return entry in self._seen

    def add(self, entry: tuple[bytes, str], expiry_ms: int, now_ms: int) -> None:
        self._expire(now_ms)
        if len(self._seen) >= self.max_entries:
            raise ReplayCacheFull(f"{self.max_entries} nonces inside the window")
        self._seen[entry] = expiry_ms
        self._order.append((expiry_ms, entry))

    def _expire(self, now_ms: int) -> None:
        order, seen = self._order, self._seen
        # Arrival order is not expiry order (timestamps differ by up to 2 windows), so an
        # expired entry may wait behind a live one: at most 2 windows' worth, still bounded.
        while order and order[0][0] < now_ms:
            _, entry = order.popleft()
            seen.pop(entry, None)


class Authenticator:
    """Checks credential tokens for one node: its chain id, its node id, its clock."""

    def __init__(
        self,
        chain_id: str,
        node_id: str,
        *,
        window_ms: int = 30_000,
        cache_bytes: int = 32 * 1024 * 1024,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.node_id = node_id
        self.window_ms = window_ms
        self.nonces = NonceCache(max(1, cache_bytes // ENTRY_BYTES))
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def verify(self, token_text: str, method: str, path: str, body: bytes) -> bytes:
        """The public key that signed this request, or AuthError (ReplayCacheFull when the
        nonce cache is full). Cheap checks first: form, window, replay, then the signature;
        the nonce is remembered only once the signature holds."""
        token = parse_token(token_text)
        now = self.clock_ms()
        if abs(now - token.timestamp_ms) > self.window_ms:
            raise AuthError(
                STALE,
                f"timestamp {token.timestamp_ms} is more than {self.window_ms} ms from the "
                f"node's clock {now}",
            )
        entry = (token.public_key, token.nonce)
        if self.nonces.seen(entry):
            raise AuthError(REPLAY, "this nonce was already used")
        if not is_strict_public_key(token.public_key):
            raise AuthError(BAD_SIGNATURE, "not a valid Ed25519 public key")
        message = signing_bytes(
            self.chain_id, self.node_id, method, path, token.timestamp_ms, token.nonce, body
        )
        if not verify_signature(token.public_key, message, token.signature):
            raise AuthError(
                BAD_SIGNATURE,
                "signature does not verify (wrong chain id, node id, method, path, body or key)",
            )
        self.nonces.add(entry, token.timestamp_ms + self.window_ms, now)
        return token.public_key
