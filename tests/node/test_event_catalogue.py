"""docs/RPC.md's event catalogue is what the ledger emits, both ways (issue 17).

Every operation of `ledger.ops.OPERATIONS` is run (accepted) at least once on the in-memory
harness chain, under the protocol version a new chain runs; the events they emit, plus the
block's own `misbehaviour` event, are checked against the table parsed from the "Event
catalogue" section: every emitted type is documented with exactly its attributes (those
marked `?` may be absent), and every documented type and optional attribute is emitted.

An operation added to the ledger fails this test until the scenario below runs it and the
catalogue documents its events.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from ledger.crypto import generate_key
from ledger.ops import OPERATIONS
from ledger.ops.evidence import MisbehaviourRecord
from ledger.protocol import LATEST_VERSION
from ledger.types import Event, Receipt
from tests.ledger.test_ops_harness import Chain, key_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "RPC.md"
BOND, TBILL, GOLD, CASH, CAL = "PKBOND28", "PKTB26", "PKGOLD", "PKR", "PK-SBP"
FRN, SUKUK, CALLABLE, INDEX = "PKFRN28", "PKSUK26", "PKCALL28", "PKR-TB6M"
AMORTISING = "PKAMO28"
_ROW = re.compile(r"^\| `([a-z_]+)` \|[^|]*\| (.*) \|$")
_ATTRIBUTE = re.compile(r"`([a-z_]+)`(\?)?")


def catalogue() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """type -> (required attributes, optional attributes), from docs/RPC.md."""
    text = DOC.read_text()
    section = text.split("\n## Event catalogue\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for line in section.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        kind, cell = match.groups()
        assert kind not in table, f"{kind} documented twice"
        attributes = _ATTRIBUTE.findall(cell)
        required = frozenset(name for name, optional in attributes if not optional)
        optional = frozenset(name for name, optional in attributes if optional)
        table[kind] = (required, optional)
    assert len(table) > 20, "the catalogue table was not found"
    return table


class Recording(Chain):
    """The harness chain, keeping every accepted operation's receipt."""

    def __init__(self) -> None:
        super().__init__()
        self.receipts: list[tuple[str, Receipt]] = []

    def run(self, sender: str, op: str, args: dict, **options) -> Receipt:
        receipt = super().run(sender, op, args, **options)
        if receipt.ok:
            self.receipts.append((op, receipt))
        return receipt


def every_operation() -> Recording:
    chain = Recording()
    chain.cash()
    chain.ok(
        "ministry", "set_holiday_calendar", {"id": CAL, "weekend": ["sat", "sun"], "holidays": []}
    )
    chain.bond(business_day_convention="following", holiday_calendar=CAL)
    chain.tbill()
    chain.gold()
    chain.investor("alice")
    chain.investor("bob")
    chain.vasp("exchange")
    chain.investor("carol", vasp="exchange")
    chain.issue(BOND, "alice", 60)
    chain.issue(BOND, "bob", 40)
    chain.issue(TBILL, "alice", 7)
    chain.issue(CASH, "central-bank", 10**9, issuer="central-bank")
    chain.issue(CASH, "bob", 10**6, issuer="central-bank")
    debt_office(chain)
    chain.ok("alice", "transfer", {"instrument": BOND, "to": chain.addr("bob"), "amount": 1})
    dvp = {
        "seller": chain.addr("alice"),
        "buyer": chain.addr("bob"),
        "asset": BOND,
        "asset_amount": 10,
        "cash": CASH,
        "cash_amount": 500_000,
    }
    chain.ok("alice", "dvp", dvp, cosigners=("bob",))
    order = {"reason_code": 9, "legal_reference": "AML 5"}
    partial = {"account": chain.addr("alice"), "instrument": BOND, "amount": 5, **order}
    whole = {"account": chain.addr("carol"), **order}
    for args in (partial, whole):
        chain.ok("regulator", "freeze", args)
        chain.ok("regulator", "unfreeze", args)
    forced = {
        "instrument": BOND,
        "from": chain.addr("bob"),
        "to": chain.addr("alice"),
        "amount": 1,
        "reason_code": 3,
        "legal_reference": "Court order 1/2026",
    }
    chain.ok("regulator", "forced_transfer", forced, cosigners=("ministry",))
    chain.ok("central-bank", "burn", {"instrument": CASH, "amount": 1000})
    reserve = {"instrument": GOLD, "quantity": 500, "document_hash": bytes(range(32))}
    chain.ok("auditor", "attest_reserve", reserve)
    pause = {"instrument": BOND, "reason": "a check"}
    chain.ok("ministry", "pause_instrument", pause)
    chain.ok("ministry", "unpause_instrument", pause)
    chain.at(date(2026, 7, 1))
    coupon = {"instrument": BOND, "cash": CASH, "coupon_date": "2026-07-01"}
    chain.ok("central-bank", "pay_coupon", coupon)
    chain.ok("central-bank", "redeem", {"instrument": TBILL, "cash": CASH})
    chain.ok("central-bank", "pay_coupon", {**coupon, "instrument": FRN})
    amortise = {"instrument": AMORTISING, "cash": CASH, "date": "2026-07-01"}
    chain.ok("central-bank", "amortise", amortise)
    chain.ok("central-bank", "pay_rental", {**coupon, "instrument": SUKUK})
    chain.ok("central-bank", "dissolve_sukuk", {"instrument": SUKUK, "cash": CASH})
    chain.ok("ministry", "call_bond", {"instrument": CALLABLE, "call_date": "2027-01-01"})
    chain.ok("regulator", "suspend_vasp", {"vasp": chain.addr("exchange"), "reason": "AML"})
    new_key = generate_key(b"\x42" * 32).public_key
    recover = {"account": chain.addr("alice"), "new_public_key": new_key}
    chain.ok("regulator", "recover_key", recover, cosigners=("central-bank",))
    role = {"account": chain.addr("custodian"), "role": "reserve_custodian"}
    chain.ok(
        "regulator", "grant_role", {**role, "institution": "ministry"}, cosigners=("ministry",)
    )
    chain.ok("regulator", "revoke_role", role, cosigners=("central-bank",))
    parameter = {"name": "closed_period_days", "value": 5}
    chain.ok("ministry", "set_parameter", parameter, cosigners=("regulator",))
    validator = {"name": "validator-5", "public_key": key_for("validator-5").public_key}
    change = {"changes": [{**validator, "power": 10}]}
    chain.ok("ministry", "change_validators", change, cosigners=("regulator", "auditor"))
    upgrade = {"version": LATEST_VERSION + 1, "height": 10**9}
    chain.ok("ministry", "schedule_upgrade", upgrade, cosigners=("central-bank", "regulator"))
    policy = {"operation": "freeze", "roles": ["regulator", "auditor"], "min": 2}
    chain.ok("ministry", "set_policy", policy, cosigners=("regulator", "central-bank"))
    return chain


def debt_office(chain: Recording) -> None:
    """The version-3 instruments (tests/ledger/test_ops_debt.py): a floating-rate note and a
    six-month floating Ijara sukuk on a published fixing (so that `coupon_paid` and
    `rental_paid` carry the reset and the payment date), a callable bond and an amortising
    one on the business-day calendar (so that `amortised` carries the payment date); alice
    holds each. Their payments and the call run on 2026-07-01, in `every_operation`."""
    fixing = {"name": INDEX, "date": "2025-12-30", "rate": "0.1125", "document_hash": b"\x07" * 32}
    chain.ok("central-bank", "publish_rate_fixing", fixing)
    floating = {
        "rate_index": INDEX,
        "spread_bp": 75,
        "fixing_days": 2,
        "fixing_lookback_days": 7,
        "business_day_convention": "following",
        "holiday_calendar": CAL,
    }
    debt = {
        FRN: ("PK0000000015", floating),
        SUKUK: (
            "PK0000000023",
            {
                **floating,
                "maturity_date": "2026-07-01",
                "sukuk": "ijara",
                "sukuk_asset": "Jinnah terminal, Karachi airport",
            },
        ),
        CALLABLE: (
            "PK0000000031",
            {"coupon_rate": "0.08", "call_notice_days": 30, "call_price": "101.5"},
        ),
        AMORTISING: (
            "PK0000000049",
            {
                "coupon_rate": "0.08",
                "amortisation": [["2026-07-01", "10"]],
                "business_day_convention": "following",
                "holiday_calendar": CAL,
            },
        ),
    }
    for instrument, (isin, terms) in debt.items():
        bond = {
            "id": instrument,
            "kind": "bond",
            "name": instrument,
            "isin": isin,
            "currency": "PKR",
            "face_value": 100_000,
            "decimals": 0,
            "cap": 1_000_000,
            "usd_face_value": 360,
            "issue_date": "2026-01-01",
            "maturity_date": "2028-01-01",
            "coupon_frequency": 2,
            "day_count": "ACT/ACT-ICMA",
        }
        chain.ok("ministry", "register_instrument", {**bond, **terms})
        chain.issue(instrument, "alice", 5)


def misbehaviour() -> Event:
    record = MisbehaviourRecord(
        evidence_hash=b"\x01" * 32,
        public_key=b"\x02" * 32,
        validator=b"\x03" * 20,
        height=4,
        round=0,
        vote_type=1,
        recorded_height=5,
    )
    return record.event()


def test_the_catalogue_is_what_the_ledger_emits():
    table = catalogue()
    chain = every_operation()
    run = {op for op, _ in chain.receipts}
    assert run == set(OPERATIONS), f"operations the scenario does not run: {set(OPERATIONS) - run}"
    events = [(op, event) for op, receipt in chain.receipts for event in receipt.events]
    events.append(("(block)", misbehaviour()))
    seen: dict[str, set[str]] = {}
    for op, event in events:
        assert event.type in table, f"{op} emits {event.type!r}, not in docs/RPC.md"
        required, optional = table[event.type]
        names = set(event.attributes)
        assert required <= names, f"{op}: {event.type} lacks {sorted(required - names)}"
        assert names <= required | optional, (
            f"{op}: {event.type} has undocumented {sorted(names - required - optional)}"
        )
        seen.setdefault(event.type, set()).update(names)
    never = sorted(set(table) - set(seen))
    assert not never, f"documented but never emitted: {never}"
    for kind, (_, optional) in table.items():
        assert optional <= seen[kind], f"{kind}: {sorted(optional - seen[kind])} never emitted"
    # A balance change names its cause: the operation, always one of the ledger's.
    causes = {e.attributes["cause"] for _, e in events if e.type == "balance_change"}
    assert causes <= set(OPERATIONS)
    paying = {"pay_coupon", "redeem", "pay_rental", "dissolve_sukuk", "amortise"}
    assert {"transfer", "dvp", "issue", "burn", "forced_transfer", *paying} <= causes
