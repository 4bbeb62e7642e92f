"""tests/node/netsupport.py `rpc(signer=)`: what it signs over follows the node at the URL.

The flake this pins (test_demo's browser test once got HTTP 401 on a signed read in a
full-suite run, never alone): `rpc` remembers each URL's chain id and node id, for the whole
pytest process. When a later test's node listened at a URL an earlier test's node had used,
the call was signed for the old node and refused with HTTP 401 -- an `HTTPError` (an OSError),
which the old eviction (`except RuntimeError`) did not catch, so every retry failed the same
way. Now a 401 whose refusal names other ids (docs/RPC.md: it always carries them) is signed
again for them, once, like the SDK's `Credentials.learn_refusal`.

A small HTTP server stands for the node: it checks credentials with the node's own
`Authenticator` and refuses them the way node/rpc/app.py does.
"""

from __future__ import annotations

import json
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ledger.crypto import generate_key
from node.rpc.auth import Authenticator, AuthError, token_from_header
from tests.node.netsupport import free_ports, rpc


class FakeNode:
    """Answers `status` to anyone and `whoami` to a signed call; `become` is a new node."""

    def __init__(self) -> None:
        self.become("khazana-a", "aa" * 32)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                call = json.loads(body)
                if call["method"] == "status":
                    info = {"network": fake.chain_id, "id": fake.node_id}
                    return self.answer(200, {"result": {"node_info": info}})
                try:
                    token = token_from_header(self.headers.get("authorization", ""))
                    key = fake.auth.verify(token, "POST", self.path, body)
                except AuthError as refused:
                    data = {"rule": refused.rule, "chain_id": fake.chain_id}
                    data["node_id"] = fake.node_id
                    error = {"code": -32004, "message": "unauthorized", "data": data}
                    return self.answer(401, {"error": error})
                return self.answer(200, {"result": key.hex()})

            def answer(self, status: int, document: dict) -> None:
                payload = json.dumps({"jsonrpc": "2.0", "id": 1, **document}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_ports(1)), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def become(self, chain_id: str, node_id: str) -> None:
        self.chain_id, self.node_id = chain_id, node_id
        self.auth = Authenticator(chain_id, node_id)

    def __enter__(self) -> FakeNode:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_signed_call_follows_a_new_node_at_the_same_url():
    key = generate_key(bytes(range(32)))
    with FakeNode() as node:
        assert rpc(node.url, "whoami", signer=key) == key.public_key.hex()
        # The first network is gone; another test's node now listens at the same URL.
        node.become("khazana-b", "bb" * 32)
        assert rpc(node.url, "whoami", signer=key) == key.public_key.hex()
        assert rpc(node.url, "whoami", signer=key) == key.public_key.hex()


def test_a_refusal_that_teaches_nothing_is_raised_not_retried():
    key = generate_key(bytes(range(32)))
    with FakeNode() as node:
        assert rpc(node.url, "whoami", signer=key) == key.public_key.hex()
        node.auth.window_ms = -1  # every timestamp now stale: the same ids, still refused
        with pytest.raises(urllib.error.HTTPError) as refused:
            rpc(node.url, "whoami", signer=key)
        assert refused.value.code == 401
