"""JSON-RPC error objects: the stable codes every RPC module answers with, and `RpcError`.

-32700 parse error        the body is not JSON
-32600 invalid request    not a request object, an empty batch, a batch too large,
                          a body too large (HTTP 413)
-32601 method not found
-32602 invalid params     wrong names, types or values of params
-32603 internal error     a bug or a store failure: logged, never a traceback out
-32000 server busy / request timed out     (limits; HTTP 503 when busy)
-32001 not found          no block / transaction / account / instrument of that name
-32002 timed out waiting for commit        (broadcast_tx_commit)
-32003 proof unavailable  the driver could not prove right now
-32004 unauthorized / forbidden   no or bad credentials / known, not allowed (`data.rule`
                          names the rule: node/rpc/scopes.py, node/rpc/auth.py)
"""

from __future__ import annotations

from typing import Any

from consensus.errors import RemoteProtocolError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_LIMIT = -32000
NOT_FOUND = -32001
COMMIT_TIMEOUT = -32002
PROOF_UNAVAILABLE = -32003
ACCESS_DENIED = -32004


class RpcError(Exception):
    """A JSON-RPC error object to answer with (never a traceback)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_obj(self) -> dict:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class BadRequest(RpcError, RemoteProtocolError):
    """The client broke JSON-RPC or a method's parameters (parse error, invalid request,
    invalid params): a remote protocol error, answered and forgotten."""


def invalid_params(message: str) -> RpcError:
    return BadRequest(INVALID_PARAMS, "Invalid params", message)


def error_response(error: RpcError, request_id: Any = None) -> dict:
    """The response object carrying `error` for the call `request_id`."""
    return {"jsonrpc": "2.0", "error": error.to_obj(), "id": request_id}
