"""The mempool's bounds (`MempoolLimits`) and the shares they give each kind of sender.

What it owns: every number that bounds the pool, their defaults (config.toml's `[mempool]`
section is this dataclass: `node.config.MempoolConfig`), their validation, and the two
questions admission asks of a sender's account: does it hold an institutional role (room is
reserved for those), and which VASP's share does it count against.

Bytes here are memory, not wire bytes: a transaction is charged its `ledger.tx.tx_footprint`
(its raw bytes, its body's encoding and every decoded object of its args), so `max_bytes` is
what the waiting transactions keep alive, whatever their shape. Shares are integer percents
of `max_txs` and `max_bytes` (no floats; each at least one transaction's worth).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ledger.tx import MAX_TX_BYTES
from ledger.types import INSTITUTION_ROLES, VASP, Account

__all__ = ["RESERVED_ROLES", "MempoolLimits", "quota_group", "reserved_sender"]

_MIB = 1024 * 1024

# The roles whose holders get the reserved room and are exempt from the per-sender and
# per-VASP shares: the state's institutions (issuer, registrar, paying agent, cash issuer,
# regulator, reserve custodian, auditor, validator operators). A VASP is a licensed private
# firm that may overreach like an investor: it shares its VASP quota with its investors.
RESERVED_ROLES = INSTITUTION_ROLES - {VASP}

# Limits that may be 0; every other is at least 1. Percents are at most these.
_MAY_BE_ZERO = frozenset(
    {"reserved_percent", "max_parked_per_sender", "parked_share_percent", "decode_cache_bytes"}
)
_PERCENT_MAX = {"vasp_share_percent": 100, "reserved_percent": 90, "parked_share_percent": 100}


@dataclass(frozen=True, slots=True)
class MempoolLimits:
    """Bounds of the pool; docs/OPERATIONS.md (`[mempool]`) says what each does when hit.

    Sizes: `max_txs`, `max_bytes` (memory, see the module docstring), `max_tx_bytes` (wire
    size of one transaction), `max_tx_decoded_bytes` (memory of one decoded transaction).
    Nonces: `nonce_window` (how far ahead of the committed nonce), `max_parked_per_sender`
    and `parked_share_percent` (transactions waiting behind a nonce gap, per sender and in
    all). Shares: `max_txs_per_sender`, `max_bytes_per_sender`, `vasp_share_percent` (a
    VASP's own transactions and its investors' together), `reserved_percent` (room only the
    institutions' transactions may use). Expiry, in committed blocks: `ttl_blocks` (any
    transaction), `parked_ttl_blocks` (one still behind a gap). Caches: `verified_cache`
    (entries of a fixed ~200 bytes), `decode_cache_bytes` (`ledger.tx`'s decode cache).
    """

    max_txs: int = 10_000
    max_bytes: int = 64 * _MIB
    max_tx_bytes: int = MAX_TX_BYTES
    max_tx_decoded_bytes: int = 512 * 1024
    nonce_window: int = 64
    max_txs_per_sender: int = 64
    max_bytes_per_sender: int = 4 * _MIB
    vasp_share_percent: int = 25
    reserved_percent: int = 10
    max_parked_per_sender: int = 16
    parked_share_percent: int = 25
    ttl_blocks: int = 600
    parked_ttl_blocks: int = 100
    verified_cache: int = 20_000
    decode_cache_bytes: int = 16 * _MIB

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            low = 0 if f.name in _MAY_BE_ZERO else 1
            high = _PERCENT_MAX.get(f.name)
            if type(value) is not int or value < low or (high is not None and value > high):
                bound = f" and at most {high}" if high is not None else ""
                raise ValueError(
                    f"mempool limit {f.name} must be an int of at least {low}{bound}: {value!r}"
                )

    @classmethod
    def from_config(cls, config: object) -> MempoolLimits:
        """The limits named by `config`'s fields of the same names (`MempoolConfig`)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    # Derived bounds (integer arithmetic only).

    @property
    def general_txs(self) -> int:
        """Transactions that senders without an institutional role may hold together."""
        return self.max_txs - self.max_txs * self.reserved_percent // 100

    @property
    def general_bytes(self) -> int:
        return self.max_bytes - self.max_bytes * self.reserved_percent // 100

    @property
    def vasp_txs(self) -> int:
        return max(1, self.max_txs * self.vasp_share_percent // 100)

    @property
    def vasp_bytes(self) -> int:
        return max(self.max_tx_decoded_bytes, self.max_bytes * self.vasp_share_percent // 100)

    @property
    def parked_txs(self) -> int:
        return self.max_txs * self.parked_share_percent // 100

    @property
    def parked_bytes(self) -> int:
        return self.max_bytes * self.parked_share_percent // 100


def reserved_sender(account: Account | None) -> bool:
    """Does this sender's transaction get the reserved room (and no per-sender or VASP share)?"""
    return account is not None and not RESERVED_ROLES.isdisjoint(account.roles)


def quota_group(account: Account | None) -> bytes | None:
    """The VASP whose share this sender's transactions count against: a VASP's own account
    counts against itself, an investor against the VASP of its KYC file (the one that
    onboarded it). None (no VASP share, only the per-sender one): an investor onboarded by
    the regulator directly, or an unknown account (refused later anyway)."""
    if account is None:
        return None
    if VASP in account.roles:
        return account.address
    kyc = account.kyc
    return None if kyc is None else kyc.vasp
