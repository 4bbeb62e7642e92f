"""The block path's shortcuts give exactly the bytes of the plain definitions.

Each fast path in the chain composes canonical bytes from pieces encoded once (events,
receipts) instead of walking values again; here each is compared with the definition written
the slow, obvious way with `codec.encode`.
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.block import Block, Header, compute_results_hash, decode_block
from ledger.codes import Code
from ledger.crypto import generate_key, hash256
from ledger.genesis import default_genesis, state_from_genesis
from ledger.state import State, StateLoader
from ledger.types import Account, Event, Holding, Instrument, Kyc, Receipt

attribute_values = st.one_of(
    st.integers(codec.INT_MIN, codec.INT_MAX),
    st.text(max_size=10),
    st.binary(max_size=33),
    st.booleans(),
    st.none(),
)
events = st.builds(
    Event,
    st.text(max_size=12),
    st.dictionaries(st.text(max_size=8), attribute_values, max_size=6),
)
receipts = st.builds(
    Receipt,
    st.binary(min_size=32, max_size=32),
    st.sampled_from(list(Code)),
    st.text(max_size=40),
    st.lists(events, max_size=20).map(tuple),  # > 15 events: array16, not fixarray
)


@settings(max_examples=60, deadline=None)
@given(events)
def test_event_bytes_are_its_strict_encoding(event):
    assert event.encoded == codec.encode({"type": event.type, "attributes": event.attributes})


@settings(max_examples=60, deadline=None)
@given(receipts)
def test_receipt_bytes_are_its_strict_encoding(receipt):
    assert receipt.encode() == codec.encode(receipt.to_map())


@settings(max_examples=30, deadline=None)
@given(st.lists(receipts, max_size=20))
def test_results_hash_is_the_hash_of_the_plain_encoding(batch):
    plain = [[r.tx_id, int(r.code), [e.to_map() for e in r.events]] for r in batch]
    assert compute_results_hash(batch) == hash256(codec.encode(plain))


def test_join_array_crosses_the_fixarray_boundary():
    for count in (0, 15, 16, 70_000):
        items = [codec.encode(i % 200) for i in range(count)]
        assert codec.join_array(items) == codec.encode([i % 200 for i in range(count)])


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(st.binary(min_size=1, max_size=200), max_size=20).map(tuple),
)
def test_block_bytes_are_its_strict_encoding(height, some_hash, txs):
    header = Header(
        "khazana-test",
        height,
        height,
        some_hash,
        some_hash,
        some_hash,
        some_hash,
        some_hash[:20],
        some_hash,
    )
    block = Block(header, txs)
    assert block.encode() == codec.encode({"header": header.to_obj(), "txs": list(txs)})
    assert decode_block(block.encode()) == block


# --------------------------------------------------------------------------------------
# loading a large state


def _key(label: str):
    return generate_key(label.encode().ljust(32, b"\x00")[:32])


def _state_with_investors(count: int) -> State:
    names = ("ministry", "central-bank", "regulator", "auditor")
    genesis = default_genesis(
        validators=[(n, _key("validator-" + n).public_key) for n in names],
        institutions={n: _key(n).address for n in names},
        chain_id="khazana-test",
        genesis_time_ms=1_767_225_600_000,
    )
    state = state_from_genesis(genesis)
    issuer = _key("central-bank").address
    state.put_instrument(
        Instrument("PKR", "cash", "rupee", None, "PKR", 1, 2, 10**15, 0, issuer, supply=0)
    )
    expiries = (date(2030, 1, 1), date(2031, 6, 30))
    for i in range(count):
        address = i.to_bytes(20, "big")
        kyc = Kyc("PK", "retail", expiries[i % 2], issuer, None)  # a new, equal object each
        state.put_account(Account(address, nonce=i, kyc=kyc))
        state.put_holding("PKR", address, Holding(100 + i, i % 3))
    state.take_changes()
    return state


def test_loaded_state_is_the_state_that_was_saved():
    original = _state_with_investors(50)
    items = list(original.items())
    loaded = State.from_items(items)
    assert list(loaded.items()) == items
    assert loaded.accounts == original.accounts
    assert loaded.holdings == original.holdings
    assert loaded.parameters == original.parameters
    assert loaded.validator_set == original.validator_set
    assert loaded.dirty_keys == []


def test_loader_shares_equal_kyc_files_and_address_objects():
    loaded = State.from_items(_state_with_investors(40).items())
    investors = [a for a in loaded.accounts.values() if a.kyc is not None]
    assert len(investors) == 40
    assert len({id(a.kyc) for a in investors}) == 2  # two distinct files among 40 accounts
    for address, _ in loaded.holders("PKR"):
        assert address is loaded.accounts[address].address


def test_loader_streams_pairs_on_to_a_second_consumer():
    items = list(_state_with_investors(5).items())
    loader = StateLoader()
    assert list(loader.feed(iter(items))) == items
    assert list(loader.finish().items()) == items


def test_loader_refuses_a_state_without_its_chain_wide_records():
    items = [(k, v) for k, v in _state_with_investors(3).items() if k != b"S"]
    with pytest.raises(ValueError, match="chain-wide"):
        State.from_items(items)
