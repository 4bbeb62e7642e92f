"""Answer byte budgets and the gate of heavy reads: what one request may cost the node.

What it owns:

* `AnswerBudget`: the bytes one HTTP body (or WebSocket message) may be answered with --
  `max_answer_bytes` for any single call's answer, `max_batch_answer_bytes` for all the answers
  to one body. A call over the first, or one that would take a batch over the second, answers
  -32000 "Answer too large" (its `data` names the budget); once a batch's budget is spent, the
  calls not yet run answer that error at once without running. Methods that can tell the size
  of what they are about to return from stored byte lengths (a block's bytes, a page of
  events) call `expect_answer_bytes` BEFORE rendering, so a huge answer is never built.
* `AnswerPool`: the answer bytes alive on the node, every client together
  (`max_answer_bytes_in_flight`): an HTTP answer counts from the moment it is built (or
  announced) until it has been sent, so clients that ask for big answers and read them slowly
  cannot pile them up in memory; a call whose answer does not fit answers -32000 "Server busy"
  (answers under 16 KiB are always served).
* `ReadGate`: at most `max_heavy_reads` heavy reads (blocks, events, pages, proofs) run at
  once; the others wait for a turn within their request's deadline. A flood of heavy reads
  then queues here, in the RPC, instead of in front of the store's worker thread that the
  driver's block commits need (see also node/store_lanes.py).
* `CallGuard`: both, as `node.rpc.framing.JsonRpc` uses them per body and per call.
* `REFUSALS`: where refusals are counted (`khazana_rpc_refusals_total{reason}`): a context
  variable the ASGI guard (node/rpc/guard.py) sets for each connection, so the JSON-RPC layer
  counts without being handed the metrics.

The budget of the body being answered is a context variable: trio copies the context into the
tasks of a batch's calls, so they all charge one `AnswerBudget`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar, Token
from typing import Any

import trio

from node.rpc.errors import SERVER_LIMIT, RpcError

ANSWER_TOO_LARGE = "Answer too large"
ROW_OVERHEAD_BYTES = 160  # field names, heights, indexes of one rendered row
SMALL_ANSWER_BYTES = 16 * 1024  # never refused for a full pool (counted all the same)

# Methods whose work grows with what is stored (rows, bytes, proofs): gated by `ReadGate`.
HEAVY_METHODS = frozenset(
    {"block", "commit", "tx", "account", "instruments", "holders", "events", "validators"}
    | {"programme", "parameters", "vasps", "reserves", "frozen", "holdings_summary", "height_at"}
)


def _no_count(reason: str) -> None:
    return None


# How refusals are counted here (set per connection by node/rpc/guard.py).
REFUSALS: ContextVar[Callable[[str], None]] = ContextVar("rpc_refusals", default=_no_count)


def count_refusal(reason: str) -> None:
    """Count one refusal (`host`, `content_type`, `per_ip`, `budget`, `ws_idle`, ...)."""
    REFUSALS.get()(reason)


def answer_too_large(size: int, budget: str, limit: int) -> RpcError:
    return RpcError(
        SERVER_LIMIT, ANSWER_TOO_LARGE, f"answer of {size} bytes exceeds {budget} ({limit})"
    )


def page_bytes(raws: Iterable[bytes]) -> int:
    """About the JSON bytes of stored records once rendered: bytes become hex or kz1 text
    (twice as long), plus the field names and numbers of each row."""
    return sum(2 * len(raw) + ROW_OVERHEAD_BYTES for raw in raws)


def encoded_size(obj: Any) -> int | None:
    """The bytes `obj` is sent as (the HTTP answer's JSON encoding); None if not JSON."""
    try:
        return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False))
    except (TypeError, ValueError):
        return None  # a bug of ours; the HTTP layer answers it as an internal error


class AnswerPool:
    """The answer bytes alive on the node at once, all bodies together
    (`max_answer_bytes_in_flight`): built, or being built, and not yet sent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def full(self) -> RpcError:
        return RpcError(
            SERVER_LIMIT,
            "Server busy",
            f"answers being sent fill max_answer_bytes_in_flight ({self.limit}); retry",
        )


class AnswerBudget:
    """The bytes the answers to one body may take (see the module docstring).

    `expect` reserves the bytes a call announces before building its answer, so calls of a
    batch running at once cannot all build answers that together overrun the budget; `settle`
    swaps a call's reservation for the size of the answer it built. Everything charged here is
    charged to the node's `pool` too, until `release` (once the answer has been sent)."""

    def __init__(self, max_answer: int, max_total: int, pool: AnswerPool | None = None) -> None:
        self.max_answer = max_answer
        self.max_total = max_total
        self.pool = pool or AnswerPool(1 << 62)
        self.used = 0
        self.reserved = 0
        self.exhausted = False

    def _batch_spent(self) -> RpcError:
        return RpcError(
            SERVER_LIMIT,
            ANSWER_TOO_LARGE,
            f"the answers to this body exceed max_batch_answer_bytes ({self.max_total})",
        )

    def refusal(self) -> RpcError | None:
        """The error a call not yet run answers with, once the batch's budget is spent."""
        return self._batch_spent() if self.exhausted else None

    def _check(self, size: int) -> None:
        if size > self.max_answer:
            raise answer_too_large(size, "max_answer_bytes", self.max_answer)
        if self.used + self.reserved + size > self.max_total:
            self.exhausted = True
            raise self._batch_spent()
        if size > SMALL_ANSWER_BYTES and self.pool.used + size > self.pool.limit:
            raise self.pool.full()  # small answers (status, health, ...) are still served

    def expect(self, size: int) -> None:
        """Reserve `size` bytes, or raise the budget's error if they would not fit."""
        self._check(size)
        self.reserved += size
        self.pool.used += size

    def unreserve(self, reserved: int) -> None:
        self.reserved -= reserved
        self.pool.used -= reserved

    def settle(self, reserved: int, size: int) -> None:
        """A call that reserved `reserved` bytes built an answer of `size`: charge it, or raise
        the budget's error (the answer is then dropped)."""
        self.unreserve(reserved)
        self._check(size)
        self.used += size
        self.pool.used += size

    def release(self) -> None:
        """The answers have been sent (or dropped): their bytes leave the node's pool."""
        self.pool.used -= self.used + self.reserved
        self.used = self.reserved = 0


_BUDGET: ContextVar[AnswerBudget | None] = ContextVar("rpc_answer_budget", default=None)
# The bytes the running call has reserved (a one-item list, shared with its child tasks).
_RESERVED: ContextVar[list[int] | None] = ContextVar("rpc_answer_reserved", default=None)
# The JSON-RPC envelope around a result: {"jsonrpc":"2.0","result":...,"id":...}.
ENVELOPE_BYTES = 64


def expect_answer_bytes(size: int) -> None:
    """For methods: refuse (raise) before building an answer of about `size` bytes that the
    body's budget cannot take. A no-op outside a budgeted body (direct calls, tests)."""
    budget, reserved = _BUDGET.get(), _RESERVED.get()
    if budget is None or reserved is None:
        return
    try:
        budget.expect(size)
    except RpcError:
        count_refusal("budget")
        raise
    reserved[0] += size


# The budgets of an HTTP request's body, released once its answer has been sent (the guard
# middleware holds them: node/rpc/guard.py).
_HELD: ContextVar[list[AnswerBudget] | None] = ContextVar("rpc_held_answers", default=None)


def hold_answers() -> tuple[Token, list[AnswerBudget]]:
    """For the HTTP layer: the answers built from now on in this context stay counted in the
    node's pool until `release_answers` (after the response is sent)."""
    held: list[AnswerBudget] = []
    return _HELD.set(held), held


def release_answers(token: Token, held: list[AnswerBudget]) -> None:
    _HELD.reset(token)
    for budget in held:
        budget.release()
    held.clear()


# The thread slot long pages are rendered on (set per body by `CallGuard.open`).
_RENDER: ContextVar[trio.CapacityLimiter | None] = ContextVar("rpc_render", default=None)
RENDER_INLINE_ROWS = 50  # shorter pages are rendered on the trio thread


async def render_rows(render: Callable[[Any], Any], rows: list) -> list:
    """`[render(row) for row in rows]`, a long page on a worker thread, one page at a time.

    Rendering (decoding records, kz1 addresses) is pure-Python CPU work: on the trio thread a
    page of 1000 events held it for most of a second on a loaded machine, and the driver, which
    shares that thread, waited (block gaps stretched 4x under a 16-client events flood). On a
    worker thread the interpreter hands the GIL back to the trio thread every few
    milliseconds (`sys.getswitchinterval`), so consensus keeps its turn; one page at a time, so
    the driver competes with one render, not with every client."""
    limiter = _RENDER.get()
    if limiter is None or len(rows) <= RENDER_INLINE_ROWS:
        return [render(row) for row in rows]
    return await trio.to_thread.run_sync(lambda: [render(row) for row in rows], limiter=limiter)


class ReadGate:
    """At most `limit` heavy reads at once (FIFO); the rest wait for a turn."""

    def __init__(self, limit: int) -> None:
        self.limiter = trio.CapacityLimiter(limit)

    async def run(self, name: str, handler: Callable[..., Awaitable[Any]], bound: dict) -> Any:
        if name not in HEAVY_METHODS:
            return await handler(**bound)
        async with self.limiter:
            return await handler(**bound)


class CallGuard:
    """The answer budget per body and the heavy-read gate, as `JsonRpc` applies them."""

    def __init__(
        self, max_answer: int, max_total: int, max_heavy_reads: int, max_in_flight: int
    ) -> None:
        self.max_answer = max_answer
        self.max_total = max_total
        self.gate = ReadGate(max_heavy_reads)
        self.pool = AnswerPool(max_in_flight)
        self.render_limiter = trio.CapacityLimiter(1)

    @classmethod
    def of(cls, limits: Any) -> CallGuard:
        """From an `RpcLimits`."""
        return cls(
            limits.max_answer_bytes,
            limits.max_batch_answer_bytes,
            limits.max_heavy_reads,
            limits.max_answer_bytes_in_flight,
        )

    def open(self) -> tuple[Token, Token]:
        """A fresh budget for the body about to be answered (`close` with the tokens)."""
        render = _RENDER.set(self.render_limiter)
        return _BUDGET.set(AnswerBudget(self.max_answer, self.max_total, self.pool)), render

    def close(self, tokens: tuple[Token, Token]) -> None:
        """The body is answered. Its bytes stay in the node's pool until the answer is sent
        when an HTTP request holds them (`hold_answers`), else they leave it now."""
        budget = _BUDGET.get()
        _BUDGET.reset(tokens[0])
        _RENDER.reset(tokens[1])
        held = _HELD.get()
        if budget is None:
            return
        if held is None:
            budget.release()
        else:
            held.append(budget)

    async def run(self, name: str, handler: Callable[..., Awaitable[Any]], bound: dict) -> Any:
        """One call: refused at once if the body's budget is spent, then run (through the gate
        if heavy), then its result charged to the budget (refused if it does not fit)."""
        budget = _BUDGET.get()
        if budget is None:
            return await self.gate.run(name, handler, bound)
        refusal = budget.refusal()
        if refusal is not None:
            count_refusal("budget")
            raise refusal
        reserved = [0]
        token = _RESERVED.set(reserved)
        try:
            result = await self.gate.run(name, handler, bound)
        except BaseException:
            budget.unreserve(reserved[0])
            raise
        finally:
            _RESERVED.reset(token)
        try:
            budget.settle(reserved[0], (encoded_size(result) or 0) + ENVELOPE_BYTES)
        except RpcError:
            count_refusal("budget")
            raise
        return result
