#!/usr/bin/env python3
"""What RPC authentication costs: a micro-benchmark of one request's credential check, and
requests per second through the real RPC (hypercorn) with and without credentials and TLS.

    .venv/bin/python scripts/rpc_auth_cost.py [--duration S] [--connections C]

1. `verify`: node/rpc/auth.py's `Authenticator.verify` (parse, window, replay lookup, Ed25519
   verification, remembering the nonce) on fresh tokens, and the principal lookup that follows
   it (node/rpc/scopes.py, a cache hit within a block), in microseconds per request.
2. `rpc`: a server process runs the RPC app over a stub node (`status` answered from memory,
   so the figure is the RPC's own cost), and C keep-alive connections send `status` one after
   another for S seconds: plain HTTP anonymous, plain HTTP signed, TLS anonymous, TLS signed.
   The client signs each request (its cost is on the client's side, in another process).

Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from ledger.crypto import generate_key, verify_signature  # noqa: E402
from node.client.core import tls_context  # noqa: E402
from node.rpc.app import serve_rpc  # noqa: E402
from node.rpc.auth import Authenticator, authorization_header, make_token  # noqa: E402
from node.rpc.limits import RpcLimits  # noqa: E402
from node.rpc.tls import make_ca, make_server_cert  # noqa: E402

CHAIN = "khazana-bench"
NODE_KEY = generate_key(b"\x01" * 32)
CLIENT_KEY = generate_key(b"\x02" * 32)
BODY = b'{"jsonrpc":"2.0","id":1,"method":"status"}'


def micro(count: int = 20_000) -> dict:
    node = Authenticator(CHAIN, NODE_KEY.public_key.hex(), cache_bytes=1 << 30)
    tokens = [
        make_token(
            CLIENT_KEY, chain_id=CHAIN, node_id=NODE_KEY.public_key.hex(), method="POST",
            path="/", body=BODY,
        )
        for _ in range(count)
    ]  # fmt: skip
    began = time.perf_counter()
    for token in tokens:
        node.verify(token, "POST", "/", BODY)
    verify_us = (time.perf_counter() - began) / count * 1e6
    began = time.perf_counter()
    for _ in range(count):
        make_token(
            CLIENT_KEY, chain_id=CHAIN, node_id=NODE_KEY.public_key.hex(), method="POST",
            path="/", body=BODY,
        )  # fmt: skip
    sign_us = (time.perf_counter() - began) / count * 1e6
    # One bare Ed25519 verification, measured alongside: on a loaded machine the ratio is
    # the figure that travels.
    message, signature = BODY * 4, CLIENT_KEY.sign(BODY * 4)
    began = time.perf_counter()
    for _ in range(count):
        verify_signature(CLIENT_KEY.public_key, message, signature)
    ed25519_us = (time.perf_counter() - began) / count * 1e6
    return {
        "verify_us": round(verify_us, 1),
        "ed25519_verify_us": round(ed25519_us, 1),
        "verify_vs_ed25519": round(verify_us / ed25519_us, 2),
        "client_sign_us": round(sign_us, 1),
    }


# ---- the server process ------------------------------------------------------------------


class _Bus:
    published = 0  # no block commits: the principal stays cached, as within one block


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


class StubNode:
    genesis = {"chain_id": CHAIN}
    node_id = NODE_KEY.public_key.hex()
    store = _Store()
    events = _Bus()

    async def status(self) -> dict:
        return {"node_info": {"id": self.node_id, "network": CHAIN}, "sync_info": {}}


def serve(port: int, cert: str, key: str) -> None:

    limits = RpcLimits(listen=f"127.0.0.1:{port}", tls_cert=cert, tls_key=key)
    trio.run(serve_rpc, StubNode(), limits)


# ---- the load ------------------------------------------------------------------------------


async def load(port: int, tls: object, signed: bool, duration: float, connections: int) -> float:
    done = 0
    deadline = trio.current_time() + duration

    async def connection() -> None:
        nonlocal done
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_hostname="localhost")
        buffer = b""
        while trio.current_time() < deadline:
            auth = ""
            if signed:
                value = authorization_header(
                    CLIENT_KEY, chain_id=CHAIN, node_id=NODE_KEY.public_key.hex(),
                    method="POST", path="/", body=BODY,
                )  # fmt: skip
                auth = f"Authorization: {value}\r\n"
            head = (
                "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"{auth}Content-Length: {len(BODY)}\r\n\r\n"
            )
            await stream.send_all(head.encode() + BODY)
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(65536)
            head_end = buffer.index(b"\r\n\r\n") + 4
            length = int(buffer.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(buffer) < head_end + length:
                buffer += await stream.receive_some(65536)
            status = buffer.split(b" ", 2)[1]
            assert status == b"200", buffer[:300]
            buffer = buffer[head_end + length :]
            done += 1
        await stream.aclose()

    began = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(connection)
    return done / (trio.current_time() - began)


def run_server(port: int, cert: str = "", key: str = "") -> subprocess.Popen:
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import scripts.rpc_auth_cost as m; "
    code += f"m.serve({port}, {cert!r}, {key!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until it listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the RPC server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--port", type=int, default=27600)
    parser.add_argument("--micro-only", action="store_true", help="skip the RPC runs")
    args = parser.parse_args()
    figures: dict = {"micro": micro()}
    print(f"credential check: {figures['micro']}", flush=True)
    if args.micro_only:
        print(json.dumps(figures))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        ca = make_ca(folder / "ca")
        cert, key = make_server_cert(ca, folder, "bench", ["127.0.0.1"])
        context = tls_context(str(ca[0]))
        for name, tls, signed in (
            ("http_anonymous", False, False),
            ("http_signed", False, True),
            ("tls_anonymous", True, False),
            ("tls_signed", True, True),
        ):
            server = run_server(args.port, str(cert) if tls else "", str(key) if tls else "")
            try:
                rate = trio.run(
                    load, args.port, context if tls else None, signed, args.duration,
                    args.connections,
                )  # fmt: skip
            finally:
                server.terminate()
                server.wait(timeout=10)
            figures[name] = round(rate)
            print(f"{name}: {rate:,.0f} requests/s", flush=True)
    base = figures["http_anonymous"]
    figures["tls_signed_vs_http_anonymous"] = round(figures["tls_signed"] / base, 3)
    figures["cpus"] = os.cpu_count()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
