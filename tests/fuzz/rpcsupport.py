"""Shared pieces of the JSON-RPC fuzzers: hostile bodies and the invariant on an answer.

Used in-process by `tests/fuzz/test_rpc_fuzz.py` (hypothesis) and against a live node by
`scripts/fuzz_live.py` (a seeded `random.Random`), so both judge answers the same way.
"""

from __future__ import annotations

import json
import random

# The stable JSON-RPC error codes of node/rpc/ (docs/RPC.md). -32603 (internal error) is
# deliberately absent: it means a bug of ours, and a fuzzer that reaches one has found one.
STABLE_ERROR_CODES = frozenset(
    {-32700, -32600, -32601, -32602, -32000, -32001, -32002, -32003, -32004}
)
METHODS = (
    "health",
    "status",
    "net_info",
    "genesis",
    "validators",
    "block",
    "commit",
    "broadcast_tx_sync",
    "check_tx",
    "tx",
    "num_unconfirmed_txs",
    "account",
    "instrument",
    "instruments",
    "holders",
    "events",
)
PARAM_NAMES = (
    "height",
    "tx",
    "hash",
    "prove",
    "address",
    "id",
    "after",
    "limit",
    "account",
    "instrument",
    "from_height",
    "to_height",
    "page",
    "per_page",
)


# A lone UTF-16 surrogate encoded as UTF-8 (CESU style). `json.loads` on bytes would decode it
# with "surrogatepass"; node/rpc/ once echoed it in an error it then failed to encode (HTTP
# 500). It now decodes bodies as strict UTF-8 (-32700) and answers in ASCII JSON.
LONE_SURROGATE = b"\xed\xa0\x80"


class InvariantBroken(AssertionError):
    """An answer that is neither a valid result nor a clear error with a stable code."""


def check_answer(status: int, body: bytes) -> list[int]:
    """Check one HTTP answer of the RPC endpoint; the JSON-RPC error codes it carries.

    Accepted: 200 with a JSON-RPC response (or a batch of them), 204 with no body (only
    notifications), 413 / 503 with a JSON-RPC error object. Every error code is stable, and
    no answer leaks a Python traceback.
    """
    if status == 204:
        if body:
            raise InvariantBroken(f"204 with a body: {body[:200]!r}")
        return []
    if status not in (200, 413, 503):
        raise InvariantBroken(f"HTTP status {status}: {body[:200]!r}")
    if b"Traceback" in body or b'File "' in body:
        raise InvariantBroken(f"a traceback leaked: {body[:400]!r}")
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise InvariantBroken(f"answer is not JSON ({exc}): {body[:200]!r}") from None
    responses = answer if isinstance(answer, list) else [answer]
    if not responses:
        raise InvariantBroken("an empty batch answer (it must be no body at all)")
    codes = []
    for response in responses:
        if not isinstance(response, dict) or response.get("jsonrpc") != "2.0":
            raise InvariantBroken(f"not a JSON-RPC response: {response!r:.200}")
        if "id" not in response or ("result" in response) == ("error" in response):
            raise InvariantBroken(f"needs an id and exactly one of result/error: {response!r:.200}")
        if "error" in response:
            error = response["error"]
            code = error.get("code") if isinstance(error, dict) else None
            if code not in STABLE_ERROR_CODES or not isinstance(error.get("message"), str):
                raise InvariantBroken(f"error without a stable code: {response!r:.300}")
            codes.append(code)
    if status != 200 and codes == []:
        raise InvariantBroken(f"HTTP {status} without a JSON-RPC error")
    return codes


# --------------------------------------------------------------------------- seeded bodies


def _junk_value(rng: random.Random, depth: int = 0):
    """A JSON value of the kinds that break parsers and param checks."""
    choice = rng.randrange(12 if depth < 3 else 8)
    if choice == 0:
        return rng.choice([0, -1, 1, 2**63, -(2**63) - 1, 10**300, 2**64 + 1])
    if choice == 1:
        return rng.choice([0.5, -0.0, 1e308, 1e-320])
    if choice == 2:
        return rng.choice(["", "0", "kz1" + "q" * 38, "zz" * 32, "\u0000", "\ud7ff" * 9, "é" * 70])
    if choice == 3:
        return rng.choice([True, False, None])
    if choice == 4:
        return "A" * rng.choice([1, 63, 64, 65, 257, 5000])
    if choice == 5:
        return rng.getrandbits(64).to_bytes(8, "big").hex() * rng.randrange(1, 9)
    if choice == 6:
        return rng.randrange(-5, 10**6)
    if choice == 7:
        return "/+=" * rng.randrange(1, 20)
    if choice == 8:
        return [_junk_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(PARAM_NAMES): _junk_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def random_request(rng: random.Random) -> object:
    """One request object: mostly well-shaped with hostile params, sometimes not a request."""
    if rng.random() < 0.1:
        return _junk_value(rng)
    request: dict = {"jsonrpc": rng.choice(["2.0", "2.0", "2.0", "1.0", 2])}
    request["method"] = rng.choice([*METHODS, "nope", "", "x" * 300, 7])
    if rng.random() < 0.8:
        request["id"] = rng.choice([1, "a", None, 2.5, 10**30, [1], {"x": 1}, True])
    if rng.random() < 0.9:
        if rng.random() < 0.5:
            request["params"] = {
                rng.choice(PARAM_NAMES): _junk_value(rng) for _ in range(rng.randrange(4))
            }
        else:
            request["params"] = [_junk_value(rng) for _ in range(rng.randrange(4))]
    return request


def random_body(rng: random.Random, max_batch: int = 32) -> tuple[str, bytes]:
    """(family, body): one hostile HTTP body of a named family."""
    family = rng.choice(
        (
            "request",
            "batch",
            "malformed",
            "constants",
            "duplicate_keys",
            "huge_int",
            "deep",
            "utf8",
        )
    )
    if family == "request":
        body = json.dumps(random_request(rng)).encode()
    elif family == "batch":
        size = rng.choice([0, 1, 2, max_batch, max_batch + 1, 1000])
        body = json.dumps([random_request(rng) for _ in range(size)]).encode()
    elif family == "malformed":
        valid = json.dumps(random_request(rng)).encode()
        cut = rng.randrange(len(valid) + 1)
        body = valid[:cut] + bytes(rng.getrandbits(8) for _ in range(rng.randrange(4)))
    elif family == "constants":
        body = rng.choice(
            [
                b'{"jsonrpc":"2.0","method":"block","params":{"height":NaN},"id":1}',
                b'{"jsonrpc":"2.0","method":"block","params":[Infinity],"id":1}',
                b'{"jsonrpc":"2.0","method":"block","params":[-Infinity],"id":1}',
                b'{"jsonrpc":"2.0","method":"block","params":[1e400],"id":1e400}',
            ]
        )
    elif family == "duplicate_keys":
        method = rng.choice(METHODS)
        body = (
            b'{"jsonrpc":"2.0","method":"nope","method":"' + method.encode() + b'",'
            b'"id":1,"id":"x","params":{"height":1,"height":"1"}}'
        )
    elif family == "huge_int":
        digits = rng.choice([19, 20, 300, 4300, 4301, 20_000])
        number = b"9" * digits
        body = b'{"jsonrpc":"2.0","method":"block","params":[' + number + b'],"id":' + number + b"}"
    elif family == "deep":
        depth = rng.choice([10, 100, 900, 5000, 100_000])
        opener = rng.choice([b"[", b'{"a":'])
        closer = b"]" if opener == b"[" else b"}"
        inner = opener * depth + b"1" + closer * depth
        body = b'{"jsonrpc":"2.0","method":"block","params":[' + inner + b'],"id":1}'
    else:  # invalid UTF-8 inside an otherwise valid request
        bad = rng.choice([b"\xff", b"\xc3\x28", LONE_SURROGATE, b"\xf4\x90\x80\x80"])
        body = b'{"jsonrpc":"2.0","method":"h' + bad + b'ealth","id":1}'
    return family, body
