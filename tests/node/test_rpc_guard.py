"""The RPC's hostile-client defences (issue 13 parts 3 and 4), each tested with its attack.

In-process (the ASGI app behind `Guard`, as `serve_rpc` serves it, driven with fake
scope/receive/send): the Host allowlist (DNS rebinding), the Content-Type rule (a cross-site
text/plain POST), per-IP caps, answer byte budgets (a batch of 32 `block` calls), page caps,
the heavy-read gate, the WebSocket idle close (MockClock). Over real sockets on 127.0.0.1
where hypercorn's own behaviour matters: 300 slowloris sockets next to legitimate calls, and
a client that never reads its answer.
"""

from __future__ import annotations

import json
import socket

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.asgi import serve_asgi
from node.events import EventBus
from node.rpc.app import RpcApp, serve_rpc
from node.rpc.auth import authorization_header
from node.rpc.budget import ANSWER_TOO_LARGE, REFUSALS, expect_answer_bytes
from node.rpc.framing import Method
from node.rpc.guard import Guard, HostAllowlist
from node.rpc.limits import RpcLimits
from node.rpc.scopes import Scopes
from node.rpc.websocket import CLOSE_IDLE, serve_websocket
from tests.node.rpcauth import auth_headers
from tests.node.test_rpc import node  # noqa: F401  (the fixture: a fake node over a real chain)

PORT = 26657
CALL = b'{"jsonrpc":"2.0","method":"health","id":1}'


def guarded(node, refusals: list[str] | None = None, **limits) -> Guard:  # noqa: F811
    limits = RpcLimits(**{"listen": f"127.0.0.1:{PORT}", **limits})
    app = RpcApp(node, limits)
    return Guard(app, limits, None if refusals is None else refusals.append)


async def request(
    app,
    body: bytes = CALL,
    *,
    host: str | None = f"127.0.0.1:{PORT}",
    content_type: str | None = "application/json",
    client: str = "127.0.0.1",
    method: str = "POST",
):
    """One HTTP request through `app`: (status, parsed JSON body or None)."""
    headers = []
    if host is not None:
        headers.append((b"host", host.encode()))
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if method == "POST":
        # As an institution (tests/node/rpcauth.py), so that what is tested is the guard and
        # the budgets, not who may read: the RPC app behind the guard signs for the node.
        headers += auth_headers(getattr(app, "app", app), method, "/", body)
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
        "path": "/",
        "headers": headers,
        "client": (client, 40000),
        "server": ("127.0.0.1", PORT),
    }
    await app(scope, receive, send)
    start, reply = sent
    return start["status"], (json.loads(reply["body"]) if reply["body"] else None)


def run(fn, *args, **kwargs):
    return trio.run(lambda: fn(*args, **kwargs))


# --------------------------------------------------------------------------- Host (rebinding)


def test_a_foreign_host_is_refused_before_any_method_runs(node):  # noqa: F811
    refusals: list[str] = []
    app = guarded(node, refusals)
    calls = []

    async def spy():
        calls.append(1)
        return {}

    app.app.jsonrpc.table["health"] = Method(spy, ())
    # DNS rebinding: the browser connects to 127.0.0.1 but names the attacker's host.
    for host in (f"evil.example:{PORT}", "evil.example", f"127.0.0.1:{PORT + 1}", "10.0.0.9"):
        status, answer = run(request, app, host=host)
        assert status == 403, host
        assert answer["error"]["code"] == -32000
    assert calls == [] and refusals == ["host"] * 4
    for host in (f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"[::1]:{PORT}", "LOCALHOST", None):
        assert run(request, app, host=host)[0] == 200, host
    assert len(calls) == 5


def test_allowed_hosts_configured_and_star():
    allow = HostAllowlist("127.0.0.1:26657", ("node.example.org", "proxy.example:443"))
    assert allow.allows("node.example.org:26657", 26657)
    assert allow.allows("proxy.example:443", 26657)  # behind a proxy, its port
    assert not allow.allows("proxy.example:26657", 26657)
    assert not allow.allows("other.example.org:26657", 26657)
    assert allow.allows("localhost:26657", 26657)
    assert HostAllowlist("127.0.0.1:1", ("*",)).allows("anything:9", 1)
    # On a wildcard listen address, IP literals are answered (rebinding needs a name).
    wildcard = HostAllowlist("0.0.0.0:26657", ())
    assert wildcard.allows("192.0.2.7:26657", 26657)
    assert wildcard.allows("[2001:db8::1]:26657", 26657)
    assert not wildcard.allows("evil.example:26657", 26657)


def test_a_foreign_host_cannot_open_a_websocket(node):  # noqa: F811
    node.events = EventBus(max_subscribers=4)
    app = guarded(node)
    sent = []

    async def main():
        received = [{"type": "websocket.connect"}]

        async def receive():
            return received.pop(0) if received else {"type": "websocket.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "websocket",
            "path": "/websocket",
            "headers": [(b"host", b"attacker.example:26657")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", PORT),
        }
        await app(scope, receive, send)

    try:
        trio.run(main)
    finally:
        del node.events
    # Closed before accept: hypercorn answers the handshake with HTTP 403.
    assert sent == [{"type": "websocket.close", "code": 1008}]


# --------------------------------------------------------------------------- Content-Type


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_cross_site_simple_post_is_not_executed(node, content_type):  # noqa: F811
    refusals: list[str] = []
    app = guarded(node, refusals)
    calls = []

    async def spy():
        calls.append(1)
        return {}

    app.app.jsonrpc.table["health"] = Method(spy, ())
    status, answer = run(request, app, content_type=content_type)
    assert status == 415 and answer["error"]["code"] == -32000
    assert calls == [] and refusals == ["content_type"]
    status, _ = run(request, app, content_type="Application/JSON; charset=utf-8")
    assert status == 200 and calls == [1]


# --------------------------------------------------------------------------- per-IP caps


def test_one_address_cannot_take_every_slot(node):  # noqa: F811
    refusals: list[str] = []
    app = guarded(node, refusals, max_requests_per_ip=3, max_connections=10)
    release = trio.Event()

    async def held():
        await release.wait()
        return {}

    app.app.jsonrpc.table["health"] = Method(held, ())

    async def main():
        done = []

        async def one():
            done.append(await request(app, client="192.0.2.1"))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            over = await request(app, client="192.0.2.1")
            app.app.jsonrpc.table["status"] = Method(_empty, ())
            other = await request(
                app, b'{"jsonrpc":"2.0","method":"status","id":2}', client="192.0.2.2"
            )
            release.set()
        again = await request(app, client="192.0.2.1")
        return done, over, other, again

    done, over, other, again = trio.run(main)
    assert over[0] == 429 and over[1]["error"]["data"] == "Too many requests from your address"
    assert other[0] == 200  # another address is not held back
    assert [d[0] for d in done] == [200, 200, 200] and again[0] == 200
    assert app.http_per_ip == {}  # nothing left counted once the requests are done
    assert refusals == ["per_ip"]


async def _empty():
    return {}


def test_websocket_connections_per_address(node):  # noqa: F811
    node.events = EventBus(max_subscribers=10)
    refusals: list[str] = []
    app = guarded(node, refusals, ws_max_connections_per_ip=2)

    async def main():
        closes = []
        leave = trio.Event()

        async def connect(client: str) -> None:
            first = [{"type": "websocket.connect"}]

            async def receive():
                if first:
                    return first.pop(0)
                await leave.wait()
                return {"type": "websocket.disconnect"}

            async def send(message):
                if message["type"] == "websocket.close":
                    closes.append((client, message["code"]))

            scope = {
                "type": "websocket",
                "path": "/websocket",
                "headers": [(b"host", f"127.0.0.1:{PORT}".encode())],
                "client": (client, 1),
                "server": ("127.0.0.1", PORT),
            }
            await app(scope, receive, send)

        async with trio.open_nursery() as nursery:
            for client in ("192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2"):
                nursery.start_soon(connect, client)
                await trio.testing.wait_all_tasks_blocked()
            assert app.ws_per_ip == {"192.0.2.1": 2, "192.0.2.2": 1}
            leave.set()
        return closes

    try:
        closes = trio.run(main)
    finally:
        del node.events
    assert closes == [("192.0.2.1", 1013)]
    assert app.ws_per_ip == {} and refusals == ["per_ip"]


# --------------------------------------------------------------------------- answer budgets


def batch(method: str, n: int, params=None) -> bytes:
    calls = [{"jsonrpc": "2.0", "method": method, "id": i} for i in range(n)]
    if params is not None:
        for call in calls:
            call["params"] = params
    return json.dumps(calls).encode()


def test_a_batch_of_big_answers_stops_at_its_budget(node):  # noqa: F811
    """The probe's attack: 32 calls of a big answer in one small body."""
    refusals: list[str] = []
    app = guarded(node, refusals, max_answer_bytes=40_000, max_batch_answer_bytes=100_000)
    built = []

    async def big():
        built.append(1)
        return "x" * 30_000

    app.app.jsonrpc.table["health"] = Method(big, ())
    status, answers = run(request, app, batch("health", 32))
    assert status == 200 and len(answers) == 32
    ok = [a for a in answers if "result" in a]
    refused = [a for a in answers if "error" in a]
    assert len(ok) == 3  # 3 x 30 KB fit 100 KB; the fourth does not
    assert {a["error"]["code"] for a in refused} == {-32000}
    assert {a["error"]["message"] for a in refused} == {ANSWER_TOO_LARGE}
    assert all("max_batch_answer_bytes (100000)" in a["error"]["data"] for a in refused)
    assert sorted(a["id"] for a in answers) == list(range(32))  # every call answered
    # Once the budget is spent, the calls still to run are refused without running.
    assert len(built) < 32
    assert len(json.dumps(answers)) < 100_000 + 32 * 200
    assert refusals and set(refusals) == {"budget"}
    assert app.app.jsonrpc.guard.pool.used == 0  # every byte charged was given back


def test_calls_that_announce_their_size_are_refused_before_building(node):  # noqa: F811
    app = guarded(node, max_answer_bytes=40_000, max_batch_answer_bytes=100_000)
    building = 0
    most = 0

    async def announced():
        nonlocal building, most
        expect_answer_bytes(30_000)  # reserved before the work: concurrent calls see it
        building += 1
        most = max(most, building)
        await trio.sleep(0.01)
        building -= 1
        return "y" * 29_900

    app.app.jsonrpc.table["health"] = Method(announced, ())
    status, answers = run(request, app, batch("health", 32))
    assert len([a for a in answers if "result" in a]) == 3
    assert most <= 3  # never more answers under construction than the budget holds
    assert app.app.jsonrpc.guard.pool.used == 0


def test_one_answer_over_max_answer_bytes(node):  # noqa: F811
    app = guarded(node, max_answer_bytes=1000)
    status, answer = run(request, app, b'{"jsonrpc":"2.0","method":"genesis","id":4}')
    assert status == 200 and answer["id"] == 4
    assert answer["error"]["message"] == ANSWER_TOO_LARGE
    assert "max_answer_bytes (1000)" in answer["error"]["data"]


def test_a_huge_block_is_refused_from_its_stored_size(node, monkeypatch):  # noqa: F811
    import node.rpc.chain_methods as chain_methods

    decoded = []
    real = chain_methods.decode_block
    monkeypatch.setattr(chain_methods, "decode_block", lambda raw: decoded.append(1) or real(raw))
    small = guarded(node, max_answer_bytes=2000)
    status, answer = run(request, small, b'{"jsonrpc":"2.0","method":"block","params":[1],"id":1}')
    assert answer["error"]["message"] == ANSWER_TOO_LARGE
    assert decoded == []  # never decoded, never rendered
    status, answer = run(request, guarded(node), batch("block", 32, [1]))
    assert all("result" in a for a in answer) and len(decoded) == 32  # ordinary use fits


def test_page_caps(node):  # noqa: F811
    app = guarded(node, max_page=5, max_events_page=7)

    async def call(method, params):
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
        return (await request(app, body.encode()))[1]

    answer = run(call, "events", {"per_page": 8})
    assert answer["error"]["code"] == -32602 and "[1, 7]" in answer["error"]["data"]
    assert run(call, "events", {"per_page": 7})["result"]["per_page"] == 7
    assert "[1, 5]" in run(call, "instruments", {"limit": 6})["error"]["data"]
    assert "[1, 5]" in run(call, "holders", {"id": "CASH", "limit": 6})["error"]["data"]
    assert "result" in run(call, "instruments", {})


def test_heavy_reads_are_gated_and_light_calls_pass_them(node):  # noqa: F811
    app = guarded(node, max_heavy_reads=2, max_requests_per_ip=100)
    running = 0
    most = 0
    release = trio.Event()

    async def heavy(**_):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return {}

    app.app.jsonrpc.table["events"] = Method(heavy, ("page",))
    app.app.jsonrpc.table["health"] = Method(_empty, ())

    async def main():
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(request, app, b'{"jsonrpc":"2.0","method":"events","id":1}')
            await trio.testing.wait_all_tasks_blocked()
            assert running == 2
            status, answer = await request(app)  # not heavy: answered meanwhile
            assert status == 200 and answer["result"] == {}
            release.set()

    trio.run(main)
    assert most == 2


# --------------------------------------------------------------------------- WebSocket idle


def test_an_idle_websocket_is_closed_and_a_subscriber_is_not():
    bus = EventBus(max_subscribers=2)
    limits = RpcLimits(ws_idle_timeout_ms=30_000)
    refusals: list[str] = []

    async def connection(subscribe: bool):
        inbox = [{"type": "websocket.connect"}]
        if subscribe:
            text = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "subscribe",
                    "params": ["tm.event='NewBlock'"],  # what an anonymous client may follow
                }
            )
            inbox.append({"type": "websocket.receive", "text": text})
        closes = []

        async def receive():
            if inbox:
                return inbox.pop(0)
            await trio.sleep_forever()

        async def send(message):
            if message["type"] == "websocket.close":
                closes.append(message)

        async def handle_body(body):
            return None

        await serve_websocket(
            {"type": "websocket"},
            receive,
            send,
            bus=bus,
            handle_body=handle_body,
            limits=limits,
            scopes=Scopes(None),  # an anonymous client: no store read needed
        )
        return closes

    async def main():
        REFUSALS.set(refusals.append)
        start = trio.current_time()
        closes = await connection(subscribe=False)
        assert trio.current_time() - start == pytest.approx(30.0)
        assert closes[0]["code"] == CLOSE_IDLE and "idle" in closes[0]["reason"]
        assert len(bus) == 0  # its place on the bus is free again
        with trio.move_on_after(3600) as waited:
            await connection(subscribe=True)
        assert waited.cancelled_caught  # a silent subscriber stays

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert refusals == ["ws_idle"]


# --------------------------------------------------------------------------- real sockets


async def _raw(port: int, data: bytes, source: str = "127.0.0.1") -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(data)
    return stream


async def _http_call(port: int) -> int:
    body = CALL
    request_bytes = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    stream = await _raw(port, request_bytes)
    async with stream:
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return int(data.split()[1])


def test_slowloris_does_not_lock_out_legitimate_calls(node):  # noqa: F811
    """300 sockets (from another address) dribble their bodies; 50 calls all get answers."""
    limits = RpcLimits(
        listen="127.0.0.1:0", max_connections=16, max_requests_per_ip=16, request_timeout_ms=3000
    )

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_rpc, node, limits)
                head = (
                    f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
                ).encode()
                slow = [await _raw(port, head, source="127.0.0.2") for _ in range(300)]
                await trio.sleep(0.2)
                statuses = [await _http_call(port) for _ in range(50)]
                for stream in slow:
                    await stream.aclose()
                nursery.cancel_scope.cancel()
        return statuses

    assert trio.run(main) == [200] * 50


def test_a_client_that_does_not_read_is_cut_off_within_the_send_timeout():
    """An answer far larger than the socket buffers, to a client that never reads: the
    server's write gives up after send_timeout and the app task ends."""
    timeouts = []
    finished = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()
        chunk = b"z" * (1 << 20)
        headers = [(b"content-length", str(64 * len(chunk)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            for _ in range(64):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            finished.append(trio.current_time())

    async def main():
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(
                    lambda task_status: serve_asgi(
                        app,
                        "127.0.0.1:0",
                        name="test",
                        send_timeout_ms=500,
                        on_send_timeout=lambda: timeouts.append(trio.current_time()),
                        task_status=task_status,
                    )
                )
                sock = trio.socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await sock.connect(("127.0.0.1", port))
                stream = trio.SocketStream(sock)
                await stream.send_all(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                start = trio.current_time()
                while not finished:
                    await trio.sleep(0.05)
                elapsed = trio.current_time() - start
                # The socket was closed: reading now ends after what was buffered.
                received = 0
                with trio.fail_after(5):
                    try:
                        while chunk := await stream.receive_some(1 << 16):
                            received += len(chunk)
                    except trio.BrokenResourceError:
                        pass  # reset: also gone
                nursery.cancel_scope.cancel()
        return elapsed, received

    elapsed, received = trio.run(main)
    assert len(timeouts) == 1
    assert elapsed < 5  # 0.5 s of a stuck write, not forever
    assert received < 64 << 20


def test_refusals_are_counted_by_reason(node):  # noqa: F811
    from node.metrics import Metrics

    metrics = Metrics()
    limits = RpcLimits(listen=f"127.0.0.1:{PORT}")
    app = Guard(RpcApp(node, limits), limits, metrics.rpc_refused)
    assert run(request, app, host="evil.example")[0] == 403
    assert run(request, app, content_type="text/plain")[0] == 415
    assert run(request, app, content_type="text/plain")[0] == 415
    text = metrics.exposition().decode()
    assert 'khazana_rpc_refusals_total{reason="host"} 1.0' in text
    assert 'khazana_rpc_refusals_total{reason="content_type"} 2.0' in text
    assert 'khazana_rpc_refusals_total{reason="budget"} 0.0' in text


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(
        ["127.0.0.1", "localhost", "LocalHost", "[::1]", "evil.example", "127.0.0.1.evil.example"]
        + ["10.0.0.1", "[::2]", "localhost.", ""]
    ),
    port=st.sampled_from([None, PORT, PORT + 1, 80, 0]),
    junk=st.text(max_size=20),
)
def test_host_allowlist_property(name, port, junk):
    allow = HostAllowlist(f"127.0.0.1:{PORT}", ())
    host = name if port is None else f"{name}:{port}"
    local = name.lower() in ("127.0.0.1", "localhost", "[::1]")
    assert allow.allows(host, PORT) == (local and port in (None, PORT)), host
    assert allow.allows(junk, PORT) in (True, False)  # never raises on any header text


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content_type=st.one_of(
        st.none(),
        st.sampled_from(["text/plain", "application/jsonx", "application/json-patch", ""]),
        st.text(max_size=30),
    )
)
def test_only_json_posts_pass(node, content_type):  # noqa: F811
    app = guarded(node)
    status, _ = run(request, app, content_type=content_type)
    is_json = (content_type or "").split(";")[0].strip().lower() == "application/json"
    assert status == (200 if is_json else 415)


def test_answers_not_yet_sent_are_bounded_for_the_whole_node(node):  # noqa: F811
    """Clients that ask for big answers and do not read them: the answers waiting to be sent
    count against max_answer_bytes_in_flight until they are sent."""
    refusals: list[str] = []
    app = guarded(
        node,
        refusals,
        max_answer_bytes=100_000,
        max_batch_answer_bytes=100_000,
        max_answer_bytes_in_flight=100_000,
    )

    async def big():
        return "b" * 60_000

    app.app.jsonrpc.table["genesis"] = Method(big, ())
    body = b'{"jsonrpc":"2.0","method":"genesis","id":1}'

    async def main():
        unblock = trio.Event()
        first: list = []

        async def stalled_reader():
            sent = []

            async def receive():
                if not sent:
                    sent.append(1)
                    return {"type": "http.request", "body": body, "more_body": False}
                await trio.sleep_forever()

            async def send(message):
                if message["type"] == "http.response.body":
                    await unblock.wait()  # the client does not read
                first.append(message)

            scope = {
                "type": "http",
                "method": "POST",
                "path": "/",
                "headers": [(b"host", b"localhost"), (b"content-type", b"application/json")],
                "client": ("192.0.2.9", 1),
                "server": ("127.0.0.1", PORT),
            }
            await app(scope, receive, send)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stalled_reader)
            await trio.testing.wait_all_tasks_blocked()
            busy = await request(app, body)
            small = await request(app)  # health: a small answer is still served
            unblock.set()
        after = await request(app, body)
        return busy, small, after

    busy, small, after = trio.run(main)
    assert busy[1]["error"]["message"] == "Server busy"
    assert "max_answer_bytes_in_flight (100000)" in busy[1]["error"]["data"]
    assert small[0] == 200 and small[1]["result"] == {}
    assert after[1]["result"] == "b" * 60_000  # sent, then its bytes left the pool
    assert app.app.jsonrpc.guard.pool.used == 0
    assert refusals == ["budget"]


class _Signing:
    """Credentials for `WsClient.connect` against the fake node served by `serve_rpc`."""

    def __init__(self, served) -> None:
        self.node = served

    def authorization(self, signer, body: bytes, method: str, path: str) -> str:
        return authorization_header(
            signer,
            chain_id=self.node.genesis["chain_id"],
            node_id=self.node.node_id,
            method=method,
            path=path,
            body=body,
        )


def test_a_websocket_subscriber_that_never_reads_is_disconnected_and_freed(node):  # noqa: F811
    """The probe's non-reading subscribers stayed connected past the cap: here one is cut off
    once a frame has waited send_timeout_ms, its bus place and per-IP count given back."""
    import os

    from node.events import CommittedBlock, CommittedTx
    from node.metrics import Metrics
    from tests.node.test_websocket import WsClient

    bus = EventBus(max_subscribers=4)
    node.events = bus
    metrics = Metrics()
    limits = RpcLimits(listen="127.0.0.1:0", send_timeout_ms=500, ws_queue_size=1000)
    header = node.blocks[0].header
    bulky = tuple(
        CommittedTx(bytes([i]) * 32, header.height, i, os.urandom(256 * 1024), 0, "", ())
        for i in range(8)
    )

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_rpc, node, limits, metrics)
                # As an institution: every transaction's notification is its to read.
                client = await WsClient.connect(port, rcvbuf=4096, node=_Signing(node))
                await client.call(1, "subscribe", {"query": "tm.event='Tx'"})
                assert len(bus) == 1
                # ~50 MB of notifications the client never reads.
                for _ in range(20):
                    bus.publish(CommittedBlock(header.height, header.hash, header.encoded, bulky))
                    await trio.sleep(0.01)
                start = trio.current_time()
                while len(bus):
                    await trio.sleep(0.05)
                freed_after = trio.current_time() - start
                await client.aclose()
                nursery.cancel_scope.cancel()
        return freed_after

    try:
        freed_after = trio.run(main)
    finally:
        del node.events
    assert freed_after < 10
    text = metrics.exposition().decode()
    assert 'khazana_rpc_refusals_total{reason="send_timeout"} 1.0' in text


def test_a_long_page_is_rendered_off_the_trio_thread_with_the_same_rows():
    import threading

    from node.rpc.budget import CallGuard, render_rows

    threads = set()

    def render(row):
        threads.add(threading.get_ident())
        return {"row": row}

    async def main():
        guard = CallGuard.of(RpcLimits())
        tokens = guard.open()
        try:
            long_page = await render_rows(render, list(range(200)))
        finally:
            guard.close(tokens)
        return long_page

    rows = trio.run(main)
    assert rows == [{"row": i} for i in range(200)]
    assert threading.get_ident() not in threads  # not on the trio thread
    short = trio.run(lambda: render_rows(render, [1, 2]))
    assert short == [{"row": 1}, {"row": 2}]


def test_unfinished_headers_and_idle_connections_are_closed_by_the_keep_alive_timeout():
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await receive()
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def closed_after(port: int, data: bytes) -> float:
        stream = await _raw(port, data)
        start = trio.current_time()
        with trio.fail_after(10):
            try:
                while await stream.receive_some(4096):
                    pass
            except trio.BrokenResourceError:
                pass
        await stream.aclose()
        return trio.current_time() - start

    async def main():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_asgi(
                    app,
                    "127.0.0.1:0",
                    name="test",
                    keep_alive_timeout_ms=300,
                    send_timeout_ms=1000,
                    task_status=task_status,
                )
            )
            dribbling = await closed_after(port, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slo")
            silent = await closed_after(port, b"")
            nursery.cancel_scope.cancel()
        return dribbling, silent

    dribbling, silent = trio.run(main)
    assert dribbling < 3 and silent < 3
