#!/usr/bin/env python3
"""Admission micro-benchmark: what the RPC costs a submission before the driver sees it.

A submission's way through a validator is: hypercorn -> the guard (Host, Content-Type, per-IP
slot; node/rpc/guard.py) -> the app (body read, credentials: node/rpc/auth.py) -> JSON-RPC
framing (node/rpc/framing.py: the batch, the answer budget) -> the caller's scopes
(node/rpc/scopes.py: who may submit) -> `submit_txs` (the driver's inbox, the held queue,
`Mempool.admit`) -> the answers rendered back. The driver's part is the same code in both
trees (the inbox in node/driver.py, the held queue in node/admission_batch.py since issue 19
moved it there: unchanged since 51cbb4b) and `Mempool.admit` is timed by
scripts/bench_block_path.py (`admit`, `gossip`); this script
times the rest, in process, through the real ASGI app, with a node whose `submit_txs` answers
at once (so the figure is the RPC's own cost, not the ledger's):

- `asgi`: one HTTP POST of a batch of `--batch` `broadcast_tx_sync` calls through the full
  ASGI stack as hypercorn calls it (the guard in front of the app in this tree; base had no
  guard), signed with the node operator's key where the tree has credentials (base had none;
  bench.py signs every request), answered 200;
- `jsonrpc`: the same body through the JSON-RPC layer alone (`handle_body`, the caller already
  known): framing, scopes, the answer budget, rendering;
- `auth`: `asgi` - `jsonrpc` (guard, body read, credential check, headers);
- `per_tx_us`: `asgi` per transaction.

CPU time of the process per batch (`time.process_time`: nothing else runs in it), median of
`--rounds` batches after `--warm` untimed ones. Same file, either tree (the interpreter's
venv decides which tree is imported):

    .venv/bin/python scripts/bench_admission.py --ab /work/wt/base/.venv/bin/python --rounds 5

`--ab BASE_PYTHON` alternates the two trees (A B A B ...) and prints each stage's median per
tree and the ratio branch/base as the last line (JSON).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

cpu = time.process_time
CHAIN = "khazana-bench"
STAGES = ("asgi", "jsonrpc", "auth")
E2E = ("answered_tps", "batch_p50_ms", "batch_p90_ms", "cpu_per_tx_us", "block_txs_p50", "block_ms")


@dataclass(frozen=True, slots=True)
class Result:
    """What `Driver.submit` answers per transaction (the fields the RPC renders)."""

    code: int
    log: str
    tx_id: bytes
    codespace: str


class _Bus:
    published = 0  # no block commits: the caller's principal stays cached, as within a block


class _Store:
    """`AsyncStore.read` over an empty store: `fn(store, *args)` with this fake as the store
    and as each of its parts."""

    async def read(self, fn, *args):
        return fn(self, *args)

    @property
    def state(self) -> _Store:
        return self

    blocks = state

    def get_state(self, key: bytes) -> None:
        return None

    def latest_height(self) -> int:
        return 1

    def tx(self, tx_id: bytes) -> None:
        return None


def _node_key():
    from ledger.crypto import generate_key

    return generate_key(b"\x07" * 32)


class InstantNode:
    """A node whose admission answers at once: code 0 for every transaction."""

    genesis = {"chain_id": CHAIN}
    store = _Store()
    events = _Bus()

    def __init__(self) -> None:
        self.node_id = _node_key().public_key.hex()

    async def submit_tx(self, raw: bytes) -> Result:
        (result,) = await self.submit_txs([raw])
        return result

    async def submit_txs(self, raws: list[bytes]) -> list[Result]:
        return [Result(0, "", raw[:32].ljust(32, b"\x00"), "") for raw in raws]


def _body(batch: int, tx_bytes: int) -> bytes:
    calls = []
    for k in range(batch):
        raw = (k.to_bytes(4, "big") * tx_bytes)[:tx_bytes]
        tx = base64.b64encode(raw).decode()
        calls.append(
            {"jsonrpc": "2.0", "id": k, "method": "broadcast_tx_sync", "params": {"tx": tx}}
        )
    return json.dumps(calls).encode()


def _tree():
    """(asgi app, jsonrpc handle_body, sign(body) -> headers, set_caller) of this tree."""
    node = InstantNode()
    try:
        from node.rpc.app import RpcApp
        from node.rpc.auth import authorization_header
        from node.rpc.guard import Guard
        from node.rpc.limits import RpcLimits
        from node.rpc.scopes import caller
    except ImportError:  # base (51cbb4b): one module, no guard, no credentials
        from node.rpc import RpcApp, RpcLimits

        app = RpcApp(node, RpcLimits(max_batch=64))
        return app, app.handle_body, lambda body: [], lambda: None
    limits = RpcLimits(max_batch=64, listen="127.0.0.1:26657")
    app = RpcApp(node, limits)
    key = _node_key()

    def sign(body: bytes) -> list[tuple[bytes, bytes]]:
        value = authorization_header(
            key, chain_id=CHAIN, node_id=node.node_id, method="POST", path="/", body=body
        )
        return [(b"authorization", value.encode())]

    return (
        Guard(app, limits, None),
        app.jsonrpc.handle_body,
        sign,
        lambda: caller.set(key.public_key),
    )


async def _post(app, body: bytes, headers: list) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:26657"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 26657),
    }
    sent = [False]
    status = [0]

    async def receive() -> dict:
        if sent[0]:
            return {"type": "http.disconnect"}
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    await app(scope, receive, send)
    return status[0]


def measure(args: argparse.Namespace) -> dict:
    import trio

    async def main() -> dict:
        app, handle_body, sign, set_caller = _tree()
        body = _body(args.batch, args.tx_bytes)
        # Credentials are made on the client's side: signed before the clock starts.
        headers = [sign(body) for _ in range(args.warm + args.n)]
        times: dict[str, list[float]] = {"asgi": [], "jsonrpc": []}
        for i in range(args.warm + args.n):
            began = cpu()
            status = await _post(app, body, headers[i])
            asgi = cpu() - began
            assert status == 200, status
            set_caller()
            began = cpu()
            answers = await handle_body(body)
            jsonrpc = cpu() - began
            assert len(answers) == args.batch and answers[0]["result"]["code"] == 0, answers[0]
            if i >= args.warm:
                times["asgi"].append(asgi * 1000)
                times["jsonrpc"].append(jsonrpc * 1000)
        asgi_ms = statistics.median(times["asgi"])
        jsonrpc_ms = statistics.median(times["jsonrpc"])
        return {
            "batch": args.batch,
            "asgi_ms": round(asgi_ms, 3),
            "jsonrpc_ms": round(jsonrpc_ms, 3),
            "auth_ms": round(asgi_ms - jsonrpc_ms, 3),
            "per_tx_us": round(asgi_ms * 1000 / args.batch, 1),
        }

    return trio.run(main)


# ---- end to end: the real driver of a one-validator chain behind the app ------------------


class _Net:
    """A validator alone: no peer to send to; consensus decides with its own votes."""

    def __init__(self) -> None:
        import trio

        self._send, self.inbound = trio.open_memory_channel(16)

    def broadcast(self, message: bytes) -> int:
        return 0

    def send_to(self, key: bytes, message: bytes) -> bool:
        return False

    def report_misbehaviour(self, key: bytes, reason: str, penalty: int = 25) -> None:
        pass

    def peers(self) -> tuple:
        return ()


def end_to_end(args: argparse.Namespace) -> dict:
    """`--lanes` clients each POST batches of `--batch` transfers one after another (as a
    bench.py lane does) for `--seconds` through the app in front of a real one-validator
    driver (store, consensus, mempool admission, the held queue, commits): submissions
    answered per second, the median and 90th percentile of a batch's wall time, and the
    process CPU per answered transaction."""
    import tempfile

    import trio

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_block_path import _genesis, _runner, _seeded_key, _setup, _transfers, _Wallets

    from consensus.types import DurableState, Step
    from ledger.block import decode_block
    from ledger.chain import Chain
    from ledger.store import AsyncStore
    from node.mempool import Mempool, MempoolLimits

    genesis = _genesis()
    genesis["validators"] = genesis["validators"][:1]
    validator = _seeded_key("validator-" + genesis["validators"][0]["name"])
    bank = _seeded_key("central-bank")
    with tempfile.TemporaryDirectory() as tmp:
        chain = Chain.open(Path(tmp) / "chain", genesis)
        wallets = _Wallets()
        keys = _setup(chain, args.senders, wallets, certificate=b"")  # no commit to decode
        rounds = -(-args.lanes * args.max_batches * args.batch // args.senders)
        flat = [raw for block in _transfers(keys, wallets, rounds) for raw in block]
        bodies = [
            _body_of(flat[i : i + args.batch])
            for i in range(0, len(flat) - args.batch + 1, args.batch)
        ]
        run_write, _kind = _runner()
        try:
            from node.store_lanes import StoreLanes

            lanes = StoreLanes()
            store = AsyncStore(chain.store, lanes.run_write, lanes.run_read)
        except ImportError:
            store = AsyncStore(chain.store, run_write)
        mempool = Mempool(MempoolLimits(), genesis["chain_id"])
        # A record at the next height: not a restart without one (no signing hold).
        durable = DurableState(chain.height + 1, 0, Step.PROPOSE)
        driver, api = _driver_and_api(chain, store, mempool, validator, durable, genesis)
        app, sign = _app_over(api, genesis, validator, bank)
        spent = _stage_clocks(driver, chain)
        latencies: list[float] = []
        answered = [0]
        next_body = [0]

        async def lane(deadline: float) -> None:
            while trio.current_time() < deadline and next_body[0] < len(bodies):
                body = bodies[next_body[0]]
                next_body[0] += 1
                began = trio.current_time()
                status = await _post(app, body, sign(body))
                assert status == 200, status
                latencies.append(trio.current_time() - began)
                answered[0] += args.batch

        async def main() -> dict:
            async with trio.open_nursery() as nursery:
                await nursery.start(driver.run)
                await trio.sleep(0.5)
                height0, cpu0, began = chain.height, cpu(), trio.current_time()
                spent.clear()
                trio0 = time.thread_time()
                deadline = began + args.seconds
                async with trio.open_nursery() as clients:
                    for _ in range(args.lanes):
                        clients.start_soon(lane, deadline)
                elapsed, total = trio.current_time() - began, cpu() - cpu0
                spent["trio_thread"] = time.thread_time() - trio0
                blocks = chain.height - height0
                sizes = [
                    len(decode_block(chain.store.blocks.block(h).block).txs)
                    for h in range(height0 + 1, chain.height + 1)
                ]
                nursery.cancel_scope.cancel()
            ordered = sorted(latencies)
            return {
                "answered_tps": round(answered[0] / elapsed, 1),
                "batch_p50_ms": round(statistics.median(ordered) * 1000, 2),
                "batch_p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1000, 2),
                "cpu_per_tx_us": round(total / max(answered[0], 1) * 1e6, 1),
                **{
                    f"{stage}_us_per_tx": round(seconds / max(answered[0], 1) * 1e6, 1)
                    for stage, seconds in sorted(spent.items())
                },
                "blocks": blocks,
                "block_txs_p50": statistics.median(sizes) if sizes else 0,
                "block_ms": round(elapsed * 1000 / max(blocks, 1), 1),
                "committed_height": chain.height,
            }

        try:
            return trio.run(main)
        finally:
            chain.close()


def _driver_and_api(chain, store, mempool, validator, durable, genesis):
    """A driver and its `NodeApi` as this tree builds them (either side of issue 19's split of
    the driver, which changed both constructors)."""
    from node.driver import Driver, DriverConfig
    from node.events import EventBus

    clock_ms = lambda: int(time.time() * 1000)  # noqa: E731
    # Events as node/app.py: the RPC's principal cache follows its count.
    try:
        from node.api import NodeApi, NodeInfo
        from node.driver import DriverOptions, DriverParts
    except ImportError:  # before the split: keyword arguments
        from node.api import NodeApi

        driver = Driver(
            chain=chain,
            store=store,
            net=_Net(),
            mempool=mempool,
            identity=validator,
            config=DriverConfig(),
            clock_ms=clock_ms,
            durable=durable,
            name="v0",
            events=EventBus(),
        )
        api = NodeApi(
            name="v0",
            role="validator",
            genesis=genesis,
            node_key=validator.public_key,
            driver=driver,
            store=store,
            peers=lambda: (),
        )
        return driver, api
    driver = Driver(
        DriverParts(chain, store, _Net(), mempool, clock_ms),
        DriverConfig(),
        identity=validator,
        durable=durable,
        options=DriverOptions(name="v0", events=EventBus()),
    )
    info = NodeInfo(name="v0", role="validator", node_key=validator.public_key)
    api = NodeApi(info=info, genesis=genesis, driver=driver, store=store, peers=lambda: ())
    return driver, api


def _stage_clocks(driver, chain) -> dict[str, float]:
    """Wrap the stages of the driver's work to add up their thread CPU (`time.thread_time`,
    so a stage run on the store's worker thread is charged that thread's CPU)."""
    spent: dict[str, float] = {}

    def clocked(name: str, fn):
        def run(*args, **kwargs):
            began = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.thread_time() - began

        return run

    mempool = driver.mempool
    mempool.admit = clocked("admit", mempool.admit)
    mempool.remove_committed = clocked("recheck", mempool.remove_committed)
    chain.build_block = clocked("build", chain.build_block)
    chain.commit = clocked("commit", chain.commit)
    chain.store.save_consensus_record = clocked("record", chain.store.save_consensus_record)
    return spent


def _body_of(raws: list[bytes]) -> bytes:
    calls = [
        {
            "jsonrpc": "2.0",
            "id": k,
            "method": "broadcast_tx_sync",
            "params": {"tx": base64.b64encode(raw).decode()},
        }
        for k, raw in enumerate(raws)
    ]
    return json.dumps(calls).encode()


def _app_over(api, genesis: dict, validator, institution):
    """The tree's ASGI app over `api` and a signer of bodies (as an institution, as bench.py)."""
    try:
        from node.rpc.app import RpcApp
        from node.rpc.auth import authorization_header
        from node.rpc.guard import Guard
        from node.rpc.limits import RpcLimits
    except ImportError:
        from node.rpc import RpcApp, RpcLimits

        return RpcApp(api, RpcLimits(max_batch=64)), lambda body: []
    limits = RpcLimits(max_batch=64, listen="127.0.0.1:26657")
    node_id = validator.public_key.hex()

    def sign(body: bytes) -> list[tuple[bytes, bytes]]:
        value = authorization_header(
            institution,
            chain_id=genesis["chain_id"],
            node_id=node_id,
            method="POST",
            path="/",
            body=body,
        )
        return [(b"authorization", value.encode())]

    return Guard(RpcApp(api, limits), limits, None), sign


def _one(python: str, args: argparse.Namespace) -> dict:
    command = [python, __file__, "--json", "--batch", str(args.batch), "--rounds", str(args.n)]
    command += ["--warm", str(args.warm), "--tx-bytes", str(args.tx_bytes)]
    if args.e2e:
        command += ["--e2e", "--lanes", str(args.lanes), "--seconds", str(args.seconds)]
        command += ["--senders", str(args.senders), "--max-batches", str(args.max_batches)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ab(args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {"base": [], "branch": []}
    for r in range(args.ab_rounds):
        for name, python in (("base", args.ab), ("branch", sys.executable)):
            result = _one(python, args)
            runs[name].append(result)
            print(f"round {r + 1} {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    summary: dict[str, object] = {"rounds": args.ab_rounds, "batch": args.batch}
    stages = E2E if args.e2e else tuple(f"{stage}_ms" for stage in STAGES)
    for key in stages:
        base = statistics.median(r[key] for r in runs["base"])
        branch = statistics.median(r[key] for r in runs["branch"])
        summary[key] = {
            "base": round(base, 3),
            "branch": round(branch, 3),
            "ratio": round(branch / base, 2) if base > 0 else None,
        }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="calls per HTTP request")
    parser.add_argument("--tx-bytes", type=int, default=220, help="bytes of each transaction")
    parser.add_argument("--rounds", dest="n", type=int, default=400, help="timed batches")
    parser.add_argument("--warm", type=int, default=50, help="untimed batches first")
    parser.add_argument("--json", action="store_true", help="one JSON line only")
    parser.add_argument("--ab", metavar="BASE_PYTHON", help="alternate with this interpreter")
    parser.add_argument("--ab-rounds", type=int, default=3, help="A/B rounds (with --ab)")
    parser.add_argument("--e2e", action="store_true", help="the real driver behind the app")
    parser.add_argument("--lanes", type=int, default=8, help="--e2e: concurrent clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="--e2e: how long")
    parser.add_argument("--senders", type=int, default=2000, help="--e2e: funded senders")
    parser.add_argument("--max-batches", type=int, default=120, help="--e2e: batches per lane")
    args = parser.parse_args()
    if args.ab:
        result = ab(args)
    else:
        result = end_to_end(args) if args.e2e else measure(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
