"""PeerManager: dialing, accepting, duplicates, backoff, slow peers and penalties.

Timed behaviour runs on `MockClock(autojump_threshold=0)` over an in-memory network whose
pipes have no buffer (`lockstep_stream_pair`), so a peer that stops reading really blocks
its writer. One test uses real TCP sockets on loopback.
"""

from __future__ import annotations

import functools
import itertools
import random

import pytest
import trio
import trio.testing

from ledger.crypto import generate_key
from node.p2p.connection import handshake_initiator
from node.p2p.errors import ConnectionClosed
from node.p2p.manager import (
    PeerAddress,
    PeerManager,
    PeerManagerConfig,
    backoff_delay_ms,
    tcp_connect,
)

CHAIN = "khazana-test-1"
KEYS = {name: generate_key(bytes([n]) * 32) for n, name in enumerate(["a", "b", "c", "m"], 1)}
PUB = {name: key.public_key for name, key in KEYS.items()}
ADDR = {name: PeerAddress(f"10.0.0.{n}", 26656) for n, name in enumerate(KEYS, 1)}


def trio_test(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        clock = trio.testing.MockClock(autojump_threshold=0)
        return trio.run(functools.partial(fn, *args, **kwargs), clock=clock)

    return wrapper


def allow_all_known(key: bytes) -> bool:
    return key in PUB.values()


class MemoryListener(trio.abc.Listener):
    def __init__(self, backlog=8):
        self._send, self._receive = trio.open_memory_channel(backlog)

    async def accept(self):
        return await self._receive.receive()

    async def aclose(self):
        self._send.close()
        self._receive.close()
        await trio.lowlevel.checkpoint()


class FakeSocket:
    """What the manager asks a real socket stream for: the remote's address."""

    def __init__(self, ip: str, port: int) -> None:
        self.peer = (ip, port)

    def getpeername(self):
        return self.peer


class MemoryNetwork:
    """Addresses -> listeners; records every dial attempt with its (mock) time. The accepted
    end of a connection says it comes from `source` (as `stream.socket.getpeername()`)."""

    def __init__(self):
        self.listeners: dict[PeerAddress, MemoryListener] = {}
        self.attempts: list[tuple[float, PeerAddress]] = []

    def listen(self, address: PeerAddress, backlog=8) -> MemoryListener:
        self.listeners[address] = listener = MemoryListener(backlog)
        return listener

    async def connect(self, address: PeerAddress, source: str = "10.9.9.9") -> trio.abc.Stream:
        self.attempts.append((trio.current_time(), address))
        await trio.lowlevel.checkpoint()
        listener = self.listeners.get(address)
        if listener is None:
            raise ConnectionRefusedError(f"nothing listens on {address}")
        client, server = trio.testing.lockstep_stream_pair()
        server.socket = FakeSocket(source, 40000 + len(self.attempts))
        client.socket = FakeSocket(address.host, address.port)
        try:
            listener._send.send_nowait(server)
        except (trio.WouldBlock, trio.ClosedResourceError):
            raise ConnectionRefusedError(f"{address} is not accepting") from None
        return client


class Node:
    """A manager on the memory network, runnable and stoppable (a process restart)."""

    def __init__(self, network, name, dial=(), allow=allow_all_known, **config):
        self.network, self.name = network, name
        self.manager = PeerManager(
            PeerManagerConfig(chain_id=CHAIN, dial=tuple(ADDR[d] for d in dial), **config),
            KEYS[name],
            allow,
            rng=random.Random(name),
            connect=functools.partial(network.connect, source=ADDR[name].host),
        )
        self.scope = trio.CancelScope()

    async def start(self, nursery):
        address = ADDR[self.name]  # a listener the test opened (and flooded) first, or a new one
        listener = self.network.listeners.get(address) or self.network.listen(address)
        await nursery.start(self._run, listener)

    async def _run(self, listener, task_status=trio.TASK_STATUS_IGNORED):
        with self.scope:
            await self.manager.run([listener], task_status=task_status)

    async def stop(self):
        del self.network.listeners[ADDR[self.name]]
        self.scope.cancel()
        await trio.testing.wait_all_tasks_blocked()

    def connected(self) -> set[str]:
        names = {v: k for k, v in PUB.items()}
        return {names[p.key] for p in self.manager.peers()}


@trio_test
async def test_dial_connects_and_messages_flow_both_ways():
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        a, b = Node(net, "a", dial=["b"]), Node(net, "b")
        await b.start(nursery)
        await a.start(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b"} and b.connected() == {"a"}
        (status,) = a.manager.peers()
        assert status.outbound and status.address == "10.0.0.2:26656"
        assert a.manager.broadcast(b"proposal") == 1
        assert await b.manager.inbound.receive() == (PUB["a"], b"proposal")
        assert b.manager.send_to(PUB["a"], b"vote")
        assert await a.manager.inbound.receive() == (PUB["b"], b"vote")
        assert not b.manager.send_to(PUB["c"], b"nobody")
        nursery.cancel_scope.cancel()


@trio_test
async def test_simultaneous_dials_leave_one_connection_initiated_by_the_lower_key():
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        a, b = Node(net, "a", dial=["b"]), Node(net, "b", dial=["a"])
        await a.start(nursery)
        await b.start(nursery)
        await trio.sleep(5)  # any backoff redials settle
        assert a.connected() == {"b"} and b.connected() == {"a"}
        lower = "a" if PUB["a"] < PUB["b"] else "b"
        for node in (a, b):
            (status,) = node.manager.peers()
            assert status.outbound == (node.name == lower)
        a.manager.broadcast(b"x")
        assert await b.manager.inbound.receive() == (PUB["a"], b"x")
        nursery.cancel_scope.cancel()


@trio_test
async def test_reconnect_after_the_remote_restarts_with_capped_backoff():
    net = MemoryNetwork()
    cap_ms, base_ms = 8_000, 250
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", dial=["b"], backoff_base_ms=base_ms, backoff_cap_ms=cap_ms)
        b = Node(net, "b")
        await b.start(nursery)
        await a.start(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b"}

        await b.stop()
        assert a.connected() == set()
        down_at = trio.current_time()
        await trio.sleep(120)  # two minutes of failing redials
        times = [t for t, address in net.attempts if address == ADDR["b"] and t >= down_at]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert len(gaps) >= 10
        assert all(gap <= cap_ms / 1000 for gap in gaps)  # capped
        assert gaps[0] <= 2 * base_ms / 1000  # starts fast
        assert all(gap >= cap_ms / 2000 for gap in gaps[-5:])  # grew to the cap (jitter >= 1/2)

        b = Node(net, "b")  # the same identity comes back on the same address
        await b.start(nursery)
        back_at = trio.current_time()
        with trio.fail_after(cap_ms / 1000 + 1):
            while a.connected() != {"b"}:
                await trio.sleep(0.1)
        assert trio.current_time() - back_at <= cap_ms / 1000
        a.manager.broadcast(b"after restart")
        assert await b.manager.inbound.receive() == (PUB["a"], b"after restart")
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_slow_peer_is_disconnected_and_does_not_block_broadcast_to_others():
    net = MemoryNetwork()
    queue = 8
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", send_queue_size=queue)
        b = Node(net, "b", dial=["a"])
        await a.start(nursery)
        await b.start(nursery)
        # The slow peer authenticates, then never reads a byte.
        stream = await net.connect(ADDR["a"])
        slow = await handshake_initiator(stream, KEYS["c"], CHAIN, allow_all_known)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b", "c"}

        received = []

        async def drain():
            async for _key, message in b.manager.inbound:
                received.append(message)

        nursery.start_soon(drain)
        sent_at = trio.current_time()
        messages = [f"gossip {i}".encode() for i in range(5 * queue)]
        for message in messages:
            a.manager.broadcast(message)  # synchronous: it cannot wait on anyone
            await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == sent_at  # nothing ever waited on a timer either
        assert received == messages  # the fast peer got everything, in order
        assert a.connected() == {"b"}  # the slow one overflowed its queue and was dropped
        assert a.manager.peers()[0].score == 0  # slowness is not misbehaviour
        await slow.aclose()
        nursery.cancel_scope.cancel()


@trio_test
async def test_garbage_gets_a_peer_banned_while_other_peers_carry_on():
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", ban_ms=60_000)
        b = Node(net, "b", dial=["a"])
        await a.start(nursery)
        await b.start(nursery)
        stream = await net.connect(ADDR["a"])
        mallory = await handshake_initiator(stream, KEYS["m"], CHAIN, allow_all_known)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b", "m"}

        await mallory.stream.send_all(b"\x00\x00\x00\x20" + b"\xff" * 32)  # a forged frame
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b"}
        assert a.manager.is_banned(PUB["m"])
        b.manager.broadcast(b"unaffected")
        assert await a.manager.inbound.receive() == (PUB["b"], b"unaffected")

        # While banned, Mallory cannot even finish a handshake.
        stream = await net.connect(ADDR["a"])
        again = await handshake_initiator(stream, KEYS["m"], CHAIN, allow_all_known)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b"}
        await again.aclose()

        await trio.sleep(61)
        assert not a.manager.is_banned(PUB["m"])
        stream = await net.connect(ADDR["a"])
        await handshake_initiator(stream, KEYS["m"], CHAIN, allow_all_known)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b", "m"}
        nursery.cancel_scope.cancel()


@trio_test
async def test_reported_misbehaviour_disconnects_scores_and_bans_at_the_threshold():
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", ban_threshold=100, ban_ms=30_000)
        b = Node(net, "b", dial=["a"], backoff_base_ms=1000, backoff_cap_ms=1000)
        await a.start(nursery)
        await b.start(nursery)
        await trio.testing.wait_all_tasks_blocked()
        for strike in range(1, 4):
            assert a.connected() == {"b"}
            a.manager.report_misbehaviour(PUB["b"], "invalid vote signature", penalty=30)
            await trio.testing.wait_all_tasks_blocked()
            assert a.connected() == set()  # dropped at once
            await trio.sleep(1.5)  # b redials after its backoff
            (status,) = a.manager.peers()
            assert status.score == 30 * strike and not a.manager.is_banned(PUB["b"])
        a.manager.report_misbehaviour(PUB["b"], "invalid vote signature", penalty=30)
        assert a.manager.is_banned(PUB["b"])
        await trio.sleep(29)
        assert a.connected() == set()  # b keeps redialling, refused throughout
        await trio.sleep(3)
        assert a.connected() == {"b"}
        assert a.manager.peers()[0].score == 0  # the ban wiped the slate
        nursery.cancel_scope.cancel()


@trio_test
async def test_links_the_allow_list_stops_admitting_are_dropped_and_stay_refused():
    # A validator removed by a committed change: the allow-list is asked at the handshake,
    # so the node drops the live link itself (drop_disallowed) and refuses the redials.
    net = MemoryNetwork()
    allowed = {PUB["b"], PUB["c"]}
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", allow=allowed.__contains__)
        b = Node(net, "b", dial=["a"], backoff_base_ms=1000, backoff_cap_ms=1000)
        c = Node(net, "c", dial=["a"], backoff_base_ms=1000, backoff_cap_ms=1000)
        for node in (a, b, c):
            await node.start(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b", "c"}
        assert a.manager.drop_disallowed() == 0  # nothing changed: nobody is dropped
        allowed.discard(PUB["c"])
        assert a.manager.drop_disallowed() == 1
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b"} and c.connected() == set()
        await trio.sleep(10)  # c redials every second, refused each time
        assert a.connected() == {"b"} and c.connected() == set()
        assert len([1 for _, address in net.attempts if address == ADDR["a"]]) >= 5
        a.manager.broadcast(b"block")
        assert await b.manager.inbound.receive() == (PUB["a"], b"block")
        assert a.manager.peers()[0].score == 0  # not a misbehaviour: no score, no ban
        assert not a.manager.is_banned(PUB["c"])
        allowed.add(PUB["c"])  # added back by a later change: the next redial is let in
        await trio.sleep(2)
        assert a.connected() == {"b", "c"}
        nursery.cancel_scope.cancel()


@trio_test
async def test_unknown_and_own_keys_are_refused():
    net = MemoryNetwork()
    stranger = generate_key(b"\x09" * 32)
    async with trio.open_nursery() as nursery:
        a = Node(net, "a")
        await a.start(nursery)
        for key in (stranger, KEYS["a"]):
            stream = await net.connect(ADDR["a"])
            conn = await handshake_initiator(stream, key, CHAIN, lambda _key: True)
            await trio.testing.wait_all_tasks_blocked()
            assert a.connected() == set()
            await conn.aclose()
        nursery.cancel_scope.cancel()


def test_backoff_is_exponential_capped_jittered_and_seeded():
    rng = random.Random(7)
    delays = [backoff_delay_ms(n, 250, 30_000, rng) for n in range(40)]
    for attempt, delay in enumerate(delays):
        ceiling = min(30_000, 250 * 2**attempt)
        assert ceiling // 2 <= delay <= ceiling
    assert max(delays) <= 30_000
    assert len(set(delays[10:])) > 1  # jitter: capped delays still differ
    again = random.Random(7)
    assert delays == [backoff_delay_ms(n, 250, 30_000, again) for n in range(40)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.1.2.3:26656", PeerAddress("10.1.2.3", 26656)),
        ("validator.ministry.example:1", PeerAddress("validator.ministry.example", 1)),
        ("[2001:db8::1]:26656", PeerAddress("2001:db8::1", 26656)),
    ],
)
def test_peer_address_parses_and_prints(text, expected):
    assert PeerAddress.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["nohost", ":26656", "h:", "h:0", "h:65536", "h:12a"])
def test_bad_peer_addresses_are_refused(text):
    with pytest.raises(ValueError):
        PeerAddress.parse(text)


def test_two_managers_over_real_tcp_on_loopback():
    async def main():
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        a = PeerManager(
            PeerManagerConfig(chain_id=CHAIN), KEYS["a"], allow_all_known, rng=random.Random(1)
        )
        b = PeerManager(
            PeerManagerConfig(chain_id=CHAIN, dial=(PeerAddress("127.0.0.1", port),)),
            KEYS["b"],
            allow_all_known,
            rng=random.Random(2),
            connect=tcp_connect,
        )
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(a.run, listeners)
                await nursery.start(b.run)
                b_key, message = None, None
                while not b.peers():
                    await trio.sleep(0.01)
                b.broadcast(b"over tcp")
                b_key, message = await a.inbound.receive()
                assert (b_key, message) == (PUB["b"], b"over tcp")
                assert [p.key for p in a.peers()] == [PUB["b"]]
                nursery.cancel_scope.cancel()

    trio.run(main)


@trio_test
async def test_silent_connections_are_evicted_by_newcomers_and_dropped_at_the_deadline():
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", max_pending_handshakes=2, first_message_timeout_ms=2_000)
        await a.start(nursery)
        silent = [await net.connect(ADDR["a"], source=f"10.8.0.{n}") for n in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        assert a.manager.pending_handshakes() == 2
        # The pool is full, yet a newcomer is served: the oldest silent socket makes room.
        stream = await net.connect(ADDR["a"], source="10.8.0.9")
        await handshake_initiator(stream, KEYS["b"], CHAIN, allow_all_known)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b"}
        assert a.manager.refusals()["evicted_pool_full"] == 1
        with pytest.raises(ConnectionClosed):  # the evicted one was closed
            await handshake_initiator(silent[0], KEYS["c"], CHAIN, allow_all_known)
        assert a.manager.pending_handshakes() == 1
        await trio.sleep(2.1)  # the other silent one hits the first-message deadline
        assert a.manager.pending_handshakes() == 0
        assert a.manager.refusals()["first_message_timeout"] == 1
        for stream in silent:
            await stream.aclose()
        nursery.cancel_scope.cancel()
