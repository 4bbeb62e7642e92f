"""The records of a debt office's instruments added by protocol version 3 (issue 18).

`DebtTerms` is what a bond's record holds besides the fixed-coupon fields of `Instrument`:
the record-date rule in business days, the floating-rate terms of a floating-rate note (FRN),
and the sukuk form. It is one optional field of `Instrument` (`terms`), absent from the
record's map when the bond has none of them, so a bond registered before version 3 encodes
byte for byte as it did. Inside the map only the terms a bond has are present.

`RateFixing` is a rate the central bank published on chain (`publish_rate_fixing`): an index
name, the date it is the rate of, the rate, and the hash of the document that published it
(the auction result, the press release). Floating-rate notes reset their coupon from it.

Pure records: no arithmetic here (see `ledger/bondmath.py`, `ledger/ops/debt.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

__all__ = ["SUKUK_FORMS", "DebtTerms", "RateFixing", "fixing_key", "FIXING"]

FIXING = b"f"  # state namespace of rate fixings

SUKUK_FORMS = ("ijara",)
"""Sukuk structures the ledger pays: Ijara (lease) sukuk, rental each period and dissolution
at maturity."""


def _typed(m: dict, name: str, kind: type) -> Any:
    value = m[name]
    if type(value) is not kind:
        raise ValueError(f"field {name!r} has type {type(value).__name__}")
    return value


def fixing_key(name: str, day: date) -> bytes:
    """b"f" + len(name) + name + YYYY-MM-DD: one index's fixings are one contiguous range."""
    raw = name.encode("ascii")
    return FIXING + bytes((len(raw),)) + raw + day.isoformat().encode("ascii")


@dataclass(frozen=True, slots=True)
class DebtTerms:
    """A bond's issue-18 terms (every field's default: the term is absent).

    * `record_business_days`: the record date is this many business days (of the bond's
      holiday calendar) before the payment date; 0: `closed_period_days` calendar days before
      the unadjusted date, the rule before version 3.
    * `rate_index` (floating-rate notes): the name of the published fixing the coupon resets
      from; `spread_bp` the margin over it in basis points (may be negative); `fixing_days`
      how many business days (calendar days without a holiday calendar) before a period's
      start its rate is fixed; `fixing_lookback_days`: when nothing is published for the
      fixing date itself, the latest fixing of at most this many calendar days earlier.
    * `redemption_price`: the percentage of face paid at maturity ("" at par, 100).
    * `call_notice_days` (> 0: callable): the issuer may call the bond on a coupon date at
      least this many days after the call; `call_price` the percentage of face it then pays;
      `called_on` the call date once called (status, not a term: set by `call_bond`).
    * `amortisation` (amortising bonds): ((date, percent), ...): on each of these coupon
      dates before maturity `percent` (decimal text, at most 6 decimals) of the original face
      is repaid, the rest at maturity; `amortised` how many of them are paid (status, set by
      `amortise`). Coupons are paid on the face outstanding over their period. From version 4
      an amortising bond may be callable (a call redeems the face outstanding on the call
      date at the call price; parts from the call date on are not paid) or priced.
    * `sukuk`: "" (a bond) or a `SUKUK_FORMS` name: the same cash flows named as the
      structure names them (rental for coupon, dissolution for redemption, certificate
      holders for holders); `sukuk_asset` describes the leased asset the certificates
      represent an undivided ownership share of.
    """

    record_business_days: int = 0
    rate_index: str = ""
    spread_bp: int = 0
    fixing_days: int = 0
    fixing_lookback_days: int = 0
    sukuk: str = ""
    sukuk_asset: str = ""  # the leased asset the certificates represent (sukuk only)
    redemption_price: str = ""  # percent of face paid at maturity ("" par)
    call_notice_days: int = 0  # callable by its issuer with this notice (0: not callable)
    call_price: str = ""  # percent of face paid on a call
    called_on: date | None = None  # the call date once the issuer has called it
    amortisation: tuple[tuple[date, str], ...] = ()  # (coupon date, percent of original face)
    amortised: int = 0  # how many of `amortisation` are paid

    @property
    def amortising(self) -> bool:
        return bool(self.amortisation)

    @property
    def callable(self) -> bool:
        return self.call_notice_days > 0

    @property
    def floating(self) -> bool:
        return bool(self.rate_index)

    def to_map(self) -> dict:
        m: dict = {}
        if self.amortising:
            m["amortisation"] = [[day.isoformat(), percent] for day, percent in self.amortisation]
            m["amortised"] = self.amortised
        if self.callable:
            m["call_notice_days"] = self.call_notice_days
            m["call_price"] = self.call_price
        if self.called_on is not None:
            m["called_on"] = self.called_on.isoformat()
        if self.floating:
            m["fixing_days"] = self.fixing_days
            m["fixing_lookback_days"] = self.fixing_lookback_days
            m["rate_index"] = self.rate_index
        if self.record_business_days:
            m["record_business_days"] = self.record_business_days
        if self.redemption_price:
            m["redemption_price"] = self.redemption_price
        if self.floating:
            m["spread_bp"] = self.spread_bp
        if self.sukuk:
            m["sukuk"] = self.sukuk
            m["sukuk_asset"] = self.sukuk_asset
        return m

    @classmethod
    def from_map(cls, m: object) -> DebtTerms:
        if not isinstance(m, dict):
            raise ValueError("terms must be a map")
        floating = "rate_index" in m
        amortisation: list[tuple[date, str]] = []
        if "amortisation" in m:
            for entry in _typed(m, "amortisation", list):
                if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str:
                    raise ValueError("amortisation entries are [date, percent]")
                if type(entry[1]) is not str:
                    raise ValueError("amortisation percent must be text")
                amortisation.append((date.fromisoformat(entry[0]), entry[1]))
        return cls(
            amortisation=tuple(amortisation),
            amortised=_typed(m, "amortised", int) if "amortisation" in m else 0,
            record_business_days=_typed(m, "record_business_days", int)
            if "record_business_days" in m
            else 0,
            rate_index=_typed(m, "rate_index", str) if floating else "",
            spread_bp=_typed(m, "spread_bp", int) if floating else 0,
            fixing_days=_typed(m, "fixing_days", int) if floating else 0,
            fixing_lookback_days=_typed(m, "fixing_lookback_days", int) if floating else 0,
            sukuk=_typed(m, "sukuk", str) if "sukuk" in m else "",
            sukuk_asset=_typed(m, "sukuk_asset", str) if "sukuk" in m else "",
            redemption_price=_typed(m, "redemption_price", str) if "redemption_price" in m else "",
            call_notice_days=_typed(m, "call_notice_days", int) if "call_notice_days" in m else 0,
            call_price=_typed(m, "call_price", str) if "call_notice_days" in m else "",
            called_on=date.fromisoformat(_typed(m, "called_on", str)) if "called_on" in m else None,
        )


@dataclass(frozen=True, slots=True)
class RateFixing:
    """A published rate: index `name`, the `day` it is the rate of, `rate` (a decimal fraction
    as text, `bondmath.parse_rate`: "0.1125" is 11.25 %), the publishing document's hash."""

    name: str
    day: date
    rate: str
    document_hash: bytes  # 32 bytes
    publisher: bytes
    height: int

    def to_map(self) -> dict:
        return {
            "date": self.day.isoformat(),
            "document_hash": self.document_hash,
            "height": self.height,
            "name": self.name,
            "publisher": self.publisher,
            "rate": self.rate,
        }

    @classmethod
    def from_map(cls, m: dict) -> RateFixing:
        return cls(
            name=_typed(m, "name", str),
            day=date.fromisoformat(_typed(m, "date", str)),
            rate=_typed(m, "rate", str),
            document_hash=_typed(m, "document_hash", bytes),
            publisher=_typed(m, "publisher", bytes),
            height=_typed(m, "height", int),
        )
