"""Credentials for tests that talk to an in-process RPC app (node/rpc/auth.py's scheme).

Most RPC tests are about something else than who may read (framing, limits, proofs): they
ask as an institution, which reads everything, so that their expectations stay theirs. The
matrix of who may read what is tests/node/test_rpc_scopes.py."""

from __future__ import annotations

from ledger.crypto import KeyPair
from node.rpc.auth import authorization_header
from tests.ledger.test_chain import key

INSTITUTION = key("ministry")  # issuer in the test genesis: reads everything


def auth_headers(
    app, method: str, path: str, body: bytes, signer: KeyPair | None = INSTITUTION
) -> list[tuple[bytes, bytes]]:
    """The `Authorization` header of one request to `app` (an RpcApp), none for None."""
    if signer is None:
        return []
    value = authorization_header(
        signer,
        chain_id=app.auth.chain_id,
        node_id=app.auth.node_id,
        method=method,
        path=path,
        body=body,
    )
    return [(b"authorization", value.encode())]
