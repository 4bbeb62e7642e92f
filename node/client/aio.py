"""`AsyncClient`: the trio SDK, HTTP/1.1 over `trio.open_tcp_stream`. Runs the plans of
`node/client/core.py`, like the blocking `Client`, with the same methods (awaited).

    async with trio.open_nursery():
        client = AsyncClient("http://127.0.0.1:26651")
        status = await client.status()

One connection per call (`Connection: close`), each bounded by `timeout_s` (connect, send
and the whole answer) and by `core.MAX_RESPONSE_BYTES`.

Subscriptions run `node/client/ws.py`'s sans-IO session over a trio stream:

    async with client.subscribe("tm.event='NewBlock'") as blocks:   # its own connection
        async for event in blocks:
            print(event.height, event.hash)

    async with client.websocket() as ws:                              # one connection
        txs = await ws.subscribe("tm.event='Tx' AND instrument='USD-CASH'")
        status = await ws.call("status")
        await ws.unsubscribe_all()

`client.subscribe(query)` connects and subscribes when first used (`async with`, or the
first `async for`); QueryRefused (-32602) and SubscriptionClosed come from there. Waiting
for an event has no deadline of its own: wrap it in `trio.move_on_after` to bound it.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ledger.crypto import KeyPair
from node.client.core import (
    DEFAULT_RPC,
    PLAN_METHODS,
    Call,
    Credentials,
    Endpoint,
    HttpResponseParser,
    Plan,
    Plans,
    Sleep,
    decode_response,
    encode_request,
    http_request,
    tls_context,
)
from node.client.errors import NodeUnreachable, RpcError
from node.client.ws import PENDING, Event, WsSession, websocket_target

_READ_BYTES = 65536
_CLOSE_WAIT_S = 2.0  # how long `aclose` waits for the node's close frame


class AsyncClient:
    """`key`, `ca_file`, `client_cert`: as `node.client.sync.Client`'s."""

    def __init__(
        self,
        url: str = DEFAULT_RPC,
        *,
        key: KeyPair | None = None,
        ca_file: str | None = None,
        client_cert: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        self.timeout_s = timeout_s
        self.credentials = None if key is None else Credentials(key)
        self.tls = tls_context(ca_file, client_cert) if self.endpoint.tls else None
        self._plans = Plans()
        self._next_id = 0

    @property
    def url(self) -> str:
        return self.endpoint.url

    async def call(self, method: str, params: dict | None = None) -> Any:
        """One raw JSON-RPC call (result as JSON)."""
        return await self._post(Call(method, params or {}))

    def websocket(self) -> AsyncWebSocket:
        """A WebSocket connection to the node: `async with client.websocket() as ws`."""
        return AsyncWebSocket(self.endpoint, self.timeout_s, self._ws_authorization, self.tls)

    async def ready(self) -> None:
        """Learn what credentials sign over from the node now, rather than at the first call
        (a load generator that signs its own raw requests with `credentials.header`)."""
        await self._ready()

    async def websocket_authorization(self) -> str | None:
        """The `Authorization` header of a WebSocket handshake to this node (None without a
        key): for a client that speaks WebSocket itself."""
        return await self._ws_authorization()

    async def _ws_authorization(self) -> str | None:
        if self.credentials is None:
            return None
        await self._ready()
        return self.credentials.header("GET", websocket_target(self.endpoint), b"")

    def subscribe(self, query: str) -> AsyncSubscription:
        """Events matching `query`, on a connection of their own (see the module docstring)."""
        return AsyncSubscription(self.websocket(), query, owns_connection=True)

    async def run(self, plan: Plan) -> Any:
        """Run a plan to its end: calls go to the node, sleeps are `trio.sleep`."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = plan.throw(error) if error is not None else plan.send(value)
            except StopIteration as done:
                return done.value
            value, error = None, None
            if isinstance(step, Sleep):
                await trio.sleep(step.seconds)
                continue
            try:
                value = await self._post(step)
            except RpcError as exc:
                error = exc

    async def _post(self, call: Call) -> Any:
        self._next_id += 1
        request_id = self._next_id
        body = encode_request(call, request_id)
        credentials = self.credentials
        if credentials is None:
            return await self._exchange(body, request_id, None)
        await self._ready()
        path = self.endpoint.path
        try:
            return await self._exchange(body, request_id, credentials.header("POST", path, body))
        except RpcError as exc:
            if not credentials.learn_refusal(exc):
                raise
            return await self._exchange(body, request_id, credentials.header("POST", path, body))

    async def _ready(self) -> None:
        """Learn what to sign over (the node's chain id and node id) once."""
        credentials = self.credentials
        if credentials is None or credentials.ready:
            return
        self._next_id += 1
        request_id = self._next_id
        try:
            result = await self._exchange(encode_request(Call("status"), request_id), request_id)
            credentials.learn_status(result)
        except RpcError as exc:
            if not credentials.learn_refusal(exc):
                raise

    async def _exchange(
        self, body: bytes, request_id: int, authorization: str | None = None
    ) -> Any:
        endpoint = self.endpoint
        request = http_request(endpoint, body, authorization)
        parser = HttpResponseParser()
        try:
            with trio.fail_after(self.timeout_s):
                stream = await _open_stream(endpoint, self.tls)
                async with stream:
                    await stream.send_all(request)
                    while (answer := parser.result()) is None:
                        parser.feed(await stream.receive_some(_READ_BYTES))
        except trio.TooSlowError:
            raise NodeUnreachable(endpoint.url, f"no answer within {self.timeout_s:g} s") from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise NodeUnreachable(endpoint.url, _reason(exc)) from None
        status, body = answer
        return decode_response(status, body, request_id)


class AsyncWebSocket:
    """One WebSocket connection to a node's `/websocket`, shared by any number of tasks.

    Whichever task needs bytes (an answer, or its subscription's next event) reads them and
    hands them to the session; the others wait for that read to finish and then look for
    theirs, so no task's event waits behind another's. Sends go out under a lock, whole.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        timeout_s: float = 10.0,
        authorization: Callable[[], Awaitable[str | None]] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._authorization = authorization  # the handshake's credentials, made at connect
        self.tls = tls
        self._session = WsSession(endpoint)
        self._stream: trio.abc.Stream | None = None
        self._send_lock = trio.Lock()
        self._reading = False
        self._progress = trio.Event()

    async def __aenter__(self) -> AsyncWebSocket:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the connection and finish the handshake (NodeUnreachable if it cannot)."""
        if self._stream is not None:
            return
        endpoint = self.endpoint
        if self._authorization is not None:
            header = await self._authorization()
            self._session = WsSession(endpoint, authorization=header)
        try:
            with trio.fail_after(self.timeout_s):
                self._stream = await _open_stream(endpoint, self.tls)
                await self._flush()
                while not self._session.opened:
                    if self._session.ended:
                        raise self._session.error
                    await self._read()
        except trio.TooSlowError:
            await self._drop()
            raise NodeUnreachable(
                endpoint.url, f"no handshake within {self.timeout_s:g} s"
            ) from None
        except OSError as exc:
            await self._drop()
            raise NodeUnreachable(endpoint.url, _reason(exc)) from None
        except BaseException:
            await self._drop()
            raise

    async def _drop(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await trio.aclose_forcefully(stream)

    async def _flush(self) -> None:
        async with self._send_lock:
            data = self._session.data_to_send()
            if data and self._stream is not None:
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self._session.receive_data(b"")  # the connection is gone

    async def _read(self) -> None:
        """Read once (or, if another task is reading, wait until its read is handled)."""
        if self._reading:
            await self._progress.wait()
            return
        self._reading = True
        try:
            try:
                data = await self._stream.receive_some(_READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""  # reset: the same as an end without a close frame
            self._session.receive_data(data)
        finally:
            self._reading = False
            progress, self._progress = self._progress, trio.Event()
            progress.set()
        await self._flush()  # pongs, the answer to a close

    async def _answer(self, request_id: int) -> Any:
        await self._flush()
        try:
            with trio.fail_after(self.timeout_s):
                while (answer := self._session.take_answer(request_id)) is PENDING:
                    await self._read()
        except trio.TooSlowError:
            raise NodeUnreachable(
                self.endpoint.url, f"no answer within {self.timeout_s:g} s"
            ) from None
        return answer

    async def call(self, method: str, params: dict | None = None) -> Any:
        """Any JSON-RPC method, over this connection."""
        await self.connect()
        return await self._answer(self._session.call(method, params))

    async def subscribe(self, query: str) -> AsyncSubscription:
        """Subscribe now; QueryRefused if the node refuses the query."""
        subscription = AsyncSubscription(self, query, owns_connection=False)
        await subscription.start()
        return subscription

    async def _subscribe(self, query: str) -> tuple[int, str]:
        await self.connect()
        subscription_id = self._session.subscribe(query)
        result = await self._answer(subscription_id)
        canonical = result.get("query", query) if isinstance(result, dict) else query
        return subscription_id, canonical

    async def next_event(self, subscription_id: int) -> Event | None:
        """The subscription's next event; None once it ended by our close or unsubscribe."""
        while True:
            item = self._session.take_event(subscription_id)
            if item is WsSession.ENDED:
                return None
            if item is not None:
                return item
            await self._read()

    async def unsubscribe(self, subscription: AsyncSubscription) -> None:
        self._session.forget(subscription.id)  # whatever is still queued is dropped
        await self.call("unsubscribe", {"query": subscription.query})

    async def unsubscribe_all(self) -> None:
        self._session.forget()
        await self.call("unsubscribe_all")

    async def aclose(self) -> None:
        """Close cleanly: our close frame, then the node's (waited for briefly)."""
        if self._stream is None:
            return
        try:
            if not self._session.finished:
                self._session.close()
                await self._flush()
                with trio.move_on_after(min(self.timeout_s, _CLOSE_WAIT_S)):
                    while not self._session.finished:
                        await self._read()
        finally:
            await self._drop()


class AsyncSubscription:
    """The events of one subscription, in commit order: an async iterator (and an async
    context manager that ends the subscription)."""

    def __init__(self, connection: AsyncWebSocket, query: str, *, owns_connection: bool) -> None:
        self.connection = connection
        self.query = query  # the node's canonical text once subscribed
        self.id: int | None = None
        self._owns = owns_connection

    async def start(self) -> None:
        """Connect (if needed) and subscribe; done at most once."""
        if self.id is None:
            try:
                self.id, self.query = await self.connection._subscribe(self.query)
            except BaseException:
                if self._owns:
                    await self.connection.aclose()
                raise

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Event:
        await self.start()
        event = await self.connection.next_event(self.id)
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> AsyncSubscription:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def unsubscribe(self) -> None:
        """Ask the node to stop; the iteration ends."""
        if self.id is not None:
            await self.connection.unsubscribe(self)

    async def aclose(self) -> None:
        """End the subscription: closes its connection if it has its own, else unsubscribes."""
        if self._owns:
            await self.connection.aclose()
        elif self.id is not None and not self.connection._session.ended:
            await self.unsubscribe()


async def _open_stream(endpoint: Endpoint, tls: ssl.SSLContext | None) -> trio.abc.Stream:
    """A TCP connection to the node, inside TLS (verifying the node) for an https:// URL."""
    stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    if tls is None:
        return stream
    secure = trio.SSLStream(stream, tls, server_hostname=endpoint.host)
    try:
        await secure.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return secure


def _reason(exc: BaseException) -> str:
    # trio reports a failed connect as one OSError whose cause holds each attempt's error.
    causes = [exc]
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        causes.extend(cause.exceptions)
    elif cause is not None:
        causes.append(cause)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused (is the node running?)"
    return str(exc) or type(exc).__name__


def _async_method(name: str):
    plan_function = getattr(Plans, name)

    @functools.wraps(plan_function)
    async def method(self: AsyncClient, *args: Any, **kwargs: Any) -> Any:
        return await self.run(plan_function(self._plans, *args, **kwargs))

    return method


for _name in PLAN_METHODS:
    setattr(AsyncClient, _name, _async_method(_name))
del _name
