"""`Client`: the blocking SDK, over `http.client`. Runs the plans of `node/client/core.py`.

    client = Client("http://127.0.0.1:26651", key=read_key_file("me.key"))  # key: optional
    client.status().height
    client.send(TxBuilder.transfer(instrument="USD-CASH", to="kz1...", amount=5), [key])

    for event in client.subscribe("tm.event='NewBlock'", timeout=30):   # WebSocket
        print(event.height, event.hash)

Every method of `core.Plans` listed in `core.PLAN_METHODS` is a method here, with the same
parameters and result. Subscriptions run `node/client/ws.py`'s sans-IO session over a
blocking socket: `subscribe` (its own connection) or `websocket()` (one connection for
several subscriptions and calls). One HTTP connection per call (`Connection: close`): a CLI or a script
makes few calls, and a connection that outlives a node restart cannot go stale.
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
import time
from typing import Any

from ledger.crypto import KeyPair
from node.client.core import (
    DEFAULT_RPC,
    MAX_RESPONSE_BYTES,
    PLAN_METHODS,
    Call,
    Credentials,
    Endpoint,
    Plan,
    Plans,
    Sleep,
    decode_response,
    encode_request,
    tls_context,
)
from node.client.errors import (
    NodeUnreachable,
    ProtocolError,
    RpcError,
    SubscriptionTimeout,
)
from node.client.ws import PENDING, Event, WsSession, websocket_target

_READ_BYTES = 65536
_CLOSE_WAIT_S = 2.0  # how long `close` waits for the node's close frame


class Client:
    """`key`: sign every request with it (reads, subscriptions and submissions then carry
    its rights, docs/RPC.md); without, the node answers what it answers anyone. An https://
    URL is verified against `ca_file` (else the system's CAs); `client_cert` = (cert, key)
    PEM files for a node that asks for a client certificate."""

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

    def call(self, method: str, params: dict | None = None) -> Any:
        """One raw JSON-RPC call (result as JSON)."""
        return self._post(Call(method, params or {}))

    def websocket(self) -> WebSocket:
        """A WebSocket connection to the node (close it, or use it in a `with`)."""
        authorization = None
        if self.credentials is not None:
            self._ready()
            authorization = self.credentials.header("GET", websocket_target(self.endpoint), b"")
        return WebSocket(self.endpoint, self.timeout_s, authorization, self.tls)

    def subscribe(self, query: str, timeout: float | None = None) -> Subscription:
        """Events matching `query` on a connection of their own, as an iterator; `timeout`
        bounds the wait for each event (SubscriptionTimeout), None waits as long as it
        takes. QueryRefused (-32602) for a query the node refuses; SubscriptionClosed when
        the node closes the connection. Close it (or use it in a `with`) when done."""
        connection = self.websocket()
        try:
            return connection.subscribe(query, timeout=timeout, owns_connection=True)
        except BaseException:
            connection.close()
            raise

    def run(self, plan: Plan) -> Any:
        """Run a plan to its end: calls go to the node, sleeps block this thread."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = plan.throw(error) if error is not None else plan.send(value)
            except StopIteration as done:
                return done.value
            value, error = None, None
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                continue
            try:
                value = self._post(step)
            except RpcError as exc:  # handed to the plan, which may expect it
                error = exc

    def _post(self, call: Call) -> Any:
        self._next_id += 1
        request_id = self._next_id
        body = encode_request(call, request_id)
        credentials = self.credentials
        if credentials is None:
            return self._exchange(body, request_id, None)
        self._ready()
        path = self.endpoint.path
        try:
            return self._exchange(body, request_id, credentials.header("POST", path, body))
        except RpcError as exc:
            if not credentials.learn_refusal(exc):
                raise
            return self._exchange(body, request_id, credentials.header("POST", path, body))

    def _ready(self) -> None:
        """Learn what to sign over (the node's chain id and node id) once."""
        credentials = self.credentials
        if credentials is None or credentials.ready:
            return
        self._next_id += 1
        try:
            result = self._exchange(encode_request(Call("status"), self._next_id), self._next_id)
            credentials.learn_status(result)
        except RpcError as exc:
            if not credentials.learn_refusal(exc):
                raise

    def _exchange(self, body: bytes, request_id: int, authorization: str | None = None) -> Any:
        endpoint = self.endpoint
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if authorization is not None:
            headers["Authorization"] = authorization
        if self.tls is not None:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                endpoint.host, endpoint.port, timeout=self.timeout_s, context=self.tls
            )
        else:
            connection = http.client.HTTPConnection(
                endpoint.host, endpoint.port, timeout=self.timeout_s
            )
        try:
            connection.request("POST", endpoint.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read(MAX_RESPONSE_BYTES + 1)
            status = response.status
        except TimeoutError:
            raise NodeUnreachable(endpoint.url, f"no answer within {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise NodeUnreachable(endpoint.url, _reason(exc)) from None
        finally:
            connection.close()
        if len(payload) > MAX_RESPONSE_BYTES:
            raise ProtocolError(f"response larger than {MAX_RESPONSE_BYTES} bytes")
        return decode_response(status, payload, request_id)


class WebSocket:
    """One blocking WebSocket connection to a node's `/websocket`: subscriptions and calls.

    Connects at construction (NodeUnreachable if it cannot within `timeout_s`); every call
    waits at most `timeout_s` for its answer.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        timeout_s: float = 10.0,
        authorization: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._session = WsSession(endpoint, authorization=authorization)
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout_s)
            if tls is not None:
                try:
                    sock = tls.wrap_socket(sock, server_hostname=endpoint.host)
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
        except OSError as exc:
            raise NodeUnreachable(endpoint.url, _reason(exc)) from None
        try:
            self._flush()
            deadline = time.monotonic() + timeout_s
            while not self._session.opened:
                if self._session.ended:
                    raise self._session.error
                if not self._read(deadline):
                    raise NodeUnreachable(endpoint.url, f"no handshake within {timeout_s:g} s")
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if data:
            try:
                self._sock.sendall(data)
            except OSError:
                self._session.receive_data(b"")  # the connection is gone: the session ends

    def _read(self, deadline: float | None) -> bool:
        """Read once and hand the bytes to the session; False if the deadline passed."""
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            return False
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(_READ_BYTES)
        except TimeoutError:
            return False
        except OSError:
            data = b""  # reset: the same as an end without a close frame
        self._session.receive_data(data)
        self._flush()  # pongs, the answer to a close
        return True

    def _answer(self, request_id: int) -> Any:
        deadline = time.monotonic() + self.timeout_s
        while (answer := self._session.take_answer(request_id)) is PENDING:
            if not self._read(deadline):
                raise NodeUnreachable(self.endpoint.url, f"no answer within {self.timeout_s:g} s")
        return answer

    def call(self, method: str, params: dict | None = None) -> Any:
        """Any JSON-RPC method, over this connection."""
        request_id = self._session.call(method, params)
        self._flush()
        return self._answer(request_id)

    def subscribe(
        self, query: str, *, timeout: float | None = None, owns_connection: bool = False
    ) -> Subscription:
        """Subscribe; QueryRefused if the node refuses the query."""
        subscription_id = self._session.subscribe(query)
        self._flush()
        result = self._answer(subscription_id)
        canonical = result.get("query", query) if isinstance(result, dict) else query
        return Subscription(self, subscription_id, canonical, timeout, owns_connection)

    def next_event(self, subscription_id: int, timeout: float | None = None) -> Event | None:
        """The subscription's next event; None once it ended by our close or unsubscribe."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            item = self._session.take_event(subscription_id)
            if item is WsSession.ENDED:
                return None
            if item is not None:
                return item
            if not self._read(deadline):
                raise SubscriptionTimeout(timeout)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._session.forget(subscription.id)  # whatever is still queued is dropped
        self.call("unsubscribe", {"query": subscription.query})

    def unsubscribe_all(self) -> None:
        self._session.forget()
        self.call("unsubscribe_all")

    def close(self) -> None:
        """Close cleanly: our close frame, then the node's (waited for briefly)."""
        try:
            if not self._session.finished:
                self._session.close()
                self._flush()
                deadline = time.monotonic() + min(self.timeout_s, _CLOSE_WAIT_S)
                while not self._session.finished and self._read(deadline):
                    pass
        finally:
            self._sock.close()


class Subscription:
    """The events of one subscription, in the order the node committed them (an iterator)."""

    def __init__(
        self,
        connection: WebSocket,
        subscription_id: int,
        query: str,
        timeout: float | None,
        owns_connection: bool,
    ) -> None:
        self.connection = connection
        self.id = subscription_id
        self.query = query  # the node's canonical text of the query
        self.timeout = timeout
        self._owns = owns_connection

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        event = self.connection.next_event(self.id, self.timeout)
        if event is None:
            raise StopIteration
        return event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def unsubscribe(self) -> None:
        """Ask the node to stop; the iteration ends."""
        self.connection.unsubscribe(self)

    def close(self) -> None:
        """End the subscription: closes its connection if it has its own, else unsubscribes."""
        if self._owns:
            self.connection.close()
        elif not self.connection._session.ended:
            self.unsubscribe()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the node running?)"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _sync_method(name: str):
    plan_function = getattr(Plans, name)

    @functools.wraps(plan_function)
    def method(self: Client, *args: Any, **kwargs: Any) -> Any:
        return self.run(plan_function(self._plans, *args, **kwargs))

    return method


for _name in PLAN_METHODS:
    setattr(Client, _name, _sync_method(_name))
del _name
