"""The SDK's exceptions: one class per way a call can fail, each with what a caller needs.

ClientError          base class of everything below
NodeUnreachable      no HTTP answer at all (refused, reset, timed out, DNS)
ProtocolError        an answer that is not JSON-RPC 2.0 (a proxy page, a truncated body)
RpcError             a JSON-RPC error object: `code`, `message`, `data`
TxRejected           a transaction refused by the ledger or the mempool: `code`, `name`
                     (the `ledger.codes.Code` member's name), `log`, `tx_hash`, `height`
                     (None when refused at admission, before any block)
CommitTimeout        the transaction was accepted but not seen in a block in time
SignedTxFileError    a multi-signature file that cannot be read
QueryRefused         (an RpcError, -32602) the node refused a subscription query: `query`
SubscriptionClosed   the WebSocket ended under a subscription: `code` and `reason` of the
                     close (1008 "too slow: ...", 1013 too many connections, 1006 lost)
SubscriptionTimeout  no event within the `timeout` a blocking subscription was given
"""

from __future__ import annotations

from typing import Any

from ledger.codes import Code


class ClientError(Exception):
    """Base class of the SDK's errors."""


class NodeUnreachable(ClientError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"node at {url} is unreachable: {reason}")
        self.url = url
        self.reason = reason


class ProtocolError(ClientError):
    """The node answered, but not with JSON-RPC 2.0."""


class RpcError(ClientError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        detail = f": {data}" if data is not None else ""
        super().__init__(f"RPC error {code} {message}{detail}")
        self.code = code
        self.message = message
        self.data = data


def code_name(code: int) -> str:
    """The `ledger.codes.Code` name of `code` ("UNKNOWN_<n>" for a code this SDK predates)."""
    try:
        return Code(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


class TxRejected(ClientError):
    def __init__(
        self, code: int, log: str, tx_hash: str | None = None, height: int | None = None
    ) -> None:
        self.code = code
        self.name = code_name(code)
        self.log = log
        self.tx_hash = tx_hash
        self.height = height
        where = "at admission" if height is None else f"in block {height}"
        super().__init__(f"transaction rejected {where}: {self.name} ({code}): {log}")


class CommitTimeout(ClientError):
    def __init__(self, tx_hash: str, timeout_s: float) -> None:
        super().__init__(f"transaction {tx_hash} was not committed within {timeout_s:g} s")
        self.tx_hash = tx_hash
        self.timeout_s = timeout_s


class SignedTxFileError(ClientError):
    """A signed-transaction file that is not one, or whose bytes do not verify."""


class QueryRefused(RpcError):
    """`subscribe` answered -32602: the query is outside the node's query language (or the
    connection already has as many subscriptions as the node allows)."""

    def __init__(self, query: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message, data)
        self.query = query
        detail = f": {data}" if data is not None else ""
        self.args = (f"the node refused the subscription {query!r} ({code} {message}){detail}",)


class SubscriptionClosed(ClientError):
    """The WebSocket under a subscription was closed by the node or lost."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the node closed the subscription connection: {code} {reason}".strip())
        self.code = code
        self.reason = reason


class SubscriptionTimeout(ClientError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no event within {timeout_s:g} s")
        self.timeout_s = timeout_s
