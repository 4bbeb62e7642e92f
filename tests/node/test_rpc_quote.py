"""The `quote` read method (node/rpc/quote_methods.py) over a store holding a bond."""

from __future__ import annotations

from datetime import date

import pytest
import trio

from node.rpc.errors import NOT_FOUND, RpcError
from node.rpc.methods import RpcMethods
from node.rpc.quote_methods import QuoteMethods
from node.rpc.scopes import METHOD_RULES, PUBLIC
from tests.ledger.test_ops_harness import Chain


class _Store:
    def __init__(self, records: dict[bytes, bytes]) -> None:
        self.records = records

    async def read(self, fn, *args):
        return fn(self, *args)  # `AsyncStore.read`, with this fake as the store

    @property
    def state(self) -> _Store:
        return self

    def get_state(self, key: bytes) -> bytes | None:
        return self.records.get(key)


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
