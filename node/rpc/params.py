"""Client-supplied params, parsed strictly: each parser returns the value or raises
`invalid_params` with a message naming the param and what it must be."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ledger.codes import LedgerError
from ledger.crypto import address_from_text
from node.rpc.errors import invalid_params


def int_param(name: str, value: Any, low: int, high: int | None = None) -> int:
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise invalid_params(f"{name} must be an integer {bound}, got {value!r:.60}")
    return value


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


def hash_param(value: Any) -> bytes:
    if type(value) is not str or len(value) != 64:
        raise invalid_params("hash must be 64 hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise invalid_params("hash must be 64 hex characters") from None


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
