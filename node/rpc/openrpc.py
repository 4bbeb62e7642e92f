"""The OpenRPC document of the node's JSON-RPC (https://spec.open-rpc.org), served by
`rpc.discover` and kept in docs/openrpc.json.

What it owns: assembling the document from the method table (names, param order, required
params: node/rpc/framing.py `Method`) and the schemas (node/rpc/schemas.py), and writing
docs/openrpc.json (`scripts/openrpc.py` rewrites it; a test checks the file is what `rpc.discover`
serves). A registered method without a schema is still listed (with empty
schemas, so a client sees it) and named by `missing_schemas`, which the tests require empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from node.rpc.framing import Method
from node.rpc.schemas import COMPONENTS, METHOD_SCHEMAS

OPENRPC_VERSION = "1.3.2"
API_VERSION = "1.0.0"  # of the JSON-RPC interface (CONTRACT.md), not of the package
# Read methods that also answer `GET /<method>?param=value` (node/rpc/app.py).
GET_NOTE = "Also answers GET /{name}?param=value (a JSON-RPC envelope, id -1)."

INFO = {
    "title": "Khazana node JSON-RPC",
    "version": API_VERSION,
    "description": (
        "JSON-RPC 2.0 over HTTP POST to / (WebSocket subscriptions at /websocket are described "
        "in docs/RPC.md). Who may call what: docs/RPC.md, 'Who may read what'; errors: "
        "docs/RPC.md, 'Errors'."
    ),
}


def missing_schemas(table: Mapping[str, Method]) -> list[str]:
    """Registered methods with no entry in `METHOD_SCHEMAS`, or with a param it lacks."""
    missing = []
    for name, method in sorted(table.items()):
        spec = METHOD_SCHEMAS.get(name)
        if spec is None or any(param not in spec.params for param in method.params):
            missing.append(name)
    return missing


def method_document(name: str, method: Method, get_form: bool) -> dict:
    spec = METHOD_SCHEMAS.get(name)
    params = []
    for param in method.params:
        schema = {} if spec is None else spec.params.get(param, {})
        params.append({"name": param, "required": param in method.required, "schema": schema})
    entry: dict[str, Any] = {
        "name": name,
        "summary": "(no schema yet)" if spec is None else spec.summary,
        "params": params,
        "paramStructure": "either",
        "result": {"name": "result", "schema": {} if spec is None else spec.result},
    }
    if get_form:
        entry["description"] = GET_NOTE.format(name=name)
    return entry


def document(table: Mapping[str, Method], get_methods: frozenset[str] = frozenset()) -> dict:
    """The OpenRPC document of `table` (methods in name order: the same bytes every time)."""
    return {
        "openrpc": OPENRPC_VERSION,
        "info": INFO,
        "methods": [
            method_document(name, table[name], name in get_methods) for name in sorted(table)
        ],
        "components": {"schemas": COMPONENTS},
    }


def dumps(doc: dict) -> str:
    """docs/openrpc.json's text: sorted keys, two-space indent, a final newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
