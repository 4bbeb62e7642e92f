"""The method table of the node's JSON-RPC: every method by name, assembled from the groups
that serve it (chain and node reads, transactions, committed state)."""

from __future__ import annotations

from node.rpc.chain_methods import ChainMethods
from node.rpc.framing import Method
from node.rpc.limits import RpcLimits
from node.rpc.nodeview import NodeView
from node.rpc.state_methods import StateMethods
from node.rpc.tx_methods import TxMethods


class RpcMethods:
    """The methods a node answers (`table`); each takes keyword params already matched by
    name (node/rpc/framing.py)."""

    def __init__(self, node: NodeView, limits: RpcLimits | None = None) -> None:
        self.limits = limits or RpcLimits()
        self.chain = ChainMethods(node)
        self.txs = TxMethods(node, self.limits.commit_timeout_ms)
        self.state = StateMethods(node, self.limits.max_page, self.limits.max_events_page)
        self.table: dict[str, Method] = {
            **self.chain.table(),
            **self.txs.table(),
            **self.state.table(),
        }
