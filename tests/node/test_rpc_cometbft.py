"""CometBFT's habits on the RPC (issue 17 part 3): the GET form of read methods, `GET /health`
in a JSON-RPC envelope, integer params as decimal strings, hashes as 0x-hex or base64 -- and
that the GET form gets through nothing a POST would not: the guard (Host allowlist, per-IP
cap), the credentials (signed over the query string too), the scope rules, the answer budgets.

In-process: the ASGI app behind `Guard` as `serve_rpc` serves it, over the fake node on a real
chain of tests/node/test_rpc.py. Expectations come from the POST answers and the chain's own
objects. A real CometBFT client library against a real node: tests/node/test_rpc_openrpc.py.
"""

from __future__ import annotations

import base64
import json

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.crypto import address_to_text
from ledger.tx import decode_signed_tx
from node.rpc.auth import authorization_header
from node.rpc.budget import ANSWER_TOO_LARGE
from node.rpc.guard import Guard
from node.rpc.limits import RpcLimits
from node.rpc.methods import SUBMIT_METHODS
from node.rpc.params import decimal_int, hash_param, query_params
from tests.ledger.test_chain import key
from tests.node.rpcauth import INSTITUTION
from tests.node.test_rpc import node  # noqa: F401  (the fixture: a fake node over a real chain)

PORT = 26657
HOST = f"127.0.0.1:{PORT}"


def guarded(node, refusals=None, **limits) -> Guard:  # noqa: F811
    from node.rpc.app import RpcApp

    limits = RpcLimits(**{"listen": HOST, **limits})
    return Guard(RpcApp(node, limits), limits, None if refusals is None else refusals.append)


def sign(app: Guard, signer, method: str, signed_path: str, body: bytes = b"") -> tuple:
    value = authorization_header(
        signer,
        chain_id=app.app.auth.chain_id,
        node_id=app.app.auth.node_id,
        method=method,
        path=signed_path,
        body=body,
    )
    return (b"authorization", value.encode())


async def http(
    app: Guard,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    signer=None,
    signed_target: str | None = None,
    host: str | None = HOST,
    content_type: str | None = None,
    client: str = "127.0.0.1",
):
    """One request through the guarded app: (status, parsed body or raw bytes)."""
    path, _, query = target.partition("?")
    headers = []
    if host is not None:
        headers.append((b"host", host.encode()))
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if signer is not None:
        headers.append(sign(app, signer, method, signed_target or target, body))
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await trio.sleep_forever()

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode("latin-1"),
        "headers": headers,
        "client": (client, 40000),
        "server": ("127.0.0.1", PORT),
    }
    await app(scope, receive, send)
    status = sent[0]["status"]
    raw = b"".join(m.get("body", b"") for m in sent[1:])
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def get(app, target, **kw):
    return trio.run(lambda: http(app, "GET", target, **kw))


def post(app, method, params=None, signer=INSTITUTION):
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    body = json.dumps(request).encode()
    return trio.run(
        lambda: http(app, "POST", "/", body=body, signer=signer, content_type="application/json")
    )


# --------------------------------------------------------------------------- the GET form


def test_get_form_answers_what_post_answers_in_an_envelope_with_id_minus_one(node):  # noqa: F811
    app = guarded(node)
    for target, method, params in (
        ("/status", "status", {}),
        ("/block?height=1", "block", {"height": 1}),
        ('/block?height="1"', "block", {"height": 1}),  # CometBFT's docs quote values
        ("/commit?height=2", "commit", {"height": 2}),
        ("/validators?height=1", "validators", {"height": 1}),
        ("/instruments?limit=1", "instruments", {"limit": 1}),
    ):
        status, answer = get(app, target)
        assert status == 200, (target, answer)
        assert answer["jsonrpc"] == "2.0" and answer["id"] == -1
        _, posted = post(app, method, params, signer=None)
        assert answer["result"] == posted["result"], target


def test_get_health_is_a_jsonrpc_envelope(node):  # noqa: F811
    assert get(guarded(node), "/health") == (200, {"jsonrpc": "2.0", "result": {}, "id": -1})
    # Also where anonymous clients may read nothing else: load balancers need no key.
    closed = guarded(node, anonymous="none")
    assert get(closed, "/health")[1]["result"] == {}
    assert get(closed, "/status")[1]["error"]["data"]["rule"] == "rpc.anonymous_none"


def test_get_form_errors_come_in_the_envelope(node):  # noqa: F811
    app = guarded(node)
    for target, code in (
        ("/block?height=99", -32001),
        ("/block?height=01", -32602),
        ("/block?heigth=1", -32602),
        ("/block?height=1&height=2", -32602),
        ("/block?" + "&".join(f"p{i}=1" for i in range(40)), -32602),
        ("/block?height", -32602),
    ):
        status, answer = get(app, target)
        assert status == 200 and answer["id"] == -1, target
        assert answer["error"]["code"] == code, (target, answer)


def test_submissions_and_unknown_paths_have_no_get_form(node):  # noqa: F811
    app = guarded(node)
    raw = node.blocks[0].block.txs[0]
    for method in sorted(SUBMIT_METHODS):
        target = f"/{method}?tx={base64.b64encode(raw).decode()}"
        assert get(app, target, signer=INSTITUTION)[0] == 404, method
    assert get(app, "/no_such_method")[0] == 404
    assert get(app, "/")[0] == 405  # JSON-RPC is POSTed to /
    # A POST to a GET path is not a second way in.
    status, _ = trio.run(
        lambda: http(app, "POST", "/status", body=b"{}", content_type="application/json")
    )
    assert status == 405


# --------------------------------------------------------------------------- no bypass


def test_get_form_cannot_read_beyond_the_scopes(node):  # noqa: F811
    app = guarded(node)
    alice = address_to_text(key("alice").address)
    # Anonymous: what the anonymous row allows only.
    assert get(app, f"/account?address={alice}")[1]["error"]["message"] == "unauthorized"
    assert get(app, "/holders?id=PKR")[1]["error"]["code"] == -32004
    assert get(app, "/genesis")[1]["error"]["code"] == -32004
    assert get(app, "/block?height=1")[1]["result"]["block"]["txs"] is None  # no bodies
    # An investor (bob) reads its own account, not alice's; the institution reads both.
    bob = key("bob")
    target = f"/account?address={alice}"
    assert get(app, target, signer=bob)[1]["error"]["message"] == "forbidden"
    own = f"/account?address={address_to_text(bob.address)}&prove=false"
    assert get(app, own, signer=bob)[1]["result"]["address"] == address_to_text(bob.address)
    assert get(app, target, signer=INSTITUTION)[1]["result"]["address"] == alice
    assert get(app, "/block?height=1", signer=INSTITUTION)[1]["result"]["block"]["txs"]


def test_a_signed_get_binds_its_query_and_cannot_be_replayed(node):  # noqa: F811
    app = guarded(node)
    alice = address_to_text(key("alice").address)
    bob = address_to_text(key("bob").address)
    # Signed for alice's account, sent for bob's: the signature does not verify.
    status, answer = get(
        app,
        f"/account?address={bob}",
        signer=INSTITUTION,
        signed_target=f"/account?address={alice}",
    )
    assert status == 401 and answer["error"]["data"]["rule"] == "auth.signature"
    assert answer["id"] == -1
    # The same credential twice: the second is a replay.
    header = sign(app, INSTITUTION, "GET", f"/account?address={alice}")

    async def twice():
        answers = []
        for _ in range(2):
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message, sent=sent):
                sent.append(message)

            scope = {
                "type": "http",
                "method": "GET",
                "path": "/account",
                "query_string": f"address={alice}".encode(),
                "headers": [(b"host", HOST.encode()), header],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", PORT),
            }
            await app(scope, receive, send)
            answers.append((sent[0]["status"], json.loads(sent[1]["body"])))
        return answers

    first, second = trio.run(twice)
    assert first[0] == 200 and first[1]["result"]["address"] == alice
    assert second[0] == 401 and second[1]["error"]["data"]["rule"] == "auth.replay"


def test_get_form_passes_the_guard(node):  # noqa: F811
    refusals: list[str] = []
    app = guarded(node, refusals)
    # DNS rebinding: a page's request to evil.example:PORT, resolved to 127.0.0.1.
    status, _ = get(app, "/status", host=f"evil.example:{PORT}")
    assert status == 403 and refusals == ["host"]
    # One address cannot take every slot: the per-IP cap counts GETs too.
    app = guarded(node, refusals, max_requests_per_ip=0)
    assert get(app, "/health")[0] == 429 and refusals[-1] == "per_ip"


def test_get_form_answers_are_within_the_byte_budgets(node):  # noqa: F811
    small = guarded(node, max_answer_bytes=1500)
    status, answer = get(small, "/block?height=1", signer=INSTITUTION)
    assert answer["error"]["message"] == ANSWER_TOO_LARGE and answer["id"] == -1
    capped = guarded(node, max_events_page=7)
    answer = get(capped, "/events?per_page=8", signer=INSTITUTION)[1]
    assert answer["error"]["code"] == -32602 and "[1, 7]" in answer["error"]["data"]
    assert (
        get(capped, "/events?per_page=7&page=1", signer=INSTITUTION)[1]["result"]["per_page"] == 7
    )


# --------------------------------------------------------------------------- params


def test_hashes_as_hex_0x_hex_and_base64(node):  # noqa: F811
    app = guarded(node)
    raw = node.blocks[1].block.txs[0]
    tx_id = decode_signed_tx(raw).tx_id
    forms = (
        tx_id.hex(),
        tx_id.hex().upper(),
        "0x" + tx_id.hex(),
        "0X" + tx_id.hex().upper(),
        base64.b64encode(tx_id).decode(),
    )
    for form in forms:
        _, answer = post(app, "tx", {"hash": form})
        assert answer["result"]["hash"] == tx_id.hex(), form  # answered in the native form
    target = "/tx?hash=" + base64.b64encode(tx_id).decode().replace("+", "%2B").replace("/", "%2F")
    assert get(app, target, signer=INSTITUTION)[1]["result"]["hash"] == tx_id.hex()
    bad = ("0x" + tx_id.hex()[:-2], base64.b64encode(tx_id[:31]).decode(), "zz" * 32, "0x")
    for form in bad:
        assert post(app, "tx", {"hash": form})[1]["error"]["code"] == -32602, form


def test_page_and_per_page_as_strings(node):  # noqa: F811
    app = guarded(node)
    by_int = post(app, "events", {"page": 2, "per_page": 1})[1]["result"]
    by_str = post(app, "events", {"page": "2", "per_page": "1"})[1]["result"]
    assert by_int == by_str and by_int["page"] == 2
    assert post(app, "instruments", {"limit": "1"})[1]["result"]["instruments"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(), st.text(max_size=25), st.booleans(), st.floats(), st.none()))
def test_decimal_int_takes_only_canonical_forms(value):
    got = decimal_int(value)
    if type(value) is int:
        assert got == value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        assert got == (int(value) if value == "0" or value[0] != "0" else None)
    else:
        assert got is None


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_every_hash_form_is_the_same_hash(digest):
    for form in (digest.hex(), "0x" + digest.hex().upper(), base64.b64encode(digest).decode()):
        assert hash_param(form) == digest


def test_query_params_are_bounded_and_strict():
    assert query_params(b"height=5&prove=true", 100) == {"height": "5", "prove": True}
    assert query_params(b'id="USD-CASH"', 100) == {"id": "USD-CASH"}
    assert query_params(b"", 100) == {}
    for bad in (b"a=1&a=2", b"x" * 101, "h\u00e9=1".encode(), b"=&=", b"=1"):
        with pytest.raises(Exception) as refused:
            query_params(bad, 100)
        assert refused.value.code == -32602, bad
