"""What every operation shares: argument parsing, approvals, and the investor checks.

An operation is a function `op(state, ctx, tx, args) -> list[Event]` that

1. parses `args` (`Args`: BAD_FIELD naming the field),
2. checks the sender's roles and the institutions' approvals (`require_approvals`),
3. checks every compliance and asset rule,
4. and only then writes.

It raises `InvalidTransaction` (through `fail`) at the first broken rule, before any write,
so a refused transaction changes nothing (the executor still consumes its nonce).
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from typing import NoReturn

from ledger.codes import Code, InvalidTransaction
from ledger.crypto import address_from_public_key, address_to_text
from ledger.ops.paydates import next_payment, record_date_for
from ledger.state import State
from ledger.types import (
    VASP,
    Account,
    BlockContext,
    Holding,
    Instrument,
    date_from_text,
)

MAX_AMOUNT = 2**63 - 1
MAX_TEXT = 256
COUNTRY_RE = re.compile(r"[A-Z]{2}")
# ISO 3166-1 alpha-2, the 249 officially assigned codes.
COUNTRIES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
    """.split()
)
INSTRUMENT_ID_RE = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,31}")


# Deriving an address hashes the key; the same few thousand keys sign again and again, so
# remember them (a pure function of its argument: caching cannot change any result).
address_of = lru_cache(maxsize=1 << 16)(address_from_public_key)


def fail(code: Code, message: str) -> NoReturn:
    raise InvalidTransaction(code, message)


@lru_cache(maxsize=1 << 14)
def show(address: bytes) -> str:
    """An address as users know it (bech32m `kz1...`), for messages. Cached: the bech32m
    checksum is pure-Python arithmetic, and the mempool's dry runs refuse the same few
    senders' stale nonces again and again (a pure function: caching changes no result)."""
    return address_to_text(address)


# ---------------------------------------------------------------------------------------
# The transaction as operations see it


class TxView:
    """The sender and the signers of the transaction being executed.

    `signer_accounts()` resolves each signing key to the account it currently authorises
    (after a key recovery the new key, never the old one); it is computed only when an
    operation needs approvals or a counterparty's signature, which keeps transfers cheap.
    """

    __slots__ = ("sender", "account", "public_keys", "_signers")

    def __init__(self, sender: bytes, account: Account, public_keys: tuple[bytes, ...]) -> None:
        self.sender = sender
        self.account = account  # the sender's account before this transaction
        self.public_keys = public_keys
        self._signers: dict[bytes, Account] | None = None

    def signer_accounts(self, state: State) -> dict[bytes, Account]:
        if self._signers is None:
            signers: dict[bytes, Account] = {}
            for public_key in self.public_keys:
                account = state.account_for_key(public_key, address_of(public_key))
                if account is not None:
                    signers[account.address] = account
            self._signers = signers
        return self._signers


# ---------------------------------------------------------------------------------------
# Arguments


class Args:
    """Typed access to an operation's `args` map; every problem is BAD_FIELD naming the field.

    Call `done()` last: a field no getter asked for is refused, so a misspelt optional field
    is an error rather than silently ignored.
    """

    __slots__ = ("_args", "_seen")

    def __init__(self, args: dict) -> None:
        self._args = args
        self._seen: list[str] = []

    def _get(self, name: str) -> object:
        # Operations read each field once (done() relies on it).
        self._seen.append(name)
        try:
            return self._args[name]
        except KeyError:
            fail(Code.BAD_FIELD, f"missing field {name!r}")

    def has(self, name: str) -> bool:
        return name in self._args

    def integer(self, name: str, *, lo: int = 0, hi: int = MAX_AMOUNT) -> int:
        value = self._get(name)
        if type(value) is not int or not lo <= value <= hi:
            fail(Code.BAD_FIELD, f"{name} must be an integer in [{lo}, {hi}], got {value!r:.40}")
        return value

    def opt_integer(self, name: str, *, default: int, lo: int = 0, hi: int = MAX_AMOUNT) -> int:
        return self.integer(name, lo=lo, hi=hi) if self.has(name) else self._skip(name, default)

    def amount(self, name: str = "amount") -> int:
        value = self._get(name)
        if type(value) is not int:
            fail(Code.BAD_FIELD, f"{name} must be an integer, got {value!r:.40}")
        if not 0 < value <= MAX_AMOUNT:
            fail(Code.INVALID_AMOUNT, f"{name} must be positive and at most 2**63-1, got {value}")
        return value

    def text(self, name: str, *, pattern: re.Pattern | None = None, max_len: int = MAX_TEXT) -> str:
        value = self._get(name)
        if type(value) is not str or not 0 < len(value) <= max_len:
            fail(Code.BAD_FIELD, f"{name} must be text of 1 to {max_len} chars, got {value!r:.40}")
        if pattern is not None and not pattern.fullmatch(value):
            fail(Code.BAD_FIELD, f"{name} {value!r:.40} does not match {pattern.pattern}")
        return value

    def opt_text(
        self, name: str, *, default: str, pattern: re.Pattern | None = None, max_len: int = MAX_TEXT
    ) -> str:
        if not self.has(name):
            return self._skip(name, default)
        return self.text(name, pattern=pattern, max_len=max_len)

    def country(self, name: str) -> str:
        value = self.text(name, pattern=COUNTRY_RE, max_len=2)
        if value not in COUNTRIES:
            fail(Code.BAD_FIELD, f"{name} {value!r} is not an ISO 3166-1 alpha-2 country code")
        return value

    def countries(self, name: str) -> tuple[str, ...]:
        """An optional list of countries (empty when absent)."""
        values = self.text_list(name, pattern=COUNTRY_RE, optional=True, max_items=len(COUNTRIES))
        unknown = sorted(set(values) - COUNTRIES)
        if unknown:
            fail(Code.BAD_FIELD, f"{name}: {unknown} are not ISO 3166-1 alpha-2 country codes")
        return values

    def address(self, name: str) -> bytes:
        value = self._get(name)
        if type(value) is not bytes or len(value) != 20:
            fail(Code.BAD_FIELD, f"{name} must be a 20-byte address, got {value!r:.60}")
        return value

    def opt_address(self, name: str) -> bytes | None:
        return self.address(name) if self.has(name) else self._skip(name, None)

    def blob(self, name: str, size: int) -> bytes:
        value = self._get(name)
        if type(value) is not bytes or len(value) != size:
            fail(Code.BAD_FIELD, f"{name} must be {size} bytes, got {value!r:.60}")
        return value

    def day(self, name: str) -> date:
        value = self._get(name)
        try:
            return date_from_text(value)
        except ValueError as exc:
            fail(Code.BAD_FIELD, f"{name}: {exc}")

    def opt_day(self, name: str) -> date | None:
        return self.day(name) if self.has(name) else self._skip(name, None)

    def _skip(self, name: str, default):
        return default  # an absent optional field: nothing was read

    def text_list(
        self, name: str, *, pattern: re.Pattern, max_items: int = 64, optional: bool = False
    ) -> tuple[str, ...]:
        if optional and not self.has(name):
            return self._skip(name, ())
        value = self._get(name)
        if type(value) is not list or len(value) > max_items:
            fail(Code.BAD_FIELD, f"{name} must be a list of at most {max_items} texts")
        for item in value:
            if type(item) is not str or not pattern.fullmatch(item):
                fail(Code.BAD_FIELD, f"{name}: {item!r:.40} does not match {pattern.pattern}")
        if len(set(value)) != len(value):
            fail(Code.BAD_FIELD, f"{name} lists an entry twice")
        return tuple(sorted(value))

    def raw(self, name: str) -> object:
        return self._get(name)

    def raw_peek(self, name: str) -> object:
        """A present field's value without reading it (its getter still must): for an
        operation that delegates to another after a look at one field."""
        value = self._args[name]
        return value if type(value) is str else None

    def done(self) -> None:
        # `_seen` lists the fields read, each present and read once; so when the counts are
        # equal no field was left unread, and only otherwise is the set difference needed.
        if len(self._args) != len(self._seen):
            unknown = self._args.keys() - set(self._seen)
            if unknown:
                fail(Code.BAD_FIELD, f"unknown field(s) {sorted(unknown)}")


# ---------------------------------------------------------------------------------------
# Authorisation


def require_approvals(state: State, tx: TxView, op_name: str) -> None:
    """The policy rule for `op_name`: the sender holds one of its roles, and signers (the
    sender included) from `min` distinct INSTITUTIONS hold one too. No rule means nobody may.

    Institutions, not keys: every key of one institution counts once together, and a key
    that belongs to no institution (`Account.institution` is "") counts for none, whatever
    its roles. So however many keys an institution holds, a rule with `min` 2 needs a second
    institution's signature. A rule with `min` 1 needs only the sender's role (a VASP, which
    belongs to no institution, onboards its own investors)."""
    rule = state.policy.rules.get(op_name)
    if rule is None:
        fail(Code.UNAUTHORIZED, f"the policy has no rule for {op_name!r}: nobody may send it")
    roles = rule.roles
    if not any(role in roles for role in tx.account.roles):
        fail(
            Code.UNAUTHORIZED,
            f"{op_name} needs a sender with one of the roles {list(roles)}; "
            f"{show(tx.sender)} holds {list(tx.account.roles)}",
        )
    if rule.min <= 1:
        return
    if state.protocol_version < 2:
        _require_approving_keys_v1(state, tx, op_name, rule.min, roles)
        return
    counted = approving_institutions(state, tx, roles)
    if len(counted) < rule.min:
        fail(
            Code.MISSING_APPROVALS,
            f"{op_name} needs signers from {rule.min} institutions holding {list(roles)}, "
            f"got {len(counted)}: {counted} ({len(tx.public_keys)} keys signed; keys of one "
            f"institution count once, keys of no institution not at all)",
        )


def _require_approving_keys_v1(
    state: State, tx: TxView, op_name: str, minimum: int, roles: tuple[str, ...]
) -> None:
    """Protocol version 1's rule (ledger/protocol.py), kept so that a chain started before
    version 2 replays as it ran: `minimum` distinct signing ACCOUNTS holding the roles."""
    approvers = sorted(
        address
        for address, account in tx.signer_accounts(state).items()
        if any(role in roles for role in account.roles)
    )
    if len(approvers) < minimum:
        fail(
            Code.MISSING_APPROVALS,
            f"{op_name} needs {minimum} signers holding {list(roles)}, "
            f"got {len(approvers)}: {[show(a) for a in approvers]}",
        )


def approving_institutions(state: State, tx: TxView, roles: tuple[str, ...]) -> list[str]:
    """The distinct institutions (sorted) of the signers that hold one of `roles`."""
    return sorted(
        {
            account.institution
            for account in tx.signer_accounts(state).values()
            if account.institution and any(role in roles for role in account.roles)
        }
    )


def signed_by_institution(state: State, tx: TxView, institution: str) -> bool:
    """Whether a key of `institution` that still holds a role signed the transaction (an
    account stripped of all its roles no longer speaks for its institution)."""
    return any(
        account.institution == institution and account.roles
        for account in tx.signer_accounts(state).values()
    )


def require_role(account: Account, role: str, what: str) -> None:
    if role not in account.roles:
        fail(Code.UNAUTHORIZED, f"{what} needs the {role!r} role; {show(account.address)} lacks it")


# ---------------------------------------------------------------------------------------
# Lookups


def get_instrument(state: State, instrument_id: str) -> Instrument:
    instrument = state.instruments.get(instrument_id)
    if instrument is None:
        fail(Code.INSTRUMENT_NOT_FOUND, f"no instrument {instrument_id!r}")
    return instrument


def get_account(state: State, address: bytes, what: str = "account") -> Account:
    account = state.accounts.get(address)
    if account is None:
        fail(Code.ACCOUNT_NOT_FOUND, f"{what} {show(address)} does not exist")
    return account


def instrument_id_arg(args: Args, name: str = "instrument") -> str:
    return args.text(name, pattern=INSTRUMENT_ID_RE, max_len=32)


# ---------------------------------------------------------------------------------------
# Instrument state


def record_date(state: State, instrument: Instrument) -> date | None:
    """The start of the current closed period, or None if the instrument has none.

    Bonds close before their next unpaid coupon; T-bills (and bonds, whose last coupon
    falls on maturity) before maturity. The period lasts until the payment is made, so the
    register the paying agent pays from is the register at the record date. When it starts:
    `paydates.record_date_for` (business days before the payment date for a bond whose terms
    say so, else `closed_period_days` calendar days before the scheduled date).
    """
    target = next_payment(instrument)
    if target is None:
        return None
    return record_date_for(state, instrument, target)


def check_movable(state: State, ctx: BlockContext, instrument: Instrument) -> None:
    """Units of `instrument` may change hands: not paused, not matured, not in a closed period."""
    if instrument.paused:
        fail(Code.INSTRUMENT_PAUSED, f"instrument {instrument.id} is paused")
    if instrument.maturity_date is not None and ctx.date >= instrument.maturity_date:
        fail(
            Code.INSTRUMENT_MATURED,
            f"instrument {instrument.id} matured on {instrument.maturity_date} "
            f"(block date {ctx.date})",
        )
    terms = instrument.terms
    if terms is not None and terms.called_on is not None and ctx.date >= terms.called_on:
        fail(
            Code.INSTRUMENT_MATURED,
            f"instrument {instrument.id} was called for {terms.called_on} (block date {ctx.date})",
        )
    start = record_date(state, instrument)
    if start is not None and ctx.date >= start:
        fail(
            Code.CLOSED_PERIOD,
            f"instrument {instrument.id} is in its closed period since the record date "
            f"{start} (block date {ctx.date})",
        )


# ---------------------------------------------------------------------------------------
# Investor checks


def check_eligible(
    state: State, ctx: BlockContext, account: Account, instrument: Instrument, receiving: bool
) -> None:
    """May `account` move (or, with `receiving`, receive) units of `instrument` now?

    Institutions are exempt from KYC, country and category (they are identified by law, not
    by a KYC file); a VASP's own licence still counts. Investors need a KYC file valid at the
    block date, a VASP that is not suspended, and (to receive) a country and category the
    instrument allows.
    """
    if account.frozen is not None:
        fail(
            Code.ACCOUNT_FROZEN,
            f"account {show(account.address)} is frozen "
            f"(reason {account.frozen.reason_code}, {account.frozen.legal_reference})",
        )
    if account.is_institution:
        if VASP in account.roles:
            check_vasp_active(state, account.address)
        return
    kyc = account.kyc
    if kyc is None:
        fail(Code.KYC_MISSING, f"account {show(account.address)} has no KYC file")
    if ctx.date > kyc.expiry:
        fail(
            Code.KYC_EXPIRED,
            f"KYC of {show(account.address)} expired on {kyc.expiry} (block date {ctx.date})",
        )
    if kyc.vasp is not None:
        check_vasp_active(state, kyc.vasp, client=account.address)
    if receiving:
        if instrument.allowed_countries and kyc.country not in instrument.allowed_countries:
            fail(
                Code.COUNTRY_NOT_ALLOWED,
                f"{instrument.id} is not open to investors from {kyc.country} "
                f"(allowed: {list(instrument.allowed_countries)})",
            )
        if instrument.allowed_categories and kyc.category not in instrument.allowed_categories:
            fail(
                Code.CATEGORY_NOT_ALLOWED,
                f"{instrument.id} is not open to {kyc.category} investors "
                f"(allowed: {list(instrument.allowed_categories)})",
            )


def check_vasp_active(state: State, vasp_address: bytes, client: bytes | None = None) -> None:
    vasp = state.vasps.get(vasp_address)
    if vasp is None or vasp.suspended:
        status = "not licensed" if vasp is None else f"suspended ({vasp.reason})"
        whose = "" if client is None else f", the VASP of {show(client)},"
        fail(Code.VASP_SUSPENDED, f"VASP {show(vasp_address)}{whose} is {status}")


def check_limits(
    state: State, instrument: Instrument, receiver: Account, amount: int, sender_leaves: bool
) -> None:
    """Holder-count and per-holder balance limits of `instrument` for `receiver` getting
    `amount`; `sender_leaves` when the sending holder is left with nothing (one out, one in)."""
    holdings = state.holdings[instrument.id]
    current = holdings.get(receiver.address)
    if (
        instrument.max_holders
        and current is None
        and not sender_leaves
        and len(holdings) >= instrument.max_holders
    ):
        fail(
            Code.HOLDER_LIMIT,
            f"{instrument.id} already has {len(holdings)} holders, "
            f"the limit is {instrument.max_holders}",
        )
    if instrument.max_balance and not receiver.is_institution:
        new_balance = amount + (0 if current is None else current.balance)
        if new_balance > instrument.max_balance:
            fail(
                Code.BALANCE_LIMIT,
                f"{show(receiver.address)} would hold {new_balance} units of {instrument.id}, "
                f"the limit per holder is {instrument.max_balance}",
            )


def debit(state: State, instrument_id: str, address: bytes, amount: int) -> Holding | None:
    """The holding of `address` after sending `amount`, refusing what is not free to move."""
    holding = state.holdings[instrument_id].get(address)
    if holding is None or holding.balance < amount:
        balance = 0 if holding is None else holding.balance
        fail(
            Code.INSUFFICIENT_BALANCE,
            f"{show(address)} holds {balance} units of {instrument_id}, needs {amount}",
        )
    balance, frozen = holding.balance, holding.frozen
    if balance - frozen < amount:
        fail(
            Code.INSUFFICIENT_UNFROZEN_BALANCE,
            f"{show(address)} holds {balance} units of {instrument_id} of which "
            f"{frozen} are frozen; {amount} requested",
        )
    if balance == amount:
        return None
    return Holding(balance - amount, frozen)


def credit(state: State, instrument_id: str, address: bytes, amount: int) -> Holding:
    holding = state.holdings[instrument_id].get(address)
    if holding is None:
        return Holding(amount, 0)
    return Holding(holding.balance + amount, holding.frozen)
