"""Scheduling a protocol upgrade: the institutions name the version and the height at which it
comes into force (ledger/protocol.py explains versions and activation)."""

from __future__ import annotations

from ledger.codes import Code
from ledger.ops.common import Args, TxView, fail, require_approvals
from ledger.protocol import MAX_VERSION, ProtocolRecord
from ledger.state import State
from ledger.types import BlockContext, Event

MAX_HEIGHT = 2**62


def schedule_upgrade(state: State, ctx: BlockContext, tx: TxView, args: Args) -> list[Event]:
    """`{version, height}`: version `version` comes into force at the start of block `height`
    (later than this block). It must be newer than the version in force; it replaces an upgrade
    scheduled before and not yet in force. Any version may be named, even one this node's code
    does not run: the node will stop before `height` rather than run it with older rules.
    Approved as a change of the rules themselves (policy rule `set_policy`)."""
    version = args.integer("version", lo=1, hi=MAX_VERSION)
    height = args.integer("height", lo=1, hi=MAX_HEIGHT)
    args.done()
    current = state.protocol
    if version <= current.version:
        fail(
            Code.BAD_FIELD,
            f"version {version} is not newer than the version in force, {current.version}",
        )
    if height <= ctx.height:
        fail(Code.BAD_FIELD, f"height {height} is not after this block ({ctx.height})")
    require_approvals(state, tx, "set_policy")
    state.put_protocol(ProtocolRecord(current.version, version, height))
    return [
        Event(
            "protocol_upgrade_scheduled",
            {"version": version, "height": height, "by": tx.sender},
        )
    ]
