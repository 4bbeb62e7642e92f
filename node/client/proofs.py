"""Proof verification helpers: check a `prove: true` answer against validators you trust.

The node's answer to `account` / `tx` with `prove: true` carries a proof against the
`app_hash` of a committed header and that header's commit certificate. Verifying it is
`node/verify.py`'s job (`verify_account_proof`, `verify_tx_proof`); this module only supplies
the trusted validator set and chain id -- taken from a genesis document the caller got out of
band, never from the node being checked -- and raises `ProofError` when verification refuses.
A chain whose validator set changed since genesis needs the current set (`TrustedValidators`
built by hand from a source the caller trusts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from node import verify
from node.client.core import NOT_FOUND
from node.client.errors import ClientError, RpcError


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

    def pairs(self) -> list[tuple[bytes, int]]:
        """(public key, power) pairs, the form `node/verify.py` accepts."""
        return [(key, power) for _, key, power in self.validators]

    @classmethod
    def from_genesis_file(cls, path: str | os.PathLike) -> TrustedValidators:
        with open(path, encoding="utf-8") as src:
            return cls.from_genesis(json.load(src))


def verify_account(
    result: Mapping[str, Any], trusted: TrustedValidators, address: str | None = None
) -> verify.AccountState:
    """Check an `account(prove=True)` answer (of `address`, when given); the account as
    proven (`AccountState`)."""
    try:
        return verify.verify_account_proof(
            dict(result), trusted.pairs(), trusted.chain_id, address=address
        )
    except verify.ProofError as exc:
        raise ProofError(f"account proof refused: {exc}") from exc


def verify_account_absence(
    error: RpcError, trusted: TrustedValidators, address: str | None = None
) -> verify.AccountAbsence:
    """Check the NOT_FOUND error of `account(address, prove=True)` for an address with no
    account: its `data` proves the absence at a certified height (`AccountAbsence`)."""
    if error.code != NOT_FOUND or not isinstance(error.data, Mapping):
        raise ProofError(f"not a proven absence: {error}") from error
    try:
        return verify.verify_account_absence(
            dict(error.data), trusted.pairs(), trusted.chain_id, address=address
        )
    except verify.ProofError as exc:
        raise ProofError(f"absence proof refused: {exc}") from exc


def verify_tx(result: Mapping[str, Any], trusted: TrustedValidators) -> verify.TxInclusion:
    """Check a `tx(prove=True)` answer; the proven inclusion (`TxInclusion`)."""
    try:
        return verify.verify_tx_proof(dict(result), trusted.pairs(), trusted.chain_id)
    except verify.ProofError as exc:
        raise ProofError(f"transaction proof refused: {exc}") from exc
