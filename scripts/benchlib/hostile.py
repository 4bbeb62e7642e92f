"""The hostile clients' toolkit for `scripts/attack.py` (the attacks: benchlib/attacks.py).

`Network` and `Target`: what an attack may reach and use. `http`/`call`: one raw HTTP request
on its own connection, the answer summed up as one outcome word (`ok`, a ledger code name
such as `BAD_SIGNATURE`, `error_-32602`, `http_503`, `timeout`, `refused`, `reset`, ...), so
any header or body can be sent, broken or not. `for_a_while`: a bounded pool of workers.
`WsClient`: a bare WebSocket client that reads only when asked.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, RejectConnection, Request
from wsproto.events import TextMessage as WsText

from ledger.codes import Code
from ledger.crypto import KeyPair
from node.rpc.auth import authorization_header

READ_CAP = 32 << 20  # bytes of one answer kept (more is counted, not stored)
REQUEST_TIMEOUT_S = 5.0


@dataclass
class Network:
    """The network under attack: its addresses (127.0.0.1) and two blocking callbacks."""

    chain_id: str
    rpc: dict[str, tuple[str, int]]  # node name -> RPC host, port
    p2p: dict[str, tuple[str, int]]  # validator name -> P2P host, port
    restart: Callable[[str], None]  # SIGTERM a node, start it again with the same home
    height: Callable[[str], int]  # a node's height, -1 when it does not answer


@dataclass
class Target:
    """What an attack may use: the network, onboarded investors, and the time it has."""

    net: Network
    investors: list[KeyPair]  # onboarded and funded (benchlib.funding), for mempool_squat
    cash: str  # the instrument the investors hold
    seconds: float
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    # An institution's key: the heaviest legitimate reader (every block body, every event),
    # for the read attacks and for measuring the pools; None: those calls go unsigned.
    reader: KeyPair | None = None

    def urls(self) -> list[tuple[str, int]]:
        return list(self.net.rpc.values())


# ------------------------------------------------------------------------------ HTTP


@dataclass
class Answer:
    outcome: str
    status: int = 0
    body: bytes = b""
    size: int = 0  # bytes of the whole response
    seconds: float = 0.0


def post_bytes(
    host: str, port: int, body: bytes, *, host_header: str | None = None, extra: str = ""
) -> bytes:
    head = (
        f"POST / HTTP/1.1\r\nHost: {host_header or f'{host}:{port}'}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def rpc_body(method: str, params: dict, request_id: int = 1) -> bytes:
    call = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return json.dumps(call).encode()


async def http(address: tuple[str, int], raw: bytes, timeout_s: float = REQUEST_TIMEOUT_S):
    """Send one HTTP request (`Connection: close`), read the whole answer; an `Answer`."""
    began = time.monotonic()
    data = bytearray()
    size = 0
    try:
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream(*address)
            async with stream:
                await stream.send_all(raw)
                while chunk := await stream.receive_some(1 << 16):
                    size += len(chunk)
                    if len(data) < READ_CAP:
                        data += chunk
    except trio.TooSlowError:
        return Answer("timeout", seconds=time.monotonic() - began)
    except ConnectionRefusedError:
        return Answer("refused", seconds=time.monotonic() - began)
    except (OSError, trio.BrokenResourceError):
        if not data:
            return Answer("reset", seconds=time.monotonic() - began)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return Answer("no_http_answer", size=size, seconds=time.monotonic() - began)
    if size > len(data):  # answered, larger than we keep: not parsed
        return Answer(f"over_{READ_CAP >> 20}MiB", status, b"", size, time.monotonic() - began)
    return Answer(classify(status, body), status, body, size, time.monotonic() - began)


def classify(status: int, body: bytes) -> str:
    """One word for an HTTP answer to a JSON-RPC call."""
    if status != 200:
        return f"http_{status}"
    try:
        answer = json.loads(body)
    except ValueError:
        return "not_json"
    if isinstance(answer, list):
        kinds = {classify_one(a) for a in answer}
        return kinds.pop() if len(kinds) == 1 else "batch_mixed"
    return classify_one(answer)


def classify_one(answer: object) -> str:
    if not isinstance(answer, dict):
        return "not_json"
    if "error" in answer:
        error = answer["error"]
        return f"error_{error.get('code') if isinstance(error, dict) else '?'}"
    result = answer.get("result")
    if isinstance(result, dict) and isinstance(result.get("code"), int) and result["code"]:
        code = result["code"]
        return Code(code).name if code in Code._value2member_map_ else f"code_{code}"
    return "ok"


async def call(
    address,
    method: str,
    params: dict,
    timeout_s: float = REQUEST_TIMEOUT_S,
    *,
    signer: KeyPair | None = None,
):
    """One JSON-RPC call; with `signer`, carrying that key's credentials (docs/RPC.md)."""
    body = rpc_body(method, params)
    return await http(address, await signed_post(address, body, signer), timeout_s)


_NODE_IDS: dict[tuple[str, int], tuple[str, str]] = {}


async def signed_post(address: tuple[str, int], body: bytes, signer: KeyPair | None) -> bytes:
    """The POST of `body` to `address`, with `signer`'s `Authorization` header if any (the
    node's chain id and node id are read once from its public `status`)."""
    if signer is None:
        return post_bytes(*address, body)
    if address not in _NODE_IDS:
        answer = await http(address, post_bytes(*address, rpc_body("status", {})))
        try:
            info = json.loads(answer.body)["result"]["node_info"]
        except (ValueError, KeyError, TypeError):
            return post_bytes(*address, body)  # the node is down or restarting: ask unsigned
        _NODE_IDS[address] = (info["network"], info["id"])
    chain_id, node_id = _NODE_IDS[address]
    value = authorization_header(
        signer, chain_id=chain_id, node_id=node_id, method="POST", path="/", body=body
    )
    return post_bytes(*address, body, extra=f"Authorization: {value}\r\n")


async def for_a_while(seconds: float, count: int, workers: int, work) -> None:
    """Run `workers` copies of `work(i)` (i = 0, 1, ... shared) until `count` calls or time."""
    deadline = trio.current_time() + seconds
    index = 0

    async def worker() -> None:
        nonlocal index
        while index < count and trio.current_time() < deadline:
            i = index
            index += 1
            await work(i)

    with trio.move_on_after(seconds + REQUEST_TIMEOUT_S + 1):
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class WsClient:
    """A bare WebSocket client on a trio stream (no reading unless asked)."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.host = host

    @classmethod
    async def open(cls, address, rcvbuf: int | None = None) -> WsClient:
        sock = trio.socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(address)
        client = cls(trio.SocketStream(sock), f"{address[0]}:{address[1]}")
        await client.stream.send_all(client.ws.send(Request(host=client.host, target="/websocket")))
        with trio.fail_after(REQUEST_TIMEOUT_S):
            while True:
                data = await client.stream.receive_some(1 << 16)
                if not data:
                    raise ConnectionError("closed during the handshake")
                client.ws.receive_data(data)
                for event in client.ws.events():
                    if isinstance(event, AcceptConnection):
                        return client
                    if isinstance(event, RejectConnection):
                        raise ConnectionError(f"refused: {event.status_code}")

    async def send(self, obj: dict) -> None:
        await self.stream.send_all(self.ws.send(Message(data=json.dumps(obj))))

    async def next_text(self, timeout_s: float) -> dict | None:
        """The next JSON message, None when the node closed the connection."""
        with trio.fail_after(timeout_s):
            text = ""
            while True:
                for event in self.ws.events():
                    if isinstance(event, CloseConnection):
                        return None
                    if isinstance(event, WsText):
                        text += event.data
                        if event.message_finished:
                            return json.loads(text)
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    return None
                self.ws.receive_data(data)
