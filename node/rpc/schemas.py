"""The JSON Schemas of every JSON-RPC method's params and result: the one source of truth of
the OpenRPC document (`rpc.discover`, docs/openrpc.json; node/rpc/openrpc.py assembles it).

What it owns: `METHOD_SCHEMAS` (one `MethodSchema` per method name: a summary, a schema per
param name and the result's schema) and `COMPONENTS` (the shared schemas they refer to as
`{"$ref": "#/components/schemas/NAME"}`). A method's param ORDER and which params are required
come from its registration (node/rpc/framing.py `Method`), never from here, so the two cannot
disagree. Adding a method is one entry in `METHOD_SCHEMAS`; a registered method without one is
listed by `openrpc.missing_schemas` and fails tests/node/test_rpc_openrpc.py. The supervision
reads' schemas are node/rpc/supervision_schemas.py's, merged in at the end; the helpers both
use (`ref`, `obj`, `nullable`, ...) are node/rpc/schema_parts.py's.

Results are described as the node answers them: integers for heights and amounts, lowercase
hex for hashes, kz1 text for addresses, base64 for transactions and proof bytes. Objects list
the members a client may rely on (`required`) and allow more (the contract is extended, never
renamed: CONTRACT.md). Params describe every form the node accepts (node/rpc/params.py),
CometBFT's decimal strings and base64 hashes included.
"""

from __future__ import annotations

from node.rpc.schema_parts import (
    BOOL,
    HEIGHT,
    INSTRUMENT_KIND,
    NAT,
    PROVE,
    STATUS,
    STR,
    STRINGS,
    TIME,
    MethodSchema,
    nullable,
    obj,
    ref,
)
from node.rpc.supervision_schemas import SUPERVISION_COMPONENTS, SUPERVISION_SCHEMAS

DATE = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
# ledger/quote.py's figures: decimal text rounded to exactly 12 places, never an exponent.
DECIMAL_12 = {"type": "string", "pattern": "^-?[0-9]+\\.[0-9]{12}$"}
RATE_TEXT = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}  # a fraction, "0.1125"
QUOTE_FLOATING = obj(
    {
        "assumption": {
            "description": '"index_flat": every coupon not yet fixed is projected at the'
            " latest fixing plus the spread, floored at 0",
            "enum": ["index_flat"],
        },
        "rate_index": STR,
        "spread_bp": {"type": "integer"},
        "current_rate": {**RATE_TEXT, "description": "this period's annual rate"},
        "current_fixing": obj(
            {
                "date": {**DATE, "description": "the date the fixing used is of"},
                "rate": RATE_TEXT,
                "fixing_date": {**DATE, "description": "the period's fixing date"},
            }
        ),
        "latest_fixing": obj({"date": DATE, "rate": RATE_TEXT}),
        "projected_rate": {**RATE_TEXT, "description": "the later coupons' annual rate"},
        "discount_margin": {
            **DECIMAL_12,
            "description": "the yield less the latest fixing: the margin over the assumed"
            " index at which the projected flows discount to the price",
        },
    }
)

COMPONENTS: dict[str, dict] = {
    # -- params (every accepted form)
    "IntegerParam": {
        "description": 'A JSON integer, or its decimal string (CometBFT clients send "5").',
        "anyOf": [NAT, {"type": "string", "pattern": "^(0|[1-9][0-9]{0,18})$"}],
    },
    "HashParam": {
        "description": "32 bytes: 64 hex characters (either case, optional 0x) or base64.",
        "type": "string",
        "pattern": "^((0[xX])?[0-9a-fA-F]{64}|[A-Za-z0-9+/]{43}=)$",
    },
    "AddressParam": {"description": "A kz1... account address.", "type": "string"},
    "InstrumentId": {"type": "string", "minLength": 1, "maxLength": 32},
    "TxParam": {"description": "Base64 of the signed transaction's bytes.", "type": "string"},
    # -- values in results
    "Hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    "ShortHash": {
        "description": "A 20-byte id in hex.",
        "type": "string",
        "pattern": "^[0-9a-f]{40}$",
    },
    "Address": {"type": "string", "pattern": "^kz1[02-9ac-hj-np-z]+$"},
    "Base64": {"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$"},
    "Header": obj(
        {
            "chain_id": STR,
            "height": NAT,
            "time": TIME,
            "time_ms": NAT,
            "prev_hash": ref("Hash"),
            "txs_hash": ref("Hash"),
            "app_hash": ref("Hash"),
            "results_hash": ref("Hash"),
            "proposer": ref("ShortHash"),
            "validators_hash": ref("Hash"),
        }
    ),
    "Commit": nullable(
        {
            "anyOf": [
                obj(
                    {
                        "height": NAT,
                        "round": NAT,
                        "block_id": obj({"hash": ref("Hash")}),
                        "signatures": {
                            "type": "array",
                            "items": obj(
                                {
                                    "validator": ref("ShortHash"),
                                    "signature": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
                                }
                            ),
                        },
                    }
                ),
                obj({"raw": ref("Base64")}),
            ]
        }
    ),
    "Event": obj(
        {"type": STR, "attributes": {"type": "object"}},
    ),
    "TxResult": obj(
        {
            "code": NAT,
            "codespace": STR,
            "log": STR,
            "events": {"type": "array", "items": ref("Event")},
        }
    ),
    "Admission": obj(
        {"code": NAT, "codespace": STR, "log": STR, "hash": nullable(ref("Hash"))},
        # Code 408 ALREADY_COMMITTED only: where the transaction was committed.
        {"height": NAT, "index": NAT},
    ),
    "Proof": obj(
        {"height": NAT, "header": ref("Base64"), "commit": ref("Base64")},
        {
            "value": ref("Base64"),
            "proof": ref("Base64"),
            "balances": {
                "type": "array",
                "items": obj({"instrument": STR, "value": ref("Base64"), "proof": ref("Base64")}),
            },
            "total": NAT,
            "path": {"type": "array", "items": ref("Hash")},
        },
    ),
    "Freeze": nullable(obj({"height": NAT, "legal_reference": STR, "reason_code": NAT})),
    "Kyc": nullable(
        obj(
            {
                "attested_by": ref("Address"),
                "category": STR,
                "country": STR,
                "expiry": {"type": "string", "format": "date"},
                "vasp": nullable(ref("Address")),
            }
        )
    ),
    "Balance": obj({"instrument": STR, "balance": NAT, "frozen": NAT}),
    "Account": obj(
        {
            "address": ref("Address"),
            "nonce": NAT,
            "public_key": nullable(ref("Hash")),
            "roles": STRINGS,
            "name": STR,
            "kyc": ref("Kyc"),
            "frozen": ref("Freeze"),
            "instruments": STRINGS,
            "balances": {"type": "array", "items": ref("Balance")},
        },
        {
            "proof": ref("Proof"),
            "height": {**NAT, "description": "with the `height` param: the height it is as of"},
        },
    ),
    "Instrument": obj(
        {
            "id": STR,
            "kind": INSTRUMENT_KIND,
            "name": STR,
            "currency": STR,
            "issuer": ref("Address"),
            "face_value": NAT,
            "decimals": NAT,
            "cap": NAT,
            "supply": NAT,
            "paused": BOOL,
            "redeemed": BOOL,
            "status": STATUS,
        },
        {"reserve": {**nullable(ref("Reserve")), "description": "a commodity's latest"}},
    ),
    "ValidatorEntry": obj(
        {
            "address": ref("Address"),
            "pub_key": ref("Hash"),
            "voting_power": NAT,
            "name": STR,
        }
    ),
}

METHOD_SCHEMAS: dict[str, MethodSchema] = {
    "health": MethodSchema("The node answers (an empty object).", result=obj({})),
    "status": MethodSchema(
        "The node, its latest committed block and whether it is catching up.",
        result=obj(
            {
                "node_info": obj(
                    {
                        "id": ref("Hash"),
                        "moniker": STR,
                        "network": STR,
                        "role": {"enum": ["validator", "observer"]},
                    }
                ),
                "sync_info": obj(
                    {
                        "latest_block_height": NAT,
                        "latest_block_hash": {"type": "string", "pattern": "^([0-9a-f]{64})?$"},
                        "latest_app_hash": {"type": "string", "pattern": "^([0-9a-f]{64})?$"},
                        "latest_block_time": {**NAT, "description": "ms since the Unix epoch"},
                        "catching_up": BOOL,
                    }
                ),
                "validator_info": obj({"address": nullable(ref("Address")), "voting_power": NAT}),
            }
        ),
    ),
    "net_info": MethodSchema(
        "The node's peers.",
        result=obj(
            {
                "listening": BOOL,
                "n_peers": NAT,
                "peers": {
                    "type": "array",
                    "items": obj({"node_id": ref("Hash"), "outbound": BOOL, "address": STR}),
                },
            }
        ),
    ),
    "genesis": MethodSchema(
        "The genesis document.",
        result=obj({"genesis": obj({"chain_id": STR, "validators": {"type": "array"}})}),
    ),
    "validators": MethodSchema(
        "The validator set at a height.",
        params={"height": HEIGHT},
        result=obj(
            {
                "block_height": NAT,
                "validators": {"type": "array", "items": ref("ValidatorEntry")},
                "total": NAT,
            }
        ),
    ),
    "block": MethodSchema(
        "A committed block (`txs` null unless the caller may read every transaction).",
        params={"height": HEIGHT},
        result=obj(
            {
                "block_id": obj({"hash": ref("Hash")}),
                "block": obj(
                    {
                        "header": ref("Header"),
                        "txs": nullable({"type": "array", "items": ref("Base64")}),
                        "last_commit": ref("Commit"),
                    }
                ),
            }
        ),
    ),
    "commit": MethodSchema(
        "A block's signed header: the header and its commit certificate.",
        params={"height": HEIGHT},
        result=obj(
            {
                "signed_header": obj({"header": ref("Header"), "commit": ref("Commit")}),
                "block_id": obj({"hash": ref("Hash")}),
                "canonical": BOOL,
            }
        ),
    ),
    "num_unconfirmed_txs": MethodSchema(
        "The mempool's size.", result=obj({"n_txs": NAT, "total_bytes": NAT})
    ),
    "broadcast_tx_sync": MethodSchema(
        "Submit a transaction; the admission verdict (code 0: in the mempool).",
        params={"tx": ref("TxParam")},
        result=ref("Admission"),
    ),
    "broadcast_tx_commit": MethodSchema(
        "Submit a transaction and wait until it is committed (or refused at admission).",
        params={"tx": ref("TxParam")},
        result=obj(
            {
                "hash": nullable(ref("Hash")),
                "height": NAT,
                "check_tx": obj({"code": NAT, "codespace": STR, "log": STR}),
                "tx_result": nullable(ref("TxResult")),
            },
            {"index": NAT},
        ),
    ),
    "check_tx": MethodSchema(
        "The admission and compliance verdict of a transaction; nothing is stored.",
        params={"tx": ref("TxParam")},
        result=ref("Admission"),
    ),
    "tx": MethodSchema(
        "A committed transaction, its result and events (and its Merkle inclusion proof).",
        params={"hash": ref("HashParam"), "prove": PROVE},
        result=obj(
            {
                "hash": ref("Hash"),
                "height": NAT,
                "index": NAT,
                "tx": ref("Base64"),
                "tx_result": ref("TxResult"),
            },
            {"proof": ref("Proof")},
        ),
    ),
    "account": MethodSchema(
        "An account: roles, KYC, freeze, nonce and balances (and their state proofs), now or"
        " as of a past height.",
        params={
            "address": ref("AddressParam"),
            "prove": {**PROVE, "description": "a proof of the latest state (not with height)"},
            "height": {**HEIGHT, "description": "as of this committed height (latest if absent)"},
        },
        result=ref("Account"),
    ),
    "instrument": MethodSchema(
        "An instrument's definition, supply, cap and status.",
        params={"id": ref("InstrumentId")},
        result=ref("Instrument"),
    ),
    "instruments": MethodSchema(
        "Instruments in id order, a page at a time (`next`: the `after` of the next page).",
        params={
            "after": {**ref("InstrumentId"), "description": "the last id of the previous page"},
            "limit": ref("IntegerParam"),
        },
        result=obj(
            {
                "instruments": {"type": "array", "items": ref("Instrument")},
                "next": nullable(STR),
            }
        ),
    ),
    "holders": MethodSchema(
        "An instrument's holders and balances, a page at a time.",
        params={
            "id": ref("InstrumentId"),
            "after": {**ref("AddressParam"), "description": "the last address of the last page"},
            "limit": ref("IntegerParam"),
        },
        result=obj(
            {
                "instrument": STR,
                "holders": {
                    "type": "array",
                    "items": obj({"address": ref("Address"), "balance": NAT, "frozen": NAT}),
                },
                "next": nullable(ref("Address")),
            }
        ),
    ),
    "events": MethodSchema(
        "The audit trail: committed events, filtered, a page at a time.",
        params={
            "account": ref("AddressParam"),
            "instrument": ref("InstrumentId"),
            "from_height": ref("IntegerParam"),
            "to_height": ref("IntegerParam"),
            "page": ref("IntegerParam"),
            "per_page": ref("IntegerParam"),
        },
        result=obj(
            {
                "events": {
                    "type": "array",
                    "items": obj(
                        {
                            "height": NAT,
                            "tx_index": NAT,
                            "event_index": NAT,
                            "type": STR,
                            "attributes": {"type": "object"},
                        }
                    ),
                },
                "page": NAT,
                "per_page": NAT,
            }
        ),
    ),
    "quote": MethodSchema(
        "A bond's yield, clean and dirty price and accrued interest (per 100 of face) for a"
        " settlement date, from a clean price or a yield (exactly one). A floating-rate note's"
        " later coupons are projected at its index's latest fixing plus the spread (`floating`"
        " names the assumption and the fixings used).",
        params={
            "instrument": ref("InstrumentId"),
            "settlement": {**DATE, "description": "on or after issue, before maturity"},
            "price": {
                "description": "the clean price per 100 of face, decimal text",
                "type": "string",
                "pattern": "^[0-9]{1,6}(\\.[0-9]{1,12})?$",
            },
            "yield": {
                "description": 'the yield to maturity as a fraction, decimal text ("0.0525")',
                "type": "string",
                "pattern": "^-?[0-9]{1,2}(\\.[0-9]{1,12})?$",
            },
        },
        result=obj(
            {
                "instrument": STR,
                "settlement": DATE,
                "accrued": DECIMAL_12,
                "clean_price": DECIMAL_12,
                "dirty_price": DECIMAL_12,
                "yield": DECIMAL_12,
            },
            {"floating": QUOTE_FLOATING},
        ),
    ),
    "rpc.discover": MethodSchema(
        "This OpenRPC document.",
        result=obj({"openrpc": STR, "info": {"type": "object"}, "methods": {"type": "array"}}),
    ),
}
COMPONENTS.update(SUPERVISION_COMPONENTS)
METHOD_SCHEMAS.update(SUPERVISION_SCHEMAS)
