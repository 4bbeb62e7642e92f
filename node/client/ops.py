"""The client's table of every ledger operation and its arguments (`OPS`), and the checks
that turn keyword arguments into an `Operation` in wire form (`build`).

`OPS` is the single source of truth on the client side: `TxBuilder` (node/client/builders.py,
one method per operation with named, typed parameters) checks and converts its keyword
arguments through it, and the `khazana tx` command line generates one sub-command per
entry (with `--name value` flags and help) from it. A test checks that it names exactly the
operations of `ledger.ops.OPERATIONS`.

Conventions: amounts and counts are ints (never floats), dates ISO `YYYY-MM-DD` text (a
`datetime.date` is accepted too), addresses `kz1...` text (20 raw bytes accepted), 32-byte
values hex text (bytes accepted). Wire forms follow `ledger/ops/*.py`: addresses and hashes
travel as bytes, dates as ISO text. Checks here catch typos before signing; the ledger
remains the judge of every rule (a value this module passes may still be refused with a
compliance code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from ledger.codes import LedgerError
from ledger.crypto import address_from_text, address_to_text
from ledger.tx import TxBody

# Argument kinds: how a value is checked and put on the wire, and how the CLI parses it.
ADDRESS = "address"  # kz1 text -> 20 bytes
AMOUNT = "amount"  # int > 0
# What an amount is, for the command line's help and its refusal of "0.50".
AMOUNT_HINT = (
    "amounts are integers in the instrument's minor units (its `decimals` say where the point "
    "goes: with 2 decimals, 0.50 is 50; `khazana query instrument ID` shows them)"
)
INT = "int"  # int >= 0
TEXT = "text"
DATE = "date"  # ISO date text
LIST = "list"  # list of texts (CLI: comma-separated)
HASH32 = "hash32"  # 32 bytes (CLI: 64 hex chars)
JSON = "json"  # any JSON value (CLI: JSON text)
VALIDATORS = "validators"  # [{name, public_key (hex), power}] -> public_key bytes on the wire


@dataclass(frozen=True, slots=True)
class ArgSpec:
    name: str  # the field name in the transaction's args
    kind: str
    help: str
    required: bool = True

    @property
    def param(self) -> str:
        """The Python keyword (`from` is a keyword: `from_`)."""
        return "from_" if self.name == "from" else self.name


@dataclass(frozen=True, slots=True)
class OpSpec:
    name: str
    help: str
    args: tuple[ArgSpec, ...]


def _a(name: str, kind: str, help: str, required: bool = True) -> ArgSpec:
    return ArgSpec(name, kind, help, required)


_INSTRUMENT = _a("instrument", TEXT, "instrument id, e.g. USD-BOND-2031")
_REASON_CODE = _a("reason_code", INT, "numeric reason code (0-65535)")
_LEGAL_REF = _a("legal_reference", TEXT, "the court order or legal act")

OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec(
            "transfer",
            "move units from the sender to another account",
            (_INSTRUMENT, _a("to", ADDRESS, "recipient"), _a("amount", AMOUNT, "units")),
        ),
        OpSpec(
            "dvp",
            "delivery versus payment: asset seller->buyer and cash buyer->seller, both or none",
            (
                _a("seller", ADDRESS, "the asset's seller"),
                _a("buyer", ADDRESS, "the asset's buyer"),
                _a("asset", TEXT, "asset instrument id"),
                _a("asset_amount", AMOUNT, "asset units"),
                _a("cash", TEXT, "cash token id"),
                _a("cash_amount", AMOUNT, "cash units"),
            ),
        ),
        OpSpec(
            "forced_transfer",
            "move units by legal order (maker-checker: regulator + issuer by default)",
            (
                _INSTRUMENT,
                _a("from", ADDRESS, "account the units leave"),
                _a("to", ADDRESS, "recipient"),
                _a("amount", AMOUNT, "units"),
                _REASON_CODE,
                _LEGAL_REF,
            ),
        ),
        OpSpec(
            "register_instrument",
            "define a bond, tbill, commodity or cash token",
            (
                _a("id", TEXT, "instrument id (A-Z 0-9 . -)"),
                _a("kind", TEXT, "bond | tbill | commodity | cash"),
                _a("name", TEXT, "human name"),
                _a("currency", TEXT, "ISO 4217 code"),
                _a("face_value", INT, "minor currency units per unit (1 for cash)"),
                _a("decimals", INT, "display decimals"),
                _a("cap", INT, "maximum units outstanding"),
                _a("allowed_countries", LIST, "ISO country codes allowed to hold", False),
                _a("allowed_categories", LIST, "investor categories allowed to hold", False),
                _a("max_holders", INT, "holder limit (0: none)", False),
                _a("max_balance", INT, "per-investor balance limit (0: none)", False),
                _a("usd_face_value", INT, "US cents per unit (not for cash)", False),
                _a("isin", TEXT, "ISIN (bond, tbill; optional for commodity)", False),
                _a("issue_date", DATE, "issue date (bond, tbill)", False),
                _a("maturity_date", DATE, "maturity date (bond, tbill)", False),
                _a("coupon_rate", TEXT, "decimal fraction, e.g. 0.045 (bond)", False),
                _a("coupon_frequency", INT, "coupons per year: 1, 2, 4, 12 (bond)", False),
                _a("day_count", TEXT, "day count convention (bond)", False),
                _a("unit", TEXT, "physical unit, e.g. barrel (commodity)", False),
                _a("first_coupon_date", DATE, "first coupon date, on the grid (bond)", False),
                _a(
                    "penultimate_coupon_date",
                    DATE,
                    "last coupon date before maturity (bond)",
                    False,
                ),
                _a("end_of_month", TEXT, "yes | no: coupon dates at month ends (bond)", False),
                _a(
                    "business_day_convention",
                    TEXT,
                    "following | modified_following | preceding (bond)",
                    False,
                ),
                _a("holiday_calendar", TEXT, "the issuer's calendar id (bond)", False),
                _a(
                    "record_business_days",
                    INT,
                    "record date: business days before payment (bond, version 3)",
                    False,
                ),
                _a("rate_index", TEXT, "floating-rate note: the fixing it resets from", False),
                _a("spread_bp", JSON, "floating-rate note: spread in basis points", False),
                _a("fixing_days", INT, "floating-rate note: business days fixed before", False),
                _a(
                    "fixing_lookback_days",
                    INT,
                    "floating-rate note: days an earlier fixing may stand in",
                    False,
                ),
                _a("sukuk", TEXT, "ijara: an Ijara sukuk (rental, dissolution)", False),
                _a("sukuk_asset", TEXT, "the leased asset (sukuk)", False),
                _a("redemption_price", TEXT, "percent of face at maturity, e.g. 101.5", False),
                _a("call_notice_days", INT, "callable by the issuer with this notice", False),
                _a("call_price", TEXT, "percent of face paid on a call", False),
                _a("amortisation", JSON, 'amortising: [["YYYY-MM-DD", "percent"], ...]', False),
            ),
        ),
        OpSpec(
            "publish_rate_fixing",
            "publish a rate fixing (central bank; protocol version 3)",
            (
                _a("name", TEXT, "index name, e.g. PKR-TB6M"),
                _a("date", DATE, "the date it is the rate of"),
                _a("rate", TEXT, "decimal fraction, e.g. 0.1125"),
                _a("document_hash", HASH32, "SHA-256 of the publishing document (hex)"),
            ),
        ),
        OpSpec(
            "set_holiday_calendar",
            "create or replace the issuer's business-day calendar",
            (
                _a("id", TEXT, "calendar id (A-Z 0-9 . -)"),
                _a("weekend", LIST, "weekday names: mon ... sun"),
                _a("holidays", LIST, "holiday dates YYYY-MM-DD"),
            ),
        ),
        OpSpec(
            "pause_instrument",
            "stop every movement of an instrument",
            (_INSTRUMENT, _a("reason", TEXT, "why")),
        ),
        OpSpec(
            "unpause_instrument",
            "let an instrument move again",
            (_INSTRUMENT, _a("reason", TEXT, "why")),
        ),
        OpSpec(
            "issue",
            "create units for an eligible account, within every cap",
            (_INSTRUMENT, _a("to", ADDRESS, "recipient"), _a("amount", AMOUNT, "units")),
        ),
        OpSpec(
            "burn",
            "destroy units the issuer holds",
            (_INSTRUMENT, _a("amount", AMOUNT, "units")),
        ),
        OpSpec(
            "attest_reserve",
            "record the reserve custodian's count of a commodity's reserve",
            (
                _INSTRUMENT,
                _a("quantity", INT, "units held in reserve"),
                _a("document_hash", HASH32, "SHA-256 of the attestation document (hex)"),
            ),
        ),
        OpSpec(
            "pay_coupon",
            "pay a bond's next coupon to every holder",
            (
                _INSTRUMENT,
                _a("cash", TEXT, "cash token id"),
                _a("coupon_date", DATE, "the coupon's date"),
            ),
        ),
        OpSpec(
            "redeem",
            "pay face value at maturity and burn the units",
            (_INSTRUMENT, _a("cash", TEXT, "cash token id")),
        ),
        OpSpec(
            "call_bond",
            "the issuer calls a callable bond on one of its coupon dates",
            (_INSTRUMENT, _a("call_date", DATE, "the coupon date it is redeemed on")),
        ),
        OpSpec(
            "amortise",
            "pay an amortising bond's scheduled partial redemption to every holder",
            (
                _INSTRUMENT,
                _a("cash", TEXT, "cash token id"),
                _a("date", DATE, "the scheduled coupon date of the partial redemption"),
            ),
        ),
        OpSpec(
            "pay_rental",
            "pay an Ijara sukuk's periodic rental to its certificate holders",
            (
                _INSTRUMENT,
                _a("cash", TEXT, "cash token id"),
                _a("coupon_date", DATE, "the rental's scheduled date"),
            ),
        ),
        OpSpec(
            "dissolve_sukuk",
            "pay an Ijara sukuk's dissolution amount at maturity and cancel the certificates",
            (_INSTRUMENT, _a("cash", TEXT, "cash token id")),
        ),
        OpSpec(
            "license_vasp",
            "license a virtual asset service provider",
            (_a("vasp", ADDRESS, "the VASP's account"), _a("name", TEXT, "its name")),
        ),
        OpSpec(
            "suspend_vasp",
            "suspend a VASP (its clients stop moving)",
            (_a("vasp", ADDRESS, "the VASP's account"), _a("reason", TEXT, "why")),
        ),
        OpSpec(
            "onboard_investor",
            "record an investor's KYC file",
            (
                _a("investor", ADDRESS, "the investor's account"),
                _a("country", TEXT, "ISO 3166-1 alpha-2"),
                _a("category", TEXT, "investor category, e.g. retail"),
                _a("kyc_expiry", DATE, "KYC expiry date"),
                _a("vasp", ADDRESS, "the investor's VASP", False),
            ),
        ),
        OpSpec(
            "freeze",
            "freeze an account, or an amount of one instrument in it",
            (
                _a("account", ADDRESS, "the account"),
                _REASON_CODE,
                _LEGAL_REF,
                _a("instrument", TEXT, "freeze only units of this instrument", False),
                _a("amount", AMOUNT, "units to freeze (with instrument)", False),
            ),
        ),
        OpSpec(
            "unfreeze",
            "lift a freeze",
            (
                _a("account", ADDRESS, "the account"),
                _REASON_CODE,
                _LEGAL_REF,
                _a("instrument", TEXT, "unfreeze only units of this instrument", False),
                _a("amount", AMOUNT, "units to unfreeze (with instrument)", False),
            ),
        ),
        OpSpec(
            "recover_key",
            "authorise a new key for an account (maker-checker)",
            (
                _a("account", ADDRESS, "the account"),
                _a("new_public_key", HASH32, "the new Ed25519 public key (hex)"),
            ),
        ),
        OpSpec(
            "grant_role",
            "give an account a role (maker-checker)",
            (
                _a("account", ADDRESS, "the account"),
                _a("role", TEXT, "role name"),
                _a(
                    "institution",
                    TEXT,
                    "the institution the account belongs to (needed, and must sign, when it "
                    "belongs to none yet)",
                    False,
                ),
            ),
        ),
        OpSpec(
            "revoke_role",
            "take a role from an account",
            (_a("account", ADDRESS, "the account"), _a("role", TEXT, "role name")),
        ),
        OpSpec(
            "set_parameter",
            "change a chain parameter",
            (
                _a("name", TEXT, "closed_period_days | reserve_max_age_s | ..."),
                _a("value", JSON, "the new value (JSON)"),
            ),
        ),
        OpSpec(
            "set_policy",
            "change who must approve one policy rule",
            (
                _a("operation", TEXT, "policy rule name"),
                _a("roles", LIST, "roles that may approve"),
                _a("min", INT, "distinct institutions needed"),
            ),
        ),
        OpSpec(
            "change_validators",
            "add, re-weight or remove validators",
            (_a("changes", VALIDATORS, 'JSON list of {"name", "public_key" (hex), "power"}'),),
        ),
        OpSpec(
            "schedule_upgrade",
            "bring a protocol version into force at a height (docs/PROTOCOL.md section 8)",
            (
                _a("version", INT, "the protocol version"),
                _a("height", INT, "the first block that runs it"),
            ),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Operation:
    """An operation and its args in wire form, not yet bound to a sender or a nonce."""

    op: str
    args: dict

    def body(self, chain_id: str, sender: bytes | str, nonce: int) -> TxBody:
        return TxBody(chain_id, to_address(sender, "sender"), nonce, self.op, self.args)


class BuildError(ValueError):
    """An argument that cannot be put into a transaction (names the field)."""


def to_address(value: Any, name: str) -> bytes:
    if isinstance(value, bytes) and len(value) == 20:
        return value
    if isinstance(value, str):
        try:
            return address_from_text(value)
        except LedgerError as exc:
            raise BuildError(f"{name}: {exc.message}") from None
    raise BuildError(f"{name} must be a kz1... address, got {value!r:.60}")


def _to_bytes32(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise BuildError(f"{name} must be 64 hex characters") from None
    if not isinstance(value, bytes) or len(value) != 32:
        raise BuildError(f"{name} must be 32 bytes (64 hex characters)")
    return value


def _to_int(value: Any, name: str, low: int) -> int:
    if type(value) is not int or value < low:
        raise BuildError(f"{name} must be an integer >= {low}, got {value!r:.40}")
    return value


def _to_date(value: Any, name: str) -> str:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise BuildError(f"{name} must be an ISO date YYYY-MM-DD, got {value!r:.40}")


def to_wire(spec: ArgSpec, value: Any) -> Any:
    """`value` checked for `spec.kind` and converted to its wire form."""
    name, kind = spec.name, spec.kind
    if kind == ADDRESS:
        return to_address(value, name)
    if kind == AMOUNT:
        return _to_int(value, name, 1)
    if kind == INT:
        return _to_int(value, name, 0)
    if kind == TEXT:
        if not isinstance(value, str) or not value:
            raise BuildError(f"{name} must be non-empty text")
        return value
    if kind == DATE:
        return _to_date(value, name)
    if kind == LIST:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise BuildError(f"{name} must be a list of texts")
        return list(value)
    if kind == HASH32:
        return _to_bytes32(value, name)
    if kind == JSON:
        if isinstance(value, float):
            raise BuildError(f"{name}: no floats on a ledger; use an integer or text")
        return value
    if kind == VALIDATORS:
        if not isinstance(value, (list, tuple)):
            raise BuildError(f"{name} must be a list of validator changes")
        changes = []
        for index, entry in enumerate(value):
            if not isinstance(entry, dict) or set(entry) != {"name", "public_key", "power"}:
                raise BuildError(f"{name}[{index}] needs exactly name, public_key, power")
            changes.append(
                {
                    "name": entry["name"],
                    "public_key": _to_bytes32(entry["public_key"], f"{name}[{index}].public_key"),
                    "power": _to_int(entry["power"], f"{name}[{index}].power", 0),
                }
            )
        return changes
    raise AssertionError(f"unknown argument kind {kind}")


def build(op: str, **params: Any) -> Operation:
    """The `Operation` for `op` from keyword parameters (None means absent)."""
    spec = OPS.get(op)
    if spec is None:
        raise BuildError(f"unknown operation {op!r}; known: {sorted(OPS)}")
    known = {arg.param: arg for arg in spec.args}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise BuildError(f"{op} has no argument(s) {unknown}; it takes {sorted(known)}")
    args = {}
    for arg in spec.args:
        value = params.get(arg.param)
        if value is None:
            if arg.required:
                raise BuildError(f"{op} needs {arg.name}")
            continue
        args[arg.name] = to_wire(arg, value)
    return Operation(op, args)


def args_to_json(args: dict) -> dict:
    """Wire args as readable JSON: addresses kz1 text, other bytes hex."""

    def show(value: Any) -> Any:
        if isinstance(value, bytes):
            return address_to_text(value) if len(value) == 20 else value.hex()
        if isinstance(value, dict):
            return {k: show(v) for k, v in value.items()}
        if isinstance(value, list):
            return [show(v) for v in value]
        return value

    return {name: show(value) for name, value in args.items()}


def parse_cli_value(spec: ArgSpec, text: str) -> Any:
    """A command-line string as the value `to_wire` expects for `spec`."""
    if spec.kind in (AMOUNT, INT):
        try:
            return int(text.replace("_", ""), 10)
        except ValueError:
            flag = f"--{spec.name.replace('_', '-')}"
            if spec.kind == AMOUNT:
                raise BuildError(
                    f"{flag} must be an integer: {AMOUNT_HINT}, got {text!r:.40}"
                ) from None
            raise BuildError(f"{flag} must be an integer") from None
    if spec.kind in (JSON, VALIDATORS):
        try:
            return json.loads(text, parse_float=_no_float)
        except ValueError as exc:
            raise BuildError(f"--{spec.name.replace('_', '-')} is not valid JSON: {exc}") from None
    return text


def _no_float(text: str) -> Any:
    raise ValueError(f"{text} is a float; the ledger takes integers")
