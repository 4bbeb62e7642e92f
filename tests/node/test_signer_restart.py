"""Kill and restart the remote signer and the node at every step of a signature: no double
sign, and no halt beyond the restart (issue 15).

In-process, virtual time: four validators on the in-memory hub of tests/node/test_driver.py;
the victim signs through a `RemoteValidatorKey` whose calls reach a `SignerService` over its
SQLite record file (the signer "process"). The steps, each a test:

    signer:before_record   the signer signed in memory and dies before its record is durable
    signer:after_record    the record is durable, the signer dies before answering
    node:after_answer      the answer reached the node, which dies before persisting it
    both:after_record      signer and node die together (a shared machine loses power)
    node:after_persist     the node persisted the signed vote and dies before sending it
    node:before_send       (driver fail points, node/driver.py)

at the victim's next prevote, precommit or proposal (`_cases`). The dead party is
restarted after a pause; then every node must pass the height the others had reached by
more than two blocks, the victim's signature must be in a later commit certificate, no
validator may have sent two different messages for one (height, round, kind), and the
signer's record must hold at most one message per slot.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from consensus.types import PROPOSAL_DOMAIN_TAG, VOTE_DOMAIN_TAG, VoteType
from consensus.wire import decode_message
from node.signer import SignerService, SignRecord
from node.signer_client import RemoteValidatorKey, SignerUnavailable
from tests.node.test_driver import (
    CHAIN_ID,
    FailPointHit,
    Hub,
    Node,
    agree,
    key,
    make_nodes,
    signed_votes,
    wait_until,
)


class Died(BaseException):
    """The signer process ended at a fail point."""


class InProcessSigner:
    """The signer: a SignerService over its record file; `kill` / `start` are the process."""

    def __init__(self, path, validator_key) -> None:
        self.path = path
        self.key = validator_key
        self.armed: str | None = None  # fail point to hit at the next matching request
        self.kind: bytes = b""  # which request arms it (a signing-bytes prefix)
        self.kill_node_too = False
        self.node_dies_after_answer = False
        self.service: SignerService | None = None
        self.deaths = 0
        self.start()

    def start(self) -> None:
        self.service = SignerService(
            self.key, CHAIN_ID, SignRecord(self.path), failpoint=self._failpoint
        )

    def kill(self) -> None:
        if self.service is not None:
            self.service.record.close()
            self.service = None
            self.deaths += 1

    def _failpoint(self, name: str) -> None:
        if name == self.armed:
            self.armed = None
            raise Died()

    def _matches(self, raw: bytes) -> bool:
        import msgpack

        data = msgpack.unpackb(raw).get("data", b"")
        return data.startswith(self.kind) if self.kind else True

    def call(self, raw: bytes) -> bytes:
        if self.service is None:
            raise SignerUnavailable("the signer is down")
        armed = self._matches(raw)
        if not armed:
            point, self.armed = self.armed, None  # only the matching request may hit it
        try:
            answer = self.service.handle(raw)
        except Died:
            self.kill()
            if self.kill_node_too:
                raise FailPointHit() from None  # the node dies with it: nothing after
            raise SignerUnavailable("the signer died") from None
        finally:
            if not armed:
                self.armed = point
        if armed and self.node_dies_after_answer:
            self.node_dies_after_answer = False
            raise FailPointHit()  # the node dies holding an answer it never persisted
        return answer


KINDS = {
    "prevote": VOTE_DOMAIN_TAG + bytes([len(CHAIN_ID)]) + CHAIN_ID.encode() + b"\x01",
    "precommit": VOTE_DOMAIN_TAG + bytes([len(CHAIN_ID)]) + CHAIN_ID.encode() + b"\x02",
    "proposal": PROPOSAL_DOMAIN_TAG + bytes([len(CHAIN_ID)]) + CHAIN_ID.encode() + b"\x03",
}
STEPS = (
    "signer:before_record",
    "signer:after_record",
    "node:after_answer",
    "both:after_record",
    "node:after_persist",
    "node:before_send",
)


def signed_certificate(node: Node, height: int, address: bytes) -> bool:
    commit = decode_message(node.chain.store.blocks.commit(height))
    return any(validator == address for validator, _ in commit.signatures)


def _cases():
    """Every step at every kind of message where the kind matters (the driver's fail points
    hit at its next persist, whatever it holds)."""
    for step in ("signer:after_record", "node:after_answer"):
        for kind in KINDS:
            yield step, kind
    yield "signer:before_record", "precommit"
    yield "both:after_record", "precommit"
    yield "node:after_persist", "precommit"
    yield "node:before_send", "prevote"


@pytest.mark.parametrize(("step", "kind"), list(_cases()))
def test_kill_and_restart_at_every_step_of_a_signature(tmp_path, monkeypatch, step, kind):
    def exit_here(code):
        assert code == 137
        raise FailPointHit()

    monkeypatch.setattr("node.driver.os._exit", exit_here)
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    victim = nodes[0]
    validator_key = key("validator-" + victim.name)
    signer = InProcessSigner(tmp_path / "signer.db", validator_key)
    victim.identity = RemoteValidatorKey(validator_key.public_key, signer.call, name="victim")
    who, point = step.split(":")

    def arm() -> None:
        signer.kind = KINDS[kind]
        if who == "signer":
            signer.armed = point
        elif who == "both":
            signer.armed, signer.kill_node_too = point, True
        elif point == "after_answer":
            signer.node_dies_after_answer = True
        else:
            victim.failpoints = frozenset({point})
            victim.driver.failpoints = victim.failpoints

    def hit() -> bool:
        if who == "signer":
            return signer.deaths > 0
        return victim.crashed

    async def main():
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: victim.chain.height >= 2)
                arm()
                await wait_until(hit)
                reached = max(n.chain.height for n in nodes)
                await trio.sleep(2)  # the dead stay dead a while; the others go on
                if who in ("signer", "both"):
                    signer.start()
                if who in ("node", "both"):
                    victim.failpoints = frozenset()
                    victim.revive()
                    await nursery.start(victim.run)
                target = max(n.chain.height for n in nodes) + 3
                await wait_until(lambda: all(n.chain.height >= target for n in nodes))
                nursery.cancel_scope.cancel()
                return reached, target

    reached, target = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert target > reached
    agree(nodes, min(n.chain.height for n in nodes))
    # The victim signs again after the restart: its precommit is in a later certificate.
    address = validator_key.address
    assert any(signed_certificate(victim, h, address) for h in range(target - 2, target + 1))
    conflicting = {slot: ids for slot, ids in signed_votes(hub).items() if len(ids) > 1}
    assert not conflicting
    record = SignRecord(tmp_path / "signer.db")
    slots = [slot for slot, _ in record.slots()]
    assert len(slots) == len(set(slots)), "two messages signed for one slot"
    assert slots, "the signer signed nothing"
    record.close()
    if signer.service is not None:
        signer.service.record.close()
    for node in nodes:
        node.chain.close()


def test_a_node_whose_signer_never_comes_back_follows_and_the_network_goes_on(tmp_path):
    """A signer down for good: the node keeps following (no crash, no halt of the others)."""
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    victim = nodes[0]
    validator_key = key("validator-" + victim.name)
    signer = InProcessSigner(tmp_path / "signer.db", validator_key)
    victim.identity = RemoteValidatorKey(validator_key.public_key, signer.call, name="victim")

    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: victim.chain.height >= 2)
                signer.kill()
                start = victim.chain.height
                await wait_until(lambda: all(n.chain.height >= start + 4 for n in nodes))
                assert victim.driver.core.stats.sign_failed > 0
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    agree(nodes, min(n.chain.height for n in nodes))
    assert VoteType.PREVOTE  # the hub saw no conflicting votes either
    assert not {slot: ids for slot, ids in signed_votes(hub).items() if len(ids) > 1}
    for node in nodes:
        node.chain.close()
