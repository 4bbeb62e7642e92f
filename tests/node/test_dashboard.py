"""The supervision dashboard without a browser (the browser test is in tests/test_demo.py):
who may load it (token, cookie, Host), and how node answers become the page's figures."""

from __future__ import annotations

import json

import trio

from ledger.crypto import address_to_text, generate_key
from node.client.errors import RpcError
from node.dashboard.figures import (
    MAX_ACTIONS,
    MAX_GROUPS,
    HeightHistory,
    overview,
    shape_actions,
    shape_holdings,
    signers_of,
)
from node.dashboard.server import COOKIE, Dashboard, allowed_hosts

TOKEN = "t0ken-for-tests"


async def _get(app, path, *, host="127.0.0.1:8650", cookie=None, query=b""):
    headers = [(b"host", host.encode())]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query,
             "headers": headers}  # fmt: skip
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


def _app(calls):
    async def call(method, params):
        calls.append(method)
        raise RpcError(-32601, "Method not found")

    return Dashboard(call, TOKEN, allowed_hosts("127.0.0.1", 8650))


def test_nothing_is_served_without_the_token_and_no_node_read_is_made():
    calls: list[str] = []
    app = _app(calls)

    async def main():
        assert (await _get(app, "/api/overview"))[0] == 401
        assert (await _get(app, "/api/overview", cookie=f"{COOKIE}=wrong"))[0] == 401
        assert (await _get(app, "/", query=b"token=wrong"))[0] == 401
        assert (await _get(app, "/static/dashboard.js"))[0] == 401
        # A foreign Host (DNS rebinding) is refused even with the right cookie.
        status, _, _ = await _get(
            app, "/api/overview", host="evil.example", cookie=f"{COOKIE}={TOKEN}"
        )
        assert status == 403
        # The token in the address becomes a strict cookie and leaves the address bar.
        status, headers, _ = await _get(app, "/", query=f"token={TOKEN}".encode())
        assert status == 303 and headers[b"location"] == b"/"
        cookie = headers[b"set-cookie"].decode()
        assert cookie.startswith(f"{COOKIE}={TOKEN};") and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        # Paths outside the static folder are not served.
        status, _, _ = await _get(app, "/static/../server.py", cookie=f"{COOKIE}={TOKEN}")
        assert status == 404

    trio.run(main)
    assert calls == []  # none of the refused requests cost the node anything


def test_with_the_cookie_the_page_and_the_overview_are_served_and_say_what_is_missing():
    calls: list[str] = []
    app = _app(calls)

    async def main():
        status, headers, body = await _get(app, "/", cookie=f"{COOKIE}={TOKEN}")
        assert status == 200 and b"Khazana supervision" in body
        assert b"default-src 'self'" in headers[b"content-security-policy"]
        status, _, body = await _get(app, "/api/overview", cookie=f"{COOKIE}={TOKEN}")
        assert status == 200
        assert json.loads(body) == {"unavailable": "this node does not serve it (an older release)"}

    trio.run(main)


def test_holdings_are_the_largest_groups_capped_and_actions_newest_first():
    groups = [{"group": f"G{i:03}", "total": i, "holders": 1} for i in range(MAX_GROUPS + 7)]
    shaped = shape_holdings({"by": "vasp", "height": 9, "groups": groups})
    assert [g["total"] for g in shaped["groups"]] == list(range(MAX_GROUPS + 6, 6, -1))
    assert shaped["more_groups"] == 7
    events = [
        {"height": h, "tx_index": 0, "event_index": 0, "type": t, "attributes": {}}
        for h, t in enumerate(["transfer", "frozen", "issue", "vasp_suspended"] * 10, start=1)
    ]
    actions = shape_actions(events)
    assert len(actions) == MAX_ACTIONS
    assert [a["height"] for a in actions] == sorted((a["height"] for a in actions), reverse=True)
    assert {a["type"] for a in actions} == {"frozen", "vasp_suspended"}


def test_observed_block_interval_and_the_signers_of_a_certificate():
    history = HeightHistory()
    for seconds, height in ((0.0, 10), (1.0, 10), (2.0, 14), (3.0, 16), (4.0, 17)):
        history.note(height, now=seconds)
    # 10 -> 14 in 2 s (500 ms/block), 14 -> 16 in 1 s (500), 16 -> 17 in 1 s (1000): median.
    assert history.block_interval_ms() == 500
    keys = [generate_key(bytes([i]) * 32) for i in (1, 2, 3)]
    validators = [
        {"address": address_to_text(k.address), "name": name}
        for k, name in zip(keys, ("ministry", "regulator", "auditor"), strict=True)
    ]
    commit = {"signed_header": {"commit": {"signatures": [
        {"validator": keys[0].address.hex()}, {"validator": keys[2].address.hex()}]}}}  # fmt: skip
    assert signers_of(commit, validators) == ["ministry", "auditor"]


def test_a_refused_section_says_why_and_the_others_are_shown():
    async def call(method, params):
        if method == "status":
            return {
                "node_info": {"network": "kz-test", "moniker": "ministry"},
                "sync_info": {"latest_block_height": 0, "catching_up": False,
                              "latest_block_time": 0},
            }  # fmt: skip
        if method == "instruments":
            return {"instruments": [{"id": "USD-CASH", "kind": "cash", "supply": 5}], "next": None}
        raise RpcError(-32004, "the scope of this key does not cover it")

    document = trio.run(overview, call, HeightHistory())
    assert document["instruments"]["rows"] == [{"id": "USD-CASH", "kind": "cash", "supply": 5}]
    assert document["programme"]["unavailable"].startswith("refused to this dashboard's key")
    assert document["holdings_by_vasp"]["unavailable"].startswith("refused")
