"""`Client`: the blocking SDK, over `http.client`. Runs the plans of `node/client/core.py`.

    client = Client("http://127.0.0.1:26657")
    client.status().height
    client.send(TxBuilder.transfer(instrument="USD-CASH", to="kz1...", amount=5), [key])

Every method of `core.Plans` listed in `core.PLAN_METHODS` is a method here, with the same
parameters and result. One HTTP connection per call (`Connection: close`): a CLI or a script
makes few calls, and a connection that outlives a node restart cannot go stale.
"""

from __future__ import annotations

import functools
import http.client
import time
from typing import Any

from node.client.core import (
    DEFAULT_RPC,
    MAX_RESPONSE_BYTES,
    PLAN_METHODS,
    Call,
    Endpoint,
    Plan,
    Plans,
    Sleep,
    decode_response,
    encode_request,
)
from node.client.errors import NodeUnreachable, ProtocolError, RpcError


class Client:
    def __init__(self, url: str = DEFAULT_RPC, *, timeout_s: float = 10.0) -> None:
        self.endpoint = Endpoint.parse(url)
        self.timeout_s = timeout_s
        self._plans = Plans()
        self._next_id = 0

    @property
    def url(self) -> str:
        return self.endpoint.url

    def call(self, method: str, params: dict | None = None) -> Any:
        """One raw JSON-RPC call (result as JSON)."""
        return self._post(Call(method, params or {}))

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
        endpoint = self.endpoint
        connection = http.client.HTTPConnection(
            endpoint.host, endpoint.port, timeout=self.timeout_s
        )
        try:
            connection.request(
                "POST",
                endpoint.path,
                body=body,
                headers={"Content-Type": "application/json", "Connection": "close"},
            )
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
