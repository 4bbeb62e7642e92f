"""Every operation of the ledger, one function each, grouped by family.

| family | module | operations |
|---|---|---|
| movements | `transfers` | transfer, dvp, forced_transfer |
| instruments | `instruments` | register_instrument, pause_instrument, unpause_instrument, set_holiday_calendar |
| supply | `issuance` | issue, burn, attest_reserve |
| payments | `payments` | pay_coupon, redeem |
| accounts | `accounts` | license_vasp, suspend_vasp, onboard_investor, freeze, unfreeze, recover_key |
| governance | `governance` | grant_role, revoke_role, set_parameter, set_policy, change_validators |
| upgrades | `upgrades` | schedule_upgrade |
| debt office (version 3) | `debt`, `payments` | publish_rate_fixing, call_bond, pay_rental, dissolve_sukuk, amortise |

Not an operation: `evidence` (misbehaviour evidence carried by a block, not by a transaction;
`Chain` applies it before the block's transactions, see `ledger/ops/evidence.py`).

`OPERATIONS` maps the `op` field of a transaction body to its function. Every operation but
those in `OPEN_OPERATIONS` is gated by a policy rule (genesis data) named in
`POLICY_NAMES`; the rule's name is the operation's, except where several operations share
one rule.
"""

from __future__ import annotations

from collections.abc import Callable

from ledger.ops import (
    accounts,
    debt,
    governance,
    instruments,
    issuance,
    payments,
    transfers,
    upgrades,
)
from ledger.ops.common import Args, TxView
from ledger.state import State
from ledger.types import BlockContext, Event

Operation = Callable[[State, BlockContext, TxView, Args], list[Event]]

OPERATIONS: dict[str, Operation] = {
    "transfer": transfers.transfer,
    "dvp": transfers.dvp,
    "forced_transfer": transfers.forced_transfer,
    "register_instrument": instruments.register_instrument,
    "pause_instrument": instruments.pause_instrument,
    "unpause_instrument": instruments.unpause_instrument,
    "set_holiday_calendar": instruments.set_holiday_calendar,
    "issue": issuance.issue,
    "burn": issuance.burn,
    "attest_reserve": issuance.attest_reserve,
    "pay_coupon": payments.pay_coupon,
    "redeem": payments.redeem,
    "license_vasp": accounts.license_vasp,
    "suspend_vasp": accounts.suspend_vasp,
    "onboard_investor": accounts.onboard_investor,
    "freeze": accounts.freeze,
    "unfreeze": accounts.unfreeze,
    "recover_key": accounts.recover_key,
    "grant_role": governance.grant_role,
    "revoke_role": governance.revoke_role,
    "set_parameter": governance.set_parameter,
    "set_policy": governance.set_policy,
    "change_validators": governance.change_validators,
    "schedule_upgrade": upgrades.schedule_upgrade,
    "publish_rate_fixing": debt.publish_rate_fixing,
    "pay_rental": payments.pay_rental,
    "dissolve_sukuk": payments.dissolve_sukuk,
    "call_bond": debt.call_bond,
    "amortise": payments.amortise,
}

# Open to any account the investor rules allow; no policy rule.
OPEN_OPERATIONS = frozenset({"transfer", "dvp"})

# The policy rule each gated operation checks.
POLICY_NAMES: dict[str, str] = {op: op for op in OPERATIONS if op not in OPEN_OPERATIONS} | {
    "recover_key": "key_recovery",
    "change_validators": "validator_set",
    "schedule_upgrade": "set_policy",  # a change of the rules themselves
    # An issuer's calendar is part of defining its instruments: no new rule (every genesis
    # policy already has this one).
    "set_holiday_calendar": "register_instrument",
    # The central bank publishes fixings under the rule that defines instruments (its
    # cash_issuer role is checked by the operation): no new rule, so every genesis stays valid.
    "publish_rate_fixing": "register_instrument",
    # A sukuk's payments under their own names: the paying agent's rules.
    "pay_rental": "pay_coupon",
    "dissolve_sukuk": "redeem",
    "call_bond": "issue",  # the issuer's decision about its own debt
    "amortise": "redeem",  # a partial redemption, paid by the paying agent
}

# Every rule name a genesis policy must define.
REQUIRED_POLICY_RULES = frozenset(POLICY_NAMES.values())

__all__ = [
    "OPEN_OPERATIONS",
    "OPERATIONS",
    "POLICY_NAMES",
    "REQUIRED_POLICY_RULES",
    "Args",
    "TxView",
]
