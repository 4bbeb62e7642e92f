"""Validator-set changes take effect without a restart (issue 4 item 7).

Four in-process validators (tests/node/test_driver.py's in-memory hub, virtual time) and a
fifth node whose key is in no set. The institutions add it with a `change_validators`
transaction decided at H: it signs nothing before H + 2, precommits at every height from
H + 2, lands in commit certificates, and its `status` says validator. A second change removes
the auditor: its last vote is at that change's H + 1 and it keeps following the chain. Every
node agrees on every block and no one signs two different messages for one slot.
"""

from __future__ import annotations

import trio
import trio.testing

from consensus.types import VALSET_DELAY, Commit, Vote, VoteType, verify_commit
from consensus.wire import decode_message
from ledger.codes import Code
from ledger.crypto import address_to_text, verify_signature
from ledger.store import AsyncStore
from ledger.tx import TxBody, decode_signed_tx, sign_tx
from node import messages
from node.api import NodeApi, NodeInfo
from node.validator_set import consensus_set
from tests.node.test_driver import (
    CHAIN_ID,
    Hub,
    Node,
    agree,
    genesis,
    inline,
    key,
    make_nodes,
    signed_votes,
    wait_until,
)

# The institutions holding validator_operator in the default genesis; 3 approvals are needed.
APPROVERS = ("ministry", "regulator", "auditor")


def change_tx(nonce: int, changes: list[dict]) -> bytes:
    body = TxBody(
        CHAIN_ID, key("ministry").address, nonce, "change_validators", {"changes": changes}
    )
    return sign_tx(body, [key(name) for name in APPROVERS]).raw


def votes_by(hub: Hub, address: bytes, vote_type: VoteType) -> dict[int, set[int]]:
    """height -> rounds at which `address` sent a vote of `vote_type` (from every sent message)."""
    heights: dict[int, set[int]] = {}
    for data in hub.sent:
        message = messages.decode(data)
        if isinstance(message, messages.ConsensusMessage) and isinstance(message.message, Vote):
            vote = message.message
            if vote.validator == address and vote.vote_type == vote_type:
                heights.setdefault(vote.height, set()).add(vote.round)
    return heights


def signers(node: Node, height: int) -> set[bytes]:
    commit = decode_message(node.chain.store.blocks.commit(height))
    assert isinstance(commit, Commit)
    return {address for address, _ in commit.signatures}


def api_of(node: Node) -> NodeApi:
    return NodeApi(
        info=NodeInfo(name=node.name, role="observer", node_key=node.identity.public_key),
        genesis=genesis(),
        driver=node.driver,
        store=AsyncStore(node.chain.store, inline),
        peers=lambda: (),
    )


def test_a_node_joins_and_a_validator_leaves_at_h_plus_2_without_a_restart(tmp_path):
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    candidate = Node("candidate", tmp_path / "candidate.db", hub)  # key in no set yet
    auditor = nodes[3]
    everyone = [*nodes, candidate]
    new_key = candidate.identity.public_key
    add = change_tx(0, [{"name": "candidate", "public_key": new_key, "power": 10}])
    remove = change_tx(
        1, [{"name": "auditor", "public_key": auditor.identity.public_key, "power": 0}]
    )
    add_id, remove_id = decode_signed_tx(add).tx_id, decode_signed_tx(remove).tx_id
    seen: dict[str, object] = {}

    async def decided(raw: bytes, tx_id: bytes) -> int:
        assert (await nodes[1].driver.submit(raw)).code == Code.OK
        await wait_until(lambda: nodes[0].chain.store.blocks.tx(tx_id) is not None)
        record = nodes[0].chain.store.blocks.tx(tx_id)
        assert record.code == Code.OK, record
        return record.height

    async def main():
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for node in everyone:
                    await nursery.start(node.run)
                api = api_of(candidate)
                await wait_until(lambda: candidate.chain.height >= 2)
                before = await api.status()
                seen["before"] = before
                assert new_key not in nodes[0].driver.allowed_keys()

                joined = await decided(add, add_id)
                # Committed at `joined`: peers allow the new key from now on, two heights
                # before it signs, so it can be connected when its first height starts.
                await wait_until(lambda: nodes[0].chain.height >= joined)
                assert new_key in nodes[0].driver.allowed_keys()
                await wait_until(lambda: candidate.driver.core.height >= joined + VALSET_DELAY)
                seen["after_join"] = await api.status()
                seen["role"] = api.role

                left = await decided(remove, remove_id)
                await wait_until(lambda: all(n.chain.height >= left + 6 for n in everyone))
                nursery.cancel_scope.cancel()
        return joined, left

    joined, left = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    top = min(n.chain.height for n in everyone)

    # Agreement, and safety: nobody signed two different proposals or votes for one slot.
    agree(everyone, top)
    assert not {slot: ids for slot, ids in signed_votes(hub).items() if len(ids) > 1}
    assert not hub.misbehaviour

    # The candidate: an observer until joined + 2, a precommitting validator from then on.
    new_address = candidate.identity.address
    precommits = votes_by(hub, new_address, VoteType.PRECOMMIT)
    prevotes = votes_by(hub, new_address, VoteType.PREVOTE)
    assert min(prevotes) == min(precommits) == joined + VALSET_DELAY
    assert set(range(joined + VALSET_DELAY, top)) <= set(precommits)
    in_certificates = [h for h in range(1, top) if new_address in signers(nodes[0], h)]
    assert in_certificates and min(in_certificates) >= joined + VALSET_DELAY

    # The auditor: signs up to left + 1, never after, yet follows the chain to the top.
    auditor_address = auditor.identity.address
    auditor_votes = votes_by(hub, auditor_address, VoteType.PREVOTE)
    auditor_votes.update(votes_by(hub, auditor_address, VoteType.PRECOMMIT))
    assert max(auditor_votes) == left + VALSET_DELAY - 1
    assert all(auditor_address not in signers(nodes[0], h) for h in range(left + 2, top))
    assert auditor.chain.height >= left + 6
    assert auditor.driver.own_address is None
    assert candidate.driver.own_address == new_address

    # Every certificate's signers are members of the set in force at its height.
    store = nodes[0].chain.store
    core_members = {
        key("validator-" + n).address for n in ("ministry", "central-bank", "regulator")
    }

    def members(height: int) -> set[bytes]:
        joined_now = {new_address} if height >= joined + VALSET_DELAY else set()
        still_there = {auditor_address} if height < left + VALSET_DELAY else set()
        return core_members | joined_now | still_there

    for height in range(1, top):
        assert signers(nodes[0], height) <= members(height), height
    # ...and the ledger's set at the top is the final one, under which the last one verifies.
    vset = consensus_set(nodes[0].chain.state.validator_set.validators)
    assert {v.address for v in vset.validators} == members(top) == core_members | {new_address}
    assert verify_commit(
        vset, CHAIN_ID, decode_message(store.blocks.commit(top - 1)), verify_signature
    )

    # The allow-list follows the sets: the new key in, the removed (non-genesis rule is
    # app.py's) auditor key out of the driver's dynamic part.
    allowed = nodes[0].driver.allowed_keys()
    assert new_key in allowed and auditor.identity.public_key not in allowed

    # status, from the same NodeApi object, before and after the switch.
    before, after = seen["before"], seen["after_join"]
    assert before["node_info"]["role"] == "observer"
    assert before["validator_info"] == {"address": None, "voting_power": 0}
    assert after["node_info"]["role"] == "validator" == seen["role"]
    assert after["validator_info"] == {
        "address": address_to_text(new_address),
        "voting_power": 10,
    }

    # The `validators` RPC answers the set of the height it names (the one that signed that
    # block), the latest committed by default -- not the next block's set.
    api = api_of(nodes[0])

    async def answers():
        got = {h: await api.validators(h) for h in range(0, top + 1)}
        return got, await api.validators(None)

    by_height, latest = trio.run(answers)
    for height, (labelled, validators) in by_height.items():
        texts = {v["address"] for v in validators}
        assert labelled == height
        assert texts == {address_to_text(a) for a in members(max(height, 1))}, height
    assert latest == by_height[nodes[0].chain.height]
    assert {v["name"] for v in by_height[top][1]} >= {"candidate", "ministry"}
    for node in everyone:
        node.chain.close()


def test_a_joined_validator_restarts_as_a_validator_and_never_signs_twice(tmp_path):
    """The added node crashes right after its first signing heights and restarts from its
    database and consensus record: it is a validator at once (no config change), catches
    up and signs again, and no slot ever holds two different messages of it."""
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    candidate = Node("candidate", tmp_path / "candidate.db", hub)
    everyone = [*nodes, candidate]
    add = change_tx(
        0, [{"name": "candidate", "public_key": candidate.identity.public_key, "power": 10}]
    )
    add_id = decode_signed_tx(add).tx_id
    address = candidate.identity.address

    async def main():
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for node in everyone:
                    await nursery.start(node.run)
                await wait_until(lambda: nodes[0].chain.height >= 1)
                assert (await nodes[0].driver.submit(add)).code == Code.OK
                await wait_until(lambda: nodes[0].chain.store.blocks.tx(add_id) is not None)
                joined = nodes[0].chain.store.blocks.tx(add_id).height
                first = joined + VALSET_DELAY
                await wait_until(lambda: first + 1 in votes_by(hub, address, VoteType.PREVOTE))
                candidate.kill()
                down_at = max(n.chain.height for n in nodes)
                await wait_until(lambda: all(n.chain.height >= down_at + 2 for n in nodes))
                candidate.revive()
                await nursery.start(candidate.run)
                assert candidate.driver.own_address == address  # a validator from the start
                target = max(n.chain.height for n in nodes) + 3
                await wait_until(lambda: all(n.chain.height >= target for n in everyone))
                nursery.cancel_scope.cancel()
        return first, down_at

    first, down_at = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    agree(everyone, min(n.chain.height for n in everyone))
    assert not {slot: ids for slot, ids in signed_votes(hub).items() if len(ids) > 1}
    precommits = votes_by(hub, address, VoteType.PRECOMMIT)
    assert min(precommits) == first
    assert max(precommits) > down_at + 2  # signing again after the restart
    for node in everyone:
        node.chain.close()


def test_an_observer_signs_with_its_own_key_but_never_with_a_genesis_validator_key(tmp_path):
    """app.py's identity rule: an observer's own key may be added to the set later, so the
    driver gets it; an observer configured with a genesis validator's key gets none (that key
    signs on its validator node; two signers of one key would double-sign)."""
    from node.app import _signing_identity
    from node.config import from_dict

    def config(role: str):
        document = {
            "name": "n",
            "role": role,
            "chain_id": CHAIN_ID,
            "p2p": {"listen": "10.0.0.5:26656"},
            "rpc": {"listen": "10.0.0.5:26657"},
        }
        return from_dict(document, home=tmp_path)

    genesis_keys = {key("validator-" + n).public_key for n in ("ministry", "auditor")}
    own, validator = key("observer-1"), key("validator-auditor")
    assert _signing_identity(config("observer"), own, genesis_keys) is own
    assert _signing_identity(config("observer"), validator, genesis_keys) is None
    assert _signing_identity(config("validator"), validator, genesis_keys) is validator
