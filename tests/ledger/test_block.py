"""Blocks and headers: canonical bytes, strict decoding, hashes."""

from __future__ import annotations

import dataclasses

import pytest

from ledger import codec
from ledger.block import (
    Block,
    Header,
    check_txs_hash,
    compute_results_hash,
    compute_txs_hash,
    compute_validators_hash,
    decode_block,
    decode_header,
)
from ledger.codes import Code, DecodeError, InvalidBlock
from ledger.crypto import generate_key, hash256
from ledger.tx import TxBody, add_signatures, sign_tx
from ledger.types import Event, Receipt, Validator

ALICE = generate_key(b"\x01" * 32)
BOB = generate_key(b"\x02" * 32)


def tx(nonce: int = 0):
    body = TxBody("khazana-test", ALICE.address, nonce, "transfer", {"amount": 1})
    return sign_tx(body, [ALICE])


def header(**changes) -> Header:
    fields = {
        "chain_id": "khazana-test",
        "height": 7,
        "time_ms": 1_767_225_600_000,
        "prev_hash": b"\x01" * 32,
        "txs_hash": compute_txs_hash([tx().raw]),
        "app_hash": b"\x03" * 32,
        "results_hash": b"\x04" * 32,
        "proposer": ALICE.address,
        "validators_hash": b"\x05" * 32,
    }
    fields.update(changes)
    return Header(**fields)


def test_header_and_block_round_trip_and_hash_the_header_bytes():
    block = Block(header(), (tx().raw,))
    data = block.encode()
    assert decode_block(data) == block
    assert decode_header(block.header.encoded) == block.header
    assert block.hash == hash256(block.header.encoded)
    check_txs_hash(block)


@pytest.mark.parametrize(
    "change",
    [
        {"height": 8},
        {"time_ms": 1},
        {"prev_hash": b"\x09" * 32},
        {"app_hash": b"\x09" * 32},
        {"results_hash": b"\x09" * 32},
        {"txs_hash": b"\x09" * 32},
        {"validators_hash": b"\x09" * 32},
        {"proposer": BOB.address},
        {"chain_id": "other"},
    ],
)
def test_every_header_field_changes_the_block_hash(change):
    assert header(**change).hash != header().hash


def test_txs_hash_covers_the_signature_bytes_and_the_order():
    one = tx()
    both = add_signatures(one, [BOB])
    assert one.tx_id == both.tx_id and one.raw != both.raw
    # Same body, different signatures: a different txs_hash, so a different block hash.
    assert compute_txs_hash([one.raw]) != compute_txs_hash([both.raw])
    assert (
        header(txs_hash=compute_txs_hash([one.raw])).hash
        != header(txs_hash=compute_txs_hash([both.raw])).hash
    )
    assert compute_txs_hash([tx(0).raw, tx(1).raw]) != compute_txs_hash([tx(1).raw, tx(0).raw])


def test_txs_hash_mismatch_is_an_invalid_block():
    block = Block(header(), (tx(1).raw,))
    with pytest.raises(InvalidBlock, match="txs_hash"):
        check_txs_hash(block)
    # Re-signed: the same tx id, other bytes -- refused as well.
    with pytest.raises(InvalidBlock, match="txs_hash"):
        check_txs_hash(Block(header(), (add_signatures(tx(), [BOB]).raw,)))


def test_results_hash_covers_code_and_events_not_the_log():
    a = Receipt(b"\x01" * 32, Code.OK, "", (Event("transfer", {"amount": 1}),))
    reworded = dataclasses.replace(a, log="different words")
    other_event = dataclasses.replace(a, events=(Event("transfer", {"amount": 2}),))
    refused = dataclasses.replace(a, code=Code.INSUFFICIENT_BALANCE, events=())
    assert compute_results_hash([a]) == compute_results_hash([reworded])
    assert compute_results_hash([a]) != compute_results_hash([other_event])
    assert compute_results_hash([a]) != compute_results_hash([refused])


def test_validators_hash_ignores_order_but_not_power():
    v1 = Validator("a", ALICE.public_key, 10)
    v2 = Validator("b", BOB.public_key, 10)
    assert compute_validators_hash([v1, v2]) == compute_validators_hash([v2, v1])
    assert compute_validators_hash([v1, v2]) != compute_validators_hash(
        [v1, dataclasses.replace(v2, power=11)]
    )


def _mangled_block(mutate) -> bytes:
    obj = Block(header(), (tx().raw,)).to_obj()
    mutate(obj)
    return codec.encode(obj)


@pytest.mark.parametrize(
    "mutate,code",
    [
        (lambda o: o.update(extra=1), Code.BAD_FIELD),
        (lambda o: o["header"].update(extra=1), Code.BAD_FIELD),
        (lambda o: o["header"].pop("app_hash"), Code.BAD_FIELD),
        (lambda o: o["header"].update(app_hash=b"\x00" * 31), Code.BAD_FIELD),
        (lambda o: o["header"].update(proposer=b"\x00" * 32), Code.BAD_FIELD),
        (lambda o: o["header"].update(height=-1), Code.BAD_FIELD),
        (lambda o: o["header"].update(height="7"), Code.BAD_FIELD),
        (lambda o: o.update(txs=[b""]), Code.BAD_FIELD),
        (lambda o: o.update(txs=["text"]), Code.BAD_FIELD),
        (lambda o: o.update(txs=b"raw"), Code.BAD_FIELD),
    ],
)
def test_decode_refuses_every_deviation(mutate, code):
    with pytest.raises(DecodeError) as info:
        decode_block(_mangled_block(mutate))
    assert info.value.code == code


def test_decode_refuses_trailing_bytes_and_garbage():
    data = Block(header(), ()).encode()
    with pytest.raises(DecodeError) as info:
        decode_block(data + b"\x00")
    assert info.value.code == Code.TRAILING_BYTES
    with pytest.raises(DecodeError):
        decode_block(b"\x93\x01\x02")
