"""`TxBuilder`: one method per ledger operation, with named, typed parameters.

Each method's signature is the operation's argument list as `node/client/ops.py`'s `OPS`
table has it (a test checks they agree); calling it checks and converts the values through
that table (`ops.build`) and returns an `Operation`, not yet signed. The methods are grouped by
what the operations serve, one class each (`Markets`, `DebtOffice`, `Accounts`, following
`ledger/ops/`); `TxBuilder` is all of them under one name, the SDK's entry point.
"""

from __future__ import annotations

from datetime import date

from node.client.ops import Operation, build

# Each method passes its own parameters on as they are (`**locals()`, taken first thing):
# `build` treats None as absent and refuses a missing required argument by name.


class Markets:
    """Moving units and the instruments' switches: transfers, delivery versus payment,
    forced transfers, issuance, burning, reserve attestations, pausing (ledger/ops/transfers.py,
    issuance.py, instruments.py)."""

    @staticmethod
    def transfer(*, instrument: str, to: str, amount: int) -> Operation:
        return build("transfer", **locals())

    @staticmethod
    def dvp(
        *, seller: str, buyer: str, asset: str, asset_amount: int, cash: str, cash_amount: int
    ) -> Operation:
        return build("dvp", **locals())

    @staticmethod
    def forced_transfer(
        *,
        instrument: str,
        from_: str,
        to: str,
        amount: int,
        reason_code: int,
        legal_reference: str,
    ) -> Operation:
        return build("forced_transfer", **locals())

    @staticmethod
    def issue(*, instrument: str, to: str, amount: int) -> Operation:
        return build("issue", **locals())

    @staticmethod
    def burn(*, instrument: str, amount: int) -> Operation:
        return build("burn", **locals())

    @staticmethod
    def attest_reserve(*, instrument: str, quantity: int, document_hash: str | bytes) -> Operation:
        return build("attest_reserve", **locals())

    @staticmethod
    def pause_instrument(*, instrument: str, reason: str) -> Operation:
        return build("pause_instrument", **locals())

    @staticmethod
    def unpause_instrument(*, instrument: str, reason: str) -> Operation:
        return build("unpause_instrument", **locals())


class DebtOffice:
    """Defining instruments and paying their holders: registration, holiday calendars, rate
    fixings, coupons, rentals, amortisation, calls, redemption and dissolution
    (ledger/ops/instruments.py, debt.py, payments.py)."""

    @staticmethod
    def register_instrument(
        *,
        id: str,
        kind: str,
        name: str,
        currency: str,
        face_value: int,
        decimals: int,
        cap: int,
        allowed_countries: list[str] | None = None,
        allowed_categories: list[str] | None = None,
        max_holders: int | None = None,
        max_balance: int | None = None,
        usd_face_value: int | None = None,
        isin: str | None = None,
        issue_date: str | date | None = None,
        maturity_date: str | date | None = None,
        coupon_rate: str | None = None,
        coupon_frequency: int | None = None,
        day_count: str | None = None,
        unit: str | None = None,
        first_coupon_date: str | date | None = None,
        penultimate_coupon_date: str | date | None = None,
        end_of_month: str | None = None,
        business_day_convention: str | None = None,
        holiday_calendar: str | None = None,
        record_business_days: int | None = None,
        rate_index: str | None = None,
        spread_bp: int | None = None,
        fixing_days: int | None = None,
        fixing_lookback_days: int | None = None,
        sukuk: str | None = None,
        sukuk_asset: str | None = None,
        redemption_price: str | None = None,
        call_notice_days: int | None = None,
        call_price: str | None = None,
        amortisation: list[list[str]] | None = None,
    ) -> Operation:
        return build("register_instrument", **locals())

    @staticmethod
    def set_holiday_calendar(*, id: str, weekend: list[str], holidays: list[str]) -> Operation:
        return build("set_holiday_calendar", **locals())

    @staticmethod
    def publish_rate_fixing(*, name: str, date: str, rate: str, document_hash: bytes) -> Operation:
        return build("publish_rate_fixing", **locals())

    @staticmethod
    def pay_coupon(*, instrument: str, cash: str, coupon_date: str | date) -> Operation:
        return build("pay_coupon", **locals())

    @staticmethod
    def pay_rental(*, instrument: str, cash: str, coupon_date: str | date) -> Operation:
        return build("pay_rental", **locals())

    @staticmethod
    def amortise(*, instrument: str, cash: str, date: str | date) -> Operation:
        return build("amortise", **locals())

    @staticmethod
    def call_bond(*, instrument: str, call_date: str | date) -> Operation:
        return build("call_bond", **locals())

    @staticmethod
    def redeem(*, instrument: str, cash: str) -> Operation:
        return build("redeem", **locals())

    @staticmethod
    def dissolve_sukuk(*, instrument: str, cash: str) -> Operation:
        return build("dissolve_sukuk", **locals())


class Accounts:
    """Who may hold and who decides: VASP licences, onboarding, freezes, key recovery, roles,
    parameters, the approval policy, the validator set and protocol upgrades
    (ledger/ops/accounts.py, governance.py, upgrades.py)."""

    @staticmethod
    def license_vasp(*, vasp: str, name: str) -> Operation:
        return build("license_vasp", **locals())

    @staticmethod
    def suspend_vasp(*, vasp: str, reason: str) -> Operation:
        return build("suspend_vasp", **locals())

    @staticmethod
    def onboard_investor(
        *,
        investor: str,
        country: str,
        category: str,
        kyc_expiry: str | date,
        vasp: str | None = None,
    ) -> Operation:
        return build("onboard_investor", **locals())

    @staticmethod
    def freeze(
        *,
        account: str,
        reason_code: int,
        legal_reference: str,
        instrument: str | None = None,
        amount: int | None = None,
    ) -> Operation:
        return build("freeze", **locals())

    @staticmethod
    def unfreeze(
        *,
        account: str,
        reason_code: int,
        legal_reference: str,
        instrument: str | None = None,
        amount: int | None = None,
    ) -> Operation:
        return build("unfreeze", **locals())

    @staticmethod
    def recover_key(*, account: str, new_public_key: str | bytes) -> Operation:
        return build("recover_key", **locals())

    @staticmethod
    def grant_role(*, account: str, role: str, institution: str | None = None) -> Operation:
        return build("grant_role", **locals())

    @staticmethod
    def revoke_role(*, account: str, role: str) -> Operation:
        return build("revoke_role", **locals())

    @staticmethod
    def set_parameter(*, name: str, value: int | str | list[str]) -> Operation:
        return build("set_parameter", **locals())

    @staticmethod
    def set_policy(*, operation: str, roles: list[str], min: int) -> Operation:
        return build("set_policy", **locals())

    @staticmethod
    def change_validators(*, changes: list[dict]) -> Operation:
        return build("change_validators", **locals())

    @staticmethod
    def schedule_upgrade(*, version: int, height: int) -> Operation:
        return build("schedule_upgrade", **locals())


class TxBuilder(Markets, DebtOffice, Accounts):
    """One method per ledger operation; each returns an `Operation` (not yet signed).

    Bind it to a sender and a nonce with `Operation.body(...)`, or let a client do it
    (`Client.send(operation, keys)` reads the nonce from the sender's account).
    """
