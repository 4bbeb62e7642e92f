"""Evidence from before a restart (docs/RELIABILITY.md, defect 5): a restarted validator
rebuilds the validator sets of its evidence window from the store's validator-set history
(ledger/validator_history.py) and prevotes for a proposal carrying evidence about a height
below its restart; with no history for that height it still checks the signatures."""

from __future__ import annotations

import sqlite3

import trio

from consensus.types import Commit, Vote, VoteType, make_evidence, vote_signing_bytes
from consensus.wire import encode_message
from ledger.ops.evidence import encode_evidence_item
from ledger.validator_history import PREFIX, first_point
from node.proposal_check import abandon_pending
from node.validator_set import schedule_from_chain
from tests.node.test_driver import CHAIN_ID, Hub, Node, key

AUDITOR = key("validator-auditor")


def vote(height: int, value_id: bytes | None, signature: bytes | None = None) -> Vote:
    data = vote_signing_bytes(CHAIN_ID, VoteType.PREVOTE, height, 0, value_id)
    signed = AUDITOR.sign(data) if signature is None else signature
    return Vote(VoteType.PREVOTE, height, 0, value_id, AUDITOR.address, signed)


def piece(height: int, *, forged: bool = False) -> bytes:
    second = vote(height, None, bytes(64) if forged else None)
    evidence = make_evidence(vote(height, b"\x01" * 32), second)
    return encode_evidence_item(encode_message(evidence), AUDITOR.public_key)


def grow(node: Node, upto: int) -> None:
    """Commit empty blocks straight through the chain (no consensus needed to get a height)."""
    chain = node.chain
    while chain.height < upto:
        pending = chain.build_block([], chain.last_time_ms + 1, b"p" * 20)
        chain.commit(pending, certificate(pending))


def certificate(pending) -> bytes:
    # Unsigned: nothing here checks it, the driver only decodes it on start.
    return encode_message(Commit(pending.header.height, 0, pending.header.hash, ()))


def prevoted(node: Node, raw_piece: bytes) -> bool:
    """Does `node`'s driver find a proposal of the next block carrying `raw_piece` valid?"""
    chain = node.chain
    height = chain.height + 1
    pending = chain.build_block([], chain.last_time_ms + 1, b"p" * 20, evidence=[raw_piece])
    assert pending.block.evidence == (raw_piece,)  # the ledger itself cannot check signatures
    block = pending.block.encode()
    chain.abandon()
    verdict = node.driver.check.validate(height, block)
    abandon_pending(node.driver.chain)
    node.driver.check.clear()
    return verdict


def restart(node: Node) -> None:
    node.chain.close()
    node.open()


def run(fn) -> None:
    async def main():
        fn()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_restarted_validator_prevotes_for_evidence_from_before_its_restart(tmp_path):
    node = Node("ministry", tmp_path / "v.db", Hub())

    def scenario():
        node.open()
        grow(node, 8)  # behind the driver's back: only the restart's schedule counts here
        restart(node)
        # The schedule knows every height of the window again, from the store's history.
        assert node.driver.schedule.for_height(1) is not None
        assert prevoted(node, piece(2))
        assert prevoted(node, piece(8))
        assert not prevoted(node, piece(2, forged=True))  # a forgery is still refused

    run(scenario)
    node.chain.close()


def test_without_history_for_a_height_the_signatures_are_still_checked(tmp_path):
    """A store from before the history existed: the set of the tip is all the node knows."""
    node = Node("ministry", tmp_path / "v.db", Hub())

    def scenario():
        node.open()
        grow(node, 6)
        node.chain.close()
        with sqlite3.connect(tmp_path / "v.db") as db:  # as a store written before this code
            db.execute("DELETE FROM meta WHERE key LIKE ?", (PREFIX + "%",))
        node.open()
        assert first_point(node.chain.store) is None  # saved with the next block
        assert node.driver.schedule.for_height(5) is None
        assert node.driver.schedule.for_height(6) is not None
        assert prevoted(node, piece(3))  # unknowable set: signatures checked, accepted
        assert not prevoted(node, piece(3, forged=True))
        grow(node, 7)
        assert first_point(node.chain.store).height == 6

    run(scenario)
    node.chain.close()


def test_the_history_survives_a_restart_across_a_validator_change(tmp_path):
    """Sets before and after a promotion, rebuilt after a restart, are the ones in force."""
    from ledger.tx import TxBody, sign_tx

    node = Node("ministry", tmp_path / "v.db", Hub())
    changes = [{"name": "auditor", "public_key": AUDITOR.public_key, "power": 0}]
    body = TxBody(CHAIN_ID, key("ministry").address, 0, "change_validators", {"changes": changes})
    raw = sign_tx(body, [key("ministry"), key("regulator"), key("auditor")]).raw

    def scenario():
        node.open()
        grow(node, 2)
        chain = node.chain
        pending = chain.build_block([raw], chain.last_time_ms + 1, b"p" * 20)
        assert len(pending.receipts) == 1 and pending.receipts[0].code == 0
        chain.commit(pending, certificate(pending))  # decided at 3: in force from 5
        grow(node, 7)
        assert [p.height for p in chain.validator_history] == [1, 5]
        restart(node)
        schedule = schedule_from_chain(node.chain)
        members = {h: schedule.for_height(h).get(AUDITOR.address) for h in (1, 4, 5, 7, 9)}
        assert members[1] is not None and members[4] is not None
        assert members[5] is None and members[7] is None and members[9] is None
        assert prevoted(node, piece(4))  # a member then, though not now
        assert not prevoted(node, piece(5))  # not a member at 5: a known falsehood

    run(scenario)
    node.chain.close()
