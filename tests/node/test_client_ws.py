"""SDK subscriptions (`node/client/ws.py` and its two transports) and the CLI's
`khazana query subscribe`.

The sans-IO session is driven by a wsproto *server* connection -- an independent WebSocket
implementation -- for what a live node will not do on demand (a 1008 close, a refused
handshake, a notification ahead of its answer). Everything else runs against a real
one-validator node (`python -m node start`, tests/node/test_client.Node), killed at the end:
expectations come from the node's own `tx` / `block` reads and the ledger's tx ids, not
from the subscription being tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)

from ledger.crypto import generate_key
from node.cli import main
from node.client import (
    AsyncClient,
    Client,
    QueryRefused,
    SubscriptionClosed,
    SubscriptionTimeout,
    TxBuilder,
)
from node.client.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, KEY_ENV, RPC_ENV, _rpc_default
from node.client.core import DEFAULT_RPC, Endpoint
from node.client.ws import PENDING, WsSession
from node.home import init_network
from tests.node.test_client import Node

ROOT = Path(__file__).resolve().parents[2]
NEW_BLOCK = "tm.event='NewBlock'"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = Node(tmp_path_factory.mktemp("ws"))
    # The CLI reads as an institution here ($KHAZANA_KEY); who may read what is
    # tests/node/test_rpc_scopes.py's.
    previous = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = node.key_files["ministry"]
    try:
        node.start()
        yield node
    finally:
        node.net.stop_all()
        if previous is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = previous


# --------------------------------------------------------------------------- sans-IO


class FakeNode:
    """The server side of one WebSocket, by wsproto, wired to a `WsSession`."""

    def __init__(self) -> None:
        self.session = WsSession(Endpoint.parse("http://127.0.0.1:9"))
        self.ws = WSConnection(ConnectionType.SERVER)
        self.requests: list[dict] = []
        self.pump()

    def pump(self) -> None:
        """Move the client's bytes to the server; collect its requests."""
        self.ws.receive_data(self.session.data_to_send())
        for event in self.ws.events():
            if isinstance(event, Request):
                self.request_event = event
            elif isinstance(event, TextMessage):
                self.requests.append(json.loads(event.data))
            elif isinstance(event, CloseConnection):
                self.client_close = event
                self.session.receive_data(self.ws.send(event.response()))

    def accept(self) -> None:
        self.session.receive_data(self.ws.send(AcceptConnection()))

    def send(self, message: dict) -> None:
        self.session.receive_data(self.ws.send(TextMessage(data=json.dumps(message))))


def notification(request_id: int, height: int) -> dict:
    value = {"block_id": {"hash": f"{height:064x}"}, "block": {"header": {"height": height}}}
    result = {"query": NEW_BLOCK, "data": {"type": "NewBlock", "value": value}}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def test_session_handshake_answers_and_notifications_in_order():
    fake = FakeNode()
    assert fake.request_event.target == "/websocket"
    assert not fake.session.opened
    fake.accept()
    assert fake.session.opened
    sid = fake.session.subscribe(NEW_BLOCK)
    fake.pump()
    [request] = fake.requests
    assert request == {
        "jsonrpc": "2.0",
        "id": sid,
        "method": "subscribe",
        "params": {"query": NEW_BLOCK},
    }
    # The node registers the query before it answers: an event may come first; kept.
    fake.send(notification(sid, 7))
    assert fake.session.take_answer(sid) is PENDING
    fake.send({"jsonrpc": "2.0", "id": sid, "result": {"query": NEW_BLOCK}})
    fake.send(notification(sid, 8))
    assert fake.session.take_answer(sid) == {"query": NEW_BLOCK}
    events = [fake.session.take_event(sid), fake.session.take_event(sid)]
    assert [(e.kind, e.height, e.hash) for e in events] == [
        ("NewBlock", 7, f"{7:064x}"),
        ("NewBlock", 8, f"{8:064x}"),
    ]
    assert fake.session.take_event(sid) is None  # nothing more yet


def test_session_node_close_is_subscription_closed_with_code_and_reason():
    fake = FakeNode()
    fake.accept()
    sid = fake.session.subscribe(NEW_BLOCK)
    fake.send(notification(sid, 3))
    fake.session.receive_data(fake.ws.send(CloseConnection(1008, "too slow: 256 queued")))
    assert fake.session.take_event(sid).height == 3  # what came before the close is kept
    with pytest.raises(SubscriptionClosed) as caught:
        fake.session.take_event(sid)
    assert (caught.value.code, caught.value.reason) == (1008, "too slow: 256 queued")
    assert "1008 too slow" in str(caught.value)
    # The session answered the close, as RFC 6455 asks.
    fake.ws.receive_data(fake.session.data_to_send())
    [answer] = [e for e in fake.ws.events() if isinstance(e, CloseConnection)]
    assert answer.code == 1008
    assert fake.ws.state.name == "CLOSED"
    with pytest.raises(SubscriptionClosed):
        fake.session.call("status")


def test_session_lost_connection_and_refused_handshake():
    fake = FakeNode()
    fake.accept()
    sid = fake.session.subscribe(NEW_BLOCK)
    fake.session.receive_data(b"")  # EOF, no close frame
    with pytest.raises(SubscriptionClosed) as caught:
        fake.session.take_event(sid)
    assert caught.value.code == 1006

    refused = FakeNode()
    refused.session.receive_data(refused.ws.send(RejectConnection(status_code=403, has_body=False)))
    assert refused.session.ended and not refused.session.opened
    assert isinstance(refused.session.error, SubscriptionClosed)
    assert refused.session.error.code == 403


def test_session_refused_query_and_our_own_close():
    fake = FakeNode()
    fake.accept()
    sid = fake.session.subscribe("tm.event='Bogus'")
    error = {"code": -32602, "message": "Invalid params", "data": "unknown tm.event 'Bogus'"}
    fake.send({"jsonrpc": "2.0", "id": sid, "error": error})
    with pytest.raises(QueryRefused) as caught:
        fake.session.take_answer(sid)
    assert caught.value.code == -32602 and caught.value.query == "tm.event='Bogus'"
    assert "unknown tm.event 'Bogus'" in str(caught.value)
    good = fake.session.subscribe(NEW_BLOCK)
    fake.session.close()
    fake.pump()
    assert fake.client_close.code == 1000
    assert fake.session.finished
    assert fake.session.take_event(good) is WsSession.ENDED  # our close ends, no error


def test_session_bounds_unread_events():
    fake = FakeNode()
    fake.session.max_pending = 3
    fake.accept()
    sid = fake.session.subscribe(NEW_BLOCK)
    for height in range(1, 5):
        fake.send(notification(sid, height))
    fake.pump()
    assert fake.client_close.code == 1008
    assert [fake.session.take_event(sid).height for _ in range(4)] == [1, 2, 3, 4]
    with pytest.raises(SubscriptionClosed, match="more than 3 events"):
        fake.session.take_event(sid)


# --------------------------------------------------------------------------- live node


def transfer_tx(node, client: Client, amount_seed: int):
    """A signed, not yet submitted registration (its id is known before any block)."""
    bank = node.keys["central-bank"]
    operation = TxBuilder.register_instrument(
        id=f"WS-CASH-{amount_seed}",
        kind="cash",
        name="ws test cash",
        currency="USD",
        face_value=1,
        decimals=2,
        cap=10**12,
    )
    return client.prepare(operation, [bank])


def test_sync_new_blocks_come_in_order(node):
    client = Client(node.url, key=node.reader)
    with client.subscribe(NEW_BLOCK, timeout=10) as blocks:
        assert blocks.query == NEW_BLOCK
        events = [next(blocks) for _ in range(3)]
    heights = [e.height for e in events]
    assert heights == list(range(heights[0], heights[0] + 3))
    for event in events:  # each event is the block the node serves at that height
        assert event.hash == client.block(event.height)["block_id"]["hash"]


def test_sync_tx_hash_subscription_sees_the_commit(node):
    client = Client(node.url, key=node.reader)
    tx = transfer_tx(node, client, 1)
    tx_hash = tx.tx_id.hex()
    with client.subscribe(f"tx.hash='{tx_hash}'", timeout=15) as watch:
        assert tx_hash in watch.query
        client.broadcast(tx)
        event = next(watch)
    record = client.tx(tx_hash)
    assert (event.kind, event.hash, event.height) == ("Tx", tx_hash, record["height"])
    assert event.value["tx_result"]["code"] == record["tx_result"]["code"] == 0
    assert event.value["tx_result"]["events"][0]["type"] == "instrument_registered"


def test_unsubscribe_stops_one_subscription_and_frees_the_nodes_slots(node):
    client = Client(node.url, key=node.reader)
    accounts = [generate_key(bytes([40 + i]) * 32).address_text for i in range(17)]
    with client.websocket() as ws:
        blocks = ws.subscribe(NEW_BLOCK, timeout=10)
        first = next(blocks)
        blocks.unsubscribe()
        assert list(blocks) == []  # the iteration ends
        # The node holds 16 subscriptions per connection: after unsubscribe_all it has room
        # for 16 new ones again (it would refuse the 17th otherwise), so they really ended.
        for address in accounts[:15]:
            ws.subscribe(f"account='{address}'")
        ws.unsubscribe_all()
        subscriptions = [ws.subscribe(f"account='{a}'") for a in accounts[:15]]
        watch = ws.subscribe(NEW_BLOCK, timeout=10)
        with pytest.raises(QueryRefused) as caught:
            ws.subscribe(f"account='{accounts[16]}'")
        assert caught.value.code == -32602
        assert len(subscriptions) == 15
        # The connection still works for calls and the remaining subscription.
        assert ws.call("status")["node_info"]["network"] == "khazana-sdktest"
        assert next(watch).height > first.height


def test_bad_query_and_timeout_in_the_sync_client(node):
    client = Client(node.url, key=node.reader)
    with pytest.raises(QueryRefused) as caught:
        client.subscribe("tm.event='Bogus'")
    assert caught.value.code == -32602 and "Bogus" in str(caught.value)
    nobody = "0" * 64
    with client.subscribe(f"tx.hash='{nobody}'", timeout=0.3) as never:
        with pytest.raises(SubscriptionTimeout):
            next(never)


def test_trio_client_blocks_and_txs_on_one_connection(node):
    sync_client = Client(node.url, key=node.reader)
    txs = [transfer_tx(node, sync_client, 10), None]

    async def main():
        client = AsyncClient(node.url, key=node.reader)
        async with client.subscribe(NEW_BLOCK) as blocks:
            heights = []
            async for event in blocks:
                heights.append(event.height)
                if len(heights) == 2:
                    break
        assert heights[1] == heights[0] + 1
        with pytest.raises(QueryRefused):
            async with client.subscribe("tm.event='Bogus'"):
                pass
        async with client.websocket() as ws:
            mine = await ws.subscribe("tm.event='Tx' AND instrument='WS-CASH-10'")
            news = await ws.subscribe(NEW_BLOCK)
            seen: dict[str, list] = {"tx": [], "block": []}

            async def read(subscription, into, count):
                async for event in subscription:
                    into.append(event)
                    if len(into) == count:
                        return

            with trio.fail_after(15):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read, mine, seen["tx"], 1)
                    nursery.start_soon(read, news, seen["block"], 3)
                    await trio.to_thread.run_sync(sync_client.broadcast, txs[0])
            [tx_event] = seen["tx"]
            assert tx_event.hash == txs[0].tx_id.hex()
            block_heights = [e.height for e in seen["block"]]
            assert block_heights == sorted(block_heights) and len(set(block_heights)) == 3
            await mine.unsubscribe()
            assert [e async for e in mine] == []
            assert (await ws.call("health")) == {}

    trio.run(main)
    assert sync_client.tx(txs[0].tx_id.hex())["tx_result"]["code"] == 0


# --------------------------------------------------------------------------- CLI


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_subscribe_prints_count_events_and_exits_0(node, capsys):
    code, out, err = run(
        capsys, "query", "subscribe", NEW_BLOCK, "--count", "3", "--json", "--rpc", node.url
    )
    assert (code, err) == (EXIT_OK, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    heights = [line["value"]["block"]["header"]["height"] for line in lines]
    assert heights == list(range(heights[0], heights[0] + 3))
    assert all(line["type"] == "NewBlock" and line["query"] == NEW_BLOCK for line in lines)

    code, out, err = run(capsys, "query", "subscribe", NEW_BLOCK, "--count", "2", "--rpc", node.url)
    assert code == EXIT_OK
    readable = out.splitlines()
    assert len(readable) == 2 and all(line.startswith("block ") for line in readable)
    height = int(readable[0].split()[1])
    assert (
        readable[0].split()[2]
        == Client(node.url, key=node.reader).block(height)["block_id"]["hash"]
    )


def test_cli_subscribe_refusals(node, capsys):
    code, out, err = run(capsys, "query", "subscribe", "tm.event='Bogus'", "--rpc", node.url)
    assert code == EXIT_REFUSED and out == ""
    assert err.count("\n") == 1 and "-32602" in err and "Bogus" in err
    code, _, err = run(capsys, "query", "subscribe", NEW_BLOCK, "--count", "0", "--rpc", node.url)
    assert code == EXIT_USAGE and "--count" in err


def test_reader_closing_the_pipe_ends_quietly(node):
    env = {**os.environ, "PYTHONPATH": str(ROOT), RPC_ENV: node.url}
    for argv in (["query", "subscribe", NEW_BLOCK, "--count", "50"], ["query", "genesis"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout.readline()  # like `| head -1`: one line, then the pipe closes
            proc.stdout.close()
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert err.decode() == "", argv
        assert proc.returncode == EXIT_OK, argv


def test_default_rpc_is_the_first_node_khazana_init_writes(tmp_path, monkeypatch):
    network = init_network(tmp_path, validators=2)
    assert network.nodes[0].rpc_url == DEFAULT_RPC
    monkeypatch.delenv(RPC_ENV, raising=False)
    assert _rpc_default() == DEFAULT_RPC
    monkeypatch.setenv(RPC_ENV, "http://10.1.2.3:9999")
    assert _rpc_default() == "http://10.1.2.3:9999"
    assert Client().url == AsyncClient().url == DEFAULT_RPC
