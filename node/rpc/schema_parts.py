"""The building blocks of the JSON-RPC schemas, shared by node/rpc/schemas.py and
node/rpc/supervision_schemas.py (which schemas.py merges): `ref`, `obj`, `nullable`, the
scalar schemas, the common params and the `MethodSchema` record.

What it owns: only these helpers, so that each schema module imports it and none imports the
other's importer (no import cycle: schemas.py -> supervision_schemas.py -> schema_parts.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict:
    """An object with these members (`required` always present), more allowed."""
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


INT = {"type": "integer"}
NAT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
STRINGS = {"type": "array", "items": STR}
INSTRUMENT_KIND = {"enum": ["bond", "tbill", "commodity", "cash"]}
STATUS = {"enum": ["active", "paused", "redeemed"]}
TIME = {"type": "string", "description": "RFC 3339 UTC, milliseconds"}

HEIGHT = {**ref("IntegerParam"), "description": "a committed height (latest if absent)"}
PROVE = {**BOOL, "description": "add a proof checkable against the validators' signatures"}


@dataclass(frozen=True)
class MethodSchema:
    summary: str
    params: dict[str, dict] = field(default_factory=dict)
    result: dict = field(default_factory=lambda: {"type": "object"})
