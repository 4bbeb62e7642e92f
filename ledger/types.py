"""The ledger's record types: what one state key holds, and what a transaction leaves behind.

Every record is a frozen, slotted dataclass with two conversions:

* `to_map()` -> a dict with str keys holding only ints, strs, bytes, bools, None, lists and
  dicts, ready for `codec.encode`. Every map is built in sorted key order, so the hot paths
  can use `codec.encode_presorted` (no walk) and get the same bytes; keep new fields in
  order (`tests/ledger/test_codec_fast.py` fails otherwise). Decimal quantities (coupon rates) travel as strings and
  dates as ISO `YYYY-MM-DD` strings: the codec has no floats and no dates, on purpose.
* `from_map(m)` -> the record back. Stored records come from our own store (not from peers),
  but they are still read strictly: a missing or ill-typed field is a `ValueError`, because a
  store holding garbage must stop the node rather than be interpreted.

Records are replaced, never mutated: an operation builds a new record (`dataclasses.replace`
or a small `with_...` helper on hot paths) and hands it to `State`. Where a record is keyed is
`ledger/state.py`'s business; these classes do not know their own keys.

Also here: the role names, and `BlockContext` (the block a transaction executes in). What
execution reports, `Event` and `Receipt`, is `ledger/receipts.py`'s (importable from here too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from ledger.debt_terms import DebtTerms

# What execution reports lives in ledger/receipts.py; named here too, where most callers look.
from ledger.receipts import BALANCE_CHANGE as BALANCE_CHANGE
from ledger.receipts import Event as Event
from ledger.receipts import Receipt as Receipt

# ---------------------------------------------------------------------------------------
# Roles

ISSUER = "issuer"  # the finance ministry: registers and issues bonds, T-bills, commodities
REGISTRAR = "registrar"  # keeps the register of holders (central bank)
PAYING_AGENT = "paying_agent"  # pays coupons and redemptions (central bank)
CASH_ISSUER = "cash_issuer"  # issues the cash token (central bank)
REGULATOR = "regulator"
RESERVE_CUSTODIAN = "reserve_custodian"  # attests commodity reserves
VASP = "vasp"  # a licensed virtual-asset service provider
INVESTOR = "investor"
VALIDATOR_OPERATOR = "validator_operator"
AUDITOR = "auditor"  # reads everything, may attest

ALL_ROLES = frozenset(
    {
        ISSUER,
        REGISTRAR,
        PAYING_AGENT,
        CASH_ISSUER,
        REGULATOR,
        RESERVE_CUSTODIAN,
        VASP,
        INVESTOR,
        VALIDATOR_OPERATOR,
        AUDITOR,
    }
)

# Institutions are identified by the law that created them, not by a KYC file: an account
# holding any of these roles is exempt from the investor checks (KYC, country, category,
# VASP link). A VASP is exempt while licensed; when suspended its own transfers stop too.
INSTITUTION_ROLES = ALL_ROLES - {INVESTOR}

# Instrument kinds
BOND = "bond"
TBILL = "tbill"
COMMODITY = "commodity"
CASH = "cash"
INSTRUMENT_KINDS = (BOND, TBILL, COMMODITY, CASH)

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def date_to_text(value: date) -> str:
    return value.isoformat()


def date_from_text(text: object) -> date:
    """Parse a strict ISO `YYYY-MM-DD` date (Python 3.11 also accepts `YYYYMMDD`; we do not)."""
    if type(text) is not str or not _DATE_RE.fullmatch(text):
        raise ValueError(f"expected a YYYY-MM-DD date, got {text!r:.40}")
    return date.fromisoformat(text)


def _opt_date(text: object) -> date | None:
    return None if text is None else date_from_text(text)


def _opt_text(m: dict, name: str) -> str:
    """A text field that is absent from the map when empty (fields added after records)."""
    return _typed(m, name, str) if name in m else ""


def _opt_date_text(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _typed(m: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    value = m[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"field {name!r} has type {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------
# Accounts


@dataclass(frozen=True, slots=True)
class Kyc:
    """An investor's eligibility file, attested by the regulator or the investor's VASP."""

    country: str  # ISO 3166-1 alpha-2
    category: str  # one of the `investor_categories` parameter, e.g. "retail"
    expiry: date  # valid up to and including this day (UTC, block time)
    attested_by: bytes  # address of the regulator or VASP that attested it
    vasp: bytes | None  # the investor's VASP; its suspension stops this investor

    def to_map(self) -> dict:
        return {
            "attested_by": self.attested_by,
            "category": self.category,
            "country": self.country,
            "expiry": self.expiry.isoformat(),
            "vasp": self.vasp,
        }

    @classmethod
    def from_map(cls, m: dict) -> Kyc:
        return cls(
            country=_typed(m, "country", str),
            category=_typed(m, "category", str),
            expiry=date_from_text(m["expiry"]),
            attested_by=_typed(m, "attested_by", bytes),
            vasp=None if m["vasp"] is None else _typed(m, "vasp", bytes),
        )


@dataclass(frozen=True, slots=True)
class Freeze:
    """Why an account or an amount is frozen: a reason code and the legal reference."""

    reason_code: int
    legal_reference: str
    height: int  # when the freeze was decided

    def to_map(self) -> dict:
        return {
            "height": self.height,
            "legal_reference": self.legal_reference,
            "reason_code": self.reason_code,
        }

    @classmethod
    def from_map(cls, m: dict) -> Freeze:
        return cls(
            reason_code=_typed(m, "reason_code", int),
            legal_reference=_typed(m, "legal_reference", str),
            height=_typed(m, "height", int),
        )


@dataclass(frozen=True, slots=True)
class Account:
    """One account: its authorised key, next nonce, roles, institution, KYC file and freeze.

    `public_key` is None until a key recovery: the authorised key is then the one whose
    address is `address` (addresses are derived from keys). After a recovery it holds the
    new key and the address stays.

    `name` is the institution the account belongs to ("" for none), see `institution`.
    """

    address: bytes
    nonce: int = 0  # the nonce the next transaction from this account must carry
    public_key: bytes | None = None
    roles: tuple[str, ...] = ()  # sorted
    name: str = ""  # the institution it belongs to ("" none); set once, never changed
    kyc: Kyc | None = None
    frozen: Freeze | None = None
    # The ids of the instruments the account holds units of (sorted): kept by the state
    # (`State.put_holding`), never by an operation. It makes the account record name all of
    # its holdings, so a proven account proves which balances are complete.
    instruments: tuple[str, ...] = ()

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def institution(self) -> str:
        """The institution this account's key speaks for, "" for none.

        Stored as the record's `name` (so a state written before institutions were counted
        reads the same): the genesis sets it on each institution's client account, a
        `grant_role` that names an institution sets it on an account that has none, and
        nothing changes it afterwards (not a revocation, not a key recovery). Approval rules
        count these, never keys (`ledger.ops.common.require_approvals`).
        """
        return self.name

    @property
    def is_institution(self) -> bool:
        return not INSTITUTION_ROLES.isdisjoint(self.roles)

    def with_nonce(self, nonce: int) -> Account:
        # The hot path of every transaction; avoids dataclasses.replace's introspection.
        return self._with(nonce, self.instruments)

    def with_instruments(self, instruments: tuple[str, ...]) -> Account:
        """For `State` only, which keeps the list (a holding's first and last unit)."""
        return self._with(self.nonce, instruments)

    def _with(self, nonce: int, instruments: tuple[str, ...]) -> Account:
        return Account(
            self.address,
            nonce,
            self.public_key,
            self.roles,
            self.name,
            self.kyc,
            self.frozen,
            instruments,
        )

    def to_map(self) -> dict:
        return {
            "address": self.address,
            "frozen": None if self.frozen is None else self.frozen.to_map(),
            "instruments": list(self.instruments),
            "kyc": None if self.kyc is None else self.kyc.to_map(),
            "name": self.name,
            "nonce": self.nonce,
            "public_key": self.public_key,
            "roles": list(self.roles),
        }

    @classmethod
    def from_map(
        cls,
        m: dict,
        *,
        kycs: dict[Kyc, Kyc] | None = None,
        instrument_sets: dict[tuple[str, ...], tuple[str, ...]] | None = None,
    ) -> Account:
        """`kycs`, `instrument_sets`: equal KYC files and instrument lists seen so far; the
        account shares them if it can (loading a large state: most investors share country,
        category, expiry and attester, and hold the same one or two instruments)."""
        kyc = None if m["kyc"] is None else Kyc.from_map(m["kyc"])
        if kyc is not None and kycs is not None:
            kyc = kycs.setdefault(kyc, kyc)
        instruments = tuple(_typed(m, "instruments", list))
        if not all(type(i) is str for i in instruments) or list(instruments) != sorted(
            set(instruments)
        ):
            raise ValueError("account instruments must be distinct strs in sorted order")
        if instrument_sets is not None:
            instruments = instrument_sets.setdefault(instruments, instruments)
        return cls(
            address=_typed(m, "address", bytes),
            nonce=_typed(m, "nonce", int),
            public_key=None if m["public_key"] is None else _typed(m, "public_key", bytes),
            roles=tuple(_typed(m, "roles", list)),
            name=_typed(m, "name", str),
            kyc=kyc,
            frozen=None if m["frozen"] is None else Freeze.from_map(m["frozen"]),
            instruments=instruments,
        )


@dataclass(frozen=True, slots=True)
class Holding:
    """Units of one instrument held by one account; `frozen` of them cannot move (<= balance)."""

    balance: int
    frozen: int = 0

    def to_map(self) -> dict:
        return {"balance": self.balance, "frozen": self.frozen}

    @classmethod
    def from_map(cls, m: dict) -> Holding:
        return cls(balance=_typed(m, "balance", int), frozen=_typed(m, "frozen", int))


@dataclass(frozen=True, slots=True)
class KeyBinding:
    """A recovered key -> the account it now authorises (its address no longer says so)."""

    address: bytes

    def to_map(self) -> dict:
        return {"address": self.address}

    @classmethod
    def from_map(cls, m: dict) -> KeyBinding:
        return cls(address=_typed(m, "address", bytes))


# ---------------------------------------------------------------------------------------
# Instruments


@dataclass(frozen=True, slots=True)
class Instrument:
    """An instrument's definition (fixed at registration) and its live status.

    Amounts of an instrument are integer units. `face_value` is the redemption value of one
    unit in minor units of `currency`; `usd_face_value` is the same in US cents, fixed at
    registration, and is what the programme cap counts (the cash token is outside the cap).
    """

    id: str
    kind: str  # bond | tbill | commodity | cash
    name: str
    isin: str | None
    currency: str  # ISO 4217
    face_value: int  # minor units of `currency` per unit
    decimals: int  # display only: one displayed unit = 10**decimals units
    cap: int  # maximum outstanding units
    usd_face_value: int  # US cents per unit (0 for the cash token)
    issuer: bytes  # the account that registered it and alone may issue and burn it
    issue_date: date | None = None
    maturity_date: date | None = None
    coupon_rate: str = "0"  # a decimal fraction as text: "0.05" is 5 %
    coupon_frequency: int = 0  # coupons per year (bonds)
    day_count: str = ""  # a bondmath.DayCount value (bonds)
    unit: str = ""  # what one unit is, for commodities ("bbl", "troy oz")
    allowed_countries: tuple[str, ...] = ()  # empty: every country
    allowed_categories: tuple[str, ...] = ()  # empty: every category
    max_holders: int = 0  # 0: no limit
    max_balance: int = 0  # per holder, 0: no limit
    supply: int = 0  # outstanding units
    paused: bool = False
    redeemed: bool = False
    next_coupon: date | None = None  # the next unpaid coupon date (bonds)
    last_coupon_paid: date | None = None
    registered_height: int = 0
    # Schedule as issued (bonds; issue 18). Defaults are the rule before these fields existed
    # (dates rolled back from maturity, month ends kept iff maturity is one) and are left out
    # of the encoded map, so records written before them encode byte for byte as they did.
    first_coupon_date: date | None = None  # a long (or regular) first coupon ending here
    penultimate_coupon_date: date | None = None  # an odd last coupon starting here
    end_of_month: str = ""  # "" (month end iff the anchor is one), "yes" or "no"
    business_day_convention: str = ""  # "" (unadjusted) or a business_days.CONVENTIONS name
    holiday_calendar: str = ""  # the HolidayCalendar id that convention uses ("" none)
    terms: DebtTerms | None = None  # protocol version 3's terms (ledger/debt_terms.py)

    def to_map(self) -> dict:
        m = {
            "allowed_categories": list(self.allowed_categories),
            "allowed_countries": list(self.allowed_countries),
            "cap": self.cap,
            "coupon_frequency": self.coupon_frequency,
            "coupon_rate": self.coupon_rate,
            "currency": self.currency,
            "day_count": self.day_count,
            "decimals": self.decimals,
            "face_value": self.face_value,
            "id": self.id,
            "isin": self.isin,
            "issue_date": _opt_date_text(self.issue_date),
            "issuer": self.issuer,
            "kind": self.kind,
            "last_coupon_paid": _opt_date_text(self.last_coupon_paid),
            "maturity_date": _opt_date_text(self.maturity_date),
            "max_balance": self.max_balance,
            "max_holders": self.max_holders,
            "name": self.name,
            "next_coupon": _opt_date_text(self.next_coupon),
            "paused": self.paused,
            "redeemed": self.redeemed,
            "registered_height": self.registered_height,
            "supply": self.supply,
            "unit": self.unit,
            "usd_face_value": self.usd_face_value,
        }
        # Optional schedule fields: present only when set (see the field comments), merged
        # back into sorted key order for `codec.encode_presorted`.
        extra: dict = {}
        if self.first_coupon_date is not None:
            extra["first_coupon_date"] = self.first_coupon_date.isoformat()
        if self.penultimate_coupon_date is not None:
            extra["penultimate_coupon_date"] = self.penultimate_coupon_date.isoformat()
        if self.end_of_month:
            extra["end_of_month"] = self.end_of_month
        if self.business_day_convention:
            extra["business_day_convention"] = self.business_day_convention
        if self.holiday_calendar:
            extra["holiday_calendar"] = self.holiday_calendar
        if self.terms is not None:
            extra["terms"] = self.terms.to_map()
        return dict(sorted({**m, **extra}.items())) if extra else m

    @classmethod
    def from_map(cls, m: dict) -> Instrument:
        return cls(
            id=_typed(m, "id", str),
            kind=_typed(m, "kind", str),
            name=_typed(m, "name", str),
            isin=None if m["isin"] is None else _typed(m, "isin", str),
            currency=_typed(m, "currency", str),
            face_value=_typed(m, "face_value", int),
            decimals=_typed(m, "decimals", int),
            cap=_typed(m, "cap", int),
            usd_face_value=_typed(m, "usd_face_value", int),
            issuer=_typed(m, "issuer", bytes),
            issue_date=_opt_date(m["issue_date"]),
            maturity_date=_opt_date(m["maturity_date"]),
            coupon_rate=_typed(m, "coupon_rate", str),
            coupon_frequency=_typed(m, "coupon_frequency", int),
            day_count=_typed(m, "day_count", str),
            unit=_typed(m, "unit", str),
            allowed_countries=tuple(_typed(m, "allowed_countries", list)),
            allowed_categories=tuple(_typed(m, "allowed_categories", list)),
            max_holders=_typed(m, "max_holders", int),
            max_balance=_typed(m, "max_balance", int),
            supply=_typed(m, "supply", int),
            paused=_typed(m, "paused", bool),
            redeemed=_typed(m, "redeemed", bool),
            next_coupon=_opt_date(m["next_coupon"]),
            last_coupon_paid=_opt_date(m["last_coupon_paid"]),
            registered_height=_typed(m, "registered_height", int),
            first_coupon_date=_opt_date(m.get("first_coupon_date")),
            penultimate_coupon_date=_opt_date(m.get("penultimate_coupon_date")),
            end_of_month=_opt_text(m, "end_of_month"),
            business_day_convention=_opt_text(m, "business_day_convention"),
            holiday_calendar=_opt_text(m, "holiday_calendar"),
            terms=DebtTerms.from_map(m["terms"]) if "terms" in m else None,
        )


@dataclass(frozen=True, slots=True)
class ReserveAttestation:
    """The latest attested physical reserve behind a commodity instrument, in its units."""

    instrument: str
    quantity: int
    document_hash: bytes  # 32 bytes: hash of the custodian's signed report
    custodian: bytes
    time_ms: int  # block time of the attestation; staleness is measured from here
    height: int

    def to_map(self) -> dict:
        return {
            "custodian": self.custodian,
            "document_hash": self.document_hash,
            "height": self.height,
            "instrument": self.instrument,
            "quantity": self.quantity,
            "time_ms": self.time_ms,
        }

    @classmethod
    def from_map(cls, m: dict) -> ReserveAttestation:
        return cls(
            instrument=_typed(m, "instrument", str),
            quantity=_typed(m, "quantity", int),
            document_hash=_typed(m, "document_hash", bytes),
            custodian=_typed(m, "custodian", bytes),
            time_ms=_typed(m, "time_ms", int),
            height=_typed(m, "height", int),
        )


@dataclass(frozen=True, slots=True)
class HolidayCalendar:
    """An issuer's business-day calendar: weekend weekdays and dated holidays (issue 18).

    Bonds name it (`Instrument.holiday_calendar`) to move payment dates off non-business days.
    Only its owner (the issuer that created it) changes it, by `set_holiday_calendar`.
    """

    id: str
    owner: bytes
    weekend: tuple[str, ...]  # weekday names, ISO order: ("sat", "sun")
    holidays: tuple[date, ...]  # ascending, no repeats
    height: int  # when it last changed

    def to_map(self) -> dict:
        return {
            "height": self.height,
            "holidays": [day.isoformat() for day in self.holidays],
            "id": self.id,
            "owner": self.owner,
            "weekend": list(self.weekend),
        }

    @classmethod
    def from_map(cls, m: dict) -> HolidayCalendar:
        return cls(
            id=_typed(m, "id", str),
            owner=_typed(m, "owner", bytes),
            weekend=tuple(_typed(m, "weekend", list)),
            holidays=tuple(date_from_text(day) for day in _typed(m, "holidays", list)),
            height=_typed(m, "height", int),
        )


@dataclass(frozen=True, slots=True)
class Vasp:
    """A virtual-asset service provider's licence. Suspension stops it and its clients."""

    address: bytes
    name: str
    suspended: bool
    reason: str
    height: int  # when the status last changed

    def to_map(self) -> dict:
        return {
            "address": self.address,
            "height": self.height,
            "name": self.name,
            "reason": self.reason,
            "suspended": self.suspended,
        }

    @classmethod
    def from_map(cls, m: dict) -> Vasp:
        return cls(
            address=_typed(m, "address", bytes),
            name=_typed(m, "name", str),
            suspended=_typed(m, "suspended", bool),
            reason=_typed(m, "reason", str),
            height=_typed(m, "height", int),
        )


# ---------------------------------------------------------------------------------------
# Chain-wide records


@dataclass(frozen=True, slots=True)
class Parameters:
    """Parameters changed on chain by `set_parameter` (institutions' approvals)."""

    closed_period_days: int = 15  # record date = coupon/maturity date minus this
    reserve_max_age_s: int = 30 * 86_400  # a reserve attestation older than this is stale
    investor_categories: tuple[str, ...] = ("retail", "professional", "institutional")

    def to_map(self) -> dict:
        return {
            "closed_period_days": self.closed_period_days,
            "investor_categories": list(self.investor_categories),
            "reserve_max_age_s": self.reserve_max_age_s,
        }

    @classmethod
    def from_map(cls, m: dict) -> Parameters:
        return cls(
            closed_period_days=_typed(m, "closed_period_days", int),
            reserve_max_age_s=_typed(m, "reserve_max_age_s", int),
            investor_categories=tuple(_typed(m, "investor_categories", list)),
        )


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """Who must sign an operation: signers from `min` distinct institutions, each signer
    holding one of `roles` (`Account.institution`; keys of no institution count for none).

    The sender counts as one of them when it holds such a role; it must always hold one.
    A rule with `min` 1 needs only the sender's role.
    """

    roles: tuple[str, ...]
    min: int

    def to_map(self) -> dict:
        return {"min": self.min, "roles": list(self.roles)}

    @classmethod
    def from_map(cls, m: dict) -> ApprovalRule:
        return cls(roles=tuple(_typed(m, "roles", list)), min=_typed(m, "min", int))


@dataclass(frozen=True, slots=True)
class Policy:
    """Operation name -> ApprovalRule. Genesis data, changed only by `set_policy`."""

    rules: dict[str, ApprovalRule] = field(default_factory=dict)

    def to_map(self) -> dict:
        return {"rules": {op: self.rules[op].to_map() for op in sorted(self.rules)}}

    @classmethod
    def from_map(cls, m: dict) -> Policy:
        rules = _typed(m, "rules", dict)
        return cls(rules={op: ApprovalRule.from_map(rule) for op, rule in rules.items()})


@dataclass(frozen=True, slots=True)
class Programme:
    """The legal programme cap and what counts against it, in US cents of face value."""

    cap_usd_cents: int
    outstanding_usd_cents: int = 0

    def to_map(self) -> dict:
        return {
            "cap_usd_cents": self.cap_usd_cents,
            "outstanding_usd_cents": self.outstanding_usd_cents,
        }

    @classmethod
    def from_map(cls, m: dict) -> Programme:
        return cls(
            cap_usd_cents=_typed(m, "cap_usd_cents", int),
            outstanding_usd_cents=_typed(m, "outstanding_usd_cents", int),
        )


@dataclass(frozen=True, slots=True)
class Validator:
    name: str
    public_key: bytes  # Ed25519, 32 bytes
    power: int  # 0 in a change means "remove"

    def to_map(self) -> dict:
        return {"name": self.name, "power": self.power, "public_key": self.public_key}

    @classmethod
    def from_map(cls, m: dict) -> Validator:
        return cls(
            name=_typed(m, "name", str),
            public_key=_typed(m, "public_key", bytes),
            power=_typed(m, "power", int),
        )


@dataclass(frozen=True, slots=True)
class PendingValidatorChange:
    """A validator-set change decided at `decided_height`; the node applies it after a delay."""

    decided_height: int
    changes: tuple[Validator, ...]

    def to_map(self) -> dict:
        return {
            "changes": [v.to_map() for v in self.changes],
            "decided_height": self.decided_height,
        }

    @classmethod
    def from_map(cls, m: dict) -> PendingValidatorChange:
        return cls(
            decided_height=_typed(m, "decided_height", int),
            changes=tuple(Validator.from_map(v) for v in _typed(m, "changes", list)),
        )


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """The genesis validators and the changes decided since (oldest first)."""

    validators: tuple[Validator, ...]
    pending: tuple[PendingValidatorChange, ...] = ()

    def to_map(self) -> dict:
        return {
            "pending": [p.to_map() for p in self.pending],
            "validators": [v.to_map() for v in self.validators],
        }

    @classmethod
    def from_map(cls, m: dict) -> ValidatorSet:
        return cls(
            validators=tuple(Validator.from_map(v) for v in _typed(m, "validators", list)),
            pending=tuple(PendingValidatorChange.from_map(p) for p in _typed(m, "pending", list)),
        )


# ---------------------------------------------------------------------------------------
# The block a transaction runs in

_EPOCH = date(1970, 1, 1)
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class BlockContext:
    """The block a transaction executes in: chain id, height and the header's time.

    Time is the agreed header time in milliseconds since the Unix epoch, never a local clock.
    `date` is its UTC calendar day, which KYC expiry, maturity and closed periods compare to.
    """

    chain_id: str
    height: int
    time_ms: int
    date: date = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "date", _EPOCH + timedelta(days=self.time_ms // _MS_PER_DAY))
