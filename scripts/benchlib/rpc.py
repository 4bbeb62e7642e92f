"""Open-loop JSON-RPC submission and commit watching, on trio.

`RpcLanes`: several keep-alive HTTP/1.1 connections ("lanes") spread over the nodes' RPC
addresses. `submit(body, answer)` queues a request on the next lane and returns at once; each
lane has a writer that sends requests as they come and a reader that parses the answers in
order (HTTP/1.1 pipelining, which hypercorn serves one request after the other on a
connection). So the load generator never waits for an answer before sending the next
scheduled request: the offered load is independent of how fast the node answers. hypercorn
closes a keep-alive connection after 1,000 requests, so a lane moves to a fresh connection
after `per_connection` requests (the old one's reader drains its answers meanwhile).

Over TLS when a node's URL is https:// (`khazana init --rpc-tls`): each lane and the
watcher's WebSocket open a TLS connection verified against `ca_file` (localnet.json's
`ca_file`), one handshake per connection (a lane's connection carries `per_connection`
requests), so the benchmark measures what TLS costs a node at that rate.

Both sign their requests with `key` when one is given (docs/RPC.md, "Authentication"): a
node answers submissions and block bodies only to a key the threat model lets read them, and
the benchmark asks as an institution (localnet.json's `clients`). One signature per HTTP
request, so a batch of 32 transactions costs the load generator one Ed25519 signature.

`BlockWatcher`: a WebSocket subscription to `tm.event='NewBlock'` on one node; it calls
`on_block(height, txs_base64, received_at)` for every block in height order. A height that
jumps is filled in with the `block` RPC (so a dropped notification or a reconnect never loses
a block); while the WebSocket is down it polls `status`. The commit time of a transaction is
therefore the moment its block's notification (or fetch) reached the load generator.
"""

from __future__ import annotations

import json
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError

from ledger.crypto import KeyPair
from node.client import AsyncClient, ClientError
from node.client.core import Endpoint, tls_context

Answer = Callable[[int, bytes | None], None]
"""Called with (HTTP status, body) for an answer, (0, None) when the connection failed."""

READ_BYTES = 1 << 16
WATCH_ERRORS = (
    OSError,  # includes ConnectionError: refused, reset, closed
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ValueError,  # a JSON answer cut off mid-way
    KeyError,
    TypeError,  # a message without the fields of a NewBlock notification
    ProtocolError,  # wsproto: the connection broke inside a WebSocket frame or handshake
)
MAX_ANSWER_BYTES = 1 << 24
RECONNECT_S = 0.2


def json_rpc(request_id: int, method: str, params: dict) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def http_post(endpoint: Endpoint, body: bytes, authorization: str | None = None) -> bytes:
    """One keep-alive HTTP/1.1 POST (no `Connection: close`, unlike the SDK's one-shot calls)."""
    credentials = "" if authorization is None else f"Authorization: {authorization}\r\n"
    head = (
        f"POST {endpoint.path} HTTP/1.1\r\nHost: {endpoint.host_header}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{credentials}\r\n"
    )
    return head.encode("ascii") + body


def parse_answers(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove every complete `Content-Length` response from the front of `buffer`."""
    out = []
    while (end := buffer.find(b"\r\n\r\n")) >= 0:
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length > MAX_ANSWER_BYTES:
            raise ValueError(f"answer of {length} bytes")
        if len(buffer) < end + 4 + length:
            break
        out.append((status, bytes(buffer[end + 4 : end + 4 + length])))
        del buffer[: end + 4 + length]
    return out


@dataclass(frozen=True, slots=True)
class _Queued:
    data: bytes
    answer: Answer


class _Connection:
    """One pipelined connection: answers come back in the order the requests went out."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.pending: deque[Answer] = deque()
        self.retired = False
        self.ended = False  # the reader stopped: nothing more can be answered here
        self.scope = trio.CancelScope()

    def retire(self) -> None:
        """No more requests: the reader stops once every answer is in."""
        self.retired = True
        if not self.pending:
            self.scope.cancel()

    async def read(self) -> None:
        buffer = bytearray()
        with self.scope:
            try:
                while self.pending or not self.retired:
                    data = await self.stream.receive_some(READ_BYTES)
                    if not data:
                        break
                    buffer += data
                    for status, body in parse_answers(buffer):
                        self.pending.popleft()(status, body)
                    if self.retired and not self.pending:
                        break
            except (OSError, trio.BrokenResourceError, ValueError, IndexError):
                pass
        self.ended = True  # set with no checkpoint before the flush: no request is left behind
        while self.pending:  # the connection ended with requests unanswered
            self.pending.popleft()(0, None)
        # Forcefully: a TLS stream's graceful close would wait to send its close_notify.
        await trio.aclose_forcefully(self.stream)


class RpcLanes:
    """`lanes_per_url` pipelined lanes to each URL; requests go round-robin over all lanes."""

    def __init__(
        self,
        urls: list[str],
        lanes_per_url: int = 2,
        per_connection: int = 900,
        queue: int = 8192,
        *,
        key: KeyPair | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.endpoints = [Endpoint.parse(u) for u in urls for _ in range(lanes_per_url)]
        self.lanes_per_url = lanes_per_url
        self._next_in: dict[int, int] = {}  # per URL: its next lane (`submit_to`)
        self._tls = tls_context(ca_file) if any(e.tls for e in self.endpoints) else None
        # One signing client per URL: it learns that node's chain id and node id once.
        self._signers = {
            Endpoint.parse(url).url: AsyncClient(url, key=key, timeout_s=10.0, ca_file=ca_file)
            for url in urls
            if key is not None
        }
        self.per_connection = per_connection
        channels = [trio.open_memory_channel[_Queued](queue) for _ in self.endpoints]
        self._senders = [s for s, _ in channels]
        self._receivers = [r for _, r in channels]
        self._next = 0

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run every lane until `close()`; answers still owed are delivered before returning."""
        async with trio.open_nursery() as nursery:
            for endpoint, receive in zip(self.endpoints, self._receivers, strict=True):
                nursery.start_soon(self._lane, endpoint, receive)
            task_status.started()

    async def submit(self, body: bytes, answer: Answer) -> None:
        """Queue a request on the next lane with room; waits only if every lane's queue is
        full (the load generator itself is then the bottleneck, which the caller sees as lag)."""
        for _ in range(len(self._senders)):
            sender = self._senders[self._next]
            self._next = (self._next + 1) % len(self._senders)
            try:
                sender.send_nowait(_Queued(body, answer))
                return
            except trio.WouldBlock:
                continue
        await self._senders[self._next].send(_Queued(body, answer))

    async def submit_to(self, url_index: int, body: bytes, answer: Answer) -> None:
        """`submit`, on the lanes of the `url_index`-th URL only (round-robin among them)."""
        per = self.lanes_per_url
        first = url_index * per
        for _ in range(per):
            offset = self._next_in.get(url_index, 0)
            self._next_in[url_index] = (offset + 1) % per
            try:
                self._senders[first + offset].send_nowait(_Queued(body, answer))
                return
            except trio.WouldBlock:
                continue
        await self._senders[first].send(_Queued(body, answer))

    def close(self) -> None:
        for sender in self._senders:
            sender.close()

    async def _lane(self, endpoint: Endpoint, receive: trio.MemoryReceiveChannel) -> None:
        # A connection is opened when a request is there to send, and replaced when the server
        # has closed it: hypercorn closes a keep-alive connection idle for 5 s (during the
        # funding, or a drain), and a request written to it was never answered (its
        # transaction never admitted, and the sender's later ones parked for good).
        async with receive, trio.open_nursery() as readers:
            connection: _Connection | None = None
            sent = 0
            async for queued in receive:
                if connection is None or connection.ended or sent >= self.per_connection:
                    if connection is not None:
                        connection.retire()
                    connection, sent = await self._connect(endpoint, readers), 0
                connection.pending.append(queued.answer)
                sent += 1
                try:
                    authorization = await self._authorization(endpoint, queued.data)
                    await connection.stream.send_all(
                        http_post(endpoint, queued.data, authorization)
                    )
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ClientError):
                    # Its reader answers the pending requests (0, None); the next one
                    # gets a fresh connection (and learns the node's ids again if need be).
                    connection.retire()
                    connection = None
                    await trio.sleep(RECONNECT_S)
            if connection is not None:
                connection.retire()

    async def _authorization(self, endpoint: Endpoint, body: bytes) -> str | None:
        signer = self._signers.get(endpoint.url)
        if signer is None:
            return None
        await signer.ready()
        assert signer.credentials is not None
        return signer.credentials.header("POST", endpoint.path, body)

    async def _connect(self, endpoint: Endpoint, readers: trio.Nursery) -> _Connection:
        while True:
            try:
                stream = await open_stream(endpoint, self._tls)
            except (OSError, trio.BrokenResourceError):
                await trio.sleep(RECONNECT_S)
                continue
            connection = _Connection(stream)
            readers.start_soon(connection.read)
            return connection


async def open_stream(endpoint: Endpoint, tls: ssl.SSLContext | None) -> trio.abc.Stream:
    """A TCP connection to `endpoint`, inside TLS (the handshake done, the node's certificate
    verified) when `tls` is given and the endpoint is https://."""
    stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    if tls is None or not endpoint.tls:
        return stream
    secure = trio.SSLStream(stream, tls, server_hostname=endpoint.host)
    try:
        await secure.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return secure


class _StartedOnce:
    """A task status that passes on only its first `started()`; later calls do nothing."""

    def __init__(self, task_status) -> None:
        self._task_status = task_status
        self.done = False

    def started(self) -> None:
        if not self.done:
            self.done = True
            self._task_status.started()


class BlockWatcher:
    """Every committed block of one node, in height order, from NewBlock notifications."""

    def __init__(
        self,
        url: str,
        on_block: Callable[[int, list[str], float], None],
        start_height: int,
        *,
        key: KeyPair | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        self._tls = tls_context(ca_file) if self.endpoint.tls else None
        # Signed: a node shows block bodies (the transactions to track) to institutions only.
        self.client = AsyncClient(url, key=key, timeout_s=10.0, ca_file=ca_file)
        self.on_block = on_block
        self.height = start_height
        self.source = "websocket"  # "websocket+poll" once a block had to be fetched

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        # One report for the whole life of the watcher, whichever comes first: the first
        # subscription, or the first failure to subscribe. (`_subscribe` used to report it and
        # `run` report it again when that WebSocket later broke -- a node restarted under the
        # benchmark -- which trio refuses: "called 'started' twice".)
        status = _StartedOnce(task_status)
        while True:
            try:
                await self._subscribe(status)
            except WATCH_ERRORS:
                pass  # the node went away or said something unexpected: poll, then resubscribe
            status.started()
            # WebSocket down: poll for a second, then try it again.
            with trio.move_on_after(1.0):
                while True:
                    await self._catch_up(None)
                    await trio.sleep(0.1)

    async def _subscribe(self, task_status: _StartedOnce) -> None:
        ws = WSConnection(ConnectionType.CLIENT)
        stream = await open_stream(self.endpoint, self._tls)
        async with stream:
            authorization = await self.client.websocket_authorization()
            headers = [] if authorization is None else [(b"authorization", authorization.encode())]
            request = Request(host=self.endpoint.host, target="/websocket", extra_headers=headers)
            await stream.send_all(ws.send(request))
            query = {"query": "tm.event='NewBlock'"}
            text = ""
            subscribed = False
            while True:
                data = await stream.receive_some(READ_BYTES)
                if not data:
                    raise ConnectionError("websocket closed")
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        message = json.dumps(json_rpc(1, "subscribe", query))
                        await stream.send_all(ws.send(Message(data=message)))
                    elif isinstance(event, RejectConnection | CloseConnection):
                        raise ConnectionError(f"websocket refused or closed: {event}")
                    elif isinstance(event, Ping):
                        await stream.send_all(ws.send(event.response()))
                    elif isinstance(event, TextMessage):
                        text += event.data
                        if not event.message_finished:
                            continue
                        message, text = json.loads(text), ""
                        if message.get("id") == 1 and not subscribed:
                            if "error" in message:
                                raise ConnectionError(f"subscribe refused: {message['error']}")
                            subscribed = True
                            task_status.started()
                            await self._catch_up(None)  # blocks committed before the subscription
                            continue
                        value = message.get("result", {}).get("data", {}).get("value", {})
                        if "block" in value:
                            await self._catch_up(value["block"])

    async def _catch_up(self, block: dict | None) -> None:
        """Deliver `block` (a NewBlock value) after fetching any height missed before it;
        with no block, fetch everything up to the node's current height."""
        received = trio.current_time()
        top = block["header"]["height"] if block else None
        if top is None:
            try:
                top = (await self.client.status()).height
            except ClientError:
                return
        while self.height + 1 < top or (block is None and self.height < top):
            wanted = self.height + 1
            try:
                fetched = await self.client.block(wanted)
            except ClientError:
                return
            self.source = "websocket+poll"
            self.height = wanted
            self.on_block(wanted, fetched["block"]["txs"], trio.current_time())
        if block is not None and top == self.height + 1:
            self.height = top
            self.on_block(top, block["txs"], received)


async def call_all(
    lanes: RpcLanes, calls: list[tuple[str, dict]], batch: int = 32, timeout_s: float = 60.0
) -> list[dict]:
    """Run every call as JSON-RPC batches of at most `batch` over the lanes at once; each
    call's answer object (`result` or `error`) in the order of `calls`. A lost connection
    answers `{"error": {"code": 0, ...}}` for its calls."""
    answers: list[dict | None] = [None] * len(calls)
    outstanding = 0
    done = trio.Event()

    def answered(start: int, count: int, status: int, body: bytes | None) -> None:
        nonlocal outstanding
        try:
            replies = json.loads(body) if body is not None else None
        except ValueError:
            replies = None
        if isinstance(replies, dict):  # an error for the whole batch (e.g. too large)
            replies = [replies] * count
        for offset in range(count):
            reply = replies[offset] if isinstance(replies, list) and offset < len(replies) else None
            answers[start + offset] = reply or {
                "error": {"code": 0, "message": f"no answer (HTTP {status})"}
            }
        outstanding -= 1
        if outstanding == 0:
            done.set()

    for start in range(0, len(calls), batch):
        chunk = calls[start : start + batch]
        body = json.dumps(
            [json_rpc(start + i, method, params) for i, (method, params) in enumerate(chunk)],
            separators=(",", ":"),
        ).encode()
        outstanding += 1
        size = len(chunk)
        await lanes.submit(body, lambda s, b, st=start, n=size: answered(st, n, s, b))
    if outstanding:
        with trio.fail_after(timeout_s):
            await done.wait()
    # The node may answer a batch in any order: put each answer back by its id.
    by_id = {a.get("id"): a for a in answers if isinstance(a, dict) and "id" in a}
    return [by_id.get(i, answers[i]) for i in range(len(calls))]
