"""The method table of the node's JSON-RPC: every method by name, assembled from the groups
that serve it (chain and node reads, transactions, committed state), each behind its rule of
who may call it (node/rpc/scopes.py `METHOD_RULES`; the data checks are inside the methods)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from node.rpc.chain_methods import ChainMethods
from node.rpc.framing import Method
from node.rpc.limits import RpcLimits
from node.rpc.nodeview import NodeView
from node.rpc.quote_methods import QuoteMethods
from node.rpc.scopes import Scopes
from node.rpc.state_methods import StateMethods
from node.rpc.tx_methods import TxMethods


class RpcMethods:
    """The methods a node answers (`table`); each takes keyword params already matched by
    name (node/rpc/framing.py)."""

    def __init__(
        self, node: NodeView, limits: RpcLimits | None = None, scopes: Scopes | None = None
    ) -> None:
        self.limits = limits or RpcLimits()
        self.scopes = scopes or Scopes(
            getattr(node, "store", None), anonymous=self.limits.anonymous
        )
        self.chain = ChainMethods(node, self.scopes)
        self.txs = TxMethods(node, self.limits.commit_timeout_ms, self.scopes)
        self.state = StateMethods(
            node, self.scopes, self.limits.max_page, self.limits.max_events_page
        )
        self.quotes = QuoteMethods(node)
        table: dict[str, Method] = {
            **self.chain.table(),
            **self.txs.table(),
            **self.state.table(),
            **self.quotes.table(),
        }
        self.table = {name: gated(name, method, self.scopes) for name, method in table.items()}


def gated(name: str, method: Method, scopes: Scopes) -> Method:
    """`method` refusing, before it runs, a caller its rule does not admit."""
    handler = method.handler

    async def checked(**params: Any) -> Any:
        await scopes.gate(name)
        return await handler(**params)

    return replace(method, handler=checked)
