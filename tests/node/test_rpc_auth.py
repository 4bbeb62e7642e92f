"""RPC credentials (node/rpc/auth.py): docs/RPC.md's test vector, read from the document, and
the attacks -- replay, a stale or future timestamp, another chain, another node, a tampered
body, method or path, malformed tokens -- each refused as `unauthorized` with its rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from ledger.crypto import generate_key
from node.client import AsyncClient, Client
from node.client import RpcError as ClientRpcError
from node.rpc.app import RpcApp
from node.rpc.auth import (
    ENTRY_BYTES,
    Authenticator,
    AuthError,
    ReplayCacheFull,
    authorization_header,
    body_digest,
    make_token,
    signing_bytes,
    token_from_header,
)
from node.rpc.limits import RpcLimits
from tests.node.test_rpc_commit import CHAIN_ID as LIVE_CHAIN_ID
from tests.node.test_rpc_commit import key as live_key
from tests.node.test_rpc_commit import live_node

DOC = Path(__file__).resolve().parents[2] / "docs" / "RPC.md"
FENCE = re.compile(r"^```([\w-]+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_vectors() -> list[dict[str, str]]:
    vectors = []
    for info, body in FENCE.findall(DOC.read_text("utf-8")):
        if info != "vector":
            continue
        fields = {}
        for line in body.splitlines():
            key, sep, value = line.partition(": ")
            assert sep, line
            fields[key] = value
        if fields.get("kind") == "rpc-auth":
            vectors.append(fields)
    return vectors


def test_the_documented_vector():
    (vector,) = doc_vectors()
    key = generate_key(bytes.fromhex(vector["seed"]))
    assert key.public_key.hex() == vector["public_key"]
    body = vector["body"].encode()
    assert body_digest(body) == vector["body_sha256"]
    ts = int(vector["timestamp"])
    request = dict(
        chain_id=vector["chain_id"],
        node_id=vector["node_id"],
        method=vector["method"],
        path=vector["path"],
        body=body,
    )
    signed = signing_bytes(
        **{k: v for k, v in request.items()}, timestamp_ms=ts, nonce=vector["nonce"]
    )
    assert signed.hex() == vector["signed_hex"]
    header = authorization_header(key, **request, timestamp_ms=ts, nonce=vector["nonce"])
    assert header == vector["authorization"]
    # A node with that chain id, node id and clock takes it once.
    node = Authenticator(vector["chain_id"], vector["node_id"], clock_ms=lambda: ts + 1000)
    token = token_from_header(vector["authorization"])
    assert node.verify(token, vector["method"], vector["path"], body) == key.public_key
    with pytest.raises(AuthError) as replay:
        node.verify(token, vector["method"], vector["path"], body)
    assert replay.value.rule == "auth.replay"


# --------------------------------------------------------------------------- attacks

CHAIN, NODE = "khazana-test", "ab" * 32
KEY = generate_key(b"\x07" * 32)
NOW = 1_767_225_600_000
BODY = b'{"jsonrpc":"2.0","id":1,"method":"status"}'


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


def token(**overrides) -> str:
    request = dict(chain_id=CHAIN, node_id=NODE, method="POST", path="/", body=BODY)
    request.update(overrides)
    request.setdefault("timestamp_ms", NOW)
    return make_token(KEY, **request)


def refused(node: Authenticator, text: str, method="POST", path="/", body=BODY) -> str:
    with pytest.raises(AuthError) as error:
        node.verify(text, method, path, body)
    return error.value.rule


def test_replay_stale_and_bound_credentials_are_refused():
    clock = Clock()
    node = Authenticator(CHAIN, NODE, window_ms=30_000, clock_ms=clock)
    good = token()
    assert node.verify(good, "POST", "/", BODY) == KEY.public_key
    assert refused(node, good) == "auth.replay"
    assert refused(node, token(timestamp_ms=NOW - 30_001)) == "auth.timestamp"
    assert refused(node, token(timestamp_ms=NOW + 30_001)) == "auth.timestamp"
    assert node.verify(token(timestamp_ms=NOW - 30_000), "POST", "/", BODY)
    assert refused(node, token(chain_id="khazana-other")) == "auth.signature"
    assert refused(node, token(node_id="cd" * 32)) == "auth.signature"
    assert refused(node, token(), body=BODY.replace(b"status", b"genesis")) == "auth.signature"
    assert refused(node, token(), method="GET") == "auth.signature"
    assert refused(node, token(), path="/websocket") == "auth.signature"
    other = generate_key(b"\x08" * 32)
    forged = token().split(".")
    forged[0] = other.public_key.hex()  # someone else's key on this signature
    assert refused(node, ".".join(forged)) == "auth.signature"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        token().upper(),  # hex is lowercase
        token().replace(".", ":"),
        "0" + token(),
        token() + ".",
        token().replace(f".{NOW}.", f".0{NOW}."),  # no leading zeros
        "x" * 10_000,
    ],
)
def test_malformed_tokens_are_refused(text):
    assert refused(Authenticator(CHAIN, NODE, clock_ms=Clock()), text) == "auth.malformed"


def test_header_scheme_is_checked():
    with pytest.raises(AuthError):
        token_from_header("Bearer " + token())
    text = token()
    assert token_from_header(f"Khazana-Ed25519 {text}") == text


@given(position=st.integers(min_value=0, max_value=len(BODY) - 1), flip=st.integers(1, 255))
def test_any_tampered_body_byte_is_refused(position, flip):
    node = Authenticator(CHAIN, NODE, clock_ms=Clock())
    tampered = bytearray(BODY)
    tampered[position] ^= flip
    assert refused(node, token(), body=bytes(tampered)) == "auth.signature"


def test_the_replay_cache_is_bounded_and_forgets_only_what_cannot_be_replayed():
    clock = Clock()
    node = Authenticator(CHAIN, NODE, window_ms=1000, cache_bytes=3 * ENTRY_BYTES, clock_ms=clock)
    tokens = [token(nonce=f"{i:032x}") for i in range(4)]
    for text in tokens[:3]:
        node.verify(text, "POST", "/", BODY)
    with pytest.raises(ReplayCacheFull):  # full of live nonces: refused, nothing forgotten
        node.verify(tokens[3], "POST", "/", BODY)
    assert len(node.nonces) == 3
    clock.now += 1001  # every remembered timestamp is out of the window now
    assert refused(node, tokens[0]) == "auth.timestamp"  # ...so it cannot be replayed anyway
    node.verify(token(nonce="f" * 32, timestamp_ms=clock.now), "POST", "/", BODY)
    assert len(node.nonces) == 1


# --------------------------------------------------------------------------- through the app


class _NoState:
    async def read(self, fn, *args):
        return fn(self, *args)  # `AsyncStore.read`, with this fake as the store

    @property
    def state(self) -> _NoState:
        return self

    def get_state(self, key: bytes) -> None:
        return None


class Node:
    genesis = {"chain_id": CHAIN}
    node_id = NODE
    store = _NoState()

    class events:
        published = 0

    async def status(self) -> dict:
        return {"node_info": {"id": NODE, "network": CHAIN}}


async def post(app, body: bytes, authorization: str | None) -> tuple[int, dict]:
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    await app({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_bad_credentials_are_http_401_with_the_rule_and_what_to_sign_over():
    app = RpcApp(Node(), RpcLimits())
    header = authorization_header(
        KEY, chain_id=CHAIN, node_id="cd" * 32, method="POST", path="/", body=BODY
    )
    status, answer = trio.run(post, app, BODY, header)
    assert status == 401
    assert answer["id"] is None
    error = answer["error"]
    assert (error["code"], error["message"]) == (-32004, "unauthorized")
    assert error["data"]["rule"] == "auth.signature"
    assert (error["data"]["chain_id"], error["data"]["node_id"]) == (CHAIN, NODE)
    assert type(error["data"]["time_ms"]) is int


def test_a_batch_costs_one_verification_and_a_replayed_batch_is_refused():
    app = RpcApp(Node(), RpcLimits())
    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(32)]).encode()
    header = authorization_header(
        KEY, chain_id=CHAIN, node_id=NODE, method="POST", path="/", body=body
    )
    status, answer = trio.run(post, app, body, header)
    assert status == 200 and len(answer) == 32
    assert len(app.auth.nonces) == 1
    status, answer = trio.run(post, app, body, header)
    assert status == 401 and answer["error"]["data"]["rule"] == "auth.replay"


def test_the_sdk_learns_what_to_sign_over_from_a_node_that_answers_no_stranger(tmp_path):
    """`anonymous = "none"`: `status` is refused to an unsigned call, and the SDK takes the
    chain id and node id from the refusal; a client whose clock is off corrects itself."""
    regulator = live_key("regulator")

    async def main():
        async with live_node(tmp_path, limits=RpcLimits(anonymous="none")) as node:
            client = Client(node.url, key=regulator)
            status = await trio.to_thread.run_sync(client.status)
            assert status.chain_id == LIVE_CHAIN_ID
            with pytest.raises(ClientRpcError) as refused:
                await trio.to_thread.run_sync(Client(node.url).status)
            assert refused.value.data["rule"] == "rpc.anonymous_none"
            late = AsyncClient(node.url, key=regulator)
            await late.status()
            late.credentials.offset_ms = -120_000  # two minutes behind the node
            account = await late.account(regulator.address_text)
            assert account["address"] == regulator.address_text
            assert abs(late.credentials.offset_ms) < 10_000  # learnt from the refusal

    trio.run(main)
