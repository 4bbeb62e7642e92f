"""The walk-free encoder (`codec.encode_presorted`) against the strict one, over every record.

`encode_presorted` hands a value straight to msgpack, which writes dicts in insertion order;
it is canonical only because every `to_map()` in `ledger/types.py` builds its maps in sorted
key order. These tests generate every record type from its dataclass fields (so a new field
or a new record type is covered without editing this file) and assert byte equality with
`codec.encode`, which sorts and checks everything itself. A record whose key order drifts
fails here.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec, receipts
from ledger import types as records
from ledger.codes import Code
from ledger.types import Event, Holding, Receipt

# BlockContext is an execution input with no map form; every other dataclass is a record
# (ledger/types.py's, and ledger/receipts.py's Event and Receipt).
RECORD_TYPES = sorted(
    (
        cls
        for module in (records, receipts)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__
        if hasattr(cls, "to_map")
    ),
    key=lambda cls: cls.__name__,
)

_SCALARS: dict[object, st.SearchStrategy] = {
    int: st.integers(codec.INT_MIN, codec.INT_MAX),
    str: st.text(max_size=12),  # includes non-ASCII; hypothesis never yields lone surrogates
    bytes: st.binary(max_size=33),
    bool: st.booleans(),
    date: st.dates(),
    type(None): st.none(),
}


def strategy_for(hint: object) -> st.SearchStrategy:
    """Values of a field's type: scalars, X | None, tuple[X, ...], dict[str, X], records."""
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in args])
    if origin is tuple and Ellipsis not in args:  # a fixed-length tuple, e.g. (date, str)
        return st.tuples(*(strategy_for(arg) for arg in args))
    if origin is tuple:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=4)
    if dataclasses.is_dataclass(hint):
        return record_strategy(hint)
    raise AssertionError(f"no strategy for {hint!r}: extend strategy_for")


def record_strategy(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls) if f.init}
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))


def test_every_record_type_is_generated():
    names = {cls.__name__ for cls in RECORD_TYPES}
    # The records the state, the receipts and the events are made of: if one disappears from
    # the module the generic test below silently covers less.
    assert {
        "Account",
        "ApprovalRule",
        "Event",
        "Freeze",
        "Holding",
        "Instrument",
        "KeyBinding",
        "Kyc",
        "Parameters",
        "PendingValidatorChange",
        "Policy",
        "Programme",
        "Receipt",
        "ReserveAttestation",
        "Validator",
        "ValidatorSet",
        "Vasp",
    } <= names


def _maps_sorted(value: object) -> bool:
    if type(value) is dict:
        keys = list(value)
        return keys == sorted(keys) and all(_maps_sorted(v) for v in value.values())
    if type(value) is list:
        return all(_maps_sorted(v) for v in value)
    return True


@pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda cls: cls.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_presorted_bytes_equal_the_strict_encoding(cls, data):
    record = data.draw(record_strategy(cls))
    value = record.to_map()
    assert _maps_sorted(value), f"{cls.__name__}.to_map() builds a map out of key order"
    assert codec.encode_presorted(value) == codec.encode(value)
    assert codec.decode(codec.encode_presorted(value)) == codec.decode(codec.encode(value))


def test_a_map_built_out_of_order_is_not_canonical():
    # Why the tests above matter: the fast path trusts insertion order.
    out_of_order = {"frozen": 0, "balance": 5}
    assert codec.encode_presorted(out_of_order) != codec.encode(out_of_order)
    assert codec.encode(out_of_order) == codec.encode(Holding(5).to_map())


def test_receipt_with_an_enum_code_and_events_encodes_canonically():
    event = Event("transfer", {"to": b"\x02" * 20, "amount": 7, "instrument": "PKR"})
    receipt = Receipt(b"\x01" * 32, Code.OK, "", (event, event))
    value = receipt.to_map()
    assert codec.encode_presorted(value) == codec.encode(value)
    assert list(value["events"][0]["attributes"]) == ["amount", "instrument", "to"]


@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, 1.5, date(2026, 1, 1)])
def test_event_refuses_non_scalar_attributes(bad):
    with pytest.raises(TypeError, match="not a scalar"):
        Event("transfer", {"amount": bad})


def test_event_accepts_scalar_subclasses():
    event = Event("refused", {"code": Code.NONCE_GAP, "flag": True, "vasp": None})
    assert codec.encode_presorted(event.to_map()) == codec.encode(event.to_map())
