"""The JSON Schemas of the supervision reads (node/rpc/supervision_methods.py; docs/RPC.md,
"Supervision reads"): programme, parameters, vasps, reserves, frozen, holdings_summary and
height_at. node/rpc/schemas.py merges `SUPERVISION_SCHEMAS` into `METHOD_SCHEMAS` and
`SUPERVISION_COMPONENTS` into `COMPONENTS` (`account`'s `height` is there, with `account`).

Results are described as the node answers them (same conventions as schemas.py): amounts in
integers (US cents of face value for the programme), percentages as exact text, null where
the answer has no value (a partial freeze's reason made before the index began, an account
without KYC, a last page's `next`).
"""

from __future__ import annotations

from ledger.supervision import DIMENSIONS, NO_GROUP
from node.rpc.schema_parts import (
    HEIGHT,
    INSTRUMENT_KIND,
    NAT,
    STATUS,
    STR,
    STRINGS,
    TIME,
    MethodSchema,
    array,
    nullable,
    obj,
    ref,
)

PAGE = {**ref("IntegerParam"), "description": "1 for the first page"}
PER_PAGE = {**ref("IntegerParam"), "description": "at most [rpc] max_page (its default)"}
LIMIT = {**ref("IntegerParam"), "description": "at most [rpc] max_page (its default)"}
# `time`: what node/rpc/supervision_methods.py `time_param` takes.
TIME_PARAM = {
    "description": "RFC 3339 text with a zone, or milliseconds since 1970 (integer or decimal)",
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 1 << 53},
        {"type": "string", "pattern": "^[0-9]{1,16}$"},
        {
            "type": "string",
            "maxLength": 64,
            "pattern": (
                "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?"
                "([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"
            ),
        },
    ],
}
GROUP = {**STR, "description": f'a VASP\'s address, a country or a category; "{NO_GROUP}"'}
TOTAL = obj({"instrument": STR, "total": NAT, "holders": NAT})

SUPERVISION_COMPONENTS: dict[str, dict] = {
    "Reserve": obj(
        {
            "quantity": NAT,
            "document_hash": ref("Hash"),
            "custodian": ref("Address"),
            "time": TIME,
            "time_ms": NAT,
            "height": NAT,
        }
    ),
    "FrozenEntry": {
        "oneOf": [
            obj(
                {
                    "scope": {"const": "account"},
                    "instrument": {"type": "null"},
                    "holdings": array(ref("Balance")),
                }
            ),
            obj({"scope": {"const": "holding"}, "instrument": STR, "balance": NAT, "frozen": NAT}),
        ],
        **obj(
            {
                "address": ref("Address"),
                "scope": {"enum": ["account", "holding"]},
                "instrument": nullable(STR),
                "reason_code": {**nullable(NAT), "description": "null: frozen before the index"},
                "legal_reference": STR,
                "height": NAT,
                "vasp": nullable(ref("Address")),
                "country": nullable(STR),
            }
        ),
    },
}

SUPERVISION_SCHEMAS: dict[str, MethodSchema] = {
    "programme": MethodSchema(
        "The programme cap, what counts against it (US cents) and each instrument's part.",
        params={"height": HEIGHT},
        result=obj(
            {
                "height": NAT,
                "cap_usd_cents": NAT,
                "outstanding_usd_cents": NAT,
                "available_usd_cents": NAT,
                "used_percent": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"},
                "instruments": array(
                    obj(
                        {
                            "id": STR,
                            "kind": INSTRUMENT_KIND,
                            "name": STR,
                            "supply": NAT,
                            "cap": NAT,
                            "usd_face_value": NAT,
                            "outstanding_usd_cents": NAT,
                            "status": STATUS,
                        }
                    )
                ),
            }
        ),
    ),
    "parameters": MethodSchema(
        "The chain parameters, the approval policy and the programme cap, as of a height.",
        params={"height": HEIGHT},
        result=obj(
            {
                "height": NAT,
                "parameters": obj(
                    {
                        "closed_period_days": NAT,
                        "investor_categories": STRINGS,
                        "reserve_max_age_s": NAT,
                    }
                ),
                "policy": obj(
                    {
                        "rules": {
                            "type": "object",
                            "additionalProperties": obj({"min": NAT, "roles": STRINGS}),
                        }
                    }
                ),
                "programme_cap_usd_cents": NAT,
            }
        ),
    ),
    "vasps": MethodSchema(
        "Licensed and suspended VASPs in address order with their client counts, paged.",
        params={
            "after": {**ref("AddressParam"), "description": "the last address of the last page"},
            "limit": LIMIT,
        },
        result=obj(
            {
                "vasps": array(
                    obj(
                        {
                            "address": ref("Address"),
                            "name": STR,
                            "status": {"enum": ["licensed", "suspended"]},
                            "reason": STR,
                            "since_height": NAT,
                            "clients": NAT,
                        }
                    )
                ),
                "next": nullable(ref("Address")),
            }
        ),
    ),
    "reserves": MethodSchema(
        "An instrument's reserve attestations, latest first, paged.",
        params={"instrument": ref("InstrumentId"), "page": PAGE, "per_page": PER_PAGE},
        result=obj(
            {
                "instrument": STR,
                "kind": INSTRUMENT_KIND,
                "attestations": array(ref("Reserve")),
                "page": NAT,
                "per_page": NAT,
            }
        ),
    ),
    "frozen": MethodSchema(
        "What is frozen now (whole accounts and parts of holdings), by address, paged.",
        params={"page": PAGE, "per_page": PER_PAGE},
        result=obj({"frozen": array(ref("FrozenEntry")), "page": NAT, "per_page": NAT}),
    ),
    "holdings_summary": MethodSchema(
        "Totals and holder counts per VASP, country or category, per instrument.",
        params={
            "instrument": {**ref("InstrumentId"), "description": "every instrument if absent"},
            "by": {"enum": list(DIMENSIONS)},
            "height": HEIGHT,
        },
        result=obj(
            {
                "height": NAT,
                "by": {"enum": list(DIMENSIONS)},
                "instrument": nullable(STR),
                "groups": array(
                    obj(
                        {"instrument": STR, "group": GROUP, "total": NAT, "holders": NAT},
                        {"name": {**STR, "description": 'by "vasp": the VASP\'s name'}},
                    )
                ),
                "totals": array(TOTAL),
            }
        ),
    ),
    "height_at": MethodSchema(
        "The last height whose block time is at or before a time.",
        params={"time": TIME_PARAM},
        result=obj({"height": NAT, "time": TIME, "time_ms": NAT}),
    ),
}
