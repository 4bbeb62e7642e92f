"""A small in-memory chain for the operation tests (and its own sanity tests).

`Chain` starts from `default_genesis` with the four institutions, signs transactions with
deterministic keys, and executes them one by one with `apply_transaction`. `expect(code, ...)`
asserts a refusal AND that the refusal changed nothing but the sender's nonce -- the rule
every operation must keep.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from ledger import codec
from ledger.codes import Code
from ledger.crypto import KeyPair, generate_key
from ledger.execute import apply_transaction
from ledger.genesis import default_genesis, state_from_genesis
from ledger.state import account_key
from ledger.tx import SignedTx, TxBody, sign_tx
from ledger.types import Account, BlockContext, Receipt

CHAIN_ID = "khazana-test"
INSTITUTIONS = ("ministry", "central-bank", "regulator", "auditor")
GENESIS_DAY = date(2026, 1, 1)

# Real ISINs with correct check digits (ISO 6166), used as bond and T-bill identifiers.
ISIN_A = "US0378331005"
ISIN_B = "US5949181045"
ISIN_C = "GB0002634946"


def day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()) * 1000


def key_for(name: str) -> KeyPair:
    return generate_key(name.encode().ljust(32, b"\x00")[:32])


class Chain:
    def __init__(self) -> None:
        self.keys: dict[str, KeyPair] = {name: key_for(name) for name in INSTITUTIONS}
        validators = [(name, key_for("validator-" + name).public_key) for name in INSTITUTIONS]
        self.genesis = default_genesis(
            validators=validators,
            institutions={name: self.keys[name].address for name in INSTITUTIONS},
            chain_id=CHAIN_ID,
            genesis_time_ms=day_ms(GENESIS_DAY),
        )
        self.state = state_from_genesis(self.genesis)
        self.state.take_changes()
        self.height = 0
        self.day = GENESIS_DAY

    # -- identities --------------------------------------------------------------

    def key(self, name: str) -> KeyPair:
        if name not in self.keys:
            self.keys[name] = key_for(name)
        return self.keys[name]

    def addr(self, name: str) -> bytes:
        return self.key(name).address

    def account(self, name: str) -> Account:
        return self.state.accounts[self.addr(name)]

    # -- transactions ------------------------------------------------------------

    @property
    def ctx(self) -> BlockContext:
        return BlockContext(CHAIN_ID, self.height, day_ms(self.day))

    def at(self, day: date) -> Chain:
        self.day = day
        return self

    def sign(
        self,
        sender: str,
        op: str,
        args: dict,
        *,
        cosigners: tuple[str, ...] = (),
        nonce: int | None = None,
        signer: KeyPair | None = None,
        chain_id: str = CHAIN_ID,
    ) -> SignedTx:
        address = self.addr(sender)
        if nonce is None:
            account = self.state.accounts.get(address)
            nonce = 0 if account is None else account.nonce
        body = TxBody(chain_id, address, nonce, op, args)
        keys = [signer or self.key(sender)] + [self.key(c) for c in cosigners]
        return sign_tx(body, keys)

    def run(self, sender: str, op: str, args: dict, **options) -> Receipt:
        self.height += 1
        return apply_transaction(self.state, self.sign(sender, op, args, **options), self.ctx)

    def ok(self, sender: str, op: str, args: dict, **options) -> Receipt:
        receipt = self.run(sender, op, args, **options)
        assert receipt.code == Code.OK, f"{Code(receipt.code).name}: {receipt.log}"
        self.state.take_changes()
        return receipt

    def expect(self, code: Code, sender: str, op: str, args: dict, **options) -> Receipt:
        """Assert the refusal code, and that only the sender's nonce changed (or nothing,
        for the fatal codes that keep a transaction out of a block)."""
        self.state.take_changes()
        before = self.state.accounts.get(self.addr(sender))
        receipt = self.run(sender, op, args, **options)
        assert receipt.code == code, (
            f"expected {code.name}, got {Code(receipt.code).name}: {receipt.log}"
        )
        assert receipt.log, "a refusal must say why"
        changes = self.state.take_changes()
        if not receipt.executed:
            assert changes == {}
        else:
            assert before is not None
            assert changes == {
                account_key(before.address): codec.encode(
                    before.with_nonce(before.nonce + 1).to_map()
                )
            }
        return receipt

    # -- common set-ups -----------------------------------------------------------

    def cash(self, instrument_id: str = "PKR", **extra) -> str:
        args = {
            "id": instrument_id,
            "kind": "cash",
            "name": "Digital rupee",
            "currency": "PKR",
            "face_value": 1,
            "decimals": 2,
            "cap": 10**15,
        }
        args.update(extra)
        self.ok("central-bank", "register_instrument", args)
        return instrument_id

    def bond(self, instrument_id: str = "PKBOND28", isin: str = ISIN_A, **extra) -> str:
        args = {
            "id": instrument_id,
            "kind": "bond",
            "name": "Sovereign bond 2028",
            "isin": isin,
            "currency": "PKR",
            "face_value": 100_000,  # 1,000.00 rupees
            "decimals": 0,
            "cap": 1_000_000,
            "usd_face_value": 360,  # 3.60 USD per unit
            "issue_date": "2026-01-01",
            "maturity_date": "2028-01-01",
            "coupon_rate": "0.08",
            "coupon_frequency": 2,
            "day_count": "ACT/ACT-ICMA",
        }
        args.update(extra)
        self.ok("ministry", "register_instrument", args)
        return instrument_id

    def tbill(self, instrument_id: str = "PKTB26", isin: str = ISIN_B, **extra) -> str:
        args = {
            "id": instrument_id,
            "kind": "tbill",
            "name": "T-bill 6 months",
            "isin": isin,
            "currency": "PKR",
            "face_value": 100_000,
            "decimals": 0,
            "cap": 1_000_000,
            "usd_face_value": 360,
            "issue_date": "2026-01-01",
            "maturity_date": "2026-07-01",
        }
        args.update(extra)
        self.ok("ministry", "register_instrument", args)
        return instrument_id

    def gold(self, instrument_id: str = "PKGOLD", **extra) -> str:
        args = {
            "id": instrument_id,
            "kind": "commodity",
            "name": "Gold reserve token",
            "currency": "USD",
            "face_value": 250_000,
            "decimals": 3,
            "cap": 1_000_000,
            "usd_face_value": 250_000,
            "unit": "troy oz",
        }
        args.update(extra)
        self.ok("ministry", "register_instrument", args)
        return instrument_id

    def investor(
        self,
        name: str,
        *,
        country: str = "PK",
        category: str = "retail",
        expiry: str = "2030-01-01",
        vasp: str | None = None,
    ) -> bytes:
        args = {
            "investor": self.addr(name),
            "country": country,
            "category": category,
            "kyc_expiry": expiry,
        }
        if vasp is not None:
            args["vasp"] = self.addr(vasp)
        self.ok("regulator", "onboard_investor", args)
        return self.addr(name)

    def vasp(self, name: str) -> bytes:
        self.ok("regulator", "license_vasp", {"vasp": self.addr(name), "name": name})
        return self.addr(name)

    def issue(self, instrument: str, to: str, amount: int, issuer: str = "ministry") -> None:
        self.ok(issuer, "issue", {"instrument": instrument, "to": self.addr(to), "amount": amount})

    def balance(self, instrument: str, name: str) -> int:
        return self.state.balance(instrument, self.addr(name))


# ---------------------------------------------------------------------------------------
# The harness's own checks: if these fail, every other ledger test is suspect.


def test_genesis_chain_has_the_four_institutions_with_their_roles():
    chain = Chain()
    assert chain.account("ministry").roles == ("issuer", "validator_operator")
    assert "paying_agent" in chain.account("central-bank").roles
    assert chain.state.programme.cap_usd_cents == 200_000_000_000


def test_expect_notices_a_change_beyond_the_nonce():
    # Negative control for `expect`: a successful issue is more than a nonce bump.
    chain = Chain()
    chain.cash()
    chain.investor("alice")
    try:
        chain.expect(
            Code.INSTRUMENT_CAP,
            "central-bank",
            "issue",
            {"instrument": "PKR", "to": chain.addr("alice"), "amount": 5},
        )
    except AssertionError:
        pass
    else:
        raise AssertionError("expect() accepted a successful transaction")
