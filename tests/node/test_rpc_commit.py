"""broadcast_tx_commit and CORS against a real node: a driver with its chain, store thread,
event bus and JSON-RPC served by hypercorn on a loopback port (bound from port 0).

`live_node` (also used by test_websocket.py and test_proofs.py) runs a one-validator chain
that commits on its own; with `validators=4` only the first of four genesis validators runs,
so nothing ever commits (the timeout case)."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import trio

from consensus.core import CoreConfig
from ledger.chain import Chain
from ledger.crypto import generate_key
from ledger.genesis import default_genesis
from ledger.store import AsyncStore
from ledger.tx import TxBody, sign_tx
from node.api import NodeApi, NodeInfo
from node.driver import Driver, DriverConfig, DriverOptions, DriverParts
from node.events import EventBus
from node.mempool import Mempool, MempoolLimits
from node.rpc.app import serve_rpc
from node.rpc.auth import authorization_header
from node.rpc.errors import COMMIT_TIMEOUT
from node.rpc.limits import RpcLimits

CHAIN_ID = "khazana-rpc-test"
INSTITUTIONS = ("ministry", "central-bank", "regulator", "auditor")
CORE = CoreConfig(
    timeout_propose_ms=600, timeout_prevote_ms=300, timeout_precommit_ms=300, retransmit_ms=500
)


def key(name: str):
    return generate_key(name.encode().ljust(32, b"\x00")[:32])


SIGNER = key("ministry")  # an institution: reads everything (tests/node/test_rpc_scopes.py
# is where who may read what is tested)


def validator_key(index: int):
    return key(f"validator-{index}")


def genesis(validators: int = 1) -> dict:
    return default_genesis(
        validators=[(f"v{i}", validator_key(i).public_key) for i in range(validators)],
        institutions={n: key(n).address for n in INSTITUTIONS},
        chain_id=CHAIN_ID,
        genesis_time_ms=1_767_225_600_000,
    )


def signed(sender: str, nonce: int, op: str, args: dict) -> bytes:
    return sign_tx(TxBody(CHAIN_ID, key(sender).address, nonce, op, args), [key(sender)]).raw


def cash_tx(nonce: int, ident: str) -> bytes:
    args = {
        "id": ident,
        "kind": "cash",
        "name": f"Cash {ident}",
        "currency": "PKR",
        "face_value": 1,
        "decimals": 2,
        "cap": 10**12,
    }
    return signed("central-bank", nonce, "register_instrument", args)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class _NoPeers:
    """A network with no peer: the one validator decides alone."""

    def __init__(self) -> None:
        self._send, self.inbound = trio.open_memory_channel(1)

    def broadcast(self, message: bytes) -> int:
        return 0

    def send_to(self, key: bytes, message: bytes) -> bool:
        return False

    def report_misbehaviour(self, key: bytes, reason: str, penalty: int = 25) -> None:
        pass

    def peers(self):
        return ()


@dataclass
class LiveNode:
    url: str
    port: int
    driver: Driver
    api: NodeApi
    chain: Chain
    genesis: dict

    def call(
        self,
        method: str,
        params=None,
        *,
        headers=None,
        raw_body: bytes | None = None,
        signer=SIGNER,
    ):
        """One JSON-RPC call over HTTP (blocking: run it with `trio.to_thread.run_sync`),
        signed by `signer` (an institution by default; None: anonymous)."""
        body = raw_body
        if body is None:
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
            body = body.encode()
        auth = {} if signer is None else {"authorization": self.authorization(signer, body)}
        request = urllib.request.Request(
            self.url,
            data=body,
            headers={"content-type": "application/json", **auth, **(headers or {})},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read()), dict(response.headers)

    def authorization(self, signer, body: bytes, method: str = "POST", path: str = "/") -> str:
        return authorization_header(
            signer,
            chain_id=CHAIN_ID,
            node_id=self.api.node_id,
            method=method,
            path=path,
            body=body,
        )

    async def acall(self, method: str, params=None) -> dict:
        answer, _ = await trio.to_thread.run_sync(functools.partial(self.call, method, params))
        return answer

    async def wait_height(self, height: int, timeout: float = 20) -> None:
        with trio.fail_after(timeout):
            while self.chain.height < height:
                await trio.sleep(0.02)


@contextlib.asynccontextmanager
async def live_node(tmp_path, *, validators: int = 1, limits: RpcLimits | None = None, **bus):
    gen = genesis(validators)
    limiter = trio.CapacityLimiter(1)
    run_sync = functools.partial(trio.to_thread.run_sync, limiter=limiter)
    chain = await run_sync(lambda: Chain.open(tmp_path / "node.db", gen))
    store = AsyncStore(chain.store, run_sync)
    identity = validator_key(0)
    driver = Driver(
        DriverParts(
            chain,
            store,
            _NoPeers(),
            Mempool(MempoolLimits(), CHAIN_ID),
            lambda: time.time_ns() // 1_000_000,
        ),
        DriverConfig(core=CORE, heartbeat_ms=150, tick_ms=200),
        identity=identity,
        options=DriverOptions(name="v0", events=EventBus(**bus)),
    )
    api = NodeApi(
        info=NodeInfo(name="v0", role="validator", node_key=identity.public_key),
        genesis=gen,
        driver=driver,
        store=store,
        peers=lambda: (),
    )
    limits = limits or RpcLimits()
    limits = RpcLimits(**{**_fields(limits), "listen": "127.0.0.1:0"})
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            port = await nursery.start(serve_rpc, api, limits)
            yield LiveNode(f"http://127.0.0.1:{port}/", port, driver, api, chain, gen)
            nursery.cancel_scope.cancel()
    finally:
        await run_sync(chain.close)


def _fields(limits: RpcLimits) -> dict:
    return {name: getattr(limits, name) for name in limits.__dataclass_fields__}


# ---- tests --------------------------------------------------------------------------------


def test_broadcast_tx_commit_returns_the_committed_result(tmp_path):
    async def main():
        async with live_node(tmp_path) as node:
            answer = await node.acall("broadcast_tx_commit", {"tx": b64(cash_tx(0, "PKRC"))})
            result = answer["result"]
            stored = node.chain.store.blocks.tx(bytes.fromhex(result["hash"]))
            assert stored is not None and stored.height == result["height"] >= 1
            assert result["check_tx"] == {
                "code": 0,
                "codespace": "",
                "log": result["check_tx"]["log"],
            }
            assert result["tx_result"]["code"] == 0
            [event] = result["tx_result"]["events"]
            assert event["type"] == "instrument_registered"
            assert event["attributes"]["instrument"] == "PKRC"
            assert event["attributes"]["issuer"] == key_text("central-bank")
            # The next one waits for its own, later block.
            again = await node.acall("broadcast_tx_commit", {"tx": b64(cash_tx(1, "USDC"))})
            assert again["result"]["tx_result"]["code"] == 0
            assert again["result"]["height"] > result["height"]
            assert node.chain.store.blocks.tx(bytes.fromhex(again["result"]["hash"])).index == 0

    trio.run(main)


def key_text(name: str) -> str:
    from ledger.crypto import address_to_text

    return address_to_text(key(name).address)


def test_broadcast_tx_commit_refused_at_admission_answers_at_once(tmp_path):
    async def main():
        async with live_node(tmp_path) as node:
            body = TxBody(CHAIN_ID, key("central-bank").address, 0, "register_instrument", {})
            forged = sign_tx(body, [key("intruder")]).raw  # not the sender's key
            started = trio.current_time()
            result = (await node.acall("broadcast_tx_commit", {"tx": b64(forged)}))["result"]
            assert trio.current_time() - started < 5
            assert result["check_tx"]["code"] != 0 and result["check_tx"]["codespace"] == "khazana"
            assert result["height"] == 0 and result["tx_result"] is None

    trio.run(main)


def test_broadcast_tx_commit_times_out_with_the_hash(tmp_path):
    async def main():
        # Four genesis validators, one running: admitted, never committed.
        limits = RpcLimits(commit_timeout_ms=800, request_timeout_ms=500)
        async with live_node(tmp_path, validators=4, limits=limits) as node:
            raw = cash_tx(0, "PKRC")
            started = trio.current_time()
            answer = await node.acall("broadcast_tx_commit", {"tx": b64(raw)})
            waited = trio.current_time() - started
            assert 0.8 <= waited < 5
            error = answer["error"]
            assert error["code"] == COMMIT_TIMEOUT
            assert error["message"] == "timed out waiting for commit"
            from ledger.tx import decode_signed_tx

            assert error["data"]["hash"] == decode_signed_tx(raw).tx_id.hex()
            assert node.chain.height == 0
            # The node still answers other calls.
            status = await node.acall("status")
            assert status["result"]["sync_info"]["latest_block_height"] == 0

    trio.run(main)


def test_cors_allowed_origin_and_preflight(tmp_path):
    async def main():
        limits = RpcLimits(cors_origins=("https://wallet.example",))
        async with live_node(tmp_path, limits=limits) as node:

            def post(origin):
                return node.call("health", headers={"origin": origin})

            answer, headers = await trio.to_thread.run_sync(post, "https://wallet.example")
            assert answer["result"] == {}
            assert headers["access-control-allow-origin"] == "https://wallet.example"
            _, headers = await trio.to_thread.run_sync(post, "https://evil.example")
            assert "access-control-allow-origin" not in {k.lower() for k in headers}

            def preflight(origin):
                request = urllib.request.Request(
                    node.url,
                    method="OPTIONS",
                    headers={
                        "origin": origin,
                        "access-control-request-method": "POST",
                        "access-control-request-headers": "content-type",
                    },
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, {k.lower(): v for k, v in response.headers.items()}

            status, headers = await trio.to_thread.run_sync(preflight, "https://wallet.example")
            assert status == 204
            assert headers["access-control-allow-origin"] == "https://wallet.example"
            assert "POST" in headers["access-control-allow-methods"]
            assert "content-type" in headers["access-control-allow-headers"]
            status, headers = await trio.to_thread.run_sync(preflight, "https://evil.example")
            assert status == 204 and "access-control-allow-origin" not in headers

    trio.run(main)
