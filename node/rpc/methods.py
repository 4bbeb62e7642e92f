"""The method table of the node's JSON-RPC: every method by name, assembled from the groups
that serve it (chain and node reads, transactions, committed state), each behind its rule of
who may call it (node/rpc/scopes.py `METHOD_RULES`; the data checks are inside the methods),
and `rpc.discover`, the table's OpenRPC document (node/rpc/openrpc.py, schemas in
node/rpc/schemas.py: adding a method means adding its schema there).

`GET_METHODS`: the methods that also answer CometBFT's GET form (`GET /block?height=5`,
node/rpc/app.py): every method but those that submit a transaction -- a GET must never act
(a browser sends a cross-site GET without asking), so submissions are POST only."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from node.rpc.chain_methods import ChainMethods
from node.rpc.framing import Method
from node.rpc.limits import RpcLimits
from node.rpc.nodeview import NodeView
from node.rpc.openrpc import document
from node.rpc.quote_methods import QuoteMethods
from node.rpc.scopes import Scopes
from node.rpc.state_methods import StateMethods
from node.rpc.supervision_methods import SupervisionMethods
from node.rpc.tx_methods import TxMethods

# Methods that submit (or dry-run) a transaction: POST only, never the GET form.
SUBMIT_METHODS = frozenset({"broadcast_tx_sync", "broadcast_tx_commit", "check_tx"})


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
        # `account` with `height` is a supervision read; without, the state's (delegated).
        self.supervision = SupervisionMethods(
            node, self.scopes, self.limits.max_page, self.state.account
        )
        self.quotes = QuoteMethods(node, self.limits.max_quotes)
        table: dict[str, Method] = {
            **self.chain.table(),
            **self.txs.table(),
            **self.state.table(),
            "rpc.discover": Method(self.rpc_discover, ()),
            **self.supervision.table(),
            **self.quotes.table(),
        }
        self.table = {name: gated(name, method, self.scopes) for name, method in table.items()}
        self.get_methods = frozenset(self.table) - SUBMIT_METHODS
        self._document: dict | None = None

    def discover(self) -> dict:
        """The OpenRPC document of this table (built once: the table does not change)."""
        if self._document is None:
            self._document = document(self.table, self.get_methods)
        return self._document

    async def rpc_discover(self) -> dict:
        return self.discover()


def gated(name: str, method: Method, scopes: Scopes) -> Method:
    """`method` refusing, before it runs, a caller its rule does not admit."""
    handler = method.handler

    async def checked(**params: Any) -> Any:
        await scopes.gate(name)
        return await handler(**params)

    return replace(method, handler=checked)
