"""The ledger/node gaps closed for issue 4: the store's public worker-thread runner, validator
changes reaching the ledger's validators_hash, evidence on chain, coherent config defaults."""

from __future__ import annotations

import dataclasses
import functools
import threading

import trio

from ledger.store import AsyncStore, Store
from tests.node.test_driver import CHAIN_ID


def test_async_store_run_executes_on_the_injected_worker_thread(tmp_path):
    store = Store.open(tmp_path / "s.db", chain_id=CHAIN_ID, genesis_hash=b"\x01" * 32)
    calls = []

    async def main():
        limiter = trio.CapacityLimiter(1)
        run_sync = functools.partial(trio.to_thread.run_sync, limiter=limiter)
        async_store = AsyncStore(store, run_sync)

        def work(a, b):
            calls.append(threading.get_ident())
            return (a, b, store.blocks.latest_height())

        result = await async_store.run(work, 1, b"x")
        assert result == (1, b"x", None)
        assert calls and calls[0] != threading.get_ident()  # not the trio thread

    try:
        trio.run(main)
    finally:
        store.close()


def test_default_heartbeat_is_below_the_default_propose_timeout(tmp_path):
    # The empty-block heartbeat must end before the other validators' propose timeout, or
    # every empty round would time out and change rounds.
    from consensus.core import CoreConfig
    from node.config import ConsensusConfig
    from node.driver import DriverConfig

    defaults = ConsensusConfig()
    assert defaults.core == CoreConfig()
    assert defaults.heartbeat_ms < defaults.core.timeout_propose_ms
    assert DriverConfig().heartbeat_ms < DriverConfig().core.timeout_propose_ms
    # A config file that sets nothing gives the driver the core's own propose timeout (the
    # stretch in node.app.driver_config only applies to a heartbeat configured too long).
    from node.app import driver_config
    from node.config import from_dict

    document = {
        "name": "ministry",
        "role": "validator",
        "chain_id": "khazana-test",
        "p2p": {"listen": "10.0.0.5:26656"},
        "rpc": {"listen": "10.0.0.5:26657"},
    }
    config = from_dict(document, home=tmp_path)
    driver = driver_config(config)
    assert driver.heartbeat_ms == 1000
    assert driver.core.timeout_propose_ms == CoreConfig().timeout_propose_ms
    # ...and a heartbeat configured above the propose timeout is still made coherent.
    document["consensus"] = {"heartbeat_ms": 4000}
    stretched = driver_config(from_dict(document, home=tmp_path))
    assert stretched.core.timeout_propose_ms > stretched.heartbeat_ms == 4000


def test_a_validator_change_on_chain_is_signed_for_from_h_plus_2(tmp_path):
    """Four in-process validators commit a change removing the auditor and re-weighting the
    ministry: up to H + 1 the old set signs; from H + 2 certificates carry only the new set
    and every header's validators_hash names it, on every node (ledger and schedule agree)."""
    from consensus.types import Commit
    from consensus.wire import decode_message
    from ledger.block import compute_validators_hash, decode_block
    from ledger.codes import Code
    from ledger.tx import TxBody, decode_signed_tx, sign_tx
    from ledger.types import Validator
    from node.validator_set import schedule_from_chain
    from tests.node.test_driver import NAMES, Hub, agree, key, make_nodes, wait_until

    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    auditor = key("validator-auditor")
    changes = [
        {"name": "auditor", "public_key": auditor.public_key, "power": 0},
        {"name": "ministry", "public_key": key("validator-ministry").public_key, "power": 25},
    ]
    body = TxBody(CHAIN_ID, key("ministry").address, 0, "change_validators", {"changes": changes})
    raw = sign_tx(body, [key("ministry"), key("regulator"), key("auditor")]).raw
    tx_id = decode_signed_tx(raw).tx_id

    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: nodes[0].chain.height >= 2)
                assert (await nodes[2].driver.submit(raw)).code == Code.OK
                await wait_until(lambda: nodes[0].chain.store.blocks.tx(tx_id) is not None)
                decided = nodes[0].chain.store.blocks.tx(tx_id).height
                await wait_until(lambda: all(n.chain.height >= decided + 5 for n in nodes))
                nursery.cancel_scope.cancel()
        return decided

    decided = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert nodes[0].chain.store.blocks.tx(tx_id).code == Code.OK
    top = min(n.chain.height for n in nodes)
    agree(nodes, top)
    old = [Validator(n, key("validator-" + n).public_key, 10) for n in NAMES]
    new = [
        Validator("ministry", key("validator-ministry").public_key, 25),
        *(v for v in old if v.name in ("central-bank", "regulator")),
    ]
    old_hash, new_hash = compute_validators_hash(old), compute_validators_hash(new)
    store = nodes[0].chain.store
    auditor_address = auditor.address
    for height in range(1, top + 1):
        header = decode_block(store.blocks.block(height).block).header
        in_force = new_hash if height >= decided + 2 else old_hash
        assert header.validators_hash == in_force, height
        if height < top:
            # The certificate of block h is in block h's record; signers are that set's.
            commit = decode_message(store.blocks.commit(height))
            assert isinstance(commit, Commit)
            signers = {address for address, _ in commit.signatures}
            if height >= decided + 2:
                assert auditor_address not in signers, height
    # The driver's schedule, rebuilt from the ledger, gives the consensus core the same set.
    for node in nodes:
        schedule = schedule_from_chain(node.chain)
        vset = schedule.for_height(node.chain.height + 1)
        assert {v.pub_key: v.power for v in vset.validators} == {v.public_key: v.power for v in new}
        node.chain.close()


def test_evidence_reaches_the_chain_and_forged_evidence_is_refused(tmp_path):
    """A double vote handed to one validator's driver is proposed by it, verified by the
    others, recorded in every node's state, then dropped from the evidence pool; a proposal
    holding a forged double vote (a signature that does not verify) is refused."""
    from consensus.types import Vote, VoteType, make_evidence, vote_signing_bytes
    from consensus.wire import encode_message
    from ledger.block import compute_evidence_hash, decode_block
    from ledger.crypto import hash256
    from ledger.ops.evidence import encode_evidence_item, misbehaviour_key, record_from_bytes
    from node.proposal_check import abandon_pending
    from tests.node.test_driver import Hub, Node, agree, key, make_nodes, wait_until

    auditor = key("validator-auditor")

    def vote(height, value_id, signer=auditor):
        data = vote_signing_bytes(CHAIN_ID, VoteType.PREVOTE, height, 0, value_id)
        return Vote(VoteType.PREVOTE, height, 0, value_id, signer.address, signer.sign(data))

    evidence = make_evidence(vote(1, b"\x01" * 32), vote(1, None))
    piece = encode_evidence_item(encode_message(evidence), auditor.public_key)
    state_key = misbehaviour_key(hash256(piece))

    hub = Hub()
    nodes = make_nodes(tmp_path, hub)

    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: nodes[0].chain.height >= 1)
                nodes[0].driver.evidence_pool.evidence.append(evidence)
                await wait_until(
                    lambda: all(n.chain.store.state.get_state(state_key) is not None for n in nodes)
                )
                await wait_until(lambda: all(n.chain.height >= 6 for n in nodes))
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert nodes[0].driver.evidence_pool.evidence == []  # committed: not proposed again
    record = record_from_bytes(nodes[0].chain.store.state.get_state(state_key))
    assert (record.validator, record.height) == (auditor.address, 1)
    top = min(n.chain.height for n in nodes)
    agree(nodes, top)
    # Exactly one block holds it (never proposed twice).
    holding = [
        h
        for h in range(1, top + 1)
        if piece in decode_block(nodes[0].chain.store.blocks.block(h).block).evidence
    ]
    assert len(holding) == 1 and record.recorded_height == holding[0]
    assert not hub.misbehaviour
    for node in nodes:
        node.chain.close()

    # A forged piece: the second vote's signature is not the auditor's.
    forged_vote = dataclasses.replace(vote(1, None), signature=bytes(64))
    forged = encode_evidence_item(
        encode_message(make_evidence(vote(1, b"\x01" * 32), forged_vote)), auditor.public_key
    )
    proposer, validator = (Node(n, tmp_path / f"fresh-{n}.db", Hub()) for n in ("a", "b"))

    async def check():
        proposer.open()
        validator.open()
        for piece_, ok in ((forged, False), (piece, True)):
            pending = proposer.chain.build_block(
                [], proposer.driver.clock_ms() + 1, b"p" * 20, evidence=[piece_]
            )
            assert pending.block.evidence == (piece_,)  # the ledger cannot check signatures
            assert pending.header.evidence_hash == compute_evidence_hash([piece_])
            proposer.chain.abandon()
            assert validator.driver.check.validate(1, pending.block.encode()) is ok
            abandon_pending(validator.driver.chain)
            validator.driver.check.clear()

    trio.run(check, clock=trio.testing.MockClock(autojump_threshold=0))
    proposer.chain.close()
    validator.chain.close()
