"""Client-supplied params, parsed strictly: each parser returns the value or raises
`invalid_params` with a message naming the param and what it must be.

CometBFT's habits are accepted where they cost nothing (docs/RPC.md, "CometBFT clients"):
every integer param (heights, `page`, `per_page`, `limit`) also as a decimal string ("5",
what CometBFT clients send, and what a GET query string carries), and a transaction hash as
64 hex characters (either case, optionally 0x-prefixed) or as the base64 of its 32 bytes.
The native forms (JSON integers, lowercase hex) stay what the node answers with."""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from typing import Any

from ledger.codes import LedgerError
from ledger.crypto import address_from_text
from node.rpc.errors import invalid_params

# A decimal string: ASCII digits, no sign, no leading zero, at most 19 digits (int64 range);
# "²".isdigit() is true, hence the explicit alphabet.
_DIGITS = frozenset("0123456789")
MAX_DECIMAL_DIGITS = 19


def decimal_int(value: Any) -> int | None:
    """`value` as an int if it is a JSON integer or a canonical decimal string, else None."""
    if type(value) is int:
        return value
    if (
        type(value) is str
        and 0 < len(value) <= MAX_DECIMAL_DIGITS
        and _DIGITS.issuperset(value)
        and (value == "0" or value[0] != "0")
    ):
        return int(value)
    return None


def int_param(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer param (a JSON integer or a decimal string) in [low, high]."""
    number = decimal_int(value)
    if number is None or number < low or (high is not None and number > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise invalid_params(
            f"{name} must be an integer {bound} (or its decimal string), got {value!r:.60}"
        )
    return number


def str_param(name: str, value: Any, max_len: int = 256) -> str:
    if type(value) is not str or not value or len(value) > max_len:
        raise invalid_params(f"{name} must be a non-empty string of at most {max_len} chars")
    return value


def tx_param(value: Any) -> bytes:
    if type(value) is not str:
        raise invalid_params("tx must be the base64 text of a signed transaction")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_params("tx is not valid base64") from None
    if not raw:
        raise invalid_params("tx is empty")
    return raw


HASH_FORMS = "64 hex characters (optionally 0x-prefixed) or the base64 of 32 bytes"
_HEX = frozenset("0123456789abcdefABCDEF")


def hash_param(value: Any, name: str = "hash") -> bytes:
    """A 32-byte hash: hex (either case, optional 0x) or base64 (CometBFT clients' form)."""
    if type(value) is str:
        text = value[2:] if value[:2] in ("0x", "0X") else value
        if len(text) == 64 and _HEX.issuperset(text):
            return bytes.fromhex(text)
        if len(value) == 44:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) == 32:
                return raw
    raise invalid_params(f"{name} must be {HASH_FORMS}")


def address_param(name: str, value: Any) -> bytes:
    if type(value) is not str:
        raise invalid_params(f"{name} must be a kz1... address")
    try:
        return address_from_text(value)
    except LedgerError as exc:
        raise invalid_params(f"{name}: {exc.message}") from None


def bool_param(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise invalid_params(f"{name} must be true or false")
    return value


def instrument_param(value: Any) -> str:
    text = str_param("id", value, 32)
    if not text.isascii():
        raise invalid_params("id must be ASCII")
    return text


# GET form (`GET /block?height=5`): params that are booleans in the JSON form.
BOOL_PARAMS = frozenset({"prove"})
MAX_QUERY_PARAMS = 16


def query_params(query_string: bytes, max_bytes: int) -> dict[str, Any]:
    """The params of a GET request's query string, as CometBFT's URI form has them: every
    value a string (a height "5", a hash "0xAB..." or base64), surrounding double quotes
    dropped (`?id="USD-CASH"`), "true"/"false" for the boolean params; a param given twice,
    a malformed or an oversized query is an invalid param."""
    if len(query_string) > max_bytes:
        raise invalid_params(f"query string longer than {max_bytes} bytes")
    try:
        text = query_string.decode("ascii")
        pairs = urllib.parse.parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            max_num_fields=MAX_QUERY_PARAMS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise invalid_params(
            f"query string must be name=value pairs joined by & (at most {MAX_QUERY_PARAMS})"
        ) from None
    params: dict[str, Any] = {}
    for name, value in pairs:
        if not name:
            raise invalid_params("a query param without a name")
        if name in params:
            raise invalid_params(f"param {name[:40]!r} given twice")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if name in BOOL_PARAMS and value in ("true", "false"):
            params[name] = value == "true"
        else:
            params[name] = value
    return params
