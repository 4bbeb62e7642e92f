"""The examples of the JSON-RPC 2.0 specification, section 7, one test each, adapted to our
method names (`subtract` -> `block`, `update`/`notify_*` -> `health`, `foobar` stays unknown).

Source: https://www.jsonrpc.org/specification#examples. The expected answers are the
specification's, with only the method names and results replaced.
"""

from __future__ import annotations

import json

import trio

from tests.node.test_rpc import app, asgi, node, post  # noqa: F401  (pytest fixtures)


def raw_post(app, text: str):  # noqa: F811
    status, _, body = trio.run(asgi, app, "POST", "/", text.encode())
    return status, (json.loads(body) if body else None)


def test_positional_parameters(app, node):  # noqa: F811
    # --> {"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}
    _, by_position = post(app, {"jsonrpc": "2.0", "method": "block", "params": [1], "id": 1})
    _, by_name = post(app, {"jsonrpc": "2.0", "method": "block", "params": {"height": 1}, "id": 2})
    assert by_position["id"] == 1 and by_name["id"] == 2
    assert by_position["result"] == by_name["result"]
    assert by_position["result"]["block"]["header"]["height"] == 1


def test_named_parameters_in_any_order(app, node):  # noqa: F811
    # --> {"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}...
    one = {"jsonrpc": "2.0", "method": "events", "params": {"page": 1, "per_page": 5}, "id": 3}
    two = {"jsonrpc": "2.0", "method": "events", "params": {"per_page": 5, "page": 1}, "id": 4}
    assert post(app, one)[1]["result"] == post(app, two)[1]["result"]


def test_a_notification(app):  # noqa: F811
    # --> {"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}   (no response)
    assert raw_post(app, '{"jsonrpc": "2.0", "method": "health"}') == (204, None)


def test_non_existent_method(app):  # noqa: F811
    # <-- {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}
    _, answer = raw_post(app, '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert answer["id"] == "1"
    assert answer["error"]["code"] == -32601
    assert answer["error"]["message"] == "Method not found"


def test_invalid_json(app):  # noqa: F811
    # --> {"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]
    _, answer = raw_post(app, '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert answer == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse error"},
        "id": None,
    }


def test_invalid_request_object(app):  # noqa: F811
    # --> {"jsonrpc": "2.0", "method": 1, "params": "bar"}
    _, answer = raw_post(app, '{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
    assert answer["id"] is None
    assert answer["error"]["code"] == -32600
    assert answer["error"]["message"] == "Invalid Request"


def test_batch_invalid_json(app):  # noqa: F811
    text = (
        '[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},'
        '{"jsonrpc": "2.0", "method"]'
    )
    _, answer = raw_post(app, text)
    assert answer == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse error"},
        "id": None,
    }


def test_empty_array(app):  # noqa: F811
    _, answer = raw_post(app, "[]")
    assert not isinstance(answer, list)
    assert (answer["error"]["code"], answer["id"]) == (-32600, None)


def test_invalid_batch_but_not_empty(app):  # noqa: F811
    _, answer = raw_post(app, "[1]")
    assert [(a["error"]["code"], a["id"]) for a in answer] == [(-32600, None)]


def test_invalid_batch(app):  # noqa: F811
    _, answer = raw_post(app, "[1,2,3]")
    assert [(a["error"]["code"], a["id"]) for a in answer] == [(-32600, None)] * 3


def test_rpc_call_batch(app):  # noqa: F811
    batch = [
        {"jsonrpc": "2.0", "method": "health", "id": "1"},
        {"jsonrpc": "2.0", "method": "health"},  # notify_hello: no answer
        {"jsonrpc": "2.0", "method": "num_unconfirmed_txs", "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "genesis", "id": "9"},
    ]
    _, answer = raw_post(app, json.dumps(batch))
    by_id = {a["id"]: a for a in answer}
    assert len(answer) == 5  # the notification gets nothing
    assert by_id["1"]["result"] == {}
    assert "n_txs" in by_id["2"]["result"]
    assert by_id[None]["error"]["code"] == -32600
    assert by_id["5"]["error"]["code"] == -32601
    assert "chain_id" in json.dumps(by_id["9"]["result"])


def test_rpc_call_batch_all_notifications(app):  # noqa: F811
    batch = '[{"jsonrpc": "2.0", "method": "health"}, {"jsonrpc": "2.0", "method": "status"}]'
    assert raw_post(app, batch) == (204, None)
