#!/usr/bin/env python3
"""The sovereign tokenization story (shared/seed) end to end against a running localnet.

    python scripts/demo.py --localnet DIR        # DIR holds localnet.json (khazana localnet)

Every step is printed in plain words, sent through the Python SDK (`node.client`), and then
CHECKED against the chain: a transaction that should commit must commit with code 0 and move
exactly what the script's own model says; a transaction that should be refused must be
refused with the named compliance code. The first step that does not do what it should ends
the script with exit code 1 (2: the network cannot be used, e.g. no chain-time step).

The model (`Ledger` below) is independent of the node: it adds up issues, transfers, the
DvP, the coupon (units x face x rate / 2, 30/360 on a full semi-annual period), the
redemption (units x face), and (protocol version 3) a floating-rate note's first coupon
(fixing + spread over a regular quarter) and an Ijara sukuk's first rental itself, and at the end every supply and every holder's balance
the chain reports must equal it, and every validator must report the same app_hash.

Chain time: the network must have a genesis `block_time_step_ms` (docs/NODE.md, "Chain
time"; `khazana localnet --demo` makes one day per block). The T-bill and the bond are dated
relative to the chain's date when the demo starts, so the T-bill matures and the bond's
first coupon falls due a few dozen blocks later, after every transfer of the story (the
15-day closed period before each payment date freezes the registers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ledger.crypto import KeyPair, address_to_text, generate_key, hash256, read_key_file  # noqa: E402
from ledger.ops.instruments import isin_is_valid  # noqa: E402
from node.client import Client, Operation, TxBuilder, TxRejected, sign  # noqa: E402
from node.client.report import holdings as report_holdings  # noqa: E402
from node.client.report import print_report  # noqa: E402

DAY_MS = 86_400_000
EXIT_FAILED = 1
EXIT_UNUSABLE = 2

CASH = "USD-CASH"
BOND = "PK-BOND-5Y"
TBILL = "PK-TBILL-91D"
OIL = "PK-OIL-RESERVE"
FRN = "PK-FRN-3Y"
SUKUK = "PK-SUKUK-IJARA"
CALENDAR = "PK-MOF"
INDEX = "PK-TBILL-6M"  # the 6-month T-bill auction yield the FRN resets from

DEBT_FACE = 100_000  # $1,000 per note / certificate
FIXING = "0.1125"  # 11.25 %; the FRN pays it + 75 bp = 12 % a year, quarterly
FRN_COUPON_PER_UNIT = DEBT_FACE * 12 // 100 // 4  # a regular ACT/ACT-ICMA quarter: $30
SUKUK_RENTAL = "0.08"  # 8 % a year rental, quarterly
SUKUK_RENTAL_PER_UNIT = DEBT_FACE * 8 // 100 // 4  # $20
DEBT_UNITS = 10_000  # each: $10 million, inside the programme cap's room

BOND_FACE = 100_000  # US cents: $1,000 per bond
BOND_RATE = "0.08"  # 8 % a year, paid semi-annually
BOND_COUPON_PER_UNIT = BOND_FACE * 8 // 100 // 2  # one full 30/360 half-year: $40
TBILL_FACE = 10_000  # $100 per bill
OIL_FACE = 7_000  # $70 per barrel
PROGRAMME_CAP_CENTS = 2_000_000_000 * 100

STORY_BLOCKS = 50  # blocks the story may take before the closed periods begin (16-40 seen)
SPARE_DAYS = 6


class StepFailed(Exception):
    """A step did not do what it should; the message says what was expected and seen."""


@dataclass(frozen=True, slots=True)
class Party:
    name: str
    key: KeyPair

    @property
    def address(self) -> str:
        return address_to_text(self.key.address)


@dataclass(slots=True)
class Ledger:
    """What the chain must hold, computed by the script alone: balances per instrument."""

    balances: dict[str, dict[str, int]] = field(default_factory=dict)
    cash_paid: dict[str, int] = field(default_factory=dict)  # coupons, redemptions

    def issue(self, instrument: str, to: str, amount: int) -> None:
        held = self.balances.setdefault(instrument, {})
        held[to] = held.get(to, 0) + amount

    def move(self, instrument: str, source: str, to: str, amount: int) -> None:
        held = self.balances.setdefault(instrument, {})
        if held.get(source, 0) < amount:
            raise StepFailed(f"model: {source} cannot move {amount} {instrument}")
        held[source] -= amount
        held[to] = held.get(to, 0) + amount

    def supply(self, instrument: str) -> int:
        return sum(self.balances.get(instrument, {}).values())

    def holders(self, instrument: str) -> dict[str, int]:
        return {a: b for a, b in sorted(self.balances.get(instrument, {}).items()) if b}

    def pay(self, kind: str, instrument: str, per_unit: int, payer: str) -> int:
        """Pay `per_unit` cash on every unit held; returns the total paid."""
        total = 0
        for holder, units in self.holders(instrument).items():
            self.move(CASH, payer, holder, units * per_unit)
            total += units * per_unit
        self.cash_paid[kind] = self.cash_paid.get(kind, 0) + total
        return total


def valid_isin(prefix: str) -> str:
    """An ISIN from its first 11 characters: the Luhn check digit the ledger verifies."""
    return next(prefix + d for d in "0123456789" if isin_is_valid(prefix + d))


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    return day.replace(year=day.year + month // 12, month=month % 12 + 1)  # day <= 28 here


def usd(cents: int) -> str:
    return f"${cents / 100:,.2f}" if cents % 100 else f"${cents // 100:,}"


class Demo:
    def __init__(self, localnet: dict, out=sys.stdout, story_blocks: int = STORY_BLOCKS) -> None:
        self.story_blocks = story_blocks
        self.out = out
        self.nodes = [n for n in localnet["nodes"] if n["role"] == "validator"]
        keys = {name: read_key_file(path) for name, path in localnet["clients"].items()}
        # The demo reads and relays as the regulator, an institution: it reads every account
        # and holders list and may submit the VASPs' and investors' signed transactions
        # (docs/RPC.md, "Who may read what"). ca_file: a network made with init --rpc-tls.
        ca_file = localnet.get("ca_file")
        self.clients = [
            Client(n["rpc"], key=keys["regulator"], ca_file=ca_file, timeout_s=30.0)
            for n in self.nodes
        ]
        self.client = self.clients[0]
        self.model = Ledger()
        self.step_no = 0
        self.ministry = Party("the finance ministry", keys["ministry"])
        self.central_bank = Party("the central bank", keys["central-bank"])
        self.regulator = Party("the regulator (PVARA)", keys["regulator"])
        # Keys made for this run: the VASPs and their clients exist only on this chain.
        self.vasp_a = Party("VASP Binance", generate_key())
        self.vasp_b = Party("VASP HTX", generate_key())
        self.investors = {
            name: Party(name, generate_key())
            for name in ("Aisha (PK)", "Hamza (AE)", "Lena (DE)", "Sofia (SG)", "Oliver (GB)")
        }

    # ---- printing and checking --------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def step(self, text: str) -> None:
        self.step_no += 1
        self.say(f"\n[{self.step_no:02d}] {text}")

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            raise StepFailed(what)
        self.say(f"     checked: {what}")

    def inv(self, name: str) -> Party:
        return next(p for n, p in self.investors.items() if n.startswith(name))

    # ---- sending ------------------------------------------------------------------------

    def submit(self, batch: Iterable[tuple[Operation, list[Party]]]) -> list:
        """Sign and broadcast every transaction at once (nonces counted here, so one sender's
        transactions queue in order), then wait for each to commit with code 0. Independent
        steps share a block this way: the story needs few blocks of chain time."""
        nonces: dict[str, int] = {}
        chain_id = self.client.status().chain_id
        signed = []
        for operation, signers in batch:
            sender = signers[0].address
            if sender not in nonces:
                nonces[sender] = self.client.next_nonce(sender)
            body = operation.body(chain_id, sender, nonces[sender])
            nonces[sender] += 1
            signed.append((operation, sign(body, [p.key for p in signers])))
        hashes = []
        for operation, tx in signed:
            try:
                hashes.append(self.client.broadcast(tx).hash)
            except TxRejected as exc:
                raise StepFailed(f"{operation.op} refused at admission: {exc}") from None
        results = []
        for (operation, _), tx_hash in zip(signed, hashes, strict=True):
            committed = self.client.wait_for_tx(tx_hash, timeout_s=30.0)
            if not committed.ok:
                raise StepFailed(
                    f"{operation.op} failed in block {committed.height}: "
                    f"code {committed.code} {committed.log}"
                )
            results.append(committed)
        self.say(
            f"     committed {len(results)} transaction(s) in block(s) "
            f"{sorted({r.height for r in results})}"
        )
        return results

    def send(self, operation: Operation, *signers: Party):
        return self.submit([(operation, list(signers))])[0]

    def refused(self, code: str, operation: Operation, *signers: Party) -> None:
        """The transaction must be refused (at admission or in a block) with `code`."""
        try:
            committed = self.client.send(operation, [p.key for p in signers], timeout_s=30.0)
        except TxRejected as exc:
            where = "at admission" if exc.height is None else f"in block {exc.height}"
            self.check(exc.name == code, f"refused {where} with {exc.name} ({exc.code}): {exc.log}")
            return
        raise StepFailed(f"expected {code}, but it committed in block {committed.height}")

    # ---- reading ------------------------------------------------------------------------

    def balance(self, party: Party, instrument: str) -> tuple[int, int]:
        account = self.client.account(party.address)
        for b in account["balances"]:
            if b["instrument"] == instrument:
                return b["balance"], b["frozen"]
        return 0, 0

    def check_holders(self, instrument: str) -> None:
        chain = {
            h["address"]: h["balance"] for h in self.client.holders(instrument) if h["balance"]
        }
        supply = self.client.instrument(instrument)["supply"]
        expected = self.model.holders(instrument)
        self.check(
            chain == expected and supply == self.model.supply(instrument),
            f"{instrument}: supply {supply:,} and {len(chain)} holders' balances are "
            f"what the script computed ({self.model.supply(instrument):,})",
        )

    def chain_date(self) -> date:
        return date(1970, 1, 1) + timedelta(days=self.client.status().block_time_ms // DAY_MS)

    def wait_for_date(self, target: date, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (today := self.chain_date()) < target:
            if time.monotonic() > deadline:
                raise StepFailed(f"chain date {today} did not reach {target} ({what})")
            time.sleep(0.25)
        self.check(True, f"chain date is {today}, on or after {target} ({what})")

    # ---- the story ----------------------------------------------------------------------

    def run(self) -> None:
        genesis = self.client.genesis()
        step_ms = genesis["parameters"].get("block_time_step_ms")
        if not step_ms:
            raise SystemExit(
                "demo: this network has no chain-time step (genesis block_time_step_ms), so "
                "no T-bill can mature during the demo; make one with `khazana localnet --demo "
                "--fresh` or `khazana init --time-step-ms 86400000`"
            )
        if any(i["id"] == BOND for i in self.client.instruments()):
            raise SystemExit(
                f"demo: this network already holds {BOND} (the demo ran on it before); the "
                "story starts from an empty programme: `khazana localnet --demo --fresh`"
            )
        closed_days = genesis["parameters"]["closed_period_days"]
        start = self.chain_date()
        # Payment dates: after the story's blocks and the closed period that precedes them.
        coupon_date = start + timedelta(
            days=closed_days + SPARE_DAYS + self.story_blocks * step_ms // DAY_MS + 1
        )
        while coupon_date.day > 28:  # keep the schedule's day of month in every month
            coupon_date += timedelta(days=1)
        bond_issue = add_months(coupon_date, -6)
        bond_maturity = add_months(bond_issue, 60)
        tbill_maturity = coupon_date + timedelta(days=1)
        tbill_issue = tbill_maturity - timedelta(days=91)
        self.say(
            f"Khazana demo on {len(self.nodes)} validators, chain {genesis['chain_id']}; "
            f"chain date {start}, {step_ms / DAY_MS:g} day(s) of chain time per block"
        )
        ministry, bank, regulator = self.ministry, self.central_bank, self.regulator
        a, b = self.vasp_a, self.vasp_b

        self.step(
            "The ministry registers a 5-year USD sovereign bond (8 %, semi-annual), a "
            "91-day T-bill and an oil-reserve token; the central bank registers the USD "
            "cash token; the regulator licenses two VASPs; the regulator and the ministry "
            "both sign to make the central bank reserve custodian for the oil count"
        )
        self.say(
            f"     bond {bond_issue} -> {bond_maturity}, first coupon {coupon_date}; "
            f"T-bill {tbill_issue} -> {tbill_maturity}"
        )
        self.submit(
            [
                (
                    TxBuilder.register_instrument(
                        id=CASH,
                        kind="cash",
                        name="Central-bank USD cash token",
                        currency="USD",
                        face_value=1,
                        decimals=2,
                        cap=10**15,
                    ),
                    [bank],
                ),
                (
                    TxBuilder.register_instrument(
                        id=BOND,
                        kind="bond",
                        name="Pakistan 8% 5-year USD bond",
                        currency="USD",
                        face_value=BOND_FACE,
                        usd_face_value=BOND_FACE,
                        decimals=0,
                        cap=1_500_000,
                        isin=valid_isin("PK0BOND2031"),
                        issue_date=bond_issue,
                        maturity_date=bond_maturity,
                        coupon_rate=BOND_RATE,
                        coupon_frequency=2,
                        day_count="30/360",
                    ),
                    [ministry],
                ),
                (
                    TxBuilder.register_instrument(
                        id=TBILL,
                        kind="tbill",
                        name="Pakistan 91-day T-bill",
                        currency="USD",
                        face_value=TBILL_FACE,
                        usd_face_value=TBILL_FACE,
                        decimals=0,
                        cap=4_000_000,
                        isin=valid_isin("PK0TBIL091D"),
                        issue_date=tbill_issue,
                        maturity_date=tbill_maturity,
                    ),
                    [ministry],
                ),
                (
                    TxBuilder.register_instrument(
                        id=OIL,
                        kind="commodity",
                        name="Strategic oil reserve",
                        currency="USD",
                        face_value=OIL_FACE,
                        usd_face_value=OIL_FACE,
                        decimals=0,
                        cap=2_000_000,
                        unit="bbl",
                    ),
                    [ministry],
                ),
                (TxBuilder.license_vasp(vasp=a.address, name="Binance Pakistan"), [regulator]),
                (TxBuilder.license_vasp(vasp=b.address, name="HTX Pakistan"), [regulator]),
                (
                    TxBuilder.grant_role(account=bank.address, role="reserve_custodian"),
                    [regulator, ministry],
                ),
            ]
        )
        kinds = {i["id"]: i["kind"] for i in self.client.instruments()}
        self.check(
            kinds == {CASH: "cash", BOND: "bond", TBILL: "tbill", OIL: "commodity"},
            f"four instruments on chain: {kinds}",
        )
        bond = self.client.instrument(BOND)
        self.check(
            bond["next_coupon"] == coupon_date.isoformat(),
            f"the bond's next coupon is {bond['next_coupon']}",
        )
        for vasp in (a, b):
            roles = self.client.account(vasp.address)["roles"]
            self.check("vasp" in roles, f"{vasp.name} is licensed (roles {roles})")

        self.step(
            "The central bank attests the oil reserve (1,200,000 bbl, document hash) "
            "and issues USD cash; the VASPs onboard investors from five countries"
        )
        countries = {
            "Aisha": ("PK", "retail", a),
            "Hamza": ("AE", "professional", a),
            "Lena": ("DE", "institutional", a),
            "Sofia": ("SG", "institutional", b),
            "Oliver": ("GB", "professional", b),
        }
        expiry = start + timedelta(days=3 * 365)
        onboard = [
            (
                TxBuilder.onboard_investor(
                    investor=self.inv(n).address, country=c, category=cat, kyc_expiry=expiry
                ),
                [vasp],
            )
            for n, (c, cat, vasp) in countries.items()
        ]
        self.submit(
            [
                (
                    TxBuilder.attest_reserve(
                        instrument=OIL,
                        quantity=1_200_000,
                        document_hash=hash256(b"oil count, depot audit 1"),
                    ),
                    [bank],
                ),
                (TxBuilder.issue(instrument=CASH, to=bank.address, amount=500_000_000_00), [bank]),
                *onboard,
            ]
        )
        self.model.issue(CASH, bank.address, 500_000_000_00)
        for n, (country, _, vasp) in countries.items():
            kyc = self.client.account(self.inv(n).address)["kyc"]
            self.check(
                kyc["country"] == country and kyc["vasp"] == vasp.address,
                f"{n} onboarded by {vasp.name}, country {kyc['country']}",
            )

        self.step(
            "Issuance up to the caps: the bond's 1,500,000 units ($1.5 bn), 4,000,000 "
            "T-bills ($400 m) and 1,000,000 bbl of oil ($70 m), to the two VASPs; cash "
            "to two investors for settlement"
        )
        issues = [
            (BOND, a, 1_000_000),
            (BOND, b, 500_000),
            (TBILL, a, 2_500_000),
            (TBILL, b, 1_500_000),
            (OIL, a, 1_000_000),
        ]
        self.submit(
            [
                *[
                    (TxBuilder.issue(instrument=i, to=p.address, amount=n), [ministry])
                    for i, p, n in issues
                ],
                (
                    TxBuilder.issue(
                        instrument=CASH, to=self.inv("Oliver").address, amount=50_000_000_00
                    ),
                    [bank],
                ),
                (
                    TxBuilder.issue(
                        instrument=CASH, to=self.inv("Sofia").address, amount=10_000_000_00
                    ),
                    [bank],
                ),
            ]
        )
        for i, p, n in issues:
            self.model.issue(i, p.address, n)
        self.model.issue(CASH, self.inv("Oliver").address, 50_000_000_00)
        self.model.issue(CASH, self.inv("Sofia").address, 10_000_000_00)
        outstanding = 1_500_000 * BOND_FACE + 4_000_000 * TBILL_FACE + 1_000_000 * OIL_FACE
        for instrument in (BOND, TBILL, OIL):
            self.check_holders(instrument)

        self.step(
            f"500,000 more bbl of oil would add {usd(500_000 * OIL_FACE)} to the "
            f"{usd(outstanding)} outstanding: past the $2 bn programme cap"
        )
        self.refused(
            "PROGRAMME_CAP", TxBuilder.issue(instrument=OIL, to=a.address, amount=500_000), ministry
        )

        self.step("Primary distribution: each VASP passes units to its clients")
        distribution = [
            (a, "Aisha", BOND, 1_000),
            (a, "Hamza", BOND, 200_000),
            (a, "Lena", BOND, 600_000),
            (a, "Lena", TBILL, 2_000_000),
            (a, "Aisha", TBILL, 5_000),
            (a, "Hamza", OIL, 250_000),
            (b, "Sofia", BOND, 400_000),
            (b, "Oliver", TBILL, 1_000_000),
        ]
        self.submit(
            [
                (TxBuilder.transfer(instrument=i, to=self.inv(n).address, amount=q), [v])
                for v, n, i, q in distribution
            ]
        )
        for v, n, i, q in distribution:
            self.model.move(i, v.address, self.inv(n).address, q)
        self.check_holders(BOND)
        self.check_holders(TBILL)

        self.step(
            "Secondary market: Lena sells 100,000 bonds to Sofia and 500,000 T-bills "
            "to Oliver, across VASPs and borders"
        )
        secondary = [("Lena", "Sofia", BOND, 100_000), ("Lena", "Oliver", TBILL, 500_000)]
        self.submit(
            [
                (TxBuilder.transfer(instrument=i, to=self.inv(t).address, amount=q), [self.inv(s)])
                for s, t, i, q in secondary
            ]
        )
        for s, t, i, q in secondary:
            self.model.move(i, self.inv(s).address, self.inv(t).address, q)
        self.check(self.balance(self.inv("Sofia"), BOND)[0] == 500_000, "Sofia holds 500,000 bonds")

        price = 98_500  # $985 per bond
        self.step(
            f"Delivery versus payment: Hamza delivers 50,000 bonds to Oliver against "
            f"{usd(50_000 * price)} in cash, both legs or neither, both sign"
        )
        hamza, oliver = self.inv("Hamza"), self.inv("Oliver")
        self.send(
            TxBuilder.dvp(
                seller=hamza.address,
                buyer=oliver.address,
                asset=BOND,
                asset_amount=50_000,
                cash=CASH,
                cash_amount=50_000 * price,
            ),
            hamza,
            oliver,
        )
        self.model.move(BOND, hamza.address, oliver.address, 50_000)
        self.model.move(CASH, oliver.address, hamza.address, 50_000 * price)
        self.check(
            self.balance(hamza, CASH)[0] == 50_000 * price
            and self.balance(oliver, BOND)[0] == 50_000,
            "Hamza received the cash and Oliver the bonds",
        )

        aisha = self.inv("Aisha")
        legal = "Islamabad High Court order W.P. 1234/2025"
        self.step(f"The regulator freezes Aisha's account ({legal})")
        self.send(
            TxBuilder.freeze(account=aisha.address, reason_code=7, legal_reference=legal), regulator
        )
        frozen = self.client.account(aisha.address)["frozen"]
        self.check(
            frozen is not None and frozen["legal_reference"] == legal,
            f"the account is frozen: {frozen}",
        )
        self.step("Aisha tries to sell 500 bonds to Hamza")
        self.refused(
            "ACCOUNT_FROZEN",
            TxBuilder.transfer(instrument=BOND, to=hamza.address, amount=500),
            aisha,
        )

        self.step(f"Chain time runs on to the bond's first coupon date {coupon_date}")
        self.wait_for_date(coupon_date, "coupon due", timeout_s=120)
        self.refused(
            "CLOSED_PERIOD",
            TxBuilder.transfer(instrument=BOND, to=hamza.address, amount=1_000),
            self.inv("Sofia"),
        )
        self.step(
            f"The central bank, paying agent, pays the coupon: "
            f"{usd(BOND_COUPON_PER_UNIT)} per bond to every holder"
        )
        self.send(TxBuilder.pay_coupon(instrument=BOND, cash=CASH, coupon_date=coupon_date), bank)
        paid = self.model.pay("coupon", BOND, BOND_COUPON_PER_UNIT, bank.address)
        self.check(
            self.client.instrument(BOND)["last_coupon_paid"] == coupon_date.isoformat(),
            f"coupon of {coupon_date} recorded as paid ({usd(paid)} in all)",
        )
        self.check(
            self.balance(aisha, CASH)[0] == 1_000 * BOND_COUPON_PER_UNIT,
            "frozen Aisha is still paid her coupon (a freeze stops moves, not income)",
        )
        self.check_holders(CASH)

        self.step(f"The T-bill matures on {tbill_maturity}: the central bank redeems it at face")
        self.wait_for_date(tbill_maturity, "T-bill matured", timeout_s=60)
        self.send(TxBuilder.redeem(instrument=TBILL, cash=CASH), bank)
        redeemed = self.model.pay("redemption", TBILL, TBILL_FACE, bank.address)
        self.model.balances[TBILL] = {}
        tbill = self.client.instrument(TBILL)
        self.check(
            tbill["status"] == "redeemed" and tbill["supply"] == 0,
            f"T-bill redeemed, supply 0, {usd(redeemed)} paid",
        )
        self.check_holders(CASH)

        self.step(
            "The central bank counts the oil again (1,200,000 bbl); issuing 300,000 bbl "
            "more would bring the supply to 1,300,000, beyond the attested reserve"
        )
        self.send(
            TxBuilder.attest_reserve(
                instrument=OIL,
                quantity=1_200_000,
                document_hash=hash256(b"oil count, depot audit 2"),
            ),
            bank,
        )
        self.refused(
            "RESERVE_EXCEEDED",
            TxBuilder.issue(instrument=OIL, to=a.address, amount=300_000),
            ministry,
        )

        debt_paid = self.debt_office()

        sofia = self.inv("Sofia")
        self.step("The regulator suspends HTX; its client Sofia can no longer move her bonds")
        self.send(TxBuilder.suspend_vasp(vasp=b.address, reason="AML findings"), regulator)
        self.refused(
            "VASP_SUSPENDED",
            TxBuilder.transfer(instrument=BOND, to=hamza.address, amount=1_000),
            sofia,
        )

        self.step("Every validator agrees, and the books add up")
        self.check_agreement()
        for instrument in (BOND, TBILL, OIL, FRN, SUKUK, CASH):
            self.check_holders(instrument)
        cash_supply = self.client.instrument(CASH)["supply"]
        issued_cash = 500_000_000_00 + 50_000_000_00 + 10_000_000_00
        self.check(
            cash_supply == issued_cash,
            f"cash supply {usd(cash_supply)} = cash issued; payments moved, not created",
        )
        bank_cash = self.balance(bank, CASH)[0]
        self.check(
            bank_cash == 500_000_000_00 - paid - redeemed - debt_paid,
            f"the central bank holds {usd(bank_cash)} = {usd(500_000_000_00)} - coupon "
            f"{usd(paid)} - redemption {usd(redeemed)} - FRN coupon and sukuk rental "
            f"{usd(debt_paid)}",
        )
        self.regulators_report()

    def regulators_report(self) -> None:
        """The last step: the report `khazana report programme` and `khazana report
        holdings --by vasp` print, from one call each (node/client/report.py)."""
        self.step("The regulator's report: programme cap usage and holdings by VASP")
        programme = self.client.call("programme")
        print_report("programme", programme, "table", {}, out=self.out)
        summary = report_holdings(self.client, "vasp", None, None)
        decimals = {i["id"]: i["decimals"] for i in self.client.instruments()}
        self.say("")
        print_report("holdings", summary, "table", decimals, out=self.out)
        supplies = {i["id"]: i["supply"] for i in self.client.instruments()}
        totals = {t["instrument"]: t["total"] for t in summary["totals"]}
        self.check(
            all(totals.get(i, 0) == supply for i, supply in supplies.items()),
            "every instrument's holdings by VASP add up to its supply",
        )
        outstanding = sum(i["outstanding_usd_cents"] for i in programme["instruments"])
        self.check(
            outstanding == programme["outstanding_usd_cents"],
            f"the programme's outstanding {usd(outstanding)} is the sum over its instruments",
        )

    def debt_office(self) -> int:
        """A floating-rate note and an Ijara sukuk next to the fixed bond (protocol version
        3): registered, sold, and paid their first coupon and rental; returns the cash paid."""
        ministry, bank = self.ministry, self.central_bank
        a, b = self.vasp_a, self.vasp_b
        today = self.chain_date()
        coupon = today + timedelta(days=12)
        while coupon.day > 28:
            coupon += timedelta(days=1)
        payday = coupon  # following: a weekend date moves to Monday
        while payday.weekday() >= 5:
            payday += timedelta(days=1)
        issue = add_months(coupon, -3)
        terms = {
            "currency": "USD",
            "face_value": DEBT_FACE,
            "usd_face_value": DEBT_FACE,
            "decimals": 0,
            "cap": DEBT_UNITS,
            "issue_date": issue,
            "maturity_date": add_months(issue, 36),
            "coupon_frequency": 4,
            "day_count": "ACT/ACT-ICMA",
            "business_day_convention": "following",
            "holiday_calendar": CALENDAR,
            "record_business_days": 2,  # the register closes 2 business days before payment
        }
        self.step(
            f"The ministry keeps its business-day calendar on chain and registers a 3-year "
            f"floating-rate note ({INDEX} + 75 bp, reset quarterly, fixed 2 days before each "
            f"period) and a 3-year Ijara sukuk (8 % rental on a leased asset), both first "
            f"paying on {coupon}"
        )
        self.submit(
            [
                (
                    TxBuilder.set_holiday_calendar(
                        id=CALENDAR, weekend=["sat", "sun"], holidays=[]
                    ),
                    [ministry],
                ),
                (
                    TxBuilder.register_instrument(
                        id=FRN,
                        kind="bond",
                        name="Pakistan 3-year floating-rate note",
                        isin=valid_isin("PK0FRN02029"),
                        rate_index=INDEX,
                        spread_bp=75,
                        fixing_days=2,
                        fixing_lookback_days=7,
                        **terms,
                    ),
                    [ministry],
                ),
                (
                    TxBuilder.register_instrument(
                        id=SUKUK,
                        kind="bond",
                        name="Pakistan 3-year Ijara sukuk",
                        isin=valid_isin("PK0SUKUK029"),
                        coupon_rate=SUKUK_RENTAL,
                        sukuk="ijara",
                        sukuk_asset="Jinnah International Airport terminal, Karachi (leased back)",
                        **terms,
                    ),
                    [ministry],
                ),
            ]
        )
        self.step(
            f"Both are sold: {DEBT_UNITS:,} notes to Binance, {DEBT_UNITS:,} certificates to HTX"
        )
        self.submit(
            [
                (TxBuilder.issue(instrument=FRN, to=a.address, amount=DEBT_UNITS), [ministry]),
                (TxBuilder.issue(instrument=SUKUK, to=b.address, amount=DEBT_UNITS), [ministry]),
            ]
        )
        self.model.issue(FRN, a.address, DEBT_UNITS)
        self.model.issue(SUKUK, b.address, DEBT_UNITS)
        quote = self.client.quote(BOND, today.isoformat(), yield_="0.09")
        self.check(
            abs(float(quote["dirty_price"]) - float(quote["clean_price"]) - float(quote["accrued"]))
            < 1e-9,
            f"a quote of {BOND} at 9 %: clean {quote['clean_price']}, accrued "
            f"{quote['accrued']}, dirty {quote['dirty_price']} (per 100 of face)",
        )

        self.step(f"Chain time runs on to the payment date {payday}")
        self.wait_for_date(payday, "FRN coupon and sukuk rental due", timeout_s=120)
        self.refused(
            "RATE_FIXING_MISSING",
            TxBuilder.pay_coupon(instrument=FRN, cash=CASH, coupon_date=coupon),
            bank,
        )
        fixed_on, counted = issue, 0
        while counted < 2:  # two business days (Mon-Fri here) before the period's start
            fixed_on -= timedelta(days=1)
            counted += fixed_on.weekday() < 5
        self.step(
            f"The central bank publishes the {INDEX} fixing of {fixed_on} ({FIXING}); the "
            f"paying agent pays the FRN coupon ({usd(FRN_COUPON_PER_UNIT)} a note) and the "
            f"sukuk rental ({usd(SUKUK_RENTAL_PER_UNIT)} a certificate)"
        )
        fixing = TxBuilder.publish_rate_fixing(
            name=INDEX,
            date=fixed_on.isoformat(),
            rate=FIXING,
            document_hash=hash256(b"SBP T-bill auction result"),
        )
        self.send(fixing, bank)
        results = self.submit(
            [
                (TxBuilder.pay_coupon(instrument=FRN, cash=CASH, coupon_date=coupon), [bank]),
                (TxBuilder.pay_rental(instrument=SUKUK, cash=CASH, coupon_date=coupon), [bank]),
            ]
        )
        paid = self.model.pay("coupon", FRN, FRN_COUPON_PER_UNIT, bank.address)
        paid += self.model.pay("rental", SUKUK, SUKUK_RENTAL_PER_UNIT, bank.address)
        self.check(
            self.client.instrument(FRN)["last_coupon_paid"] == coupon.isoformat()
            and self.client.instrument(SUKUK)["last_coupon_paid"] == coupon.isoformat(),
            f"FRN coupon and sukuk rental of {coupon} recorded as paid ({usd(paid)} in all; "
            f"{len(results)} payments)",
        )
        self.check_holders(CASH)
        return paid

    def check_agreement(self) -> None:
        statuses = [c.status() for c in self.clients]
        for node, s in zip(self.nodes, statuses, strict=True):
            self.say(f"     {node['name']:<13} height {s.height} app_hash {s.app_hash[:16]}")
        height = min(s.height for s in statuses)
        headers = [c.block(height)["block"]["header"] for c in self.clients]
        app_hashes = {h["app_hash"] for h in headers}
        self.check(
            len(app_hashes) == 1,
            f"all {len(self.clients)} validators have app_hash {headers[0]['app_hash'][:16]}"
            f"... at height {height}",
        )
        same_tip = {(s.height, s.app_hash) for s in statuses}
        if len(same_tip) == 1:
            self.check(True, "and the same latest app_hash in every node's status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--localnet", required=True, help="folder holding localnet.json")
    parser.add_argument(
        "--story-blocks",
        type=int,
        default=STORY_BLOCKS,
        help="blocks of chain time allowed for the story before the payment dates' closed "
        "periods (fewer: a shorter wait for the coupon, less slack for a slow network)",
    )
    args = parser.parse_args(argv)
    try:
        localnet = json.loads((Path(args.localnet) / "localnet.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"demo: cannot read {args.localnet}/localnet.json: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    demo = Demo(localnet, story_blocks=args.story_blocks)
    started = time.monotonic()
    try:
        demo.run()
    except StepFailed as exc:
        print(f"\nFAILED at step {demo.step_no}: {exc}", flush=True)
        return EXIT_FAILED
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return EXIT_UNUSABLE
    print(
        f"\nThe demo passed: {demo.step_no} steps in {time.monotonic() - started:.1f} s", flush=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
