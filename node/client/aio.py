"""`AsyncClient`: the trio SDK, HTTP/1.1 over `trio.open_tcp_stream`. Runs the plans of
`node/client/core.py`, like the blocking `Client`, with the same methods (awaited).

    async with trio.open_nursery():
        client = AsyncClient("http://127.0.0.1:26657")
        status = await client.status()

One connection per call (`Connection: close`), each bounded by `timeout_s` (connect, send
and the whole answer) and by `core.MAX_RESPONSE_BYTES`.
"""

from __future__ import annotations

import functools
from typing import Any

import trio

from node.client.core import (
    DEFAULT_RPC,
    PLAN_METHODS,
    Call,
    Endpoint,
    HttpResponseParser,
    Plan,
    Plans,
    Sleep,
    decode_response,
    encode_request,
    http_request,
)
from node.client.errors import NodeUnreachable, RpcError

_READ_BYTES = 65536


class AsyncClient:
    def __init__(self, url: str = DEFAULT_RPC, *, timeout_s: float = 10.0) -> None:
        self.endpoint = Endpoint.parse(url)
        self.timeout_s = timeout_s
        self._plans = Plans()
        self._next_id = 0

    @property
    def url(self) -> str:
        return self.endpoint.url

    async def call(self, method: str, params: dict | None = None) -> Any:
        """One raw JSON-RPC call (result as JSON)."""
        return await self._post(Call(method, params or {}))

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
        endpoint = self.endpoint
        request = http_request(endpoint, encode_request(call, request_id))
        parser = HttpResponseParser()
        try:
            with trio.fail_after(self.timeout_s):
                stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
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
