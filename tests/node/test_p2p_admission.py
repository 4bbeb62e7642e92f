"""Strangers on the P2P port: held sockets, half handshakes, per-IP caps, the allowlist, and
the slots that stay with the genesis validators (node/p2p/admission.py and its use by the
PeerManager).

The threat (docs/THREATMODEL.md, "anyone who reaches a P2P port"): open and hold
connections, start handshakes and stall. What must hold: genesis validators can always
connect to each other. A probe held 40 sockets on every P2P port while two validators
restarted, and they found no peer for about 55 s; these tests replay that with 45.

Timed tests run on `MockClock(autojump_threshold=0)` over the in-memory network of
test_p2p_manager.py, whose accepted streams carry a source IP; one test uses real sockets on
127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.crypto import generate_key
from node.p2p.admission import (
    EVICTED_PER_IP,
    EVICTED_POOL_FULL,
    INBOUND_FULL,
    INBOUND_PER_IP,
    AdmissionLimits,
    InboundGate,
    parse_ip,
    parse_networks,
)
from node.p2p.connection import FrameStream, handshake_initiator
from node.p2p.errors import ConnectionClosed, PeerProtocolError
from node.p2p.manager import PeerAddress, PeerManager, PeerManagerConfig, tcp_connect
from node.p2p.noise import HandshakeState, generate_x25519_private_key
from tests.node.test_p2p_manager import (
    ADDR,
    CHAIN,
    KEYS,
    PUB,
    MemoryNetwork,
    Node,
    allow_all_known,
    trio_test,
)

IP = ipaddress.ip_address
GENESIS = frozenset({PUB["a"], PUB["b"]})  # the validators; c and m are observers


# --------------------------------------------------------------------------- the gate alone


def test_per_ip_eviction_takes_a_silent_socket_before_one_that_spoke():
    gate = InboundGate(AdmissionLimits(max_pending_per_ip=3))
    ip = IP("192.0.2.1")
    spoke, silent_old, silent_new = gate.open(ip), gate.open(ip), gate.open(ip)
    spoke.answered = True
    newcomer = gate.open(ip)
    assert silent_old.evicted and silent_old.cancel_scope.cancel_called
    assert not (spoke.evicted or silent_new.evicted or newcomer.evicted)
    newcomer.answered = silent_new.answered = True
    gate.open(ip)  # nobody silent left: the oldest goes
    assert spoke.evicted
    assert gate.pending_count() == 3 and gate.refused[EVICTED_PER_IP] == 2


def test_strangers_never_evict_a_pending_handshake_from_a_peer_ip():
    gate = InboundGate(AdmissionLimits(max_pending=4, reserved_pending=2, max_pending_per_ip=4))
    validator_ip = IP("10.0.0.2")
    gate.set_peer_ips(ADDR["b"], [validator_ip])
    validator = gate.open(validator_ip)  # silent even: it is not the strangers' to take
    strangers = [gate.open(IP(f"198.51.100.{n}")) for n in range(50)]
    assert not validator.evicted
    assert sum(not s.evicted for s in strangers) == 4
    assert gate.refused[EVICTED_POOL_FULL] == 46
    assert gate.pending_count() == 5


def test_allowlist_and_address_normalisation():
    gate = InboundGate(AdmissionLimits(allow_ips=parse_networks(["10.0.0.0/24", "2001:db8::/32"])))
    assert gate.ip_allowed(IP("10.0.0.7"))
    assert gate.ip_allowed(parse_ip("::ffff:10.0.0.7"))  # a dual-stack listener's view
    assert gate.ip_allowed(parse_ip("2001:db8::1%eth0"))
    assert not gate.ip_allowed(IP("10.0.1.7"))
    assert not gate.ip_allowed(None)  # no address, no admission when a list is set
    assert gate.refused["ip_not_allowed"] == 2
    assert InboundGate(AdmissionLimits()).ip_allowed(None)  # empty list: everyone
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.1/24"])  # host bits set: a typo, refused


def test_inbound_link_caps_count_only_what_they_are_given():
    gate = InboundGate(AdmissionLimits(max_inbound=3, max_inbound_per_ip=2))
    one, two = IP("192.0.2.1"), IP("192.0.2.2")
    assert gate.inbound_refusal(one, [one]) is None
    assert gate.inbound_refusal(one, [one, one]) == INBOUND_PER_IP
    assert gate.inbound_refusal(two, [one, one]) is None
    assert gate.inbound_refusal(two, [one, one, two]) == INBOUND_FULL


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["open", "answer", "close"]), st.integers(0, 5)), max_size=80
    )
)
def test_gate_invariants_hold_for_any_sequence(steps):
    # IPs 0 and 1 are peer IPs; 2..5 strangers. Caps hold after every step, and a pending
    # connection from a peer IP is only ever evicted by a connection from a peer IP.
    limits = AdmissionLimits(max_pending=3, reserved_pending=2, max_pending_per_ip=2)
    gate = InboundGate(limits)
    ips = [IP(f"10.1.0.{n}") for n in range(6)]
    gate.set_peer_ips("peers", ips[:2])
    live = []
    for action, n in steps:
        if action == "open":
            before = {id(p) for p in live if p.reserved_pool}
            new = gate.open(ips[n])
            evicted = {id(p) for p in live if p.evicted}
            if not new.reserved_pool:
                assert not before & evicted
            live = [p for p in live if not p.evicted] + [new]
        elif live:
            victim = live[n % len(live)]
            if action == "answer":
                victim.answered = True
            else:
                gate.close(victim)
                live.remove(victim)
        assert gate.pending_count() == len(live)
        assert sum(p.reserved_pool for p in live) <= limits.reserved_pending
        assert sum(not p.reserved_pool for p in live) <= limits.max_pending
        for ip in ips:
            assert sum(p.ip == ip for p in live) <= limits.max_pending_per_ip


# --------------------------------------------------------------------------- the attack


async def stall(stream, how):
    """`silent` says nothing, `half` sends half of message 1's frame, `spoke` sends a whole
    message 1 and never reads message 2 nor sends message 3."""
    try:
        if how == "half":
            await stream.send_all(b"\x00\x00\x00\x20" + b"\x42" * 10)
        elif how == "spoke":
            state = HandshakeState(initiator=True, static_private_key=generate_x25519_private_key())
            await FrameStream(stream).write_frames([state.write_message(b"")])
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
        pass  # evicted before it finished writing


async def hold_sockets(net, target, sources, how, nursery=None):
    """Open a connection to `target` from each source IP and stall it (see `stall`; in
    `nursery` when given, so a node that is not reading yet does not block the caller).
    Returns the streams: the attacker keeps them open."""
    streams = []
    for source in sources:
        stream = await net.connect(target, source=source)
        if nursery is None:
            await stall(stream, how)
        else:
            nursery.start_soon(stall, stream, how)
        streams.append(stream)
    return streams


async def flood(net, target, victim_ip, nursery=None):
    """45 stalled sockets on `target`: 30 from stranger IPs, 15 from `victim_ip` (an
    attacker behind the same NAT, or on the same host, as a validator)."""
    streams = []
    for how in ("silent", "half", "spoke"):
        strangers = [f"198.51.100.{n}" for n in range(10)]
        streams += await hold_sockets(net, target, strangers, how, nursery)
        streams += await hold_sockets(net, target, [victim_ip] * 5, how, nursery)
    return streams


@trio_test
async def test_45_stalled_sockets_cannot_keep_two_restarting_validators_apart():
    net = MemoryNetwork()
    # Deadlines far away: the validators get through by eviction, not by waiting them out.
    slow = dict(first_message_timeout_ms=60_000, handshake_timeout_ms=120_000)
    config = dict(reserved_keys=GENESIS, backoff_base_ms=100, backoff_cap_ms=400, **slow)
    async with trio.open_nursery() as nursery:
        a, b = Node(net, "a", dial=["b"], **config), Node(net, "b", dial=["a"], **config)
        await a.start(nursery)
        await b.start(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b"}
        held = []
        for _restart in range(2):  # both validators restart while the sockets are held
            await a.stop()
            await b.stop()
            a, b = Node(net, "a", dial=["b"], **config), Node(net, "b", dial=["a"], **config)
            net.listen(ADDR["a"], 128), net.listen(ADDR["b"], 128)  # the ports are open again ...
            held += await flood(net, ADDR["a"], ADDR["b"].host, nursery)  # ... and flooded
            held += await flood(net, ADDR["b"], ADDR["a"].host, nursery)
            await trio.testing.wait_all_tasks_blocked()
            back = trio.current_time()
            await a.start(nursery)
            await b.start(nursery)
            with trio.fail_after(2):
                while not (a.connected() == {"b"} and b.connected() == {"a"}):
                    await trio.sleep(0.05)
            assert trio.current_time() - back < 1
            a.manager.broadcast(b"proposal")
            assert await b.manager.inbound.receive() == (PUB["a"], b"proposal")
            refused = a.manager.refusals()
            assert refused[EVICTED_PER_IP] + refused[EVICTED_POOL_FULL] > 0
            # Nothing grows without bound: the pools' sizes cap what the sockets hold.
            assert a.manager.pending_handshakes() <= 32 + 16
        for stream in held:
            await stream.aclose()
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_full_stranger_pool_does_not_stop_a_validator_from_an_unknown_ip():
    # A genesis validator not in our dial list, from an address we never saw: it competes
    # with the strangers, and the eviction order (silent first, then oldest) lets it in.
    net = MemoryNetwork()
    slow = dict(first_message_timeout_ms=60_000, handshake_timeout_ms=120_000)
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", reserved_keys=GENESIS, max_pending_handshakes=8, **slow)
        await a.start(nursery)
        held = await flood(net, ADDR["a"], "203.0.113.5", nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert a.manager.pending_handshakes() == 8
        stream = await net.connect(ADDR["a"], source="203.0.113.77")
        conn = await handshake_initiator(stream, KEYS["b"], CHAIN, allow_all_known)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b"}
        # Once proven, that address is a peer IP: its next handshake uses the reserved pool.
        assert a.manager._gate.is_peer_ip(IP("203.0.113.77"))
        await conn.aclose()
        for stream in held:
            await stream.aclose()
        nursery.cancel_scope.cancel()


@trio_test
async def test_per_ip_pending_cap():
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", max_pending_per_ip=4)
        await a.start(nursery)
        held = await hold_sockets(net, ADDR["a"], ["192.0.2.1"] * 10, "silent")
        held += await hold_sockets(net, ADDR["a"], ["192.0.2.2"], "silent")
        await trio.testing.wait_all_tasks_blocked()
        assert a.manager.pending_handshakes() == 5  # 4 of the first IP, 1 of the other
        assert a.manager.refusals()[EVICTED_PER_IP] == 6
        for stream in held[:6]:  # the evicted ones are the oldest, and they were closed
            with pytest.raises(ConnectionClosed):
                await handshake_initiator(stream, KEYS["c"], CHAIN, allow_all_known)
        for stream in held:
            await stream.aclose()
        nursery.cancel_scope.cancel()


@trio_test
async def test_inbound_link_caps_hold_strangers_but_never_a_reserved_key():
    net = MemoryNetwork()
    keys = {**KEYS, "o": generate_key(b"\x0a" * 32)}  # a third observer
    allowed = {key.public_key for key in keys.values()}
    async with trio.open_nursery() as nursery:
        a = Node(
            net,
            "a",
            allow=allowed.__contains__,
            reserved_keys=GENESIS,
            max_inbound_peers=2,
            max_inbound_per_ip=1,
        )
        await a.start(nursery)
        links = []

        async def link(name, source):
            stream = await net.connect(ADDR["a"], source=source)
            links.append(await handshake_initiator(stream, keys[name], CHAIN, allowed.__contains__))
            await trio.testing.wait_all_tasks_blocked()

        await link("c", "192.0.2.1")  # an observer
        await link("m", "192.0.2.1")  # another observer from the same IP: refused
        assert a.connected() == {"c"}
        assert a.manager.refusals()[INBOUND_PER_IP] == 1
        await link("m", "192.0.2.2")  # from its own IP: the second and last place
        await link("o", "192.0.2.3")  # no place left
        assert a.connected() == {"c", "m"}
        assert a.manager.refusals()[INBOUND_FULL] == 1
        await link("b", "192.0.2.1")  # a genesis validator: always admitted
        assert a.connected() == {"b", "c", "m"}
        for conn in links:
            await conn.aclose()
        nursery.cancel_scope.cancel()


@trio_test
async def test_allowlist_refuses_before_any_handshake_work():
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", allow_ips=("10.0.0.0/24",))
        await a.start(nursery)
        outsider = await net.connect(ADDR["a"], source="192.0.2.1")
        await trio.testing.wait_all_tasks_blocked()
        assert await outsider.receive_some(100) == b""  # closed, not a byte of Noise sent
        assert a.manager.pending_handshakes() == 0
        assert a.manager.refusals()["ip_not_allowed"] == 1
        insider = await net.connect(ADDR["a"], source="10.0.0.2")
        conn = await handshake_initiator(insider, KEYS["b"], CHAIN, allow_all_known)
        await trio.testing.wait_all_tasks_blocked()
        assert a.connected() == {"b"}
        await conn.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "how, deadline_s, reason",
    [
        ("silent", 2, "first_message_timeout"),
        ("half", 2, "first_message_timeout"),  # stalls in the middle of message 1's frame
        ("spoke", 5, "handshake_timeout"),  # sends message 1, never message 3
    ],
)
def test_handshake_deadlines_drop_a_staller(how, deadline_s, reason):
    @trio_test
    async def main():
        net = MemoryNetwork()
        async with trio.open_nursery() as nursery:
            a = Node(net, "a", first_message_timeout_ms=2_000, handshake_timeout_ms=5_000)
            await a.start(nursery)
            start = trio.current_time()
            (stream,) = await hold_sockets(net, ADDR["a"], ["192.0.2.1"], how)
            await trio.testing.wait_all_tasks_blocked()
            assert a.manager.pending_handshakes() == 1
            await trio.sleep(deadline_s - 0.01)
            assert a.manager.pending_handshakes() == 1
            await trio.sleep(0.02)
            assert a.manager.pending_handshakes() == 0
            assert a.manager.refusals()[reason] == 1
            assert trio.current_time() - start == pytest.approx(deadline_s, abs=0.02)
            await stream.aclose()
            nursery.cancel_scope.cancel()

    main()


@trio_test
async def test_a_peer_that_stalls_mid_frame_is_dropped():
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        a = Node(net, "a", frame_timeout_ms=30_000)
        await a.start(nursery)
        stream = await net.connect(ADDR["a"], source="192.0.2.1")
        conn = await handshake_initiator(stream, KEYS["c"], CHAIN, allow_all_known)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(600)  # idle between frames is fine
        assert a.connected() == {"c"}
        await conn.stream.send_all(b"\x00\x00\x01\x00" + b"\x00" * 100)  # 100 of 256 bytes
        await trio.sleep(29)
        assert a.connected() == {"c"}
        await trio.sleep(1.1)
        assert a.connected() == set()
        assert not a.manager.is_banned(PUB["c"])  # lenient: a bad network can do this
        await conn.aclose()
        nursery.cancel_scope.cancel()


def test_frame_deadline_raises_frame_timeout():
    async def main():
        left, right = trio.testing.memory_stream_pair()
        frames = FrameStream(right, frame_timeout_s=3)
        await left.send_all(b"\x00\x00")  # half a length prefix
        with pytest.raises(PeerProtocolError) as caught:
            await frames.read_frame()
        assert caught.value.code.name == "FRAME_TIMEOUT"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --------------------------------------------------------------------------- real sockets


def test_real_sockets_held_on_both_ports_do_not_keep_two_validators_apart():
    """Two validators on 127.0.0.1 (so the attacker shares their IP, the hardest case: the
    reserved pool is no shelter); 45 sockets on each port before either node runs, and an
    attacker that reopens every socket the node closes. They still link, well before any
    handshake deadline could have freed a slot."""

    async def stall(port, how, stop):
        while not stop.is_set():
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.01)
                continue
            try:
                if how == "half":
                    await stream.send_all(b"\x00\x00\x00\x20" + b"\x42" * 10)
                while await stream.receive_some(4096):
                    pass  # evicted: the node closed it; open another
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await trio.aclose_forcefully(stream)

    async def main():
        listeners = {n: await trio.open_tcp_listeners(0, host="127.0.0.1") for n in "ab"}
        ports = {n: ls[0].socket.getsockname()[1] for n, ls in listeners.items()}
        slow = dict(first_message_timeout_ms=60_000, handshake_timeout_ms=120_000)
        managers = {
            n: PeerManager(
                PeerManagerConfig(
                    chain_id=CHAIN,
                    dial=(PeerAddress("127.0.0.1", ports[other]),),
                    reserved_keys=GENESIS,
                    backoff_base_ms=50,
                    backoff_cap_ms=200,
                    **slow,
                ),
                KEYS[n],
                allow_all_known,
                rng=random.Random(n),
                connect=tcp_connect,
            )
            for n, other in (("a", "b"), ("b", "a"))
        }
        stop = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for name in "ab":
                    for index in range(45):
                        how = "half" if index % 2 else "silent"
                        nursery.start_soon(stall, ports[name], how, stop)
                await trio.sleep(0.5)  # the sockets sit in the accept queues
                start = trio.current_time()
                for name in "ab":
                    await nursery.start(managers[name].run, listeners[name])
                while not (managers["a"].peers() and managers["b"].peers()):
                    await trio.sleep(0.02)
                assert trio.current_time() - start < 20
                assert [p.key for p in managers["a"].peers()] == [PUB["b"]]
                assert managers["a"].refusals()[EVICTED_PER_IP] > 0
                stop.set()
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_refusal_totals_reach_the_metrics_as_counters():
    from node.metrics import Metrics

    def sample(name, **labels):
        return metrics.registry.get_sample_value(name, labels)

    metrics = Metrics()
    assert sample("khazana_peer_inbound_refused_total", reason="evicted_per_ip") == 0
    metrics.set_p2p_inbound({"evicted_per_ip": 3, "ip_not_allowed": 0}, 7)
    metrics.set_p2p_inbound({"evicted_per_ip": 5, "ip_not_allowed": 1}, 2)
    assert sample("khazana_peer_inbound_refused_total", reason="evicted_per_ip") == 5
    assert sample("khazana_peer_inbound_refused_total", reason="ip_not_allowed") == 1
    assert sample("khazana_peer_handshakes_pending") == 2


def test_the_p2p_section_reaches_the_peer_manager(tmp_path):
    from node.app import peer_manager_config
    from node.config import from_dict

    observer = generate_key(b"\x0b" * 32).public_key
    document = {
        "name": "ministry",
        "role": "validator",
        "chain_id": CHAIN,
        "p2p": {
            "listen": "10.0.0.1:26656",
            "observers": [observer.hex()],
            "peers": [{"name": "c", "pub_key": PUB["c"].hex(), "address": "10.0.0.3:26656"}],
            "allow_ips": ["10.0.0.0/24", "2001:db8::/32"],
            "first_message_timeout_ms": 1500,
            "frame_timeout_ms": 20_000,
            "max_pending_handshakes": 40,
            "reserved_pending_handshakes": 12,
            "max_pending_per_ip": 3,
            "max_inbound_peers": 9,
            "max_inbound_per_ip": 2,
        },
        "rpc": {"listen": "10.0.0.1:26657"},
    }
    config = from_dict(document, home=tmp_path)
    assert from_dict(config.to_toml_dict(), home=tmp_path) == config  # round trip
    genesis = {"chain_id": CHAIN, "validators": [{"public_key": PUB[n].hex()} for n in "ab"]}
    peer = peer_manager_config(config, genesis)
    assert peer.allow_ips == ("10.0.0.0/24", "2001:db8::/32")
    assert (peer.first_message_timeout_ms, peer.frame_timeout_ms) == (1500, 20_000)
    assert (peer.max_pending_handshakes, peer.reserved_pending_handshakes) == (40, 12)
    assert (peer.max_pending_per_ip, peer.max_inbound_peers, peer.max_inbound_per_ip) == (3, 9, 2)
    # Genesis validators and configured peers are reserved; an observer is not.
    assert peer.reserved_keys == {PUB["a"], PUB["b"], PUB["c"]}
    assert peer.dial == (PeerAddress("10.0.0.3", 26656),)
    PeerManager(peer, KEYS["a"], allow_all_known, rng=random.Random(0))  # limits parse


def test_only_the_accepting_side_has_the_short_first_message_deadline():
    from node.p2p.connection import HandshakeOptions, handshake_responder

    async def main():
        options = HandshakeOptions(timeout_s=5, first_message_timeout_s=2)
        for handshake, expected_s in ((handshake_responder, 2), (handshake_initiator, 5)):
            ours, _silent = trio.testing.memory_stream_pair()
            start = trio.current_time()
            with pytest.raises(PeerProtocolError) as caught:
                await handshake(ours, KEYS["a"], CHAIN, allow_all_known, options=options)
            assert caught.value.code.name == "HANDSHAKE_TIMEOUT"
            assert trio.current_time() - start == pytest.approx(expected_s)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_pending_connection_cannot_make_the_node_buffer_a_large_frame():
    from node.p2p.connection import MAX_HANDSHAKE_FRAME, handshake_responder

    async def main():
        theirs, ours = trio.testing.memory_stream_pair()
        await theirs.send_all((MAX_HANDSHAKE_FRAME + 1).to_bytes(4, "big") + b"\x00" * 1000)
        start = trio.current_time()
        with pytest.raises(PeerProtocolError) as caught:
            await handshake_responder(ours, KEYS["a"], CHAIN, allow_all_known)
        assert caught.value.code.name == "FRAME_TOO_LARGE"
        assert trio.current_time() == start  # at once, from the length prefix alone

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
