"""The world of the stateful ledger test: who exists, what the chain starts from, what must hold.

`tests/ledger/test_stateful.py` drives random sequences of every operation through a real
`ledger.chain.Chain` and a shadow in-memory `State`; this module holds what that machine
and its small companion tests share:

- the cast: the four institutions, two VASPs, eight investors in four countries and three
  categories (some under a VASP, some directly under the regulator), and helper accounts;
- the genesis (a deliberately small programme cap, so the cap is reachable in a short run)
  and the set-up instruments (a cash token, a bond, a T-bill, a gold token), with dates
  close to genesis so coupons, closed periods and maturity arrive within a run;
- the invariant checks, written here independently of `State.invariant_violations` so the
  test does not trust the code it tests to judge itself.

Nothing here touches a database or a clock: time is the block time the machine chooses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ledger.crypto import KeyPair, generate_key
from ledger.genesis import default_genesis
from ledger.ops.instruments import isin_is_valid
from ledger.state import State
from ledger.types import CASH

CHAIN_ID = "khazana-stateful"
GENESIS_DAY = date(2026, 1, 1)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

INSTITUTIONS = ("ministry", "central-bank", "regulator", "auditor")
VASPS = ("vasp-a", "vasp-b")
# An account that may be granted (and lose) institutional roles during a run.
DEPUTY = "deputy"
# An address with no account until someone onboards it: transfers to it are refused.
NEWCOMER = "newcomer"

# $600,000 of face value across the non-cash instruments: a few large issues reach it.
PROGRAMME_CAP_USD_CENTS = 60_000_000

CASH_ID = "PKR"
BOND_ID = "PKBOND-A"
TBILL_ID = "PKTB-A"
GOLD_ID = "PKGOLD"


@dataclass(frozen=True, slots=True)
class InvestorProfile:
    """An investor of the cast: where it lives, what it is, who vouches for it.

    `vasp` is the VASP the investor is a client of (None: held directly); `by_vasp` says the
    VASP onboards it itself rather than the regulator naming the VASP. `kyc_days` is how long
    after genesis its first KYC file expires, so expiry happens mid-run for some.
    """

    name: str
    country: str
    category: str
    vasp: str | None
    by_vasp: bool
    kyc_days: int


INVESTORS = (
    InvestorProfile("inv-pk-retail-a", "PK", "retail", "vasp-a", True, 30),
    InvestorProfile("inv-pk-pro-a", "PK", "professional", "vasp-a", False, 540),
    InvestorProfile("inv-ae-inst-a", "AE", "institutional", "vasp-a", True, 90),
    InvestorProfile("inv-gb-retail-b", "GB", "retail", "vasp-b", True, 600),
    InvestorProfile("inv-us-pro-b", "US", "professional", "vasp-b", False, 420),
    InvestorProfile("inv-pk-inst-b", "PK", "institutional", "vasp-b", True, 700),
    InvestorProfile("inv-pk-retail", "PK", "retail", None, False, 365),
    InvestorProfile("inv-ae-pro", "AE", "professional", None, False, 45),
)
INVESTOR_NAMES = tuple(p.name for p in INVESTORS)
COUNTRIES = ("PK", "AE", "GB", "US")
CATEGORIES = ("institutional", "professional", "retail")


def key_for(name: str) -> KeyPair:
    """The deterministic key of a cast member (or of a recovered key, named `name#n`)."""
    return generate_key(name.encode().ljust(32, b"\x00")[:32])


def day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def date_of(time_ms: int) -> date:
    return date(1970, 1, 1) + timedelta(days=time_ms // DAY_MS)


def make_isin(serial: int) -> str:
    """A valid ISIN ("PK" + nine digits + Luhn check digit) for the `serial`-th instrument."""
    body = f"PK{serial:09d}"
    for check in "0123456789":
        if isin_is_valid(body + check):
            return body + check
    raise AssertionError(f"no check digit makes {body} a valid ISIN")


def make_genesis() -> dict:
    return default_genesis(
        validators=[(name, key_for("validator-" + name).public_key) for name in INSTITUTIONS],
        institutions={name: key_for(name).address for name in INSTITUTIONS},
        chain_id=CHAIN_ID,
        genesis_time_ms=day_ms(GENESIS_DAY),
        programme_cap_usd_cents=PROGRAMME_CAP_USD_CENTS,
    )


# ---------------------------------------------------------------------------------------
# The set-up instruments: (sender, register_instrument args)

SETUP_INSTRUMENTS: tuple[tuple[str, dict], ...] = (
    (
        "central-bank",
        {
            "id": CASH_ID,
            "kind": "cash",
            "name": "Digital rupee",
            "currency": "PKR",
            "face_value": 1,
            "decimals": 2,
            "cap": 10**13,
        },
    ),
    (
        "ministry",
        {
            "id": BOND_ID,
            "kind": "bond",
            "name": "Sovereign bond, quarterly 8%",
            "isin": make_isin(1),
            "currency": "PKR",
            "face_value": 100_000,
            "decimals": 0,
            "cap": 200_000,
            "usd_face_value": 360,
            "issue_date": "2026-01-01",
            "maturity_date": "2026-07-01",
            "coupon_rate": "0.08",
            "coupon_frequency": 4,
            "day_count": "ACT/ACT-ICMA",
            "allowed_countries": ["AE", "GB", "PK"],  # not open to US investors
        },
    ),
    (
        "ministry",
        {
            "id": TBILL_ID,
            "kind": "tbill",
            "name": "T-bill, 2 months",
            "isin": make_isin(2),
            "currency": "PKR",
            "face_value": 100_000,
            "decimals": 0,
            "cap": 100_000,
            "usd_face_value": 360,
            "issue_date": "2026-01-01",
            "maturity_date": "2026-03-01",
            "allowed_categories": ["institutional", "professional"],  # no retail
            "max_holders": 4,
        },
    ),
    (
        "ministry",
        {
            "id": GOLD_ID,
            "kind": "commodity",
            "name": "Gold reserve token",
            "currency": "USD",
            "face_value": 250_000,
            "decimals": 3,
            "cap": 1_000,
            "usd_face_value": 250_000,
            "unit": "troy oz",
            "max_balance": 40,
        },
    ),
)


# ---------------------------------------------------------------------------------------
# Invariant checks (independent of State.invariant_violations)


def supply_violations(state: State) -> list[str]:
    """Supply equals the sum of balances; no balance is negative (or an empty holding kept);
    0 <= frozen <= balance in every holding; no holding of an unknown instrument."""
    problems = []
    for instrument_id in sorted(state.holdings):
        if instrument_id not in state.instruments:
            problems.append(f"holdings of unknown instrument {instrument_id}")
    for instrument_id in sorted(state.instruments):
        instrument = state.instruments[instrument_id]
        total = 0
        for address, holding in sorted(state.holdings.get(instrument_id, {}).items()):
            total += holding.balance
            if holding.balance <= 0:
                problems.append(f"{instrument_id}/{address.hex()}: balance {holding.balance}")
            if not 0 <= holding.frozen <= holding.balance:
                problems.append(
                    f"{instrument_id}/{address.hex()}: frozen {holding.frozen} outside "
                    f"[0, balance {holding.balance}]"
                )
        if total != instrument.supply:
            problems.append(f"{instrument_id}: supply {instrument.supply} != balances {total}")
    return problems


def cap_violations(state: State) -> list[str]:
    """No instrument above its cap; the programme's face value outstanding (recomputed from
    the supplies, in US cents) within the programme cap and equal to the recorded figure."""
    problems = []
    outstanding = 0
    for instrument_id in sorted(state.instruments):
        instrument = state.instruments[instrument_id]
        if instrument.supply > instrument.cap:
            problems.append(f"{instrument_id}: supply {instrument.supply} > cap {instrument.cap}")
        if instrument.kind != CASH:
            outstanding += instrument.supply * instrument.usd_face_value
    programme = state.programme
    if outstanding > programme.cap_usd_cents:
        problems.append(
            f"programme: {outstanding} US cents outstanding > {programme.cap_usd_cents}"
        )
    if outstanding != programme.outstanding_usd_cents:
        problems.append(
            f"programme records {programme.outstanding_usd_cents} outstanding, supplies give "
            f"{outstanding}"
        )
    return problems


def frozen_units(state: State) -> dict[tuple[str, bytes], int]:
    """Every non-zero frozen amount, keyed by (instrument, address)."""
    return {
        (instrument_id, address): holding.frozen
        for instrument_id in sorted(state.holdings)
        for address, holding in sorted(state.holdings[instrument_id].items())
        if holding.frozen
    }


def balances_of(state: State, addresses: Iterable[bytes]) -> dict[tuple[str, bytes], int]:
    """The balances (every instrument) of `addresses`, keyed by (instrument, address)."""
    wanted = set(addresses)
    return {
        (instrument_id, address): holding.balance
        for instrument_id in sorted(state.holdings)
        for address, holding in sorted(state.holdings[instrument_id].items())
        if address in wanted
    }
