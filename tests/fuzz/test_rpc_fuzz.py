"""JSON-RPC under hostile input, in-process (the ASGI app of node/rpc/, as test_rpc does).

Invariant for every input (`rpcsupport.check_answer`): a valid JSON-RPC result or a clear
error with a stable code (never -32603, never a traceback), an HTTP status of 200/204/413/503,
and the app still answering a plain `health` call afterwards. The node behind the app is the
`FakeNode` of tests/node/test_rpc.py: real committed blocks in a real store, admission by the
ledger's own `check_transaction`, so hostile params reach real reads.
"""

from __future__ import annotations

import json
import random

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.chain import Chain
from node.rpc.app import RpcApp
from node.rpc.limits import RpcLimits
from tests.fuzz.rpcsupport import (
    LONE_SURROGATE,
    METHODS,
    PARAM_NAMES,
    check_answer,
    random_body,
)
from tests.ledger.test_chain import DAY_MS, GENESIS_MS, Signer, genesis, key, setup_txs
from tests.node.rpcauth import auth_headers
from tests.node.test_rpc import FakeNode, certificate

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HEALTH = json.dumps({"jsonrpc": "2.0", "method": "health", "id": 0}).encode()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    chain = Chain.open(tmp_path_factory.mktemp("rpcfuzz") / "node.db", genesis())
    pending = chain.build_block(
        setup_txs(Signer()), GENESIS_MS + DAY_MS, key("validator-ministry").address
    )
    chain.commit(pending, certificate(pending.header.height, pending.header.hash))
    yield RpcApp(FakeNode(chain), RpcLimits(max_batch=32, max_body_bytes=256 * 1024))
    chain.close()


async def http(app, body: bytes, headers=(), method: str = "POST", chunks: int = 1):
    """One request through the ASGI app: (status, body). The body may arrive in pieces."""
    size = max(1, -(-len(body) // chunks))
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = list(headers)
    if method == "POST" and not any(name.lower() == b"authorization" for name, _ in headers):
        headers += auth_headers(app, method, "/", body)  # as an institution: reach the methods
    scope = {"type": "http", "method": method, "path": "/", "headers": headers}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    reply = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], reply


def answer(app, body: bytes, **kw) -> list[int]:
    status, reply = trio.run(lambda: http(app, body, **kw))
    return check_answer(status, reply)


def still_alive(app) -> None:
    status, reply = trio.run(lambda: http(app, HEALTH))
    assert (status, json.loads(reply)["result"]) == (200, {})


# --------------------------------------------------------------------------- strategies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
    st.sampled_from(["", "kz1", "ab" * 32, "AAAA", "====", "\u0000"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
params = st.one_of(
    st.none(),
    st.lists(json_values, max_size=4),
    st.dictionaries(st.sampled_from(PARAM_NAMES), json_values, max_size=4),
    json_values,
)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0"]), "method": st.sampled_from(METHODS)},
    optional={"id": json_values, "params": params},
)


# --------------------------------------------------------------------------- properties


@FUZZ
@given(request=requests)
def test_any_request_object_gets_a_result_or_a_stable_error(app, request):
    answer(app, json.dumps(request).encode())


@FUZZ
@given(batch=st.lists(requests | json_values, min_size=0, max_size=40))
def test_batches_of_any_size_get_stable_answers(app, batch):
    codes = answer(app, json.dumps(batch).encode())
    if not batch or len(batch) > 32:
        assert codes == [-32600]  # the whole batch is refused as one invalid request


@FUZZ
@given(body=st.binary(max_size=2048))
def test_random_bytes_are_a_parse_error_or_a_stable_answer(app, body):
    answer(app, body)


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_named_hostile_families(app, rng):
    """NaN/Infinity, duplicate keys, huge integers, deep nesting, invalid UTF-8, truncation."""
    family, body = random_body(rng)
    codes = answer(app, body)
    if family == "utf8":
        assert codes == [-32700], body
    if family == "constants":
        # NaN/Infinity literals are not JSON; 1e400 parses as a float infinity, which is no
        # valid id (so the request is invalid) and no valid param.
        assert codes in ([-32700], [-32600]), body


@settings(max_examples=60, deadline=None)
@given(
    content_type=st.sampled_from(
        [b"application/json", b"text/plain", b"application/x-www-form-urlencoded", b"", b"\xff"]
    ),
    length=st.one_of(st.none(), st.sampled_from([b"0", b"-1", b"abc", b"99999999999", b"5"])),
    chunks=st.integers(min_value=1, max_value=6),
)
def test_content_types_and_lying_lengths_do_not_matter(app, content_type, length, chunks):
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", length))
    status, reply = trio.run(lambda: http(app, HEALTH, headers=headers, chunks=chunks))
    codes = check_answer(status, reply)
    # A content-length above the body limit is refused before reading; any other lie is
    # ignored (the body read is what counts).
    assert status == (413 if length == b"99999999999" else 200)
    assert codes == ([-32600] if status == 413 else [])


def test_deep_nesting_and_huge_integers_exactly(app):
    for depth in (900, 100_000):
        assert answer(app, b"[" * depth + b"]" * depth) in ([-32600], [-32700])
    huge = b"9" * 5000  # above Python's int-from-text digit limit
    assert answer(app, b'{"jsonrpc":"2.0","method":"health","id":' + huge + b"}") == [-32700]
    big = str(2**200).encode()
    # A height far above the tip: no such block (an int is an int, however large).
    body = b'{"jsonrpc":"2.0","method":"block","params":[' + big + b'],"id":1}'
    assert answer(app, body) == [-32001]
    still_alive(app)


def test_oversized_bodies_are_refused_without_reading_everything(app):
    limit = app.limits.max_body_bytes
    body = b'{"jsonrpc":"2.0","method":"health","id":1,"params":["' + b"x" * limit + b'"]}'
    for chunks in (1, 64):
        assert answer(app, body, chunks=chunks) == [-32600]
    still_alive(app)


def test_wrong_http_methods_and_paths_are_plain_refusals(app):
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        status, _ = trio.run(lambda m=method: http(app, HEALTH, method=m))
        assert status == 405
    still_alive(app)


async def _dribble(app, limits_timeout_s: float) -> bool:
    """A client that sends part of its body then never finishes: does the app answer
    within its request timeout (plus slack)? Runs on a MockClock, so no real waiting."""
    sent = []
    messages = [{"type": "http.request", "body": b'{"jsonrpc":"2.0",', "more_body": True}]

    async def receive():
        if messages:
            return messages.pop(0)
        await trio.sleep(1.0)  # one more byte per second, for ever
        return {"type": "http.request", "body": b" ", "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    with trio.move_on_after(limits_timeout_s + 5):
        await app(scope, receive, send)
        return True
    return False


def test_slow_body_is_cut_off_by_the_request_timeout(app):
    timeout_s = app.limits.request_timeout_ms / 1000
    finished = trio.run(
        _dribble, app, timeout_s, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert finished, "the app still waits for a body dribbled byte by byte"


def test_seeded_families_cover_every_family(app):
    """The seeded generator (shared with scripts/fuzz_live.py) reaches every family and each
    answer keeps the invariant."""
    rng = random.Random(7)
    seen = set()
    for _ in range(120):
        family, body = random_body(rng)
        seen.add(family)
        answer(app, body)
    assert seen == {
        "request",
        "batch",
        "malformed",
        "constants",
        "duplicate_keys",
        "huge_int",
        "deep",
        "utf8",
    }
    still_alive(app)


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","method":"h' + LONE_SURROGATE + b'ealth","id":1}',
        b'{"jsonrpc":"2.0","method":"\\ud800","id":1}',
    ],
)
def test_lone_surrogate_in_a_method_name_gets_a_json_rpc_error(app, body):
    assert answer(app, body) in ([-32601], [-32700])
