"""Validator-set changes reach the ledger state: a `change_validators` transaction decided in
block H is pending until block H + VALSET_DELAY, whose header's `validators_hash` (and every
later one) names the new set; proposer and validator agree, an abandoned block forgets the
promotion, and a reopened database holds the promoted set."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.types import VALSET_DELAY as CONSENSUS_VALSET_DELAY
from ledger.block import compute_validators_hash
from ledger.chain import Chain
from ledger.codes import Code, InvalidBlock
from ledger.crypto import generate_key
from ledger.genesis import default_genesis
from ledger.ops.governance import VALSET_DELAY
from ledger.tx import TxBody, sign_tx
from ledger.types import Validator

CHAIN_ID = "khazana-valset-test"
GENESIS_MS = 1_767_225_600_000
NAMES = ("ministry", "central-bank", "regulator", "auditor")


def key(name: str):
    return generate_key(name.encode().ljust(32, b"\x00")[:32])


def genesis() -> dict:
    return default_genesis(
        validators=[(n, key("validator-" + n).public_key) for n in NAMES],
        institutions={n: key(n).address for n in NAMES},
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
    )


def change_tx(nonce: int, changes: list[dict]) -> bytes:
    body = TxBody(
        CHAIN_ID, key("ministry").address, nonce, "change_validators", {"changes": changes}
    )
    return sign_tx(body, [key("ministry"), key("regulator"), key("auditor")]).raw


NEW = {"name": "validator-5", "public_key": key("validator-5").public_key, "power": 7}
DROP_AUDITOR = {"name": "auditor", "public_key": key("validator-auditor").public_key, "power": 0}


def expected_hash(validators) -> bytes:
    # Independent of the chain: the genesis powers (10) and the changes written out.
    return compute_validators_hash(validators)


GENESIS_SET = [Validator(n, key("validator-" + n).public_key, 10) for n in NAMES]
NEW_SET = [
    *(v for v in GENESIS_SET if v.name != "auditor"),
    Validator("validator-5", NEW["public_key"], 7),
]


def test_the_ledger_delay_is_the_consensus_cores():
    assert VALSET_DELAY == CONSENSUS_VALSET_DELAY == 2


def step(proposer: Chain, validator: Chain, txs=(), time_ms=None):
    """One block built by `proposer`, checked by `validator`, committed by both."""
    time_ms = time_ms or proposer.last_time_ms + 1000
    pending = proposer.build_block(list(txs), time_ms, b"p" * 20)
    assert not pending.dropped
    checked = validator.execute_block(pending.block)
    assert checked.header == pending.header
    proposer.commit(pending, b"cert")
    validator.commit(checked, b"cert")
    return pending


@pytest.fixture
def two_chains(tmp_path):
    a = Chain.open(tmp_path / "a.db", genesis())
    b = Chain.open(tmp_path / "b.db", genesis())
    yield a, b
    a.close()
    b.close()


def test_a_change_decided_at_h_is_in_force_from_h_plus_2(two_chains, tmp_path):
    proposer, validator = two_chains
    step(proposer, validator)  # block 1
    decided = step(proposer, validator, [change_tx(0, [NEW, DROP_AUDITOR])])  # block 2
    assert [r.code for r in decided.receipts] == [Code.OK]
    h = decided.header.height
    old, new = expected_hash(GENESIS_SET), expected_hash(NEW_SET)
    assert old != new
    assert decided.header.validators_hash == old
    assert step(proposer, validator).header.validators_hash == old  # h + 1
    assert proposer.state.validator_set.pending  # still pending after h + 1
    promoted = step(proposer, validator)  # h + 2
    assert promoted.header.height == h + VALSET_DELAY
    assert promoted.header.validators_hash == new
    assert proposer.state.validator_set.validators == tuple(
        sorted(NEW_SET, key=lambda v: v.public_key)
    )
    assert proposer.state.validator_set.pending == ()
    assert step(proposer, validator).header.validators_hash == new  # and it stays
    assert proposer.app_hash == validator.app_hash
    # Reopened from the database: the promoted set, and the next block still agrees.
    height = proposer.height
    proposer.close()
    reopened = Chain.open(tmp_path / "a.db", genesis())
    try:
        assert reopened.height == height
        assert reopened.state.validator_set == validator.state.validator_set
        pending = reopened.build_block([], reopened.last_time_ms + 1000, b"p" * 20)
        assert pending.header.validators_hash == new
        reopened.abandon()
    finally:
        reopened.close()


def test_a_block_claiming_the_old_set_after_the_delay_is_refused(two_chains):
    proposer, validator = two_chains
    step(proposer, validator, [change_tx(0, [NEW])])  # block 1 decides
    step(proposer, validator)  # block 2
    pending = proposer.build_block([], proposer.last_time_ms + 1000, b"p" * 20)  # block 3
    stale = dataclasses.replace(
        pending.block,
        header=dataclasses.replace(pending.header, validators_hash=expected_hash(GENESIS_SET)),
    )
    before = validator.app_hash
    with pytest.raises(InvalidBlock, match="validators_hash"):
        validator.execute_block(stale)
    assert validator.pending is None and validator.app_hash == before
    assert validator.state.validator_set.pending  # the refused block promoted nothing
    assert validator.execute_block(pending.block).header == pending.header


def test_an_abandoned_block_forgets_the_promotion(two_chains):
    proposer, validator = two_chains
    step(proposer, validator, [change_tx(0, [NEW])])
    step(proposer, validator)
    root, vset = proposer.app_hash, proposer.state.validator_set
    pending = proposer.build_block([], proposer.last_time_ms + 1000, b"p" * 20)
    assert proposer.state.validator_set != vset  # promoted inside the pending block
    proposer.abandon()
    assert proposer.state.validator_set == vset and proposer.app_hash == root
    assert proposer.state.take_changes() == {}
    # ...and executing it again promotes it again, identically.
    again = proposer.build_block([], pending.header.time_ms, b"p" * 20)
    assert again.header == pending.header
    proposer.abandon()
