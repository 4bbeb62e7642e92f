"""The block path's shortcuts give exactly the bytes of the plain definitions.

Each fast path in the chain composes canonical bytes from pieces encoded once (events,
receipts) instead of walking values again; here each is compared with the definition written
the slow, obvious way with `codec.encode`.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.block import Block, Header, compute_results_hash, decode_block
from ledger.codes import Code
from ledger.crypto import hash256
from ledger.types import Event, Receipt

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
