"""Protocol versions: which rules a block runs under, and how a running chain changes them.

A rule change (who counts as an approver, how a coupon is computed...) changes what a block
does, so nodes must switch at the same height or the chain forks. As Cosmos activates upgrades
at a height and execution-specs names each fork, the version in force is state, changed by a
transaction the institutions approve:

    schedule_upgrade {version, height}      (policy rule "set_policy": the rules themselves)

records that `version` comes into force at the start of block `height`; the transition
(`ledger/transition.py`, step 0) activates it there. A node replaying history runs every block
under the version of its height, so it reaches the same state as the nodes that ran it live.

A node whose code knows versions up to `LATEST_VERSION` refuses to run a block whose version is
newer (`UnsupportedProtocol`, raised before the block changes anything): it halts with a clear
message at that height instead of forking. It still executes the `schedule_upgrade` itself,
whatever version it names: that is how an old node learns where to stop.

The record lives under the state key b"V" (`PROTOCOL_KEY`). A chain whose genesis names no
`protocol_version` starts at version 1 and holds no such key until an upgrade is scheduled, so
its state (and every app_hash) is exactly what it was before versions existed.

Versions (docs/PROTOCOL.md, "Protocol versions", says what each changes):

    1   the first release's rules
    2   a policy rule's minimum counts distinct institutions, not keys; a coupon is measured
        against the bond's whole schedule
    3   debt-office instruments (issue 18): record dates in business days, floating-rate
        notes and the rate fixings they reset from, callable bonds, Ijara sukuk; new
        operations and fields refused before it exactly as older code refuses them. And
        every executed operation's receipt ends with one `balance_change` event per balance
        it changed (ledger/execute.py); a coupon or redemption payment names the cash it
        credits as its `instrument` and the bond or bill it pays on as `security`
    4   amortising bonds may also be callable or redeemed at a stated price (a call
        redeems the face then outstanding at the call price; parts dated on or after the
        call date are not paid, AMORTISATION_CALLED 331); refused before it as version 3
        refuses them
"""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_KEY = b"V"
LATEST_VERSION = 4
MAX_VERSION = 65_535

VERSIONS: dict[int, str] = {
    1: "the first release's rules",
    2: "approvals count institutions; coupons measured against the bond's whole schedule",
    3: "record dates in business days, floating-rate notes and fixings, calls, Ijara sukuk; "
    "balance_change events; coupon and redemption payments name the cash they credit",
    4: "amortising bonds may be callable or redeemed at a stated price",
}

DEBT_OFFICE = 3
AMORTISING_CALLS = 4
"""The version from which an amortising bond may have call terms or a redemption price."""
"""The version from which issue 18's instruments and operations exist (docs/PROTOCOL.md 8)."""

# The first version whose receipts carry `balance_change` events: they are part of the
# results a block's `results_hash` commits to, so a chain must switch at one height.
# One release brings both (version 3): neither was ever run on a chain without the other.
BALANCE_CHANGES_VERSION = 3


class UnsupportedProtocol(Exception):
    """The chain runs a protocol version newer than this code: upgrade the node. Not an
    invalid block (the others run it) and not a bug: the node must stop before the block."""

    def __init__(self, height: int, version: int) -> None:
        super().__init__(
            f"block {height} runs protocol version {version}, this node runs versions up to "
            f"{LATEST_VERSION}: install a release that supports version {version} and start "
            "the node again (it resumes at this height)"
        )
        self.height = height
        self.version = version


@dataclass(frozen=True, slots=True)
class ProtocolRecord:
    """The version in force and the next one scheduled (`next_height` 0: none)."""

    version: int = 1
    next_version: int = 0
    next_height: int = 0

    def to_map(self) -> dict:
        return {
            "next_height": self.next_height,
            "next_version": self.next_version,
            "version": self.version,
        }

    @classmethod
    def from_map(cls, m: object) -> ProtocolRecord:
        if not isinstance(m, dict) or set(m) != {"version", "next_version", "next_height"}:
            raise ValueError("a protocol record is {version, next_version, next_height}")
        values = [m["version"], m["next_version"], m["next_height"]]
        if any(type(v) is not int or v < 0 for v in values):
            raise ValueError("a protocol record holds non-negative integers")
        return cls(*values)

    def version_at(self, height: int) -> int:
        """The version block `height` runs under (the activation happens at its start)."""
        if self.next_height and height >= self.next_height:
            return self.next_version
        return self.version

    def activated(self, height: int) -> ProtocolRecord | None:
        """The record after block `height` activated a scheduled upgrade, None if none is due."""
        if self.next_height and height >= self.next_height:
            return ProtocolRecord(self.next_version)
        return None
