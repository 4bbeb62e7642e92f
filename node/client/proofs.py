"""Proof verification helpers: check a `prove: true` answer against validators you trust.

The node's answer to `account` / `tx` with `prove: true` carries a proof against the
`app_hash` of a committed header and that header's commit certificate. Verifying it is
`node/verify.py`'s job (`verify_account_proof`, `verify_tx_proof`); this module only supplies
the trusted validator set -- taken from a genesis document the caller got out of band, never
from the node being checked -- and raises `ProofError` when verification refuses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from node.client.errors import ClientError


class ProofError(ClientError):
    """A proof that does not verify against the trusted validator set."""


@dataclass(frozen=True, slots=True)
class TrustedValidators:
    """(name, Ed25519 public key, voting power) of the validators a client trusts."""

    chain_id: str
    validators: tuple[tuple[str, bytes, int], ...]

    @classmethod
    def from_genesis(cls, genesis: Mapping) -> TrustedValidators:
        return cls(
            genesis["chain_id"],
            tuple(
                (v["name"], bytes.fromhex(v["public_key"]), int(v["power"]))
                for v in genesis["validators"]
            ),
        )

    @classmethod
    def from_genesis_file(cls, path: str | os.PathLike) -> TrustedValidators:
        with open(path, encoding="utf-8") as src:
            return cls.from_genesis(json.load(src))


def _verifier():
    try:
        from node import verify
    except ImportError as exc:  # pragma: no cover - until node/verify.py lands
        raise ProofError(f"proof verification is not available: {exc}") from None
    return verify


def verify_account(result: Mapping[str, Any], trusted: TrustedValidators) -> Any:
    """Check an `account(prove=True)` answer; returns what `verify_account_proof` returns."""
    try:
        return _verifier().verify_account_proof(result, trusted)
    except ProofError:
        raise
    except Exception as exc:  # the verifier's own refusal, whatever its class
        raise ProofError(f"account proof refused: {exc}") from exc


def verify_tx(result: Mapping[str, Any], trusted: TrustedValidators) -> Any:
    """Check a `tx(prove=True)` answer; returns what `verify_tx_proof` returns."""
    try:
        return _verifier().verify_tx_proof(result, trusted)
    except ProofError:
        raise
    except Exception as exc:
        raise ProofError(f"transaction proof refused: {exc}") from exc
