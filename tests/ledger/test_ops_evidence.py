"""Misbehaviour evidence on chain (`ledger/ops/evidence.py` through `Chain`): a double vote in a
block is recorded in state (provable, queryable, never taken twice), emits a `misbehaviour`
event of the block, is committed to by the header's `evidence_hash`, survives a reopen; and
every malformed or repeated item makes the block invalid and changes nothing."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.types import Vote, VoteType, make_evidence, vote_signing_bytes
from consensus.wire import encode_message
from ledger import codec
from ledger.block import compute_evidence_hash, decode_block
from ledger.chain import Chain
from ledger.codes import InvalidBlock
from ledger.commitment import verify_proof
from ledger.crypto import generate_key, hash256
from ledger.genesis import default_genesis
from ledger.ops.evidence import (
    MAX_EVIDENCE_AGE,
    decode_evidence_item,
    encode_evidence_item,
    misbehaviour_key,
    record_from_bytes,
)
from ledger.types import Event

CHAIN_ID = "khazana-evidence-test"
GENESIS_MS = 1_767_225_600_000
NAMES = ("ministry", "central-bank", "regulator", "auditor")


def key(name: str):
    return generate_key(name.encode().ljust(32, b"\x00")[:32])


AUDITOR = key("validator-auditor")


def genesis() -> dict:
    return default_genesis(
        validators=[(n, key("validator-" + n).public_key) for n in NAMES],
        institutions={n: key(n).address for n in NAMES},
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
    )


def vote(signer, height: int, round_: int, value_id: bytes | None, kind=VoteType.PREVOTE):
    data = vote_signing_bytes(CHAIN_ID, kind, height, round_, value_id)
    return Vote(kind, height, round_, value_id, signer.address, signer.sign(data))


def item(height: int = 1, round_: int = 0, signer=AUDITOR, kind=VoteType.PREVOTE) -> bytes:
    a = vote(signer, height, round_, b"\x01" * 32, kind)
    b = vote(signer, height, round_, None, kind)
    return encode_evidence_item(encode_message(make_evidence(a, b)), signer.public_key)


@pytest.fixture
def chains(tmp_path):
    a = Chain.open(tmp_path / "a.db", genesis())
    b = Chain.open(tmp_path / "b.db", genesis())
    yield a, b
    a.close()
    b.close()


def step(proposer: Chain, validator: Chain, evidence=()):
    pending = proposer.build_block([], proposer.last_time_ms + 1000, b"p" * 20, evidence=evidence)
    checked = validator.execute_block(decode_block(pending.block.encode()))
    assert checked.header == pending.header
    proposer.commit(pending, b"cert")
    validator.commit(checked, b"cert")
    return pending


def test_a_double_vote_is_recorded_in_state_with_an_event_and_hashed_in_the_header(
    chains, tmp_path
):
    proposer, validator = chains
    step(proposer, validator)
    piece = item(height=1, round_=2, kind=VoteType.PRECOMMIT)
    pending = step(proposer, validator, [piece])
    assert pending.block.evidence == (piece,)
    assert pending.header.evidence_hash == compute_evidence_hash([piece])
    assert pending.header.evidence_hash != compute_evidence_hash([])
    # The record, in state and under the app_hash (provable).
    state_key = misbehaviour_key(hash256(piece))
    raw = proposer.store.state.get_state(state_key)
    record = record_from_bytes(raw)
    assert (record.public_key, record.validator) == (AUDITOR.public_key, AUDITOR.address)
    assert (record.height, record.round, record.vote_type) == (1, 2, int(VoteType.PRECOMMIT))
    assert (record.evidence_hash, record.recorded_height) == (hash256(piece), 2)
    assert verify_proof(proposer.app_hash, state_key, raw, proposer.tree.prove(state_key))
    assert validator.store.state.get_state(state_key) == raw
    # The block's own event, stored with tx index -1 and indexed under the validator address.
    events = proposer.store.indexes.events(account=AUDITOR.address)
    assert [(e.height, e.tx_index, e.type) for e in events] == [(2, -1, "misbehaviour")]
    event = codec.decode(events[0].data)
    assert event == Event("misbehaviour", dict(event["attributes"])).to_map()
    assert event["attributes"]["evidence_hash"] == hash256(piece)
    # Reopened: the record is loaded back and the state still hashes to the app_hash.
    app_hash = proposer.app_hash
    proposer.close()
    reopened = Chain.open(tmp_path / "a.db", genesis())
    try:
        assert reopened.app_hash == app_hash
        again = reopened.build_block([], reopened.last_time_ms + 1000, b"p" * 20, evidence=[piece])
        assert again.block.evidence == ()  # already on chain: a proposer leaves it out
        reopened.abandon()
    finally:
        reopened.close()


def test_committed_evidence_is_refused_a_second_time(chains):
    proposer, validator = chains
    piece = item()
    step(proposer, validator, [piece])
    # A proposer drops it...
    pending = proposer.build_block([], proposer.last_time_ms + 1000, b"p" * 20, evidence=[piece])
    assert pending.block.evidence == () and pending.header.evidence_hash == hash256(b"")
    proposer.abandon()
    # ...and a hostile block holding it again is invalid.
    hostile = _with_evidence(proposer, [piece])
    before = validator.app_hash
    with pytest.raises(InvalidBlock, match="already on chain"):
        validator.execute_block(hostile)
    assert validator.pending is None and validator.app_hash == before


def _with_evidence(proposer: Chain, evidence):
    """A block whose header claims `evidence` (built by hand: a proposer would refuse)."""
    pending = proposer.build_block([], proposer.last_time_ms + 1000, b"p" * 20)
    proposer.abandon()
    header = dataclasses.replace(pending.header, evidence_hash=compute_evidence_hash(evidence))
    return dataclasses.replace(pending.block, header=header, evidence=tuple(evidence))


def _reencode(raw: bytes, **changes) -> bytes:
    obj = codec.decode(raw)
    obj.update(changes)
    return codec.encode(obj)


def _wire(**vote_changes) -> bytes:
    wire = codec.decode(codec.decode(item())["evidence"])
    for index, value in vote_changes.items():
        wire[2][int(index[1:])] = value
    return codec.encode(wire)


BAD_ITEMS = {
    "not a map": codec.encode([1, 2]),
    "other key": _reencode(item(), public_key=key("validator-ministry").public_key),
    "same value ids": _reencode(item(), evidence=_wire(i4=None)),
    "two heights": _reencode(item(), evidence=_wire(i2=5)),
    "two validators": _reencode(item(), evidence=_wire(i5=b"\x07" * 20)),
    "bad vote type": _reencode(item(), evidence=_wire(i1=9)),
    "not evidence": _reencode(item(), evidence=codec.encode([3, 1, 2])),
    "duplicated in the block": None,
    "about a later height": item(height=5),
}


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
def test_malformed_or_repeated_evidence_makes_the_block_invalid(chains, case):
    proposer, validator = chains
    evidence = [item(), item()] if BAD_ITEMS[case] is None else [BAD_ITEMS[case]]
    block = _with_evidence(proposer, evidence)
    before = validator.app_hash
    with pytest.raises(InvalidBlock, match="evidence"):
        validator.execute_block(block)
    assert validator.pending is None and validator.app_hash == before
    assert validator.state.take_changes() == {}
    # The proposer's own selection never includes such an item.
    pending = proposer.build_block([], proposer.last_time_ms + 1000, b"p" * 20, evidence=evidence)
    assert len(pending.block.evidence) == (1 if BAD_ITEMS[case] is None else 0)
    proposer.abandon()


def test_evidence_hash_must_match_the_items(chains):
    proposer, validator = chains
    block = _with_evidence(proposer, [item()])
    liar = dataclasses.replace(block, evidence=())
    with pytest.raises(InvalidBlock, match="evidence_hash"):
        validator.execute_block(liar)


def test_the_item_parser_reads_the_consensus_wire_fields():
    parsed = decode_evidence_item(item(height=3, round_=4, kind=VoteType.PRECOMMIT))
    assert (parsed.height, parsed.round, parsed.vote_type) == (3, 4, 2)
    assert parsed.validator == AUDITOR.address and parsed.public_key == AUDITOR.public_key
    assert MAX_EVIDENCE_AGE >= 100
