"""The `quote` read method (node/rpc/quote_methods.py) over a store holding a bond."""

from __future__ import annotations

from datetime import date

import pytest
import trio

from node.rpc.errors import NOT_FOUND, RpcError
from node.rpc.methods import RpcMethods
from node.rpc.quote_methods import QuoteMethods
from node.rpc.schemas import METHOD_SCHEMAS
from node.rpc.scopes import METHOD_RULES, PUBLIC
from tests.ledger.test_ops_debt import BOND, INDEX, fixing, frn
from tests.ledger.test_ops_harness import Chain


class _Store:
    def __init__(self, records: dict[bytes, bytes]) -> None:
        self.records = records
        self.scans: list = []

    async def read(self, fn, *args):
        return fn(self, *args)  # `AsyncStore.read`, with this fake as the store

    @property
    def state(self) -> _Store:
        return self

    def get_state(self, key: bytes) -> bytes | None:
        return self.records.get(key)

    def scan_prefix(self, prefix: bytes, limit: int | None = None, after: bytes | None = None):
        self.scans.append((prefix, limit, after))
        keys = sorted(k for k in self.records if k.startswith(prefix) and (after or b"") < k)
        return [(k, self.records[k]) for k in keys[:limit]]


class _Node:
    def __init__(self, chain: Chain) -> None:
        items = dict(chain.state.items())
        self.store = _Store(items)


@pytest.fixture(scope="module")
def methods() -> QuoteMethods:
    chain = Chain()
    chain.cash()
    chain.bond()  # 8 % semi-annual ACT/ACT-ICMA, 2026-01-01 -> 2028-01-01
    return QuoteMethods(_Node(chain))


def run(methods: QuoteMethods, **params):
    return trio.run(lambda: methods.quote(**params))


def test_quote_from_a_yield_and_back_from_its_price(methods):
    answer = run(methods, instrument="PKBOND28", settlement="2026-04-01", **{"yield": "0.09"})
    assert answer["instrument"] == "PKBOND28" and answer["settlement"] == "2026-04-01"
    assert set(answer) == {
        "instrument",
        "settlement",
        "accrued",
        "clean_price",
        "dirty_price",
        "yield",
    }
    back = run(methods, instrument="PKBOND28", settlement="2026-04-01", price=answer["clean_price"])
    assert abs(float(back["yield"]) - 0.09) < 1e-11
    assert back["accrued"] == answer["accrued"] == "1.988950276243"  # 100 x 8 % / 2 x 90/181


@pytest.mark.parametrize(
    "params",
    [
        {"instrument": "PKBOND28", "settlement": "2026-04-01"},  # neither
        {"instrument": "PKBOND28", "settlement": "2026-04-01", "price": "99", "yield": "0.1"},
        {"instrument": "PKBOND28", "settlement": "2026-4-1", "price": "99"},
        {"instrument": "PKBOND28", "settlement": "2028-01-01", "price": "99"},  # matured
        {"instrument": "PKBOND28", "settlement": "2026-04-01", "price": 99.5},  # a float
        {"instrument": "PKBOND28", "settlement": "2026-04-01", "yield": "9%"},
        {"instrument": "PKR", "settlement": "2026-04-01", "price": "99"},  # not a bond
        {"instrument": "", "settlement": "2026-04-01", "price": "99"},
    ],
)
def test_quote_refusals_are_invalid_params(methods, params):
    with pytest.raises(RpcError) as refused:
        run(methods, **params)
    assert refused.value.code == -32602 and refused.value.data


def test_unknown_instrument_and_the_method_is_public_and_registered(methods):
    with pytest.raises(RpcError) as refused:
        run(methods, instrument="NOPE", settlement="2026-04-01", price="99")
    assert refused.value.code == NOT_FOUND
    assert METHOD_RULES["quote"] == PUBLIC
    table = RpcMethods(_Node(Chain())).table
    assert table["quote"].params == ("instrument", "settlement", "price", "yield")
    assert date(2026, 4, 1)  # (the settlement above is a real date)


# ---------------------------------------------------------------------------------------
# Floating-rate notes


@pytest.fixture(scope="module")
def frn_methods() -> QuoteMethods:
    # tests/ledger/test_ops_debt.py's note: 6M T-bill + 75 bp, fixed 2 business days before
    # each period (7 days of lookback), 2026-01-01 -> 2028-01-01 semi-annual, ACT/ACT-ICMA.
    chain = frn()
    chain.at(date(2025, 12, 30)).ok("central-bank", "publish_rate_fixing", fixing())
    for day, rate in (("2026-03-02", "0.12"), ("2026-06-26", "0.1"), ("2025-01-02", "0.3")):
        chain.at(date.fromisoformat(day)).ok(
            "central-bank", "publish_rate_fixing", fixing(day, rate)
        )
    return QuoteMethods(_Node(chain))


def test_a_floating_rate_note_is_quoted_with_the_index_held_flat(frn_methods):
    answer = run(frn_methods, instrument=BOND, settlement="2026-04-01", **{"yield": "0.12"})
    # This period: 11.25 % + 75 bp = 12 %, 90 of 181 days accrued.
    assert answer["accrued"] == "2.983425414365"  # 100 x 12 % / 2 x 90/181
    # The latest fixing dated on or before settlement (not the June one, later; not the
    # 2025 one, earlier than the window read): 12 % + 75 bp for every later coupon.
    assert answer["floating"] == {
        "assumption": "index_flat",
        "rate_index": INDEX,
        "spread_bp": 75,
        "current_rate": "0.1200",
        "current_fixing": {"date": "2025-12-30", "rate": "0.1125", "fixing_date": "2025-12-30"},
        "latest_fixing": {"date": "2026-03-02", "rate": "0.12"},
        "projected_rate": "0.1275",
        "discount_margin": "0.000000000000",  # 12 % yield over a 12 % index
    }
    # The reads: one bounded range, from the current fixing date less the lookback.
    prefix, limit, _ = frn_methods.node.store.scans[-1]
    assert (
        prefix.endswith(INDEX.encode())
        and limit == (date(2026, 4, 1) - date(2025, 12, 23)).days + 1
    )
    back = run(frn_methods, instrument=BOND, settlement="2026-04-01", price=answer["clean_price"])
    assert abs(float(back["yield"]) - 0.12) < 1e-11
    # The answer is what the OpenRPC schema says (jsonschema: a test-only dependency).
    jsonschema = pytest.importorskip("jsonschema", reason="pip install -e '.[test]'")
    result = METHOD_SCHEMAS["quote"].result
    assert "floating" in result["properties"]
    jsonschema.Draft202012Validator(result).validate(answer)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(result).validate(
            {**answer, "floating": {**answer["floating"], "projected_rate": "1e-2"}}
        )


def test_a_floating_rate_note_whose_current_fixing_is_missing_is_refused(frn_methods):
    # The period from 1 Jul 2027 is fixed on 29 Jun 2027: nothing published.
    with pytest.raises(RpcError) as refused:
        run(frn_methods, instrument=BOND, settlement="2027-08-01", **{"yield": "0.1"})
    assert refused.value.code == -32602
    assert refused.value.data.startswith("RATE_FIXING_MISSING (325): ")
