"""docs/PROTOCOL.md section 6: the `kind: block` vectors, read from the document, rebuilt from
their parts and checked byte for byte against the code -- header and block bytes, block hash,
the Merkle leaves and root (recomputed here with hashlib, not the ledger's helpers), an
inclusion proof, and the evidence item (re-signed with the consensus core's vote bytes)."""

from __future__ import annotations

import hashlib

import pytest

from consensus.types import Vote, VoteType, make_evidence, vote_signing_bytes
from consensus.wire import encode_message
from ledger import codec
from ledger.block import Block, Header, decode_block, verify_tx_inclusion
from ledger.codes import DecodeError
from ledger.crypto import generate_key
from ledger.ops.evidence import decode_evidence_item, encode_evidence_item
from tests.ledger.test_protocol_vectors import vectors

KEYS = {v["name"]: generate_key(bytes.fromhex(v["seed"])) for v in vectors("key")}
SIGNED_TXS = {v["name"]: bytes.fromhex(v["signed_tx"]) for v in vectors("tx")}
BLOCKS = vectors("block")


def blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def rfc6962_root(items: list[bytes]) -> bytes:
    if not items:
        return blake(b"")
    if len(items) == 1:
        return blake(b"\x00" + blake(items[0]))
    k = 1
    while k * 2 < len(items):
        k *= 2
    return blake(b"\x01" + rfc6962_root(items[:k]) + rfc6962_root(items[k:]))


def test_the_document_has_a_block_vector():
    assert len(BLOCKS) >= 1


@pytest.mark.parametrize("v", BLOCKS, ids=lambda v: v["name"])
def test_block_vector(v):
    txs = [SIGNED_TXS[name.strip()] for name in v["txs"].split(",")]
    for index, raw in enumerate(txs):
        assert blake(b"\x00" + blake(raw)).hex() == v[f"tx_leaf_{index}"]
    assert rfc6962_root(txs).hex() == v["txs_hash"]

    # The evidence: two prevotes by the signer, made here with the consensus core's bytes.
    signer = KEYS[v["evidence_signer"]]
    height, round_ = int(v["evidence_height"]), int(v["evidence_round"])

    def vote(value_id):
        data = vote_signing_bytes(v["chain"], VoteType.PREVOTE, height, round_, value_id)
        return Vote(VoteType.PREVOTE, height, round_, value_id, signer.address, signer.sign(data))

    wire = encode_message(make_evidence(vote(bytes.fromhex(v["evidence_value_id"])), vote(None)))
    assert wire.hex() == v["evidence_wire"]
    item = encode_evidence_item(wire, signer.public_key)
    assert item.hex() == v["evidence_0"]
    assert codec.decode(item) == {"evidence": wire, "public_key": signer.public_key}
    parsed = decode_evidence_item(item)
    assert (parsed.height, parsed.round, parsed.vote_type) == (height, round_, 1)
    assert rfc6962_root([item]).hex() == v["evidence_hash"]

    header = Header(
        chain_id=v["chain"],
        height=int(v["height"]),
        time_ms=int(v["time_ms"]),
        prev_hash=bytes.fromhex(v["prev_hash"]),
        txs_hash=bytes.fromhex(v["txs_hash"]),
        app_hash=bytes.fromhex(v["app_hash"]),
        results_hash=bytes.fromhex(v["results_hash"]),
        proposer=KEYS[v["proposer"]].address,
        validators_hash=bytes.fromhex(v["validators_hash"]),
        evidence_hash=bytes.fromhex(v["evidence_hash"]),
    )
    assert header.encoded.hex() == v["header"]
    assert list(codec.decode(header.encoded)) == sorted(codec.decode(header.encoded))
    assert blake(header.encoded).hex() == v["block_hash"] == header.hash.hex()
    block = Block(header, tuple(txs), (item,))
    assert block.encode().hex() == v["block"]
    assert decode_block(bytes.fromhex(v["block"])) == block

    proof = [bytes.fromhex(p) for p in v["proof_1"].split(",")]
    assert verify_tx_inclusion(header.txs_hash, txs[1], 1, len(txs), proof)
    assert not verify_tx_inclusion(header.txs_hash, txs[0], 1, len(txs), proof)


def test_a_block_without_evidence_has_no_evidence_key():
    v = BLOCKS[0]
    block = decode_block(bytes.fromhex(v["block"]))
    bare = Block(block.header, block.txs)
    assert list(codec.decode(bare.encode())) == ["header", "txs"]
    empty_list = codec.encode({"evidence": [], "header": block.header.to_obj(), "txs": []})
    with pytest.raises(DecodeError, match="evidence"):
        decode_block(empty_list)
