"""Benchmark harness only: run the node with the issue 13/14 defences replaced by pass-throughs.

Issues 13 and 14 set a goal: `scripts/bench.py`'s maximum with the defences (and with request
authentication and TLS) on, at least 90 % of the figure without them, measured in the same
run. The node has no switch that turns its defences off, on purpose: an operator must not be
able to run a node that any stranger can read, flood or squat. So the "without" side of that
comparison is made here, in the benchmark's own tooling, and only for processes started with
BOTH of these in their environment (`scripts/bench_ab.py --base-defences-off` sets them for
the localnet it starts, whose node processes inherit them):

    PYTHONPATH=<tree>/scripts/benchlib/defences_off     (so Python imports this file at start)
    KHAZANA_BENCH_DEFENCES=off

Anything else (the variable unset or another value) and this file does nothing. Nothing in
`node/`, `ledger/` or `consensus/` imports it.

What it switches off (each replaced by what the node did before the defences, 51cbb4b):

- mempool admission's cheap checks beyond the duplicate and chain-id checks: no unknown-
  operation refusal, no `tx_footprint` walk (a transaction's cost is its wire size);
- the mempool's shares: no per-sender, per-VASP or parked quotas, no reserved room for the
  institutions, no eviction; only the pool's total count and bytes bound admission;
- request authentication: no credential is parsed or verified (no Ed25519 check, no replay
  cache) and every caller is treated as the node's operator (reads all, may submit anything);
- the RPC guard (Host allowlist, Content-Type rule, per-IP caps) and the answer budgets and
  heavy-read gate (`CallGuard`): the app answers every request directly;
- hypercorn's send deadline per connection (`DeadlineStream`) and the idle timeout setting.

What stays on, and why: the P2P admission (handshake deadlines, per-IP pending caps) works
once per connection, not per transaction; the nonce window, expiry and the scoped recheck
after each block (the mempool's correctness as much as a defence, and cheap); the decode
cache's byte bound; the store's read and write lanes (one thread hop, the same as the single
limiter before them); the request body's deadline; WebSocket limits (the bench has one
subscriber per validator). TLS is not a defence here: it is chosen per tree by `khazana init
--rpc-tls` (`bench_ab.py --base-tls / --branch-tls`).
"""

from __future__ import annotations

import os

SWITCH = "KHAZANA_BENCH_DEFENCES"


def apply() -> list[str]:
    """Replace the defences with pass-throughs in this process; the names of what was replaced."""
    import node.mempool as mempool
    import node.rpc.app as rpc_app
    import node.rpc.budget as budget
    import node.rpc.guard as guard
    import node.rpc.scopes as scopes
    from ledger.codes import Code
    from node.mempool_admission import Plan, full, refuse

    def cheap_checks(tx, chain_id, book, limits):  # type: ignore[no-untyped-def]
        if tx.tx_id in book.entries:
            return refuse(Code.ALREADY_IN_MEMPOOL, "transaction is already waiting", tx.tx_id), 0
        if tx.body.chain_id != chain_id:
            return refuse(Code.WRONG_CHAIN, "transaction is for another chain", tx.tx_id), 0
        return None, len(tx.raw)

    def plan_room(tx, account, cost, book, limits):  # type: ignore[no-untyped-def]
        expected = book.expected_nonce(tx.body.sender, account.nonce)
        if len(book.entries) + 1 > limits.max_txs or book.cost + cost > limits.max_bytes:
            return None, full(tx.tx_id, book, limits)
        return Plan(False, tx.body.nonce != expected, cost), None

    mempool.cheap_checks = cheap_checks
    mempool.plan_room = plan_room
    mempool.quota_group = lambda account: None  # no VASP books

    operator = scopes.Principal(scopes.OPERATOR)

    async def principal(self):  # type: ignore[no-untyped-def]
        return operator

    scopes.Scopes.principal = principal
    rpc_app.RpcApp._authenticate = lambda self, scope, body, query=False: None

    async def straight_through(self, scope, receive, send):  # type: ignore[no-untyped-def]
        await self.app(scope, receive, send)

    guard.Guard.__call__ = straight_through

    async def run(self, name, handler, bound):  # type: ignore[no-untyped-def]
        return await handler(**bound)

    budget.CallGuard.open = lambda self: None
    budget.CallGuard.close = lambda self, tokens: None
    budget.CallGuard.run = run

    serve_asgi = rpc_app.serve_asgi

    async def serve_without_deadlines(app, listen, **options):  # type: ignore[no-untyped-def]
        options.update(send_timeout_ms=None, keep_alive_timeout_ms=None, on_send_timeout=None)
        await serve_asgi(app, listen, **options)

    rpc_app.serve_asgi = serve_without_deadlines
    return [
        "mempool.cheap_checks",
        "mempool.plan_room",
        "mempool.quota_group",
        "Scopes.principal",
        "RpcApp._authenticate",
        "Guard.__call__",
        "CallGuard",
        "serve_asgi deadlines",
    ]


if os.environ.get(SWITCH) == "off":
    APPLIED = apply()
