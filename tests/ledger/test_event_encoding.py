"""The shortcuts a transfer's `transfer` event takes give exactly what the general code gives.

`move_event` encodes its event when it makes it (`event_in_key_order`: the map's fixed bytes
around the packed attributes, built in key order), and `Chain.commit` names its accounts and
instruments without `Event.accounts()`/`instruments()` (`ledger/chain.py` `_transfer_names`).
Both must equal the general code for any values: the encoding `codec.encode(event.to_map())`
(what the results hash and the receipts were made of before), the names those of the methods.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.chain import _event_columns, _transfer_names
from ledger.ops.transfers import move_event
from ledger.receipts import Event, Receipt, event_in_key_order

ADDRESSES = st.sampled_from([bytes([n]) * 20 for n in (0, 1, 7, 255)]) | st.binary(
    min_size=20, max_size=20
)
SCALARS = (
    ADDRESSES
    | st.binary(max_size=24)
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=6)
    | st.booleans()
    | st.none()
)
NAMES = st.sampled_from(["amount", "from", "to", "instrument", "asset", "account", "memo", "z"])


@settings(max_examples=300, deadline=None)
@given(
    ADDRESSES,
    ADDRESSES,
    st.text(min_size=1, max_size=32),
    st.integers(1, 2**63 - 1),
)
def test_move_event_encodes_as_the_general_code(sender, receiver, instrument, amount):
    event = move_event(instrument, sender, receiver, amount)
    general = Event(
        "transfer", {"to": receiver, "amount": amount, "instrument": instrument, "from": sender}
    )
    assert event == general
    assert event.encoded == codec.encode(general.to_map()) == general.encoded
    assert event.to_map() == general.to_map()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(NAMES, SCALARS, max_size=6), st.text(min_size=1, max_size=20))
def test_event_in_key_order_is_the_canonical_encoding(attributes, type_):
    ordered = {name: attributes[name] for name in sorted(attributes)}
    event = event_in_key_order(type_, ordered)
    assert event.encoded == codec.encode(Event(type_, dict(attributes)).to_map())


def test_event_in_key_order_refuses_what_an_event_refuses():
    with pytest.raises(TypeError):
        event_in_key_order("transfer", {"amount": [1], "from": b"x" * 20})


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(NAMES, SCALARS, max_size=5))
def test_transfer_names_are_the_methods_names(attributes):
    event = Event("transfer", attributes)
    names = _transfer_names(attributes)
    if names is not None:
        assert names == (tuple(event.accounts()), tuple(event.instruments()))


@settings(max_examples=300, deadline=None)
@given(ADDRESSES, ADDRESSES, st.text(min_size=1, max_size=8), SCALARS)
def test_transfer_shaped_events_take_the_shortcut_with_the_methods_names(
    sender, receiver, instrument, amount
):
    attributes = {"amount": amount, "from": sender, "instrument": instrument, "to": receiver}
    event = Event("transfer", attributes)
    expected = (tuple(event.accounts()), tuple(event.instruments()))
    if type(amount) is not bytes:
        assert _transfer_names(attributes) == expected
    columns = _event_columns(3, [Receipt(b"t" * 32, 0, "", (event,))])
    assert (columns.accounts[0], columns.instruments[0]) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.dictionaries(NAMES, SCALARS, max_size=4), max_size=4),
    st.integers(0, 999),
    st.text(max_size=8),
)
def test_a_receipts_events_bytes_are_made_once_and_canonical(attribute_sets, code, log):
    events = tuple(Event("e", attributes) for attributes in attribute_sets)
    receipt = Receipt(b"t" * 32, code, log, events)
    twin = Receipt(b"t" * 32, code, log, events)
    assert receipt.events_encoded == codec.encode([e.to_map() for e in events])
    assert receipt.events_encoded is receipt.events_encoded  # kept
    assert receipt.encode() == codec.encode(receipt.to_map()) == twin.encode()
    assert receipt == twin  # the kept bytes are not part of equality
    assert "_events_encoded" not in repr(receipt)
