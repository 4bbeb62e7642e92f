"""The signing hold: a validator that lost its consensus record (the memory of what it signed)
while its store holds blocks must not sign until the network has decided a block past
anything it could have signed before (node/driver.py, "Signing hold").

In-process, four validators on the in-memory hub of tests/node/test_driver.py, virtual time:
the victim is crashed, its record deleted, the others go on, and the victim restarts. Every
proposal and vote that leaves it after the restart is recorded: none may be at a height <=
max(S, T) + 1 (S its store height, T the tip peers reported), and it must sign again after.
Also: a brand-new validator signs at once, and one whose record is intact is not held.
"""

from __future__ import annotations

import dataclasses
import sqlite3

import trio
import trio.testing

from consensus.types import Proposal, Vote
from ledger.chain import Chain
from ledger.store import AsyncStore, StoreError
from node import messages
from node.app import run_driver_until_store_fails
from node.messages import ConsensusMessage
from tests.node.test_driver import (
    CONFIG,
    Endpoint,
    Hub,
    Node,
    agree,
    genesis,
    inline,
    make_nodes,
    run,
    wait_until,
)


class RecordingEndpoint(Endpoint):
    """An endpoint that keeps every proposal and vote its node sends (the signing record)."""

    def __init__(self, hub: Hub, key: bytes) -> None:
        super().__init__(hub, key)
        self.signed: list[Proposal | Vote] = []

    def _note(self, message: bytes) -> None:
        decoded = messages.decode(message)
        if isinstance(decoded, ConsensusMessage) and isinstance(decoded.message, Proposal | Vote):
            self.signed.append(decoded.message)

    def broadcast(self, message: bytes) -> int:
        self._note(message)
        return super().broadcast(message)

    def send_to(self, key: bytes, message: bytes) -> bool:
        self._note(message)
        return super().send_to(key, message)


def delete_record(path) -> int:
    db = sqlite3.connect(path)
    try:
        deleted = db.execute("DELETE FROM meta WHERE key = 'store.consensus_record'").rowcount
        db.commit()
    finally:
        db.close()
    return deleted


def test_validator_without_its_record_signs_nothing_until_the_network_passes_its_tip(tmp_path):
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    victim = nodes[3]
    seen: dict[str, int] = {}

    async def main():
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: victim.chain.height >= 3)
                victim.kill()
                await trio.sleep(0)
                seen["store"] = victim.chain.height
                victim.revive()  # closes its database
                assert delete_record(victim.path) == 1
                # The others go on without it (3 of 4 is a quorum).
                await wait_until(lambda: nodes[0].chain.height >= seen["store"] + 3)
                recorder = RecordingEndpoint(hub, victim.identity.public_key)
                hub.endpoints[victim.identity.public_key] = recorder
                victim.endpoint = recorder
                await nursery.start(victim.run)
                driver = victim.driver
                assert driver.hold.held and driver.own_address is None
                await wait_until(lambda: not driver.hold.held)
                seen["target"] = driver.chain.height  # the block that ended the hold
                seen["peer_tip"] = driver.hold.peer_tip
                seen["resumes_after"] = driver.hold.resumes_after
                await wait_until(lambda: all(n.chain.height >= seen["target"] + 4 for n in nodes))
                nursery.cancel_scope.cancel()
        return recorder

    recorder = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # T was learned from the peers, and it was past the victim's own store.
    assert seen["peer_tip"] >= seen["store"] + 3
    assert seen["target"] >= seen["resumes_after"] == max(seen["store"], seen["peer_tip"]) + 1
    address = victim.identity.address
    ours = [m for m in recorder.signed if getattr(m, "validator", None) == address]
    ours += [m for m in recorder.signed if getattr(m, "proposer", None) == address]
    heights = sorted({m.height for m in ours})
    # Nothing signed at any height it might have signed at before the crash (<= max(S, T) + 1;
    # `target` is read by polling, possibly a block after the hold ended, so it is no bound) ...
    assert heights and min(heights) > seen["resumes_after"], (heights, seen)
    # ... and it signs again: its precommits are in the certificates after the hold.
    certified = [
        h
        for h in range(seen["target"] + 1, nodes[0].chain.height + 1)
        if _signed_certificate(nodes[0], h, address)
    ]
    assert certified, "the victim never signed again"
    agree(nodes, min(n.chain.height for n in nodes))
    for node in nodes:
        node.chain.close()


def test_hold_ends_on_a_tick_when_the_network_stalls_for_want_of_the_held_signature(tmp_path):
    """Chaos found it (delete_record, then a second validator stopped): the held validator
    synced past its target while it was still learning the peers' tip, so no commit after the
    tip was final could end the hold; with one more validator down the network needed its
    signature, and stalled for good. The hold must end on a tick too."""
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    victim, other = nodes[3], nodes[2]
    # A long learning window (2 ticks of 3 s): the others commit past the target inside it.
    victim.config = dataclasses.replace(CONFIG, tick_ms=3000)
    seen: dict[str, int] = {}

    async def main():
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: victim.chain.height >= 3)
                victim.kill()
                await trio.sleep(0)
                store_height = victim.chain.height
                await wait_until(lambda: nodes[0].chain.height >= store_height + 2)
                # Revived just before its start: nothing sent to it while it was down (a
                # peer's old Status) is delivered, as over a real link made after the start.
                victim.revive()
                assert delete_record(victim.path) == 1
                await nursery.start(victim.run)
                driver = victim.driver
                assert driver.hold.held
                # The others decide past anything the victim could have signed, while its
                # learning window is still open ...
                await wait_until(lambda: driver.hold.peer_tip is not None)
                seen["tip"] = driver.hold.peer_tip
                await wait_until(lambda: victim.chain.height >= seen["tip"] + 2)
                assert driver.hold.held and driver.hold.resumes_after is None
                # ... then a second validator stops: without the victim, 2 of 4 sign.
                other.kill()
                seen["stalled_at"] = max(n.chain.height for n in nodes)
                await wait_until(lambda: not driver.hold.held)
                await wait_until(lambda: nodes[0].chain.height >= seen["stalled_at"] + 3)
                nursery.cancel_scope.cancel()

    run(main)
    assert nodes[0].chain.height >= seen["stalled_at"] + 3
    live = [nodes[0], nodes[1], victim]
    agree(live, min(n.chain.height for n in live))
    for node in nodes:
        node.chain.close()


def _signed_certificate(node: Node, height: int, address: bytes) -> bool:
    from consensus.wire import decode_message

    commit = decode_message(node.chain.store.blocks.commit(height))
    return any(validator == address for validator, _ in commit.signatures)


def test_new_validator_signs_at_once_and_an_intact_record_is_not_held(tmp_path):
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)

    async def main():
        for node in nodes:
            node.open()
        # Empty store, no record: a brand-new validator, nothing it could have signed.
        assert [n.driver.hold.held for n in nodes] == [False] * 4
        assert nodes[0].driver.own_address == nodes[0].identity.address
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    node.chain.close()
                    await nursery.start(node.run)
                await wait_until(lambda: all(n.chain.height >= 2 for n in nodes))
                nursery.cancel_scope.cancel()
        for node in nodes:
            node.chain.close()
            node.open()  # record present and not older than the store: not held
            assert not node.driver.hold.held, node.name

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    for node in nodes:
        node.chain.close()


class FullDiskStore(AsyncStore):
    """An AsyncStore whose writes fail once `full` is set, as SQLite's do on a full disk (the
    real store wraps them in StoreError after rolling the transaction back)."""

    full = False

    async def save_consensus_record(self, record: bytes) -> None:
        if self.full:
            raise StoreError(
                "node.db: writing 'store.consensus_record' failed (database or disk is full)"
            )
        await super().save_consensus_record(record)

    async def run(self, fn, *args):
        if self.full and getattr(fn, "__name__", "") == "commit":
            raise sqlite3.OperationalError("database or disk is full")  # an unwrapped path
        return await super().run(fn, *args)


def test_full_disk_stops_the_driver_with_the_store_error_and_the_others_go_on(tmp_path):
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    victim = nodes[0]
    outcome: dict[str, object] = {}

    async def run_victim(task_status=trio.TASK_STATUS_IGNORED):
        driver = victim.open()
        store = FullDiskStore(victim.chain.store, inline)
        driver.store = store
        outcome["store"] = store
        task_status.started()
        outcome["failure"] = await run_driver_until_store_fails(driver)
        hub.down.add(victim.identity.public_key)

    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                await nursery.start(run_victim)
                for node in nodes[1:]:
                    await nursery.start(node.run)
                await wait_until(lambda: victim.chain.height >= 2)
                outcome["store"].full = True
                outcome["height"] = victim.chain.height
                await wait_until(lambda: "failure" in outcome)
                await wait_until(
                    lambda: all(n.chain.height >= outcome["height"] + 3 for n in nodes[1:])
                )
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert isinstance(outcome["failure"], StoreError | sqlite3.OperationalError)
    assert "full" in str(outcome["failure"])
    # Nothing half-written: the database reopens at a height it had fully committed.
    victim.chain.close()
    reopened = Chain.open(victim.path, genesis())
    assert outcome["height"] <= reopened.height <= outcome["height"] + 1
    assert reopened.store.blocks.block(reopened.height) is not None
    reopened.close()
    for node in nodes[1:]:
        node.chain.close()


def test_half_set_byzantine_flag_refuses_to_start_in_one_line(tmp_path):
    from node.byzantine import ENV
    from tests.node.netsupport import Net, free_base_port

    net = Net(tmp_path / "net", free_base_port(1), chain_id="khazana-halfbyz", validators=1)
    name = net.names[0]
    try:
        net.start(name, env={ENV: "double-vote"})  # the variable without the written ack
        assert net.wait_exit(name, "the refusal") == 1
    finally:
        net.stop_all()
    log = net.log(name)
    assert "Traceback" not in log, log[-2000:]
    refusals = [line for line in log.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1 and "BYZANTINE_ACK" in refusals[0], log[-2000:]
