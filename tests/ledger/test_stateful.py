"""The whole ledger under long random sequences of every operation (hypothesis stateful test).

`LedgerMachine` plays a small market -- the four institutions, two VASPs, eight investors in
four countries and three categories (`stateful_support`) -- and sends random but meaningful
transactions: amounts drawn mostly within what is free to move, recipients mostly eligible,
with a share of deliberate misbehaviour (a sender without the role, a missing co-signature,
an amount beyond a balance or a cap) and with block time jumping forward, so KYC files
expire, closed periods open, coupons fall due, instruments mature and reserves go stale.

Every transaction runs twice:
- through a `ledger.chain.Chain` on SQLite (one block per transaction, or a proposer's
  block of several payments with one it must drop: `build_block` + `commit`), the way a
  node runs it;
- through a shadow in-memory `State` with `apply_transaction`, the way the rules read.
The receipts and the encoded state changes must be identical, and the chain's app_hash
must equal the root of a tree built from scratch over the shadow's items.

After every step the machine checks (independently of `State.invariant_violations`):
- supply = sum of balances, no negative balance, 0 <= frozen <= balance;
- no instrument cap and no programme cap (USD cents, across instruments) exceeded;
- frozen units per holding equal a model that only freeze, unfreeze, forced transfers
  (frozen units leaving stop being frozen) and redemptions (frozen units become frozen cash)
  change; frozen accounts equal the model of account freezes; and a frozen account's
  balances fall only by a forced transfer from it or the redemption of the instrument;
- an accepted transfer, DvP or issue obeys an independent model of the investor rules
  (instrument movable; parties not frozen, KYC valid, VASP active; country and category);
- a refused transaction changed only its sender's nonce (nothing at all when refused before
  execution); a replayed transaction is refused with NONCE_USED;
- closing and reopening the chain on the same file gives the same app_hash, height, last
  block hash and every record (hence every balance).

`test_a_fixed_run_reaches_every_operation_and_the_hard_refusals` runs the same rules
derandomized and asserts they reach every operation and many distinct refusal codes, so the
random test is known to exercise the hard parts rather than bounce off the first check.
The negative controls corrupt a state by hand, or break the ledger on purpose
(monkeypatched), and show the checks fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import ClassVar, NamedTuple

import pytest
from hypothesis import HealthCheck, Phase, event, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger import codec
from ledger.chain import Chain
from ledger.codes import Code, InvalidTransaction
from ledger.commitment import StateTree
from ledger.crypto import KeyPair
from ledger.execute import apply_transaction, check_transaction
from ledger.genesis import state_from_genesis
from ledger.ops import OPERATIONS, transfers
from ledger.ops.governance import (
    MAX_PENDING_CHANGES,
    VALSET_DELAY,
    promote_validator_changes,
)
from ledger.state import account_key
from ledger.supervision import full_snapshot
from ledger.tx import TxBody, sign_tx
from ledger.types import BOND, CASH, COMMODITY, TBILL, BlockContext, Holding, Receipt
from ledger.types import VASP as VASP_ROLE

from .stateful_support import (
    BOND_ID,
    CASH_ID,
    CHAIN_ID,
    COUNTRIES,
    DAY_MS,
    DEPUTY,
    GOLD_ID,
    HOUR_MS,
    INSTITUTIONS,
    INVESTOR_NAMES,
    INVESTORS,
    NEWCOMER,
    PROGRAMME_CAP_USD_CENTS,
    SETUP_INSTRUMENTS,
    TBILL_ID,
    VASPS,
    InvestorProfile,
    balances_of,
    cap_violations,
    date_of,
    day_ms,
    frozen_units,
    key_for,
    make_genesis,
    make_isin,
    supply_violations,
)

GENESIS = make_genesis()
PROPOSER = key_for("validator-ministry").address
# Each transaction's block comes this much after the previous one; `advance_time` jumps.
STEP_MS = 8 * HOUR_MS
# A tmpfs keeps SQLite's fsyncs (synchronous=FULL) cheap; any temp dir works, only slower.
TMP_BASE = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

THIRD_VASP = "vasp-c"  # licensed during a run, if ever
NEWCOMER_PROFILE = InvestorProfile(NEWCOMER, "GB", "retail", None, False, 90)
ONBOARDABLE = (*INVESTORS, NEWCOMER_PROFILE)
# Who may receive units in ordinary movements: the investors, the ministry (which buys back
# before burning) and an address without an account. The central bank (the paying agent)
# receives cash only, so it never holds what it pays on.
RECIPIENTS = (*INVESTOR_NAMES, "ministry", NEWCOMER)
FORCED_RECIPIENTS = (*INVESTOR_NAMES, "ministry")
DEPUTY_ROLES = ("auditor", "reserve_custodian", "registrar")
MAX_NEW_INSTRUMENTS = 10
REOPEN_EVERY = 8  # blocks between reopens, at least
REPLAY_MEMORY = 64  # transactions remembered for replays (a bounded deque)

# `variant` (0..19) of the rules that can misbehave: 0 sends from an account without the
# role, 1 leaves out a co-signature the policy needs; anything else is a proper request.
WRONG_SENDER = 0
MISSING_COSIGNER = 1
VARIANTS = st.integers(0, 19)
PICKS = st.integers(0, 255)
# An amount draw: below 90, an amount within what is available; from 90, just above it.
AMOUNTS = st.integers(0, 99)

ALL_NAMES = (*INSTITUTIONS, *VASPS, THIRD_VASP, *INVESTOR_NAMES, DEPUTY, NEWCOMER)
ADDRESS = {name: key_for(name).address for name in ALL_NAMES}
NAME_OF = {address: name for name, address in ADDRESS.items()}


def amount_within(limit: int, u: int) -> int:
    """Mostly (u < 90 of 0..99) an amount in [1, limit]; otherwise just above `limit`."""
    if u < 90 and limit > 0:
        return 1 + (limit - 1) * u // 89
    return max(limit, 0) + 1 + u % 10


def pick(items, index: int):
    return items[index % len(items)] if items else None


def all_balances(state) -> dict[tuple[str, bytes], int]:
    return {
        (instrument_id, address): holding.balance
        for instrument_id, holders in state.holdings.items()
        for address, holding in holders.items()
    }


def check_balance_changes(before: dict, after: dict, receipt: Receipt) -> None:
    """Protocol version 3: the receipt's `balance_change` events are exactly the balances
    that moved (one per account and instrument, signed, with the balance after), whatever
    the operation; a refused transaction has none."""
    moved = {
        slot: (after.get(slot, 0) - before.get(slot, 0), after.get(slot, 0))
        for slot in before.keys() | after.keys()
        if after.get(slot, 0) != before.get(slot, 0)
    }
    reported = [e.attributes for e in receipt.events if e.type == "balance_change"]
    assert len(reported) == len({(a["instrument"], a["account"]) for a in reported})
    assert {(a["instrument"], a["account"]): (a["amount"], a["balance"]) for a in reported} == (
        moved
    ), receipt.log


class Submission(NamedTuple):
    """A signed transaction and what the machine meant by it."""

    raw: bytes
    sender: str
    op: str
    args: dict
    key: KeyPair  # the key that signed for the sender


@dataclass(slots=True)
class Recorder:
    """What runs of the machine did, summed over examples (for the coverage test)."""

    accepted: Counter = field(default_factory=Counter)  # op -> accepted count
    refused: Counter = field(default_factory=Counter)  # op -> refused count
    codes: Counter = field(default_factory=Counter)  # refusal code name -> count
    outcomes: Counter = field(default_factory=Counter)  # (op, code name) -> count
    frozen_moves: Counter = field(default_factory=Counter)  # code of attempts on frozen units
    replays: int = 0
    reopens: int = 0
    held_back: int = 0  # the most state changes the store held back at a reopening


class LedgerMachine(RuleBasedStateMachine):
    # Set on a subclass to sum up what its runs did (see the coverage test).
    recorder: ClassVar[Recorder | None] = None
    # Store.open's sizing (a subclass runs the store's state log and held-back indexes).
    store_options: ClassVar[dict[str, int]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="khazana-stateful-", dir=TMP_BASE)
        self.path = os.path.join(self.directory, "node.db")
        self.chain = Chain.open(self.path, GENESIS, store_options=self.store_options)
        self.shadow = state_from_genesis(GENESIS)
        self.shadow.take_changes()  # the chain committed these as block 0
        self.now_ms = GENESIS["genesis_time_ms"]
        self.keys: dict[str, KeyPair] = {name: key_for(name) for name in ALL_NAMES}
        self.recoveries: Counter = Counter()
        self.retired: list[tuple[str, KeyPair]] = []  # keys replaced by a recovery
        # The models: frozen units per (instrument, address), and frozen accounts.
        self.frozen_model: dict[tuple[str, bytes], int] = {}
        self.frozen_accounts: set[bytes] = set()
        self.applied: deque[tuple[bytes, str, bytes]] = deque(maxlen=REPLAY_MEMORY)
        self.new_instruments = 0
        self.reopened_at = 0  # the height of the last reopen
        self.record = Recorder()

    def teardown(self) -> None:
        recorder = type(self).recorder
        if recorder is not None:
            recorder.accepted.update(self.record.accepted)
            recorder.refused.update(self.record.refused)
            recorder.codes.update(self.record.codes)
            recorder.outcomes.update(self.record.outcomes)
            recorder.replays += self.record.replays
            recorder.frozen_moves.update(self.record.frozen_moves)
            recorder.reopens += self.record.reopens
            recorder.held_back = max(recorder.held_back, self.record.held_back)
        self.chain.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ signing and running

    def upcoming_ms(self) -> int:
        """The time of the next block (Chain.build_block keeps header time increasing)."""
        return max(self.now_ms + STEP_MS, self.chain.last_time_ms + 1)

    def upcoming_date(self) -> date:
        return date_of(self.upcoming_ms())

    def sign(
        self,
        sender: str,
        op: str,
        args: dict,
        cosigners: tuple[str, ...] = (),
        *,
        key: KeyPair | None = None,
        nonce: int | None = None,
    ) -> bytes:
        if nonce is None:
            account = self.shadow.accounts.get(ADDRESS[sender])
            nonce = 0 if account is None else account.nonce
        body = TxBody(CHAIN_ID, ADDRESS[sender], nonce, op, args)
        keys = [key or self.keys[sender], *(self.keys[c] for c in cosigners)]
        return sign_tx(body, keys).raw

    def submit(
        self,
        sender: str,
        op: str,
        args: dict,
        cosigners: tuple[str, ...] = (),
        *,
        key: KeyPair | None = None,
    ) -> Receipt:
        raw = self.sign(sender, op, args, cosigners, key=key)
        return self.execute(raw, sender, op, args, key or self.keys[sender])

    def execute(self, raw: bytes, sender: str, op: str, args: dict, key: KeyPair) -> Receipt:
        """One transaction, one block."""
        return self.execute_block([Submission(raw, sender, op, args, key)])[0]

    def execute_block(self, submissions: list[Submission]) -> list[Receipt]:
        """One block: the shadow executes each transaction in turn, then the chain's proposer
        builds the block from all of them; receipts and state changes must agree."""
        ctx = BlockContext(CHAIN_ID, self.chain.height + 1, self.upcoming_ms())
        receipts: list[Receipt] = []
        block_changes = self.begin_shadow_block(ctx)
        for submission in submissions:
            receipt, changes = self.shadow_execute(submission, ctx)
            receipts.append(receipt)
            block_changes.update(changes)  # later writes of a key override earlier ones

        raws = [s.raw for s in submissions]
        if ctx.height % 4 == 0:
            # A proposal that is not decided: abandoning it must leave the state tree exactly
            # at the committed root (restored from the state's journal, not the store).
            committed_root = self.chain.app_hash
            self.chain.build_block(raws, ctx.time_ms, PROPOSER)
            self.chain.abandon()
            assert self.chain.tree.root == committed_root
        pending = self.chain.build_block(raws, ctx.time_ms, PROPOSER)
        assert (pending.header.height, pending.header.time_ms) == (ctx.height, ctx.time_ms)
        executed = [(s.raw, r) for s, r in zip(submissions, receipts, strict=True) if r.executed]
        assert pending.block.txs == tuple(raw for raw, _ in executed)
        assert [r.to_map() for r in pending.receipts] == [r.to_map() for _, r in executed]
        # Refused before execution: the proposer leaves them out of the block.
        assert [(r.code, r.executed) for r in pending.dropped] == [
            (r.code, False) for r in receipts if not r.executed
        ]
        assert pending.changes == block_changes
        self.chain.commit(pending, b"cert-%d" % ctx.height)
        self.now_ms = ctx.time_ms
        return receipts

    def begin_shadow_block(self, ctx: BlockContext) -> dict[bytes, bytes | None]:
        """What a block does before its transactions, as `Chain` does it: validator changes
        decided VALSET_DELAY blocks ago come into force. Returns those state changes."""
        activated = self.shadow.protocol.activated(ctx.height)
        if activated is not None:
            self.shadow.put_protocol(activated)
        promote_validator_changes(self.shadow, ctx.height - VALSET_DELAY)
        return self.shadow.take_changes()

    def shadow_execute(
        self, submission: Submission, ctx: BlockContext
    ) -> tuple[Receipt, dict[bytes, bytes | None]]:
        """Run one transaction on the shadow and check what it did against the models."""
        raw, sender, op, args, key = submission
        address = ADDRESS[sender]
        # Judged on the state before the transaction, at the block's date.
        compliant = self.compliant(op, sender, args)
        before = self.shadow.accounts.get(address)
        watched = balances_of(self.shadow, sorted(self.frozen_accounts))
        frozen_before = dict(self.frozen_model)
        balances_before = all_balances(self.shadow)

        # The mempool's dry run leaves the balance_change events out: the same verdict, and
        # the same receipt without them.
        dry = check_transaction(self.shadow, raw, ctx, balance_changes=False)
        receipt = apply_transaction(self.shadow, raw, ctx)
        assert (dry.code, dry.log, dry.executed, dry.events) == (
            receipt.code,
            receipt.log,
            receipt.executed,
            tuple(e for e in receipt.events if e.type != "balance_change"),
        )
        changes = self.shadow.take_changes()
        check_balance_changes(balances_before, all_balances(self.shadow), receipt)

        code = Code(receipt.code)
        if currently_in_test_context():  # the machine is also driven by hand, below
            note(f"#{ctx.height} {ctx.date} {sender} {op} {args} -> {code.name} {receipt.log}")
            event(f"{op} -> {code.name}")
        self.record.outcomes[op, code.name] += 1
        if code == Code.OK:
            assert compliant, f"{op} by {sender} {args} was accepted against the investor rules"
            self.record.accepted[op] += 1
            self.applied.append((raw, sender, key.public_key))
            self.update_models(op, args, frozen_before)
        else:
            self.record.refused[op] += 1
            self.record.codes[code.name] += 1
            if not receipt.executed:
                # Refused before execution: nothing changed, not even a nonce.
                assert changes == {}
            else:
                # The rule of every refusal: only the sender's nonce moved on.
                assert before is not None
                assert changes == {
                    account_key(address): codec.encode(before.with_nonce(before.nonce + 1).to_map())
                }
        self.check_frozen_accounts_kept(watched, op, args, code)
        return receipt, changes

    # ------------------------------------------------------------------ the frozen models

    def update_models(self, op: str, args: dict, frozen_before: dict) -> None:
        """What an accepted transaction does to frozen units and frozen accounts, per the
        rules (`ledger/ops/accounts.py`, `transfers.forced_transfer`, `payments.redeem`)."""
        model = self.frozen_model
        if op in ("freeze", "unfreeze"):
            target = args["account"]
            if "instrument" not in args:
                if op == "freeze":
                    self.frozen_accounts.add(target)
                else:
                    self.frozen_accounts.discard(target)
                return
            slot = (args["instrument"], target)
            sign = 1 if op == "freeze" else -1
            self._set_frozen(slot, model.get(slot, 0) + sign * args["amount"])
        elif op == "forced_transfer":
            # Frozen units that leave stop being frozen: the freeze never exceeds what is left.
            slot = (args["instrument"], args["from"])
            if slot in model:
                self._set_frozen(slot, min(model[slot], self.shadow.balance(*slot)))
        elif op == "redeem":
            instrument_id, cash_id = args["instrument"], args["cash"]
            face_value = self.shadow.instruments[instrument_id].face_value
            for (held, holder), frozen in sorted(frozen_before.items()):
                if held != instrument_id:
                    continue
                assert holder != ADDRESS["central-bank"], "the machine let the payer hold bonds"
                del model[(held, holder)]
                # Frozen units become frozen cash (capped by the cash balance).
                cash_slot = (cash_id, holder)
                cash_balance = self.shadow.balance(cash_id, holder)
                self._set_frozen(
                    cash_slot,
                    min(cash_balance, frozen_before.get(cash_slot, 0) + frozen * face_value),
                )

    def compliant(self, op: str, sender: str, args: dict) -> bool:
        """Would the investor rules allow this movement at the next block? (True for the
        operations they do not govern.) Evaluated before the transaction runs."""
        if op == "transfer":
            instrument_id = args["instrument"]
            receiver = NAME_OF.get(args["to"])
            return (
                self.movable(instrument_id)
                and self.may_move(sender)
                and receiver is not None
                and self.may_receive(receiver, instrument_id)
            )
        if op == "dvp":
            seller, buyer = NAME_OF.get(args["seller"]), NAME_OF.get(args["buyer"])
            return (
                seller is not None
                and buyer is not None
                and self.movable(args["asset"])
                and self.movable(args["cash"])
                and self.may_receive(buyer, args["asset"])
                and self.may_receive(seller, args["cash"])
            )
        if op == "issue":
            receiver = NAME_OF.get(args["to"])
            return (
                self.movable(args["instrument"])
                and receiver is not None
                and self.may_receive(receiver, args["instrument"])
            )
        return True

    def _set_frozen(self, slot: tuple[str, bytes], amount: int) -> None:
        if amount:
            self.frozen_model[slot] = amount
        else:
            self.frozen_model.pop(slot, None)

    def check_frozen_accounts_kept(
        self, watched: dict[tuple[str, bytes], int], op: str, args: dict, code: Code
    ) -> None:
        """A frozen account's balance falls only by a forced transfer from it or by the
        redemption of the instrument it held (the only ops the rules let touch it)."""
        for (instrument_id, address), balance in watched.items():
            now = self.shadow.balance(instrument_id, address)
            if now >= balance:
                continue
            allowed = (
                code == Code.OK
                and ((op == "forced_transfer" and args["from"] == address) or op == "redeem")
                and args.get("instrument") == instrument_id
            )
            assert allowed, (
                f"frozen account {NAME_OF.get(address, address.hex())} lost "
                f"{balance - now} units of {instrument_id} by {op}"
            )

    # ------------------------------------------------------------------ the market's views

    def instrument_ids(self, *kinds: str) -> list[str]:
        return [
            i
            for i in sorted(self.shadow.instruments)
            if not kinds or self.shadow.instruments[i].kind in kinds
        ]

    def pick_instrument(self, index: int, *kinds: str, held: bool = False) -> str:
        """Mostly (four draws in five) an instrument whose units may move today (and, with
        `held`, that someone holds); otherwise one that cannot move (paused, closed period,
        matured), to see it refused -- or any, if every instrument is in the same state."""
        every = self.instrument_ids(*kinds)
        live = [i for i in every if self.movable(i) and (not held or self.shadow.holdings[i])]
        stuck = [i for i in every if not self.movable(i)]
        if index % 5:
            return pick(live or every, index)
        return pick(stuck or every, index)

    def holder_names(self, instrument_id: str) -> list[str]:
        return [NAME_OF[a] for a in sorted(self.shadow.holdings.get(instrument_id, {}))]

    def free(self, instrument_id: str, name: str) -> int:
        holding = self.shadow.holdings.get(instrument_id, {}).get(ADDRESS[name])
        return 0 if holding is None else holding.balance - holding.frozen

    def issuer_name(self, instrument_id: str) -> str:
        return NAME_OF[self.shadow.instruments[instrument_id].issuer]

    # The compliance rules as the issue states them, written independently of
    # `ledger/ops/common.py`: who may move or receive units at the next block's date. They
    # steer the drawing (most transactions meaningful) and `check_compliance` holds every
    # accepted movement to them. Codes are never predicted from them.

    def movable(self, instrument_id: str) -> bool:
        """Not paused, not matured, not between a record date and its payment."""
        instrument = self.shadow.instruments[instrument_id]
        today = self.upcoming_date()
        if instrument.paused:
            return False
        if instrument.maturity_date is not None and today >= instrument.maturity_date:
            return False
        payment = instrument.next_coupon
        if payment is None and instrument.kind in (BOND, TBILL):
            payment = instrument.maturity_date
        if payment is None or instrument.redeemed:
            return True
        closed_days = self.shadow.parameters.closed_period_days
        return today < payment - timedelta(days=closed_days)

    def _vasp_active(self, address: bytes) -> bool:
        record = self.shadow.vasps.get(address)
        return record is not None and not record.suspended

    def may_move(self, name: str) -> bool:
        account = self.shadow.accounts.get(ADDRESS[name])
        if account is None or account.frozen is not None:
            return False
        if account.is_institution:
            return VASP_ROLE not in account.roles or self._vasp_active(account.address)
        kyc = account.kyc
        if kyc is None or kyc.expiry < self.upcoming_date():
            return False
        return kyc.vasp is None or self._vasp_active(kyc.vasp)

    def may_receive(self, name: str, instrument_id: str) -> bool:
        if not self.may_move(name):
            return False
        kyc = self.shadow.accounts[ADDRESS[name]].kyc
        instrument = self.shadow.instruments[instrument_id]
        return kyc is None or (
            (not instrument.allowed_countries or kyc.country in instrument.allowed_countries)
            and (not instrument.allowed_categories or kyc.category in instrument.allowed_categories)
        )

    def choose(self, names, index: int, good) -> str | None:
        """Mostly (four draws in five) one of `names` for which `good` holds, else any."""
        fine = [name for name in names if good(name)]
        return pick(fine if fine and index % 5 else list(names), index)

    def jump_to(self, day: date) -> None:
        """Let time pass until the next block falls on `day` (never backwards)."""
        self.now_ms = max(self.now_ms, day_ms(day) - STEP_MS)

    # ------------------------------------------------------------------ set-up

    @initialize()
    def open_the_market(self) -> None:
        """Instruments, VASP licences, KYC files, a reserve attestation and first issues, all
        in ONE block: the chain executes the batch, the shadow each transaction in turn."""
        plan: list[tuple[str, str, dict]] = [
            (sender, "register_instrument", args) for sender, args in SETUP_INSTRUMENTS
        ]
        plan += [("regulator", "license_vasp", {"vasp": ADDRESS[v], "name": v}) for v in VASPS]
        genesis_day = date_of(GENESIS["genesis_time_ms"])
        for profile in INVESTORS:
            args = {
                "investor": ADDRESS[profile.name],
                "country": profile.country,
                "category": profile.category,
                "kyc_expiry": (genesis_day + timedelta(days=profile.kyc_days)).isoformat(),
            }
            if profile.by_vasp:
                plan.append((profile.vasp, "onboard_investor", args))
            else:
                if profile.vasp is not None:
                    args["vasp"] = ADDRESS[profile.vasp]
                plan.append(("regulator", "onboard_investor", args))
        plan.append(
            (
                "auditor",
                "attest_reserve",
                {"instrument": GOLD_ID, "quantity": 300, "document_hash": bytes(32)},
            )
        )
        issues = [(CASH_ID, "central-bank", 10**10)]
        issues += [(CASH_ID, name, 10**7) for name in INVESTOR_NAMES]
        issues += [(BOND_ID, p.name, 5_000) for p in INVESTORS if p.country != "US"]
        issues += [(TBILL_ID, p.name, 2_000) for p in INVESTORS if p.category != "retail"][:4]
        issues += [(GOLD_ID, name, 10) for name in INVESTOR_NAMES[:3]]
        for instrument_id, name, amount in issues:
            sender = "central-bank" if instrument_id == CASH_ID else "ministry"
            plan.append(
                (
                    sender,
                    "issue",
                    {"instrument": instrument_id, "to": ADDRESS[name], "amount": amount},
                )
            )

        ctx = BlockContext(CHAIN_ID, self.chain.height + 1, self.upcoming_ms())
        self.now_ms = ctx.time_ms
        assert self.begin_shadow_block(ctx) == {}  # nothing pending at genesis
        raws = []
        for sender, op, args in plan:
            raw = self.sign(sender, op, args)
            receipt = apply_transaction(self.shadow, raw, ctx)
            assert receipt.code == Code.OK, f"set-up {op} by {sender}: {receipt.log}"
            raws.append(raw)
        changes = self.shadow.take_changes()
        pending = self.chain.build_block(raws, ctx.time_ms, PROPOSER)
        assert pending.block.txs == tuple(raws) and not pending.dropped
        assert all(r.code == Code.OK for r in pending.receipts)
        assert pending.changes == changes
        self.chain.commit(pending, b"cert-%d" % ctx.height)

    # ------------------------------------------------------------------ time

    @rule(days=st.integers(1, 30))
    def advance_time(self, days: int) -> None:
        self.now_ms += days * DAY_MS

    # ------------------------------------------------------------------ movements

    def _move(self, instrument_id: str, i_from: int, i_to: int, u: int) -> None:
        sender = self.choose(
            self.holder_names(instrument_id),
            i_from,
            lambda n: self.may_move(n) and self.free(instrument_id, n) > 0,
        ) or pick(INVESTOR_NAMES, i_from)
        others = [r for r in RECIPIENTS if r != sender]
        to = self.choose(others, i_to, lambda n: self.may_receive(n, instrument_id))
        if i_to % 10 == 0:
            # An investor in good standing whose country or category the instrument excludes.
            excluded = [n for n in others if self.may_move(n)]
            excluded = [n for n in excluded if not self.may_receive(n, instrument_id)]
            to = pick(excluded, i_to) or to
        amount = amount_within(self.free(instrument_id, sender), u)
        args = {"instrument": instrument_id, "to": ADDRESS[to], "amount": amount}
        self.submit(sender, "transfer", args)

    # Movements are most of a real ledger's traffic, hence three rules that send them.

    @rule(i_inst=PICKS, i_from=PICKS, i_to=PICKS, u=AMOUNTS)
    def transfer(self, i_inst: int, i_from: int, i_to: int, u: int) -> None:
        """Any instrument, preferring those someone holds."""
        self._move(self.pick_instrument(i_inst, held=True), i_from, i_to, u)

    @rule(i_from=PICKS, i_to=PICKS, u=AMOUNTS)
    def pay_in_cash(self, i_from: int, i_to: int, u: int) -> None:
        self._move(CASH_ID, i_from, i_to, u)

    @rule(i_inst=PICKS, i_from=PICKS, i_to=PICKS, u=AMOUNTS)
    def trade_securities(self, i_inst: int, i_from: int, i_to: int, u: int) -> None:
        self._move(self.pick_instrument(i_inst, BOND, TBILL, COMMODITY, held=True), i_from, i_to, u)

    @rule(count=st.integers(2, 5), i_from=PICKS, i_to=PICKS, u=AMOUNTS, gap=st.booleans())
    def several_payments_in_one_block(
        self, count: int, i_from: int, i_to: int, u: int, gap: bool
    ) -> None:
        """A proposer's block of cash payments from two payers (consecutive nonces each);
        with `gap`, one more whose nonce skips ahead, which the proposer must leave out."""
        if not self.holder_names(CASH_ID):
            return
        payers = [
            self.choose(
                self.holder_names(CASH_ID),
                i_from + k,
                lambda n: self.may_move(n) and self.free(CASH_ID, n) > count,
            )
            for k in range(2)
        ]
        nonces = {}
        for payer in payers:
            account = self.shadow.accounts.get(ADDRESS[payer])
            nonces[payer] = 0 if account is None else account.nonce
        submissions = []
        for k in range(count + int(gap)):
            payer = payers[k % 2]
            to = pick([r for r in RECIPIENTS if r != payer], i_to + k)
            amount = amount_within(self.free(CASH_ID, payer) // count, u)
            args = {"instrument": CASH_ID, "to": ADDRESS[to], "amount": amount}
            nonce = nonces[payer]
            if k == count:
                nonce += 5  # NONCE_GAP: cannot be in a block
            else:
                nonces[payer] += 1
            raw = self.sign(payer, "transfer", args, nonce=nonce)
            submissions.append(Submission(raw, payer, "transfer", args, self.keys[payer]))
        receipts = self.execute_block(submissions)
        if gap:
            assert (receipts[-1].code, receipts[-1].executed) == (Code.NONCE_GAP, False)

    @precondition(lambda self: self.frozen_model or self.frozen_accounts)
    @rule(i_slot=PICKS, i_to=PICKS, u=AMOUNTS, settle=st.booleans())
    def move_frozen_units(self, i_slot: int, i_to: int, u: int, settle: bool) -> None:
        """Try to move what a freeze holds: more than the free part of a holding with frozen
        units (but within its balance), or anything from a frozen account; by transfer or,
        with `settle`, as the asset leg of a DvP. The rules refuse it; the frozen models and
        the compliance check judge whatever happens."""
        if self.frozen_model and (i_slot % 2 or not self.frozen_accounts):
            # Mostly a holding nothing else stops from moving, so the freeze is what is tested.
            instrument_id, holder = self.choose(
                sorted(self.frozen_model),
                i_slot,
                lambda slot: self.movable(slot[0]) and self.may_move(NAME_OF[slot[1]]),
            )
            free = self.free(instrument_id, NAME_OF[holder])
            amount = free + 1 + u % self.frozen_model[instrument_id, holder]
        else:
            holder = pick(sorted(self.frozen_accounts), i_slot)
            held = [i for i in self.instrument_ids() if holder in self.shadow.holdings[i]]
            instrument_id = pick(held or [CASH_ID], i_to)
            amount = amount_within(self.free(instrument_id, NAME_OF[holder]), u)
        sender = NAME_OF[holder]
        to = self.choose(
            [n for n in INVESTOR_NAMES if n != sender],
            i_to,
            lambda n: self.may_receive(n, instrument_id),
        )
        if settle and self.shadow.instruments[instrument_id].kind != CASH:
            args = {
                "seller": holder,
                "buyer": ADDRESS[to],
                "asset": instrument_id,
                "asset_amount": amount,
                "cash": CASH_ID,
                "cash_amount": amount_within(self.free(CASH_ID, to), u),
            }
            receipt = self.submit(sender, "dvp", args, (to,))
        else:
            args = {"instrument": instrument_id, "to": ADDRESS[to], "amount": amount}
            receipt = self.submit(sender, "transfer", args)
        self.record.frozen_moves[Code(receipt.code).name] += 1

    @rule(i_asset=PICKS, i_seller=PICKS, i_buyer=PICKS, u=AMOUNTS, v=AMOUNTS, variant=VARIANTS)
    def dvp(self, i_asset: int, i_seller: int, i_buyer: int, u: int, v: int, variant: int) -> None:
        asset = self.pick_instrument(i_asset, BOND, TBILL, COMMODITY, held=True)
        seller = self.choose(
            self.holder_names(asset), i_seller, lambda n: self.may_move(n) and self.free(asset, n)
        ) or pick(INVESTOR_NAMES, i_seller)
        buyer = self.choose(
            [n for n in INVESTOR_NAMES if n != seller],
            i_buyer,
            lambda n: self.may_receive(n, asset) and self.free(CASH_ID, n) > 0,
        )
        args = {
            "seller": ADDRESS[seller],
            "buyer": ADDRESS[buyer],
            "asset": asset,
            "asset_amount": amount_within(self.free(asset, seller), u),
            "cash": CASH_ID,
            "cash_amount": amount_within(self.free(CASH_ID, buyer), v),
        }
        sender, other = (seller, buyer) if i_seller % 2 else (buyer, seller)
        cosigners = () if variant == MISSING_COSIGNER else (other,)
        self.submit(sender, "dvp", args, cosigners)

    @rule(i_inst=PICKS, i_from=PICKS, i_to=PICKS, u=AMOUNTS, variant=VARIANTS)
    def forced_transfer(self, i_inst: int, i_from: int, i_to: int, u: int, variant: int) -> None:
        held = [i for i in self.instrument_ids() if self.shadow.holdings[i]]
        instrument_id = pick(held or self.instrument_ids(), i_inst)
        source = pick(self.holder_names(instrument_id), i_from) or pick(INVESTOR_NAMES, i_from)
        to = pick([r for r in FORCED_RECIPIENTS if r != source], i_to)
        balance = self.shadow.balance(instrument_id, ADDRESS[source])
        args = {
            "instrument": instrument_id,
            "from": ADDRESS[source],
            "to": ADDRESS[to],
            "amount": amount_within(balance, u),
            "reason_code": 7,
            "legal_reference": "High Court order 2026/114",
        }
        sender = "auditor" if variant == WRONG_SENDER else "regulator"
        cosigners = () if variant == MISSING_COSIGNER else ("ministry",)
        self.submit(sender, "forced_transfer", args, cosigners)

    # ------------------------------------------------------------------ instruments

    @rule(bond=st.booleans(), days=st.integers(10, 200), variant=VARIANTS)
    def register_instrument(self, bond: bool, days: int, variant: int) -> None:
        today = self.upcoming_date()
        if self.new_instruments >= MAX_NEW_INSTRUMENTS and variant != 2:
            return  # enough instruments for one run
        if variant == 2:
            instrument_id = BOND_ID if bond else TBILL_ID  # taken: INSTRUMENT_EXISTS
        else:
            instrument_id = f"{'B' if bond else 'T'}{self.new_instruments + 1}"
        args = {
            "id": instrument_id,
            "kind": BOND if bond else TBILL,
            "name": f"{'Bond' if bond else 'T-bill'} {instrument_id}",
            "isin": make_isin(100 + self.new_instruments),
            "currency": "PKR",
            "face_value": 10_000,
            "decimals": 0,
            "cap": 50_000,
            "usd_face_value": 36,
            "issue_date": today.isoformat(),
            "maturity_date": (today + timedelta(days=days)).isoformat(),
        }
        if bond:
            args |= {"coupon_rate": "0.065", "coupon_frequency": 4, "day_count": "ACT/365F"}
            args["allowed_countries"] = ["AE", "GB", "PK"]
        else:
            args["allowed_categories"] = ["institutional", "professional"]
        sender = "regulator" if variant == WRONG_SENDER else "ministry"
        if self.submit(sender, "register_instrument", args).code == Code.OK:
            self.new_instruments += 1

    @rule(i_inst=PICKS, i_sender=PICKS, variant=VARIANTS)
    def pause_or_unpause(self, i_inst: int, i_sender: int, variant: int) -> None:
        """Mostly lift a pause if there is one, else pause something (pauses stay short);
        variant 2 asks for the state the instrument is already in (refused)."""
        paused = [i for i in self.instrument_ids() if self.shadow.instruments[i].paused]
        instrument_id = pick(paused if paused and i_inst % 4 else self.instrument_ids(), i_inst)
        pausing = not self.shadow.instruments[instrument_id].paused
        if variant == 2:
            pausing = not pausing
        if variant == WRONG_SENDER:
            sender = "auditor"
        else:
            sender = "regulator" if i_sender % 2 else self.issuer_name(instrument_id)
        op = "pause_instrument" if pausing else "unpause_instrument"
        self.submit(sender, op, {"instrument": instrument_id, "reason": "market disruption"})

    @rule(days=st.integers(0, 40), bp=st.integers(0, 2999), variant=VARIANTS)
    def publish_rate_fixing(self, days: int, bp: int, variant: int) -> None:
        """A rate fixing the central bank publishes (version 3); a fixing of an index and
        date already published (RATE_FIXING_EXISTS) and a non-central-bank sender refused.
        (No note here resets from it: floating coupons are tests/ledger/test_ops_debt.py's.)"""
        day = self.upcoming_date() - timedelta(days=days)
        args = {
            "name": "PKR-TB6M",
            "date": day.isoformat(),
            "rate": f"0.{bp:04d}",
            "document_hash": bytes([bp % 256]) * 32,
        }
        self.submit(
            "ministry" if variant == WRONG_SENDER else "central-bank", "publish_rate_fixing", args
        )

    @rule(days=st.integers(0, 400), variant=VARIANTS)
    def set_holiday_calendar(self, days: int, variant: int) -> None:
        """The issuer's business-day calendar, replaced whole; a non-issuer is refused. (No
        bond here names it: payments moved by calendars are tests/ledger/test_ops_calendar.py
        and the QuantLib oracle's; here the record goes through the store and commitment.)"""
        holiday = self.upcoming_date() + timedelta(days=days)
        args = {"id": "CAL", "weekend": ["sat", "sun"], "holidays": [holiday.isoformat()]}
        self.submit(
            "auditor" if variant == WRONG_SENDER else "ministry", "set_holiday_calendar", args
        )

    @rule(i_inst=PICKS, i_to=PICKS, u=AMOUNTS, variant=VARIANTS)
    def issue(self, i_inst: int, i_to: int, u: int, variant: int) -> None:
        instrument_id = self.pick_instrument(i_inst)
        instrument = self.shadow.instruments[instrument_id]
        to = self.choose(INVESTOR_NAMES, i_to, lambda n: self.may_receive(n, instrument_id))
        if variant == 2:
            # To an investor in good standing whose country or category the instrument excludes.
            excluded = [
                n
                for n in INVESTOR_NAMES
                if self.may_move(n) and not self.may_receive(n, instrument_id)
            ]
            to = pick(excluded, i_to) or to
        headroom = instrument.cap - instrument.supply
        limit = headroom
        if instrument.usd_face_value:
            programme = self.shadow.programme
            spare = programme.cap_usd_cents - programme.outstanding_usd_cents
            limit = min(limit, spare // instrument.usd_face_value)
        typical = {CASH: 10**8, BOND: 20_000, TBILL: 10_000, COMMODITY: 15}[instrument.kind]
        if u < 80:
            amount = amount_within(min(limit, typical), u)
        elif u < 90:
            amount = max(limit, 0) + 1 + u % 3  # beyond the tighter of the two caps
        else:
            amount = headroom + 1  # beyond the instrument's own cap
        sender = "regulator" if variant == WRONG_SENDER else self.issuer_name(instrument_id)
        args = {"instrument": instrument_id, "to": ADDRESS[to], "amount": amount}
        self.submit(sender, "issue", args)

    @rule(u=st.integers(1, 3))
    def fund_paying_agent(self, u: int) -> None:
        """The central bank issues itself the cash it will pay coupons and redemptions with."""
        owed = sum(
            self.shadow.instruments[i].supply * self.shadow.instruments[i].face_value
            for i in self.instrument_ids(BOND, TBILL)
        )
        args = {"instrument": CASH_ID, "to": ADDRESS["central-bank"], "amount": owed // u + 1}
        self.submit("central-bank", "issue", args)

    def fund_for(self, payment: int) -> None:
        """Before paying, the central bank issues itself what its free cash lacks (if it can
        issue at all: frozen, paused or at the cap, the payment will be refused for it)."""
        short = payment - self.free(CASH_ID, "central-bank")
        if short > 0:
            args = {"instrument": CASH_ID, "to": ADDRESS["central-bank"], "amount": short}
            self.submit("central-bank", "issue", args)

    @rule(i_inst=PICKS, u=AMOUNTS, variant=VARIANTS)
    def burn(self, i_inst: int, u: int, variant: int) -> None:
        # Mostly an instrument whose issuer holds units to burn (bought back, or cash).
        stocked = [i for i in self.instrument_ids() if self.free(i, self.issuer_name(i))]
        instrument_id = pick(stocked if stocked and i_inst % 5 else self.instrument_ids(), i_inst)
        issuer = self.issuer_name(instrument_id)
        sender = "regulator" if variant == WRONG_SENDER else issuer
        amount = amount_within(self.free(instrument_id, issuer), u)
        self.submit(sender, "burn", {"instrument": instrument_id, "amount": amount})

    @rule(u=AMOUNTS, variant=VARIANTS)
    def attest_reserve(self, u: int, variant: int) -> None:
        instrument_id = TBILL_ID if variant == 2 else GOLD_ID  # 2: not a commodity
        supply = self.shadow.instruments[GOLD_ID].supply
        # Mostly ample; sometimes below what is outstanding (recorded, stops issuance).
        quantity = supply // 2 if u < 10 else supply + 5 * u
        sender = {WRONG_SENDER: "regulator", 3: DEPUTY}.get(variant, "auditor")
        args = {
            "instrument": instrument_id,
            "quantity": quantity,
            "document_hash": bytes([u]) * 32,
        }
        self.submit(sender, "attest_reserve", args)

    # ------------------------------------------------------------------ payments

    @rule(i_bond=PICKS, variant=VARIANTS)
    def pay_coupon(self, i_bond: int, variant: int) -> None:
        today = self.upcoming_date()
        bonds = self.instrument_ids(BOND)
        due = [
            b
            for b in bonds
            if (c := self.shadow.instruments[b].next_coupon) is not None and c <= today
        ]
        if not due and variant >= 3:
            # The paying agent waits for the coupon date.
            waiting = [b for b in bonds if self.shadow.instruments[b].next_coupon is not None]
            if waiting:
                due = [min(waiting, key=lambda b: self.shadow.instruments[b].next_coupon)]
                self.jump_to(self.shadow.instruments[due[0]].next_coupon)
        if (
            not due
            and variant >= 3
            and not any(self.shadow.instruments[b].next_coupon for b in bonds)
        ):
            return  # every coupon has been paid: nothing to do
        bond_id = pick(due or bonds, i_bond)
        bond = self.shadow.instruments[bond_id]
        if variant >= 3:
            self.fund_for(bond.supply * bond.face_value // 40)  # a quarter's coupon at most
        coupon = bond.next_coupon or bond.maturity_date
        if variant == 2:
            coupon += timedelta(days=1)  # not a coupon date: COUPON_NOT_DUE
        sender = "ministry" if variant == WRONG_SENDER else "central-bank"
        args = {"instrument": bond_id, "cash": CASH_ID, "coupon_date": coupon.isoformat()}
        self.submit(sender, "pay_coupon", args)

    @rule(i_inst=PICKS, variant=VARIANTS)
    def redeem(self, i_inst: int, variant: int) -> None:
        today = self.upcoming_date()
        live = [
            i for i in self.instrument_ids(BOND, TBILL) if not self.shadow.instruments[i].redeemed
        ]
        # Matured, and (mostly) with every coupon paid: else COUPON_UNPAID.
        matured = self.choose(
            [i for i in live if self.shadow.instruments[i].maturity_date <= today],
            i_inst,
            lambda i: self.shadow.instruments[i].next_coupon is None,
        )
        matured = [] if matured is None else [matured]
        if not matured and live and variant >= 3:
            # The paying agent waits for the next maturity.
            matured = [min(live, key=lambda i: self.shadow.instruments[i].maturity_date)]
            self.jump_to(self.shadow.instruments[matured[0]].maturity_date)
        if not live and variant >= 3:
            return  # everything has been redeemed
        instrument_id = pick(matured or live or self.instrument_ids(BOND, TBILL), i_inst)
        if variant >= 3:
            instrument = self.shadow.instruments[instrument_id]
            self.fund_for(instrument.supply * instrument.face_value)
        sender = "ministry" if variant == WRONG_SENDER else "central-bank"
        self.submit(sender, "redeem", {"instrument": instrument_id, "cash": CASH_ID})

    # ------------------------------------------------------------------ VASPs and investors

    def _vasps(self, suspended: bool | None) -> list[str]:
        """The VASPs whose licence is suspended (True), active (False), or absent (None)."""
        found = []
        for vasp in (*VASPS, THIRD_VASP):
            record = self.shadow.vasps.get(ADDRESS[vasp])
            if (None if record is None else record.suspended) == suspended:
                found.append(vasp)
        return found

    @rule(i_vasp=PICKS, variant=VARIANTS)
    def license_or_suspend_vasp(self, i_vasp: int, variant: int) -> None:
        """Mostly reinstate a suspended VASP if there is one, else suspend an active one (or
        license the third); variant 2 asks for the state it is already in (refused)."""
        suspended, active = self._vasps(True), self._vasps(False)
        if suspended and i_vasp % 3:
            vasp, licensing = pick(suspended, i_vasp), True
        elif i_vasp % 5 == 0 and self._vasps(None):
            vasp, licensing = THIRD_VASP, True
        else:
            vasp, licensing = pick(active or [*VASPS, THIRD_VASP], i_vasp), False
        if variant == 2:
            licensing = not licensing
        sender = "ministry" if variant == WRONG_SENDER else "regulator"
        if licensing:
            self.submit(sender, "license_vasp", {"vasp": ADDRESS[vasp], "name": vasp})
        else:
            args = {"vasp": ADDRESS[vasp], "reason": "AML findings"}
            self.submit(sender, "suspend_vasp", args)

    @rule(i_inv=PICKS, days=st.integers(1, 400), i_country=PICKS, variant=VARIANTS)
    def onboard_investor(self, i_inv: int, days: int, i_country: int, variant: int) -> None:
        """Mostly renew a file that has lapsed (or open the newcomer's), else any."""
        today = self.upcoming_date()

        def lapsed(profile: InvestorProfile) -> bool:
            account = self.shadow.accounts.get(ADDRESS[profile.name])
            return account is None or account.kyc is None or account.kyc.expiry < today

        profile = self.choose(ONBOARDABLE, i_inv, lapsed)
        expiry = today - timedelta(days=1) if variant == 2 else today + timedelta(days=days)
        args = {
            "investor": ADDRESS[profile.name],
            "country": pick(COUNTRIES, i_country) if variant == 3 else profile.country,
            "category": profile.category,
            "kyc_expiry": expiry.isoformat(),
        }
        if variant == WRONG_SENDER:
            # A VASP renewing a file it does not own (or one that is not licensed at all).
            sender = next(v for v in (*VASPS, THIRD_VASP) if v != profile.vasp)
        elif profile.by_vasp:
            sender = profile.vasp
        else:
            sender = "regulator"
            if profile.vasp is not None:
                args["vasp"] = ADDRESS[profile.vasp]
        self.submit(sender, "onboard_investor", args)

    def _freeze_args(self, target: bytes, **extra) -> dict:
        return {"account": target, "reason_code": 3, "legal_reference": "FMU notice 88", **extra}

    @rule(i_inv=PICKS, variant=VARIANTS)
    def freeze_or_unfreeze_account(self, i_inv: int, variant: int) -> None:
        """Mostly lift an account freeze if there is one, else freeze an investor (maybe one
        already frozen: refused); variant 2 unfreezes one that may not be frozen."""
        frozen = sorted(self.frozen_accounts)
        if frozen and i_inv % 3:
            target, freezing = pick(frozen, i_inv), False
        else:
            target, freezing = ADDRESS[pick(INVESTOR_NAMES, i_inv)], True
        if variant == 2:
            target, freezing = ADDRESS[pick(INVESTOR_NAMES, i_inv)], False
        sender = "ministry" if variant == WRONG_SENDER else "regulator"
        self.submit(sender, "freeze" if freezing else "unfreeze", self._freeze_args(target))

    @rule(i_inst=PICKS, i_holder=PICKS, u=AMOUNTS)
    def freeze_or_unfreeze_units(self, i_inst: int, i_holder: int, u: int) -> None:
        """Freeze part of a holding, or (every other draw, if any are frozen) release part of
        a frozen amount; amounts beyond what is free (or frozen) are refused."""
        if self.frozen_model and i_holder % 2:
            slot = pick(sorted(self.frozen_model), i_inst)
            instrument_id, holder = slot
            amount = amount_within(self.frozen_model[slot], u)
            args = self._freeze_args(holder, instrument=instrument_id, amount=amount)
            self.submit("regulator", "unfreeze", args)
            return
        held = [i for i in self.instrument_ids() if self.shadow.holdings[i]]
        instrument_id = pick(held or self.instrument_ids(), i_inst)
        holder = pick(self.holder_names(instrument_id), i_holder) or pick(INVESTOR_NAMES, i_holder)
        amount = amount_within(self.free(instrument_id, holder), u)
        args = self._freeze_args(ADDRESS[holder], instrument=instrument_id, amount=amount)
        self.submit("regulator", "freeze", args)

    @rule(i_inv=PICKS, variant=VARIANTS)
    def recover_key(self, i_inv: int, variant: int) -> None:
        name = pick(INVESTOR_NAMES, i_inv)
        new_key = key_for(f"{name}#{self.recoveries[name] + 1}")
        args = {"account": ADDRESS[name], "new_public_key": new_key.public_key}
        sender = "ministry" if variant == WRONG_SENDER else "regulator"
        cosigners = () if variant == MISSING_COSIGNER else ("central-bank",)
        if self.submit(sender, "recover_key", args, cosigners).code == Code.OK:
            self.recoveries[name] += 1
            self.retired.append((name, self.keys[name]))
            self.keys[name] = new_key

    @precondition(lambda self: self.retired)
    @rule(i_key=PICKS)
    def send_with_a_retired_key(self, i_key: int) -> None:
        """After a recovery the old key speaks for nobody: refused before execution."""
        name, old_key = pick(self.retired, i_key)
        args = {"instrument": CASH_ID, "to": ADDRESS["ministry"], "amount": 1}
        receipt = self.submit(name, "transfer", args, key=old_key)
        assert (receipt.code, receipt.executed) == (Code.SENDER_NOT_SIGNED, False)

    # ------------------------------------------------------------------ governance

    @rule(i_role=PICKS, variant=VARIANTS)
    def grant_or_revoke_role(self, i_role: int, variant: int) -> None:
        """Give the deputy a role it lacks or take one it holds; variant 2 does the opposite
        (granting a held role, revoking a missing one: refused)."""
        role = pick(DEPUTY_ROLES, i_role)
        account = self.shadow.accounts.get(ADDRESS[DEPUTY])
        granting = account is None or role not in account.roles
        if variant == 2:
            granting = not granting
        sender = "auditor" if variant == WRONG_SENDER else "regulator"
        cosigner = "ministry" if i_role % 2 else "central-bank"
        cosigners = () if variant == MISSING_COSIGNER else (cosigner,)
        op = "grant_role" if granting else "revoke_role"
        args = {"account": ADDRESS[DEPUTY], "role": role}
        if granting:
            # The deputy is the regulator's second key (its first grant binds it for good).
            args["institution"] = "regulator"
        self.submit(sender, op, args, cosigners)

    @rule(i_name=PICKS, u=st.integers(0, 2), variant=VARIANTS)
    def set_parameter(self, i_name: int, u: int, variant: int) -> None:
        name = pick(
            (
                "closed_period_days",
                "reserve_max_age_s",
                "programme_cap_usd_cents",
                "investor_categories",
            ),
            i_name,
        )
        outstanding = self.shadow.programme.outstanding_usd_cents
        value = {
            "closed_period_days": (5, 15, 30)[u],
            "reserve_max_age_s": (86_400, 30 * 86_400, 90 * 86_400)[u],
            # below what is outstanding (refused unless nothing is), the start, a raise
            "programme_cap_usd_cents": (
                max(outstanding - 1, 1),
                PROGRAMME_CAP_USD_CENTS,
                PROGRAMME_CAP_USD_CENTS * 3 // 2,
            )[u],
            "investor_categories": [
                ["institutional", "professional", "retail"],
                ["institutional", "professional", "retail", "sovereign"],
                ["institutional", "professional", "retail"],
            ][u],
        }[name]
        sender = "auditor" if variant == WRONG_SENDER else "ministry"
        cosigners = () if variant == MISSING_COSIGNER else ("central-bank",)
        self.submit(sender, "set_parameter", {"name": name, "value": value}, cosigners)

    @rule(strict=st.booleans(), variant=VARIANTS)
    def set_policy(self, strict: bool, variant: int) -> None:
        """Toggle who may pause: issuers and the regulator (the default) or the regulator only."""
        roles = ["regulator"] if strict else ["cash_issuer", "issuer", "regulator"]
        args = {"operation": "pause_instrument", "roles": roles, "min": 1}
        cosigners = (
            ("central-bank",) if variant == MISSING_COSIGNER else ("central-bank", "regulator")
        )
        self.submit("ministry", "set_policy", args, cosigners)

    @rule(ahead=st.integers(-1, 1), variant=VARIANTS)
    def schedule_upgrade(self, ahead: int, variant: int) -> None:
        """Schedule the version after the one in force (or, `ahead` < 1, one that is not
        newer) for a height far beyond any run, so the chain never reaches it: activation and
        a node too old to go on are tests/ledger/test_protocol_versions.py's."""
        version = self.shadow.protocol_version + ahead
        if version < 1:
            version = 1
        args = {"version": version, "height": 10**9}
        cosigners = (
            ("central-bank",) if variant == MISSING_COSIGNER else ("central-bank", "regulator")
        )
        self.submit("ministry", "schedule_upgrade", args, cosigners)

    @rule(add=st.booleans(), variant=VARIANTS)
    def change_validators(self, add: bool, variant: int) -> None:
        change = {
            "name": "observer",
            "public_key": key_for("validator-observer").public_key,
            "power": 10 if add else 0,
        }
        if variant >= 3 and len(self.shadow.validator_set.pending) >= MAX_PENDING_CHANGES:
            return  # the node promotes pending changes, not a transaction: the queue stays full
        cosigners = ("regulator",) if variant == MISSING_COSIGNER else ("regulator", "auditor")
        self.submit("ministry", "change_validators", {"changes": [change]}, cosigners)

    # ------------------------------------------------------------------ replay and restart

    @precondition(lambda self: self.applied)
    @rule(i_tx=PICKS)
    def replay(self, i_tx: int) -> None:
        raw, sender, public_key = pick(list(self.applied), i_tx)
        # Same key still in use: the nonce is the refusal. After a recovery the old key's
        # signature is refused first (step 4 of execute, before the nonce).
        expected = (
            Code.NONCE_USED
            if self.keys[sender].public_key == public_key
            else Code.SENDER_NOT_SIGNED
        )
        receipt = self.execute(raw, sender, "replay", {}, self.keys[sender])
        assert (receipt.code, receipt.executed) == (expected, False), receipt.log
        self.record.replays += 1

    # Reopening costs a full garbage collection (Chain.open ends with one, ~40 ms in a test
    # process): once some blocks have been added since the last time is often enough.
    @precondition(lambda self: self.chain.height >= self.reopened_at + REOPEN_EVERY)
    @rule()
    def reopen(self) -> None:
        """Close the node's database and open it again: nothing may have moved."""
        self.reopened_at = self.chain.height
        self.record.held_back = max(self.record.held_back, self.chain.store.state.held_back)
        app_hash, height = self.chain.app_hash, self.chain.height
        last_hash = self.chain.last_block_hash
        balances = {
            (i, a): h.balance
            for i, holdings in sorted(self.chain.state.holdings.items())
            for a, h in sorted(holdings.items())
        }
        self.chain.close()
        self.chain = Chain.open(self.path, GENESIS, store_options=self.store_options)
        assert (self.chain.app_hash, self.chain.height) == (app_hash, height)
        assert self.chain.last_block_hash == last_hash
        reopened = {
            (i, a): h.balance
            for i, holdings in sorted(self.chain.state.holdings.items())
            for a, h in sorted(holdings.items())
        }
        assert reopened == balances
        assert list(self.chain.state.items()) == list(self.shadow.items())
        self.record.reopens += 1

    # ------------------------------------------------------------------ after every step

    @invariant()
    def the_ledger_is_sound(self) -> None:
        assert supply_violations(self.shadow) == []
        assert cap_violations(self.shadow) == []
        assert self.shadow.invariant_violations() == []
        assert frozen_units(self.shadow) == self.frozen_model
        frozen = {a for a, account in self.shadow.accounts.items() if account.frozen is not None}
        assert frozen == self.frozen_accounts
        # The node's chain and the shadow agree on every record and on the commitment.
        assert list(self.chain.state.items()) == list(self.shadow.items())
        assert self.chain.app_hash == StateTree.from_items(self.shadow.items()).root
        # The supervision index, summed block by block from the writes as they happened
        # (rolled-back transactions and abandoned proposals included), is a full recount.
        assert supervision_index(self.chain) == supervision_recount(self.shadow)


def supervision_index(chain: Chain) -> tuple[list, list]:
    """The index's current figures of every non-empty group, and its frozen list."""
    figures = chain.store.db.read_with(
        lambda conn: conn.execute(
            "SELECT instrument, dimension, grp, total, holders FROM sup_groups AS g"
            " WHERE height = (SELECT max(height) FROM sup_groups WHERE instrument ="
            " g.instrument AND dimension = g.dimension AND grp = g.grp)"
            " AND (total != 0 OR holders != 0) ORDER BY instrument, dimension, grp"
        ).fetchall()
    )
    frozen = chain.store.db.read_with(
        lambda conn: conn.execute(
            "SELECT address, instrument FROM sup_frozen ORDER BY address, instrument"
        ).fetchall()
    )
    return figures, frozen


def supervision_recount(state) -> tuple[list, list]:
    """The same, counted from scratch over the state's holdings and accounts."""
    figures = full_snapshot(state, 0).changed()
    frozen = [(a, "") for a, account in state.accounts.items() if account.frozen is not None]
    frozen += [
        (a, i) for i, holders in state.holdings.items() for a, h in holders.items() if h.frozen
    ]
    return figures, sorted(frozen)


# About 20 s of CPU (roughly 10 ms a step: two executions, an SQLite commit on tmpfs, the
# checks); CI derandomizes through the conftest profile, which these settings inherit.
LedgerMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=100)
TestLedgerMachine = LedgerMachine.TestCase


class SlicedLedgerMachine(LedgerMachine):
    """The same machine on a store that holds changes back from its first reopening on: the
    genesis state (a few dozen rows) is cut into up to 8 slices, the indexes into 4, so the
    state log, its replay and the held-back index rows run under every operation."""

    store_options: ClassVar[dict[str, int]] = {
        "rows_per_slice": 4,
        "max_slices": 8,
        "index_slices": 4,
    }


SlicedLedgerMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=100)
TestSlicedLedgerMachine = SlicedLedgerMachine.TestCase


def test_the_sliced_machine_runs_with_changes_held_back():
    class Recording(SlicedLedgerMachine):
        recorder = Recorder()

    run_state_machine_as_test(
        Recording,
        settings=settings(
            max_examples=5,
            stateful_step_count=100,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
    )
    # Reopenings happened with state changes held back (so replay was exercised too).
    assert Recording.recorder.reopens and Recording.recorder.held_back > 0


# ---------------------------------------------------------------------------------------
# Does the machine reach the hard parts?

# Refusals a fixed run must reach. Codes that random traffic meets only once or twice in a run
# (which one depends on the exact draws, and the draws move whenever the ledger or the machine
# changes) are asked for as groups: the run must reach the rule family, and every single code
# is shown deterministically by the operation tests (tests/ledger/test_ops_*.py).
REFUSALS_EXPECTED = {
    "INSTRUMENT_PAUSED",
    "ACCOUNT_FROZEN",
    "INSUFFICIENT_UNFROZEN_BALANCE",
    "INSUFFICIENT_BALANCE",
    "KYC_EXPIRED",
    "VASP_SUSPENDED",
    "PROGRAMME_CAP",
    "MISSING_APPROVALS",
    "UNAUTHORIZED",
    "NONCE_USED",
    "SENDER_NOT_SIGNED",
    "INSTRUMENT_MATURED",
    "COUPON_UNPAID",
    "NONCE_GAP",
}
REFUSAL_FAMILIES = {
    "investor eligibility and limits": {
        "COUNTRY_NOT_ALLOWED",
        "CATEGORY_NOT_ALLOWED",
        "HOLDER_LIMIT",
        "BALANCE_LIMIT",
    },
    "coupon calendar": {"COUPON_NOT_DUE", "CLOSED_PERIOD"},
    "caps and reserves": {"INSTRUMENT_CAP", "RESERVE_STALE", "RESERVE_EXCEEDED"},
}


def test_a_fixed_run_reaches_every_operation_and_the_hard_refusals():
    class Recording(LedgerMachine):
        recorder = Recorder()

    run_state_machine_as_test(
        Recording,
        settings=settings(
            max_examples=30,
            stateful_step_count=100,
            derandomize=True,  # a fixed seed: the same run every time, everywhere
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
    )
    seen = Recording.recorder
    # A sukuk's payments under their own names (version 3) are pay_coupon and redeem, which
    # this machine reaches; their tests are tests/ledger/test_ops_debt.py's, as are those of
    # calls and amortisation (this machine's bonds have neither call nor amortisation terms).
    exempt = {"pay_rental", "dissolve_sukuk", "call_bond", "amortise"}
    missing_ops = sorted(set(OPERATIONS) - set(seen.accepted) - exempt)
    assert not missing_ops, f"never accepted: {missing_ops}"
    missing_codes = sorted(REFUSALS_EXPECTED - set(seen.codes))
    assert not missing_codes, f"never refused with: {missing_codes} (saw {dict(seen.codes)})"
    for family, codes in REFUSAL_FAMILIES.items():
        assert codes & set(seen.codes), f"no refusal of the {family} rules: {dict(seen.codes)}"
    assert len(seen.codes) >= 20, dict(seen.codes)
    accepted, refused = sum(seen.accepted.values()), sum(seen.refused.values())
    # Meaningful traffic: most transactions go through, a good share is refused.
    assert accepted > refused > accepted // 5, (accepted, refused)
    assert seen.replays and seen.reopens
    # Attempts on frozen units got as far as the freeze itself, not only earlier checks.
    assert seen.frozen_moves["INSUFFICIENT_UNFROZEN_BALANCE"], seen.frozen_moves


# ---------------------------------------------------------------------------------------
# Negative controls: the checks can see a violation


def test_the_invariant_checks_see_a_corrupted_state():
    machine = LedgerMachine()
    try:
        machine.open_the_market()
        machine.the_ledger_is_sound()  # sound as set up
        state = machine.shadow
        investor = next(iter(state.holdings[BOND_ID]))
        held = state.holdings[BOND_ID][investor]

        # A balance bumped without supply.
        state.put_holding(BOND_ID, investor, Holding(held.balance + 1, held.frozen))
        assert supply_violations(state) == [
            f"{BOND_ID}: supply {state.instruments[BOND_ID].supply} != balances "
            f"{state.instruments[BOND_ID].supply + 1}"
        ]
        with pytest.raises(AssertionError):
            machine.the_ledger_is_sound()

        # Frozen above the balance (with supply kept right).
        state.put_holding(BOND_ID, investor, Holding(held.balance, held.balance + 1))
        assert len(supply_violations(state)) == 1
        # A frozen amount the model did not expect.
        state.put_holding(BOND_ID, investor, Holding(held.balance, 1))
        assert supply_violations(state) == []
        assert frozen_units(state) != machine.frozen_model

        # Supply beyond the cap (balances kept in step): the cap check sees it.
        state.put_holding(BOND_ID, investor, held)
        instrument = state.instruments[BOND_ID]
        from dataclasses import replace

        state.put_instrument(replace(instrument, cap=instrument.supply - 1))
        assert cap_violations(state) == [
            f"{BOND_ID}: supply {instrument.supply} > cap {instrument.supply - 1}"
        ]
    finally:
        machine.teardown()


def test_a_frozen_account_losing_units_is_caught():
    machine = LedgerMachine()
    try:
        machine.open_the_market()
        investor = ADDRESS[INVESTOR_NAMES[0]]
        watched = {(CASH_ID, investor): machine.shadow.balance(CASH_ID, investor) + 5}
        with pytest.raises(AssertionError, match="lost 5 units"):
            machine.check_frozen_accounts_kept(watched, "transfer", {}, Code.OK)
        # The same loss by a forced transfer from the account is what the rules allow.
        args = {"instrument": CASH_ID, "from": investor}
        machine.check_frozen_accounts_kept(watched, "forced_transfer", args, Code.OK)
    finally:
        machine.teardown()


def _debit_ignoring_freezes(state, instrument_id, address, amount):
    """`common.debit` with the freeze check left out: a broken ledger for the test below."""
    holding = state.holdings[instrument_id].get(address)
    if holding is None or holding.balance < amount:
        raise InvalidTransaction(Code.INSUFFICIENT_BALANCE, "not enough units")
    if holding.balance == amount:
        return None
    return Holding(holding.balance - amount, holding.frozen)


@pytest.mark.parametrize(
    ("breakage", "caught_by"),
    [
        (None, None),
        ("frozen units move", "frozen 4000 outside"),  # the supply/frozen invariant
        ("investor rules ignored", "accepted against the investor rules"),  # compliance check
    ],
)
def test_the_machine_catches_a_ledger_that_breaks_the_rules(monkeypatch, breakage, caught_by):
    """Freeze part of a holding (or a whole account), then try to move it. The real ledger
    refuses; a ledger broken on purpose accepts, and the machine's checks must fail."""
    if breakage == "frozen units move":
        monkeypatch.setattr(transfers, "debit", _debit_ignoring_freezes)
    elif breakage == "investor rules ignored":
        monkeypatch.setattr(transfers, "check_eligible", lambda *args, **kwargs: None)
    holder, receiver = "inv-pk-pro-a", "inv-pk-inst-b"  # both long-lived KYC, PK, eligible
    machine = LedgerMachine()
    try:
        machine.open_the_market()
        if breakage == "investor rules ignored":
            freeze = machine._freeze_args(ADDRESS[holder])
        else:
            freeze = machine._freeze_args(ADDRESS[holder], instrument=BOND_ID, amount=4_000)
        receipt = machine.submit("regulator", "freeze", freeze)
        assert receipt.code == Code.OK, receipt.log
        machine.the_ledger_is_sound()
        move = {"instrument": BOND_ID, "to": ADDRESS[receiver], "amount": 2_000}  # 1,000 free
        if breakage is None:
            receipt = machine.submit(holder, "transfer", move)
            assert receipt.code in (Code.ACCOUNT_FROZEN, Code.INSUFFICIENT_UNFROZEN_BALANCE)
            machine.the_ledger_is_sound()
        else:
            with pytest.raises(AssertionError, match=caught_by):
                machine.submit(holder, "transfer", move)
                machine.the_ledger_is_sound()
    finally:
        machine.teardown()
