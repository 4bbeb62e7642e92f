"""JSON-RPC 2.0 itself, in one place for HTTP and WebSocket alike.

What it owns: parsing a body (strict UTF-8 JSON, no NaN/Infinity), requests and notifications,
ids (string, number or null), batches (at most `max_batch` calls, answered in order, run
concurrently, consecutive `broadcast_tx_sync` calls admitted together), binding params by name
or position against a `Method`'s declared names, the per-request deadline, and turning any
exception into an error object (never a traceback: the operator reads it in the log).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from node.rpc.budget import CallGuard
from node.rpc.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SERVER_LIMIT,
    BadRequest,
    RpcError,
    error_response,
    invalid_params,
)
from node.rpc.limits import RpcLimits
from node.rpc.params import tx_param

log = logging.getLogger("khazana.rpc")

# Answered on the WebSocket (node/rpc/websocket.py), in a batch there too; over HTTP they are
# not found, and the error says where they are.
WEBSOCKET_ONLY = ("subscribe", "unsubscribe", "unsubscribe_all")

Handler = Callable[..., Awaitable[Any]]
SubmitMany = Callable[[list[bytes]], Awaitable[list[Any]]]  # a dict, or an RpcError, per tx


@dataclass(frozen=True, slots=True)
class Method:
    handler: Handler
    params: tuple[str, ...]  # accepted names, in positional order
    required: tuple[str, ...] = ()
    extra_time_ms: int = 0  # added to the request deadline (broadcast_tx_commit's own wait)


class JsonRpc:
    """Answers JSON-RPC bodies from a method table.

    `submit_many` admits several transactions in one go (the batch path for consecutive
    `broadcast_tx_sync` calls, `_handle_batch`)."""

    def __init__(
        self,
        table: Mapping[str, Method],
        submit_many: SubmitMany,
        *,
        max_batch: int,
        request_timeout_ms: int,
        guard: CallGuard | None = None,
    ) -> None:
        # Answer budgets and the heavy-read gate (node/rpc/budget.py); defaults if not given.
        self.guard = guard or CallGuard.of(RpcLimits())
        self.table = table
        self.submit_many = submit_many
        self.max_batch = max_batch
        self.request_timeout_ms = request_timeout_ms

    async def handle_body(self, body: bytes) -> Any:
        """The JSON answer to one HTTP body (None when nothing is to be answered)."""
        budget = self.guard.open()  # the answers to this body share one byte budget
        try:
            return await self._handle_body(body)
        finally:
            self.guard.close(budget)

    async def _handle_body(self, body: bytes) -> Any:
        try:
            # Strict UTF-8 first: json.loads(bytes) would let encoded lone surrogates through.
            message = json.loads(body.decode("utf-8"), parse_constant=refuse_constant)
        except (ValueError, RecursionError):
            return error_response(BadRequest(PARSE_ERROR, "Parse error"))
        deadline = trio.current_time() + self.request_timeout_ms / 1000
        if isinstance(message, list):
            refusal = self._batch_refusal(message)
            if refusal is not None:
                return refusal
            return await self._handle_batch(message, deadline)
        return await self.handle_request(message, deadline)

    def _batch_refusal(self, calls: list) -> dict | None:
        """The error answering a whole batch that cannot be run (empty, too long), or None."""
        if not calls:
            return error_response(BadRequest(INVALID_REQUEST, "Invalid Request", "empty batch"))
        if len(calls) > self.max_batch:
            return error_response(
                RpcError(
                    INVALID_REQUEST,
                    "Invalid Request",
                    f"batch of {len(calls)} calls; at most {self.max_batch}",
                )
            )
        return None

    async def handle_batch_with(
        self,
        calls: list,
        is_own: Callable[[Any], bool],
        answer_own: Callable[[Any], Awaitable[Any]],
    ) -> list | dict | None:
        """A batch some of whose calls the caller answers itself (`answer_own` for each call
        `is_own` picks: the WebSocket's subscribe calls), the others as in any batch; one
        after another in the batch's order, under the one answer budget of a body, with the
        same limits and the same answer shape as `handle_body` gives a batch."""
        refusal = self._batch_refusal(calls)
        if refusal is not None:
            return refusal
        budget = self.guard.open()
        try:
            deadline = trio.current_time() + self.request_timeout_ms / 1000
            answers = []
            for call in calls:
                if is_own(call):
                    answer = await answer_own(call)
                else:
                    answer = await self.handle_request(call, deadline)
                if answer is not None:
                    answers.append(answer)
            return answers or None
        finally:
            self.guard.close(budget)

    async def _handle_batch(self, calls: list, deadline: float) -> list | None:
        """The answers to a batch, in the batch's order (notifications give none).

        The calls run concurrently: a `broadcast_tx_sync` waits in the driver while a block is
        pending (admission checks committed state only), so calls answered one after another
        would admit one transaction per block per connection. Their order is kept where it
        matters, at admission: each call is started only after the previous one has run up to
        its first blocking point (for a transaction: its place in the driver's FIFO inbox --
        nothing before it yields). trio runs a task started with `start_soon` in the next
        scheduling batch, and this task's checkpoint puts it in that same batch, so call i
        always takes its first step before call i + 1 is even started.

        Consecutive well-formed `broadcast_tx_sync` calls (a load generator's or an exchange's
        batch of transfers) go to the node as ONE admission of several transactions, in batch
        order (`_plain_submit`): one task, one inbox item and one wakeup instead of one of each
        per call; their answers are exactly what the calls would get one by one."""
        answers: list[dict | None] = [None] * len(calls)

        async def answer(index: int, request: Any) -> None:
            answers[index] = await self.handle_request(request, deadline)

        async def answer_submits(first: int, raws: list[bytes]) -> None:
            ids = [calls[index]["id"] for index in range(first, first + len(raws))]
            with trio.move_on_at(deadline):
                try:
                    results = await self.submit_many(raws)
                except Exception:
                    log.exception("rpc method broadcast_tx_sync failed")
                    error = RpcError(INTERNAL_ERROR, "Internal error")
                    for offset, request_id in enumerate(ids):
                        answers[first + offset] = error_response(error, request_id)
                    return
                for offset, (request_id, result) in enumerate(zip(ids, results, strict=True)):
                    if isinstance(result, RpcError):  # a call refused (not the caller's tx)
                        answers[first + offset] = error_response(result, request_id)
                        continue
                    answers[first + offset] = {"jsonrpc": "2.0", "result": result, "id": request_id}
                return
            timeout = RpcError(
                SERVER_LIMIT, "Request timed out", "broadcast_tx_sync did not finish in time"
            )
            for offset, request_id in enumerate(ids):
                answers[first + offset] = error_response(timeout, request_id)

        async with trio.open_nursery() as nursery:
            index = 0
            while index < len(calls):
                raws: list[bytes] = []
                while index + len(raws) < len(calls):
                    raw = plain_submit(calls[index + len(raws)])
                    if raw is None:
                        break
                    raws.append(raw)
                if len(raws) > 1:
                    nursery.start_soon(answer_submits, index, raws)
                    index += len(raws)
                else:
                    nursery.start_soon(answer, index, calls[index])
                    index += 1
                await trio.lowlevel.checkpoint()
        return [a for a in answers if a is not None] or None

    async def handle_request(self, request: Any, deadline: float) -> dict | None:
        """One call: its response object, or None for a valid notification."""
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
            or ("id" in request and not valid_id(request["id"]))
            or not isinstance(request.get("params", []), (list, dict))
        ):
            request_id = None
            if isinstance(request, dict) and valid_id(request.get("id")):
                request_id = request.get("id")
            return error_response(BadRequest(INVALID_REQUEST, "Invalid Request"), request_id)
        notification = "id" not in request
        request_id = request.get("id")
        try:
            result = await self._call(request["method"], request.get("params"), deadline)
        except RpcError as error:
            return None if notification else error_response(error, request_id)
        if notification:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": request_id}

    async def _call(self, name: str, params: Any, deadline: float) -> Any:
        method = self.table.get(name)
        if method is None:
            if name in WEBSOCKET_ONLY:
                raise RpcError(
                    METHOD_NOT_FOUND,
                    "Method not found",
                    f"{name} is served on the WebSocket only: connect to /websocket",
                )
            raise RpcError(METHOD_NOT_FOUND, "Method not found", name[:100])
        bound = bind_params(method, params)
        with trio.move_on_at(deadline + method.extra_time_ms / 1000):
            try:
                return await self.guard.run(name, method.handler, bound)
            except RpcError:
                raise
            except Exception:
                # Never a traceback to the client: the operator reads it in the log.
                log.exception("rpc method %s failed", name)
                raise RpcError(INTERNAL_ERROR, "Internal error") from None
        raise RpcError(SERVER_LIMIT, "Request timed out", f"{name} did not finish in time")


def valid_id(value: Any) -> bool:
    # JSON-RPC 2.0: String, Number or Null (bool is not a Number in JSON).
    if type(value) is float:
        return math.isfinite(value)
    return value is None or type(value) in (str, int)


def plain_submit(request: Any) -> bytes | None:
    """The transaction of a well-formed `broadcast_tx_sync` call with an id (`{"tx": ...}`
    or `[tx]`, valid base64), else None: such calls may be admitted together; anything else
    (a notification, bad params) takes the one-call path and gets its own answer or error."""
    if (
        type(request) is not dict
        or request.get("method") != "broadcast_tx_sync"
        or request.get("jsonrpc") != "2.0"
        or "id" not in request
        or not valid_id(request["id"])
    ):
        return None
    params = request.get("params")
    if type(params) is dict and len(params) == 1:
        tx = params.get("tx")
    elif type(params) is list and len(params) == 1:
        tx = params[0]
    else:
        return None
    try:
        return tx_param(tx)
    except RpcError:
        return None


def bind_params(method: Method, params: Any) -> dict:
    if params is None:
        bound: dict = {}
    elif isinstance(params, list):
        if len(params) > len(method.params):
            raise invalid_params(
                f"at most {len(method.params)} positional params {list(method.params)}"
            )
        bound = dict(zip(method.params, params, strict=False))
    else:  # dict, checked by the caller
        unknown = sorted(set(params) - set(method.params))
        if unknown:
            raise invalid_params(f"unknown params {unknown}; accepted: {list(method.params)}")
        bound = dict(params)
    missing = [name for name in method.required if name not in bound]
    if missing:
        raise invalid_params(f"missing params {missing}")
    return bound


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
