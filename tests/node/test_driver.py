"""The driver: four in-process validators (in-memory links, virtual time) commit blocks with
transactions and agree; a crashed validator restarts from its database and consensus record
and catches up by sync; proposals with a bad transaction or a future time are refused."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from consensus.core import CoreConfig
from ledger.block import Block
from ledger.chain import Chain
from ledger.codes import Code
from ledger.crypto import generate_key, hash256
from ledger.genesis import default_genesis
from ledger.store import AsyncStore
from ledger.tx import TxBody, decode_signed_tx, sign_tx
from node.driver import (
    FAILPOINTS,
    Driver,
    DriverConfig,
    DriverOptions,
    DriverParts,
    failpoints_from_env,
)
from node.mempool import Mempool, MempoolLimits

# ---- the in-process network (in-memory links, inline store calls, virtual time) ----

CHAIN_ID = "khazana-driver-test"
GENESIS_MS = 1_767_225_600_000
NAMES = ("ministry", "central-bank", "regulator", "auditor")
CORE = CoreConfig(
    timeout_propose_ms=1000,
    timeout_prevote_ms=500,
    timeout_precommit_ms=500,
    retransmit_ms=700,
)
CONFIG = DriverConfig(core=CORE, heartbeat_ms=300, tick_ms=200, sync_timeout_ms=1000)


def key(name: str):
    return generate_key(name.encode().ljust(32, b"\x00")[:32])


def genesis() -> dict:
    return default_genesis(
        validators=[(n, key("validator-" + n).public_key) for n in NAMES],
        institutions={n: key(n).address for n in NAMES},
        chain_id=CHAIN_ID,
        genesis_time_ms=GENESIS_MS,
    )


def instrument_tx(nonce: int, ident: str, *, sender: str = "central-bank") -> bytes:
    body = TxBody(
        CHAIN_ID,
        key(sender).address,
        nonce,
        "register_instrument",
        {
            "id": ident,
            "kind": "cash",
            "name": f"Cash {ident}",
            "currency": "PKR",
            "face_value": 1,
            "decimals": 2,
            "cap": 10**12,
        },
    )
    return sign_tx(body, [key(sender)]).raw


async def inline(fn):
    return fn()


@dataclasses.dataclass
class _PeerRef:
    key: bytes


class Hub:
    """Every endpoint linked to every other; a node that is `down` neither sends nor gets."""

    def __init__(self) -> None:
        self.endpoints: dict[bytes, Endpoint] = {}
        self.down: set[bytes] = set()
        self.misbehaviour: list[tuple[bytes, bytes, str]] = []
        self.sent: list[bytes] = []  # every message that left a node (for double-sign checks)

    def endpoint(self, key: bytes) -> Endpoint:
        ep = Endpoint(self, key)
        self.endpoints[key] = ep
        return ep


class Endpoint:
    def __init__(self, hub: Hub, key: bytes) -> None:
        self.hub = hub
        self.key = key
        self._send, self.inbound = trio.open_memory_channel(10_000)

    def _deliver(self, to: bytes, message: bytes) -> bool:
        if to == self.key or self.key in self.hub.down or to in self.hub.down:
            return False
        target = self.hub.endpoints.get(to)
        if target is None:
            return False
        try:
            target._send.send_nowait((self.key, message))
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        return True

    def broadcast(self, message: bytes) -> int:
        if self.key not in self.hub.down:
            self.hub.sent.append(message)
        return sum(self._deliver(k, message) for k in sorted(self.hub.endpoints))

    def send_to(self, key: bytes, message: bytes) -> bool:
        if self.key not in self.hub.down:
            self.hub.sent.append(message)
        return self._deliver(key, message)

    def report_misbehaviour(self, key: bytes, reason: str, penalty: int = 25) -> None:
        self.hub.misbehaviour.append((self.key, key, reason))

    def peers(self):
        if self.key in self.hub.down:
            return ()
        return tuple(
            _PeerRef(k)
            for k in sorted(self.hub.endpoints)
            if k != self.key and k not in self.hub.down
        )


class FailPointHit(BaseException):
    """Stands in for `os._exit(137)` at a fail point (a BaseException: nothing catches it)."""


class Node:
    """One driver with its chain, mempool and hub endpoint; `start` / `stop` in a nursery."""

    def __init__(self, name: str, path, hub: Hub, *, observer: bool = False) -> None:
        self.name = name
        self.config = CONFIG  # a test may give one node other timings
        self.path = path
        self.hub = hub
        self.identity = key(("observer-" if observer else "validator-") + name)
        self.endpoint = hub.endpoint(self.identity.public_key)
        self.failpoints: frozenset[str] = frozenset()
        self.crashed = False
        self.driver: Driver | None = None
        self.scope: trio.CancelScope | None = None
        self.chain: Chain | None = None

    def open(self) -> Driver:
        from consensus.types import DurableState

        self.chain = Chain.open(self.path, genesis())
        record = self.chain.store.load_consensus_record()
        durable = DurableState.from_bytes(record) if record else None
        self.driver = Driver(
            DriverParts(
                self.chain,
                AsyncStore(self.chain.store, inline),
                self.endpoint,
                Mempool(MempoolLimits(), CHAIN_ID),
                lambda: GENESIS_MS + round(trio.current_time() * 1000),
            ),
            self.config,
            identity=self.identity,
            durable=durable,
            options=DriverOptions(name=self.name, failpoints=self.failpoints),
        )
        return self.driver

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        driver = self.open()
        with trio.CancelScope() as scope:
            self.scope = scope
            try:
                await driver.run(task_status=task_status)
            except* FailPointHit:
                # The process "died" at the fail point: nothing after it happened.
                self.crashed = True
                self.hub.down.add(self.identity.public_key)

    def kill(self) -> None:
        """Crash: cancel everything, drop queued input, close the database."""
        assert self.scope is not None and self.chain is not None
        self.scope.cancel()
        self.hub.down.add(self.identity.public_key)

    def revive(self) -> None:
        self.chain.close()
        self.endpoint = self.hub.endpoint(self.identity.public_key)
        self.hub.down.discard(self.identity.public_key)


def block_hashes(chain: Chain, upto: int) -> list[tuple[bytes, bytes]]:
    return [
        (chain.store.blocks.block(h).hash, chain.store.blocks.app_hash(h))
        for h in range(1, upto + 1)
    ]


async def wait_until(predicate, step: float = 0.05) -> None:
    while not predicate():
        await trio.sleep(step)


# ---- tests ----


def run(async_fn):
    trio.run(async_fn, clock=trio.testing.MockClock(autojump_threshold=0))


def make_nodes(tmp_path, hub):
    return [Node(name, tmp_path / f"{name}.db", hub) for name in NAMES]


def agree(nodes, upto):
    """Every node holds the same block hash and app_hash at every height up to `upto`."""
    reference = block_hashes(nodes[0].chain, upto)
    for node in nodes[1:]:
        assert block_hashes(node.chain, upto) == reference, node.name


def test_four_validators_commit_blocks_with_transactions_and_agree(tmp_path):
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    txs = [instrument_tx(n, f"CASH{n}") for n in range(6)]

    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                # Submitted to one node: gossip carries them to the proposers.
                results = [await nodes[1].driver.submit(raw) for raw in txs]
                assert [r.code for r in results] == [Code.OK] * 6
                await wait_until(lambda: all(n.chain.height >= 5 for n in nodes))
                await wait_until(
                    lambda: all(
                        n.chain.store.blocks.tx(decode_signed_tx(txs[-1]).tx_id) for n in nodes
                    )
                )
                nursery.cancel_scope.cancel()

    run(main)
    top = min(n.chain.height for n in nodes)
    agree(nodes, top)
    for raw in txs:
        record = nodes[0].chain.store.blocks.tx(decode_signed_tx(raw).tx_id)
        assert record is not None and record.code == Code.OK
    # Every validator proposed and every block's proposer is a validator.
    assert not hub.misbehaviour
    for node in nodes:
        node.chain.close()


def test_empty_blocks_only_at_the_heartbeat(tmp_path):
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)

    async def main():
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: all(n.chain.height >= 4 for n in nodes))
                nursery.cancel_scope.cancel()

    run(main)
    from ledger.block import decode_header

    times = [
        decode_header(nodes[0].chain.store.blocks.block(h).header).time_ms for h in range(1, 5)
    ]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Empty mempool: each proposer waited the heartbeat (300 ms) before proposing.
    assert all(gap >= 300 for gap in gaps), gaps
    for node in nodes:
        node.chain.close()


def test_restarted_validator_resumes_and_catches_up_by_sync(tmp_path):
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    victim = nodes[3]

    async def main():
        with trio.fail_after(200):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: victim.chain.height >= 2)
                victim.kill()
                crashed_at = victim.chain.height
                await trio.sleep(0)
                victim.revive()
                # The other three keep committing without it.
                await wait_until(lambda: all(n.chain.height >= crashed_at + 6 for n in nodes[:3]))
                for i in range(3):
                    assert (await nodes[0].driver.submit(instrument_tx(i, f"R{i}"))).ok
                await nursery.start(victim.run)
                target = nodes[0].chain.height
                await wait_until(lambda: victim.chain.height >= target + 2)
                nursery.cancel_scope.cancel()
        return crashed_at

    crashed_at = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert victim.chain.height > crashed_at + 6
    top = min(n.chain.height for n in nodes)
    agree(nodes, top)
    for node in nodes:
        node.chain.close()


def test_proposal_with_a_bad_transaction_or_future_time_is_refused(tmp_path):
    hub = Hub()
    proposer, validator = (Node(n, tmp_path / f"{n}.db", hub) for n in NAMES[:2])

    async def main():
        proposer.open()
        validator.open()
        good = instrument_tx(0, "GOOD")
        pending = proposer.chain.build_block([good], proposer.driver.clock_ms() + 1, b"p" * 20)
        block = pending.block
        proposer.chain.abandon()
        tx = decode_signed_tx(good)
        # Same body and tx id, a signature that does not verify (and so another txs_hash).
        sig = tx.signatures[0]
        forged = dataclasses.replace(sig, signature=bytes(64 - 1) + b"\x01")
        from ledger.tx import _assemble

        bad_raw = _assemble(tx.body, [forged]).raw
        bad = Block(block.header, (bad_raw,))
        assert validator.driver.check.validate(1, bad.encode()) is False
        assert validator.chain.pending is None  # refused and nothing left executed
        assert validator.driver.check.validate(1, block.encode()) is True
        assert validator.chain.pending is not None
        # A proposal stamped far in the future is refused before executing.
        validator.chain.abandon()
        late = proposer.chain.build_block([good], validator.driver.clock_ms() + 60_000, b"p" * 20)
        proposer.chain.abandon()
        assert validator.driver.check.validate(1, late.block.encode()) is False
        assert validator.driver.check.validate(1, b"not a block") is False

    run(main)
    proposer.chain.close()
    validator.chain.close()


def test_failpoints_parse():
    assert failpoints_from_env({"KHAZANA_FAILPOINTS": "after_persist, before_send"}) == {
        "after_persist",
        "before_send",
    }
    assert failpoints_from_env({}) == frozenset()
    with pytest.raises(ValueError):
        failpoints_from_env({"KHAZANA_FAILPOINTS": "nowhere"})


def signed_votes(hub: Hub) -> dict[tuple, set]:
    """(validator, type, height, round) -> the value ids it signed, from every sent message."""
    from consensus.types import Proposal, Vote
    from node import messages

    slots: dict[tuple, set] = {}
    for data in hub.sent:
        message = messages.decode(data)
        if not isinstance(message, messages.ConsensusMessage):
            continue
        inner = message.message
        if isinstance(inner, Vote):
            slot = (inner.validator, int(inner.vote_type), inner.height, inner.round)
            slots.setdefault(slot, set()).add(inner.value_id)
        elif isinstance(inner, Proposal):
            slot = (inner.proposer, 0, inner.height, inner.round)
            slots.setdefault(slot, set()).add(hash256(inner.value))
    return slots


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_crash_at_each_driver_step_loses_nothing_and_never_double_signs(
    tmp_path, monkeypatch, failpoint
):
    def exit_here(code):
        assert code == 137
        raise FailPointHit()

    monkeypatch.setattr("node.driver.os._exit", exit_here)
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    victim = nodes[0]
    victim.failpoints = frozenset({failpoint})

    async def main():
        with trio.fail_after(200):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: victim.crashed)
                committed = victim.chain.height
                victim.failpoints = frozenset()
                victim.revive()
                await wait_until(lambda: all(n.chain.height >= committed + 1 for n in nodes[1:]))
                await nursery.start(victim.run)
                target = max(n.chain.height for n in nodes)
                await wait_until(lambda: all(n.chain.height >= target + 1 for n in nodes))
                nursery.cancel_scope.cancel()
                return committed

    committed = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert committed >= 0
    agree(nodes, min(n.chain.height for n in nodes))
    conflicting = {slot: ids for slot, ids in signed_votes(hub).items() if len(ids) > 1}
    assert not conflicting
    for node in nodes:
        node.chain.close()


def test_observer_follows_without_voting(tmp_path):
    hub = Hub()
    nodes = make_nodes(tmp_path, hub)
    observer = Node("observer-1", tmp_path / "observer.db", hub, observer=True)

    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    await nursery.start(node.run)
                await wait_until(lambda: nodes[0].chain.height >= 3)
                await nursery.start(observer.run)  # starts behind: syncs, then follows
                assert observer.driver.own_address is None
                target = nodes[0].chain.height + 2
                await wait_until(lambda: observer.chain.height >= target)
                nursery.cancel_scope.cancel()

    run(main)
    agree([*nodes, observer], min(n.chain.height for n in [*nodes, observer]))
    observer_key = observer.identity.address
    assert all(slot[0] != observer_key for slot in signed_votes(hub))
    for node in [*nodes, observer]:
        node.chain.close()
