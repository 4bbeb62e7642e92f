"""JSON-RPC 2.0 over HTTP (`node/rpc/`) against a real chain.

The node behind the RPC is a fake `NodeApi` whose reads go to a REAL `ledger.chain.Chain`
(blocks built and committed with real transactions) through a real `AsyncStore` on a worker
thread, and whose admission runs the ledger's own `check_transaction`. Most tests drive the
ASGI app in-process (a fake scope/receive/send); one runs hypercorn on port 0 and talks raw
HTTP/1.1 to it. Expectations come from the chain's own objects (header fields, tx ids, state
records), not from the RPC's output.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from consensus.types import Commit
from consensus.wire import encode_message
from ledger.chain import Chain
from ledger.codes import Code, LedgerError
from ledger.crypto import address_to_text
from ledger.execute import check_transaction
from ledger.store import AsyncStore
from ledger.tx import decode_signed_tx
from node.rpc import errors as rpc
from node.rpc.app import RpcApp, serve_rpc
from node.rpc.framing import Method
from node.rpc.limits import RpcLimits
from node.rpc.render import iso_time
from tests.ledger.test_chain import (
    CHAIN_ID,
    DAY_MS,
    GENESIS_MS,
    Signer,
    genesis,
    key,
    setup_txs,
    transfer,
)
from tests.node.rpcauth import auth_headers

VALIDATORS = ("ministry", "central-bank", "regulator", "auditor")


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    code: int
    log: str
    tx_id: bytes
    codespace: str


def certificate(height: int, block_hash: bytes) -> bytes:
    signatures = tuple(
        (key("validator-" + name).address, bytes([i + 1]) * 64) for i, name in enumerate(VALIDATORS)
    )
    return encode_message(Commit(height, 0, block_hash, tuple(sorted(signatures))))


class FakeNode:
    """A `NodeApi` over a real chain: committed reads from its store, admission by the
    ledger's `check_transaction` (accepted transactions are kept in `mempool`)."""

    name = "ministry"
    role = "validator"
    chain_id = CHAIN_ID

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.genesis = chain.genesis
        self.node_id = key("validator-ministry").public_key.hex()
        self.validator_address = key("validator-ministry").address
        limiter = trio.CapacityLimiter(1)
        self.store = AsyncStore(
            chain.store, functools.partial(trio.to_thread.run_sync, limiter=limiter)
        )
        self.mempool: list[bytes] = []
        self.fail_status = False

    async def status(self) -> dict:
        if self.fail_status:
            raise RuntimeError("secret internal detail")
        height = await self.store.read(lambda s: s.blocks.latest_height())
        stored = await self.store.read(lambda s: s.blocks.block(height))
        return {
            "node_info": {
                "id": self.node_id,
                "moniker": self.name,
                "network": self.chain_id,
                "role": self.role,
            },
            "sync_info": {
                "latest_block_height": height,
                "latest_block_hash": stored.hash.hex(),
                "latest_app_hash": stored.app_hash.hex(),
                "latest_block_time": "",
                "catching_up": False,
            },
            "validator_info": {"address": self.validator_address.hex(), "voting_power": 10},
        }

    def _admit(self, raw: bytes) -> AdmissionResult:
        try:
            tx_id = decode_signed_tx(raw).tx_id
        except LedgerError as exc:
            return AdmissionResult(int(exc.code), exc.message, b"", "ledger")
        ctx = self.chain.context(self.chain.height + 1, self.chain.last_time_ms + 1)
        receipt = check_transaction(self.chain.state, raw, ctx)
        return AdmissionResult(
            int(receipt.code), receipt.log, tx_id, "ledger" if receipt.code else ""
        )

    async def submit_tx(self, raw: bytes) -> AdmissionResult:
        result = self._admit(raw)
        if result.code == 0:
            self.mempool.append(raw)
        return result

    async def submit_txs(self, raws: list[bytes]) -> list[AdmissionResult]:
        return [await self.submit_tx(raw) for raw in raws]

    async def check_tx(self, raw: bytes) -> AdmissionResult:
        return self._admit(raw)

    def peers(self) -> list[dict]:
        return [{"id": "ab" * 32, "address": "127.0.0.1:26656", "name": "central-bank"}]

    def mempool_stats(self) -> tuple[int, int]:
        return len(self.mempool), sum(len(raw) for raw in self.mempool)

    async def validators(self, height):
        validators = self.chain.state.validator_set.validators
        return (height or self.chain.height), [
            {"name": v.name, "pub_key": v.public_key.hex(), "voting_power": v.power}
            for v in validators
        ]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """Two committed blocks: setup (cash token, alice and bob, cash to alice), a transfer."""
    chain = Chain.open(tmp_path_factory.mktemp("rpc") / "node.db", genesis())
    signer = Signer()
    blocks = []
    for day, txs in ((1, setup_txs(signer)), (2, [transfer(signer, "alice", "bob", 2_500)])):
        pending = chain.build_block(
            txs, GENESIS_MS + day * DAY_MS, key("validator-ministry").address
        )
        chain.commit(pending, certificate(pending.header.height, pending.header.hash))
        blocks.append(pending)
    fake = FakeNode(chain)
    fake.blocks = blocks
    fake.signer = signer
    yield fake
    chain.close()


# --------------------------------------------------------------------------- ASGI driving


async def asgi(app, method: str, path: str, body: bytes = b"", chunk: int | None = None):
    """One HTTP request through the ASGI app: (status, headers, body)."""
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = auth_headers(app, method, path, body) if method == "POST" else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    await app(scope, receive, send)
    start, reply = sent
    return start["status"], dict(start["headers"]), reply["body"]


def post(app, payload, *, raw: bytes | None = None, chunk: int | None = None):
    body = raw if raw is not None else json.dumps(payload).encode()
    status, headers, reply = trio.run(asgi, app, "POST", "/", body, chunk)
    return status, (json.loads(reply) if reply else None)


def call(app, method, params=None, request_id=1):
    request = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        request["params"] = params
    status, answer = post(app, request)
    assert status == 200
    assert answer["id"] == request_id and answer["jsonrpc"] == "2.0"
    return answer


def result(app, method, params=None):
    answer = call(app, method, params)
    assert "error" not in answer, answer
    return answer["result"]


def error(app, method, params=None):
    answer = call(app, method, params)
    assert "result" not in answer, answer
    return answer["error"]


@pytest.fixture
def app(node):
    return RpcApp(node)


# --------------------------------------------------------------------------- JSON-RPC rules


def test_parse_error(app):
    for raw in (b"{not json", b"", b"\xff\xfe", b'{"a": NaN}', b"[" * 100_000):
        status, answer = post(app, None, raw=raw)
        assert status == 200
        assert answer == {
            "jsonrpc": "2.0",
            "error": {"code": -32700, "message": "Parse error"},
            "id": None,
        }


@pytest.mark.parametrize(
    "request_obj",
    [
        1,
        "health",
        None,
        {"method": "health", "id": 1},  # no jsonrpc
        {"jsonrpc": "1.0", "method": "health", "id": 1},
        {"jsonrpc": "2.0", "method": 5, "id": 1},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "method": "health", "params": "x", "id": 1},
        {"jsonrpc": "2.0", "method": "health", "id": [1]},
        {"jsonrpc": "2.0", "method": "health", "id": True},
    ],
)
def test_invalid_request(app, request_obj):
    status, answer = post(app, request_obj)
    assert answer["error"]["code"] == -32600
    # The id is echoed only when it is a valid id.
    expected_id = request_obj.get("id") if isinstance(request_obj, dict) else None
    assert answer["id"] == (expected_id if type(expected_id) is int else None)


def test_method_not_found_and_ids_echoed(app):
    for request_id in (7, "abc", None, 2.5):
        answer = call(app, "no_such_method", request_id=request_id)
        assert answer["error"]["code"] == -32601
    assert call(app, "health", request_id="x-1") == {"jsonrpc": "2.0", "result": {}, "id": "x-1"}


def test_notification_gets_no_answer_even_on_error(app, node):
    status, _, body = trio.run(
        asgi, app, "POST", "/", json.dumps({"jsonrpc": "2.0", "method": "health"}).encode()
    )
    assert (status, body) == (204, b"")
    status, _, body = trio.run(
        asgi, app, "POST", "/", json.dumps({"jsonrpc": "2.0", "method": "nope"}).encode()
    )
    assert (status, body) == (204, b"")


def test_batch(app):
    batch = [
        {"jsonrpc": "2.0", "method": "health", "id": 1},
        {"jsonrpc": "2.0", "method": "health"},  # notification: no entry
        {"jsonrpc": "2.0", "method": "nope", "id": 2},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "num_unconfirmed_txs", "id": "n"},
    ]
    status, answer = post(app, batch)
    assert status == 200
    assert [a["id"] for a in answer] == [1, 2, None, "n"]
    assert answer[0]["result"] == {}
    assert answer[1]["error"]["code"] == -32601
    assert answer[2]["error"]["code"] == -32600
    assert set(answer[3]["result"]) == {"n_txs", "total_bytes"}


def test_empty_batch_and_invalid_batch_entries(app):
    status, answer = post(app, [])
    assert answer["error"]["code"] == -32600 and answer["id"] is None
    status, answer = post(app, [1, 2])
    assert [a["error"]["code"] for a in answer] == [-32600, -32600]


def test_all_notification_batch_has_no_body(app):
    batch = [{"jsonrpc": "2.0", "method": "health"}, {"jsonrpc": "2.0", "method": "status"}]
    status, _, body = trio.run(asgi, app, "POST", "/", json.dumps(batch).encode())
    assert (status, body) == (204, b"")


def test_batch_size_limit(node):
    app = RpcApp(node, RpcLimits(max_batch=3))
    call_ = {"jsonrpc": "2.0", "method": "health", "id": 1}
    assert len(post(app, [call_] * 3)[1]) == 3
    status, answer = post(app, [call_] * 4)
    assert answer["error"]["code"] == -32600 and "at most 3" in answer["error"]["data"]


def test_body_too_large_is_413_with_jsonrpc_error(node):
    app = RpcApp(node, RpcLimits(max_body_bytes=1000))
    padding = "x" * 2000
    request = {"jsonrpc": "2.0", "method": "health", "id": 1, "params": {"p": padding}}
    # Streamed in chunks (no content-length): refused as soon as the limit is passed.
    status, answer = post(app, request, chunk=300)
    assert status == 413
    assert answer["error"]["code"] == -32600 and answer["id"] is None
    # Within the limit, the same app answers.
    status, answer = post(app, {"jsonrpc": "2.0", "method": "health", "id": 1}, chunk=7)
    assert (status, answer["result"]) == (200, {})


def test_default_body_limit_is_one_mib(node):
    app = RpcApp(node)
    body = json.dumps({"jsonrpc": "2.0", "method": "health", "id": 1, "params": ["x" * (1 << 20)]})
    status, answer = post(app, None, raw=body.encode())
    assert status == 413


def test_internal_error_hides_details_and_logs(app, node, caplog):
    node.fail_status = True
    try:
        answer = call(app, "status")
    finally:
        node.fail_status = False
    assert answer["error"] == {"code": -32603, "message": "Internal error"}
    assert "secret" not in json.dumps(answer)
    assert "secret internal detail" in caplog.text


def test_result_that_is_not_json_is_an_internal_error(node, caplog):
    app = RpcApp(node)

    async def leaky():
        return {"hash": b"raw bytes"}

    app.methods.table["status"] = Method(leaky, ())
    status, answer = post(app, {"jsonrpc": "2.0", "method": "status", "id": 1})
    assert status == 200 and answer["error"]["code"] == -32603
    assert "not JSON" in caplog.text


def test_request_timeout(node):
    app = RpcApp(node, RpcLimits(request_timeout_ms=200))

    async def stuck():
        await trio.sleep(30)

    app.methods.table["status"] = Method(stuck, ())

    async def run():
        with trio.fail_after(5):
            return await app.jsonrpc.handle_body(b'{"jsonrpc":"2.0","method":"status","id":3}')

    answer = trio.run(run)
    assert answer["error"]["code"] == -32000 and answer["id"] == 3


def test_concurrency_limit_answers_503(node):
    app = RpcApp(node, RpcLimits(max_connections=1))
    body = b'{"jsonrpc":"2.0","method":"health","id":1}'

    async def run():
        release = trio.Event()

        async def held():
            await release.wait()
            return {}

        app.methods.table["health"] = Method(held, ())
        first = []

        async def one():
            first.append(await asgi(app, "POST", "/", body))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            second = await asgi(app, "POST", "/", body)
            release.set()
        third = await asgi(app, "POST", "/", body)  # the slot was given back
        return first[0], second, third

    first, busy, again = trio.run(run)
    assert busy[0] == 503 and json.loads(busy[2])["error"]["code"] == -32000
    assert first[0] == 200 and again[0] == 200


def test_http_routes(app):
    assert trio.run(asgi, app, "GET", "/health")[0] == 200
    assert trio.run(asgi, app, "GET", "/")[0] == 405
    assert trio.run(asgi, app, "POST", "/elsewhere")[0] == 404


def test_params_by_position_and_invalid_params(app, node):
    header = node.blocks[0].header
    assert result(app, "block", [1])["block_id"]["hash"] == header.hash.hex()
    assert result(app, "block", {"height": 1})["block_id"]["hash"] == header.hash.hex()
    # CometBFT's decimal-string height is the same height (tests/node/test_rpc_cometbft.py).
    assert result(app, "block", {"height": "1"})["block_id"]["hash"] == header.hash.hex()
    bad = ([1, 2], {"heigth": 1}, {"height": "01"}, {"height": 0}, {"height": True}, [-1])
    for params in (*bad, {"height": "1.0"}, {"height": " 1"}, {"height": "-1"}, {"height": "0"}):
        assert error(app, "block", params)["code"] == -32602, params
    assert error(app, "broadcast_tx_sync", {})["code"] == -32602


# --------------------------------------------------------------------------- methods


def test_health_status_net_info_genesis(app, node):
    assert result(app, "health") == {}
    status = result(app, "status")
    assert status["node_info"]["network"] == CHAIN_ID
    assert status["sync_info"]["latest_block_height"] == 2
    assert status["sync_info"]["latest_block_hash"] == node.blocks[1].header.hash.hex()
    net = result(app, "net_info")
    assert net["n_peers"] == 1 and net["peers"][0]["name"] == "central-bank"
    assert result(app, "genesis")["genesis"] == node.genesis


def test_block(app, node):
    pending = node.blocks[0]
    header = pending.header
    got = result(app, "block", {"height": 1})
    assert got["block_id"] == {"hash": header.hash.hex()}
    h = got["block"]["header"]
    assert h["height"] == 1 and h["chain_id"] == CHAIN_ID
    assert h["time_ms"] == GENESIS_MS + DAY_MS
    assert h["time"] == "2026-01-02T00:00:00.000Z"
    assert h["app_hash"] == header.app_hash.hex() and h["prev_hash"] == header.prev_hash.hex()
    assert h["proposer"] == key("validator-ministry").address.hex()
    assert [base64.b64decode(t) for t in got["block"]["txs"]] == list(pending.block.txs)
    assert got["block"]["last_commit"] is None  # block 1: genesis has no certificate
    latest = result(app, "block")
    assert latest["block_id"]["hash"] == node.blocks[1].header.hash.hex()
    assert latest["block"]["last_commit"]["block_id"]["hash"] == header.hash.hex()
    assert error(app, "block", {"height": 3})["code"] == rpc.NOT_FOUND


def test_commit(app, node):
    header = node.blocks[1].header
    got = result(app, "commit", {"height": 2})
    assert got["signed_header"]["header"]["app_hash"] == header.app_hash.hex()
    commit = got["signed_header"]["commit"]
    assert commit["height"] == 2 and commit["block_id"]["hash"] == header.hash.hex()
    assert sorted(s["validator"] for s in commit["signatures"]) == sorted(
        key("validator-" + n).address.hex() for n in VALIDATORS
    )
    assert error(app, "commit", {"height": 99})["code"] == rpc.NOT_FOUND
    assert error(app, "commit", {"height": "two"})["code"] == -32602


def test_tx(app, node):
    raw = node.blocks[1].block.txs[0]
    tx_id = decode_signed_tx(raw).tx_id
    got = result(app, "tx", {"hash": tx_id.hex()})
    assert (got["hash"], got["height"], got["index"]) == (tx_id.hex(), 2, 0)
    assert base64.b64decode(got["tx"]) == raw
    assert got["tx_result"]["code"] == 0
    transfer_event = [e for e in got["tx_result"]["events"] if e["type"] == "transfer"][0]
    assert transfer_event["attributes"]["to"] == address_to_text(key("bob").address)
    assert transfer_event["attributes"]["amount"] == 2_500
    assert error(app, "tx", {"hash": "00" * 32})["code"] == rpc.NOT_FOUND
    for bad in (
        {"hash": "zz" * 32},
        {"hash": "00"},
        {"hash": 5},
        {"hash": tx_id.hex(), "prove": 1},
    ):
        assert error(app, "tx", bad)["code"] == -32602


def test_broadcast_and_check_tx(app, node):
    good = transfer(node.signer, "alice", "bob", 100)
    tx_id = decode_signed_tx(good).tx_id
    checked = result(app, "check_tx", {"tx": base64.b64encode(good).decode()})
    assert checked == {"code": 0, "codespace": "", "log": "", "hash": tx_id.hex()}
    assert node.mempool_stats() == (0, 0)  # check_tx stores nothing
    sent = result(app, "broadcast_tx_sync", [base64.b64encode(good).decode()])
    assert sent["code"] == 0 and sent["hash"] == tx_id.hex()
    assert result(app, "num_unconfirmed_txs") == {"n_txs": 1, "total_bytes": len(good)}
    node.mempool.clear()
    # A rejected transaction is a result with a code, not a JSON-RPC error.
    too_much = transfer(Signer(), "bob", "alice", 10**9)  # bob holds 2_500
    rejected = result(app, "broadcast_tx_sync", {"tx": base64.b64encode(too_much).decode()})
    assert rejected["code"] == Code.INSUFFICIENT_BALANCE and rejected["codespace"] == "khazana"
    assert rejected["log"]
    garbage = result(app, "check_tx", {"tx": base64.b64encode(b"\x01\x02").decode()})
    assert garbage["code"] != 0 and garbage["codespace"] == "khazana"
    assert garbage["hash"] is None and garbage["log"]
    for bad in ({"tx": "not base64!"}, {"tx": ""}, {"tx": 5}, {"raw": "AA=="}):
        assert error(app, "broadcast_tx_sync", bad)["code"] == -32602


def test_batched_broadcasts_answer_as_the_calls_one_by_one(app, node):
    wallet = Signer()  # alice's next committed nonce, whatever earlier tests signed
    wallet.nonces["alice"] = node.chain.state.accounts[key("alice").address].nonce
    good = transfer(wallet, "alice", "bob", 100)
    too_much = transfer(Signer(), "bob", "alice", 10**9)  # bob holds 2_500
    calls = [
        {"jsonrpc": "2.0", "id": k, "method": "broadcast_tx_sync", "params": {"tx": tx}}
        for k, tx in enumerate(base64.b64encode(raw).decode() for raw in (too_much, good))
    ]
    node.mempool.clear()
    singly = [result(app, "check_tx", c["params"]) for c in calls]
    status, batch = post(app, calls)
    assert status == 200 and [a["id"] for a in batch] == [0, 1]
    assert [a["result"] for a in batch] == singly  # the same verdicts, in order
    assert batch[0]["result"]["code"] == Code.INSUFFICIENT_BALANCE
    assert batch[1]["result"]["code"] == 0 and node.mempool == [good]
    node.mempool.clear()


def test_account(app, node):
    alice = result(app, "account", {"address": address_to_text(key("alice").address)})
    assert alice["address"] == address_to_text(key("alice").address)
    assert alice["kyc"]["country"] == "PK" and alice["frozen"] is None
    assert alice["balances"] == [{"instrument": "PKR", "balance": 7_500, "frozen": 0}]
    bank = result(app, "account", [address_to_text(key("central-bank").address)])
    assert bank["nonce"] == 2 and bank["roles"] and bank["balances"] == []
    missing = error(app, "account", {"address": address_to_text(key("nobody").address)})
    assert missing["code"] == rpc.NOT_FOUND
    for bad in ({"address": "kz1nope"}, {"address": 1}, {}):
        assert error(app, "account", bad)["code"] == -32602


def test_instruments_and_holders(app):
    pkr = result(app, "instrument", {"id": "PKR"})
    assert pkr["kind"] == "cash" and pkr["supply"] == 10_000 and pkr["status"] == "active"
    assert pkr["issuer"] == address_to_text(key("central-bank").address)
    assert error(app, "instrument", {"id": "NOPE"})["code"] == rpc.NOT_FOUND
    assert error(app, "instrument", {"id": ""})["code"] == -32602
    assert [i["id"] for i in result(app, "instruments")["instruments"]] == ["PKR"]
    holders = result(app, "holders", {"id": "PKR"})["holders"]
    expected = sorted(
        [(key("alice").address, 7_500), (key("bob").address, 2_500)], key=lambda pair: pair[0]
    )
    assert [(h["address"], h["balance"]) for h in holders] == [
        (address_to_text(a), b) for a, b in expected
    ]
    first = result(app, "holders", {"id": "PKR", "limit": 1})
    assert first["next"] == holders[0]["address"]
    second = result(app, "holders", {"id": "PKR", "after": first["next"], "limit": 1})
    assert second["holders"] == holders[1:]
    assert error(app, "holders", {"id": "PKR", "limit": 0})["code"] == -32602
    assert error(app, "holders", {"id": "NOPE"})["code"] == rpc.NOT_FOUND


def test_events(app, node):
    bob = address_to_text(key("bob").address)
    got = result(app, "events", {"account": bob})["events"]
    # The transfer to bob, then bob's credit (protocol version 3).
    assert [e["type"] for e in got][-2:] == ["transfer", "balance_change"]
    assert got[-1]["attributes"]["account"] == bob and got[-1]["attributes"]["amount"] > 0
    assert all(bob in json.dumps(e["attributes"]) for e in got)
    by_height = result(app, "events", {"from_height": 2, "to_height": 2})["events"]
    assert {e["height"] for e in by_height} == {2}
    everything = result(app, "events", {"per_page": 1000})["events"]
    paged = result(app, "events", {"page": 2, "per_page": 1})["events"]
    assert paged == everything[1:2]
    for bad in ({"page": 0}, {"per_page": 5000}, {"account": "x"}, {"from_height": -1}):
        assert error(app, "events", bad)["code"] == -32602


def test_validators(app):
    got = result(app, "validators")
    assert got["block_height"] == 2 and len(got["validators"]) == 4
    assert error(app, "validators", {"height": 50})["code"] == rpc.NOT_FOUND


def test_iso_time_exact():
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(GENESIS_MS + 1_234) == "2026-01-01T00:00:01.234Z"


# --------------------------------------------------------------------------- over real HTTP


async def http(
    port: int, method: str, path: str, body: bytes = b"", length: int | None = None
) -> tuple[int, bytes]:
    """A raw HTTP/1.1 exchange; `length` announces a body size other than `body`'s."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        length = len(body) if length is None else length
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def test_served_by_hypercorn_on_port_zero(node):
    async def main():
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_rpc, node, RpcLimits(listen="127.0.0.1:0"))
                assert port > 0
                status, body = await http(
                    port, "POST", "/", b'{"jsonrpc":"2.0","method":"block","params":[2],"id":9}'
                )
                answer = json.loads(body)
                assert status == 200 and answer["id"] == 9
                assert answer["result"]["block_id"]["hash"] == node.blocks[1].header.hash.hex()
                assert (await http(port, "GET", "/health"))[0] == 200
                # A 2 MiB body announced: refused from its Content-Length, before it is sent.
                status, body = await http(port, "POST", "/", length=2 << 20)
                assert status == 413 and json.loads(body)["error"]["code"] == -32600
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_limits_from_node_config():
    from node.config import HostPort, RpcConfig

    section = RpcConfig(
        listen=HostPort("0.0.0.0", 26657),
        max_body_bytes=2048,
        max_batch=4,
        max_connections=9,
        request_timeout_ms=1500,
    )
    limits = RpcLimits.from_config(section)
    assert limits == RpcLimits("0.0.0.0:26657", 2048, 4, 9, 1500)

    class NodeConfigLike:
        rpc = section

    assert RpcLimits.from_config(NodeConfigLike()) == limits
