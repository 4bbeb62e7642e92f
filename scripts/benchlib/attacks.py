"""The hostile clients and peers of `scripts/attack.py`, one async function per attack.

Each attack is bounded in count and in time (`Target.seconds`), talks only to the
127.0.0.1 addresses it is given, and returns what it sent and how the node answered, as plain
JSON-able figures (counts of outcomes by kind: `ok`, `code_103`, `error_-32602`, `http_503`,
`timeout`, `refused`, `reset`, ...). The caller (`scripts/attack.py`) measures around them:
block gaps, memory, the institutions' transactions.

  forged_envelopes  64 KiB forged envelopes (another chain, junk signatures, deeply nested
                    empty maps, random bytes) through `check_tx` and `broadcast_tx_sync`
  mempool_squat     onboarded investors queue large junk transactions behind a nonce gap;
                    at the end the gaps are filled so the junk drains (and the pool empties)
  big_answers       batches of 32 `block` calls and `events` pages of 1,000 from several clients
  read_flood        many clients paging `events` 1,000 at a time
  slow_http         hundreds of slow-body HTTP requests while a legitimate client is measured
  ws_idle           many idle WebSocket connections, then a legitimate subscriber
  ws_nonreader      subscribers that ask for big answers and never read
  p2p_hold          sockets and stalled handshakes held on every P2P port while validators
                    restart; how long until each links to its peers and the chain moves
  foreign_host      a foreign Host header and a cross-site text/plain POST
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import trio

from benchlib.hostile import (
    Target,
    WsClient,
    b64,
    call,
    for_a_while,
    http,
    post_bytes,
    rpc_body,
    signed_post,
)
from ledger.crypto import address_to_text, generate_key
from ledger.tx import TxBody, sign_tx
from node.client import TxBuilder, sign

ENVELOPE_BYTES = 64 * 1024
JUNK_ARG_BYTES = 62 * 1024  # a junk transaction just under the 64 KiB limit, with its envelope
SQUAT_SEND_S = 40.0  # at most this long to send the squat (1,071 x 62 KiB)


# ------------------------------------------------------------------------------ forged


def _pad_args(size: int) -> dict:
    return {"junk": "x" * size}


def nested_maps(size: int) -> bytes:
    """An envelope whose body is `{"a": {"a": ... {}}}` nested to fill `size` bytes (msgpack
    written by hand: the codec refuses to make it)."""
    levels = (size - 16) // 3
    body = b"\x81\xa1a" * levels + b"\x80"
    return b"\x82\xa4body" + body + b"\xa4sigs\x90"


def forged_set(chain_id: str) -> dict[str, bytes]:
    """One envelope of each forgery, each about 64 KiB."""
    key = generate_key()
    other = TxBody("evil-chain", key.address, 0, "transfer", _pad_args(JUNK_ARG_BYTES))
    wrong_chain = sign_tx(other, [key]).raw
    body = TxBody(chain_id, key.address, 0, "transfer", _pad_args(JUNK_ARG_BYTES))
    good = sign_tx(body, [key]).raw
    junk_signature = good[:-64] + os.urandom(64)  # the signature is the envelope's last field
    return {
        "wrong_chain": wrong_chain,
        "junk_signature": junk_signature,
        "nested_maps": nested_maps(ENVELOPE_BYTES),
        "random_bytes": os.urandom(ENVELOPE_BYTES),
    }


async def forged_envelopes(target: Target, count: int = 4000, workers: int = 8) -> dict:
    forged = forged_set(target.net.chain_id)
    bodies = {
        (kind, method): rpc_body(method, {"tx": b64(raw)})
        for kind, raw in forged.items()
        for method in ("check_tx", "broadcast_tx_sync")
    }
    keys = sorted(bodies)
    urls = target.urls()
    answers: dict[str, Counter] = {}
    sent_bytes = 0

    async def work(i: int) -> None:
        nonlocal sent_bytes
        kind, method = keys[i % len(keys)]
        address = urls[i % len(urls)]
        body = bodies[(kind, method)]
        sent_bytes += len(body)
        answer = await http(address, post_bytes(*address, body))
        answers.setdefault(f"{kind}/{method}", Counter())[answer.outcome] += 1

    await for_a_while(target.seconds, count, workers, work)
    total = Counter()
    for counter in answers.values():
        total.update(counter)
    return {
        "sent": {"requests": sum(total.values()), "bytes": sent_bytes},
        "answers": dict(total),
        "by_kind": {k: dict(v) for k, v in sorted(answers.items())},
        "envelope_bytes": {k: len(v) for k, v in forged.items()},
    }


# ------------------------------------------------------------------------------ squat


async def mempool_squat(target: Target, per_sender: int = 63, workers: int = 8) -> dict:
    """Each investor signs junk transactions (a transfer with a 62 KiB junk argument, which
    only fails when executed) at nonces next+1 .. next+per_sender, leaving `next` empty, and
    sends them all (for at most SQUAT_SEND_S); they wait in every mempool, held there for the
    attack's time while the caller measures the institutions' transactions. Then each
    investor sends a small transaction at `next`, so the junk becomes includable and the pool
    drains (blocks of junk, each refused when executed)."""
    address = target.urls()[0]
    nonces = {}
    for key in target.investors:
        # Each investor reads its own account (what the threat model lets it read).
        params = {"address": address_to_text(key.address)}
        answer = await call(address, "account", params, signer=key)
        nonces[address_to_text(key.address)] = json.loads(answer.body)["result"]["nonce"]
    # Round-robin over the senders, each in nonce order: if the time runs out, every sender
    # has sent a run of nonces without holes, which the gap filler then makes includable.
    jobs = []
    for offset in range(1, per_sender + 1):
        for key in target.investors:
            nonce = nonces[address_to_text(key.address)] + offset
            body = TxBody(
                target.net.chain_id, key.address, nonce, "transfer", _pad_args(JUNK_ARG_BYTES)
            )
            jobs.append(sign_tx(body, [key]).raw)
    urls = target.urls()
    answers = Counter()
    sent_bytes = 0
    began = time.monotonic()

    async def work(i: int) -> None:
        nonlocal sent_bytes
        sent_bytes += len(jobs[i])
        address = urls[i % len(urls)]
        sender = target.investors[i % len(target.investors)]  # (jobs go round-robin)
        answer = await call(address, "broadcast_tx_sync", {"tx": b64(jobs[i])}, signer=sender)
        answers[answer.outcome] += 1

    await for_a_while(max(target.seconds, SQUAT_SEND_S), len(jobs), workers, work)
    sending_s = time.monotonic() - began
    pool = {}
    for name, address in target.net.rpc.items():
        answer = await call(address, "num_unconfirmed_txs", {}, signer=target.reader)
        pool[name] = json.loads(answer.body)["result"] if answer.outcome == "ok" else None
    await trio.sleep(target.seconds)  # the squat holds
    # Fill the gaps: a one-unit transfer at each investor's next nonce.
    filled = Counter()
    for index, key in enumerate(target.investors):
        sender = address_to_text(key.address)
        to = address_to_text(target.investors[(index + 1) % len(target.investors)].address)
        operation = TxBuilder.transfer(instrument=target.cash, to=to, amount=1)
        tx = sign(operation.body(target.net.chain_id, sender, nonces[sender]), [key])
        answer = await call(urls[0], "broadcast_tx_sync", {"tx": b64(tx.raw)}, signer=key)
        filled[answer.outcome] += 1
    drained_s = None
    began = time.monotonic()
    with trio.move_on_after(90):
        while True:
            answer = await call(urls[0], "num_unconfirmed_txs", {}, signer=target.reader)
            if answer.outcome == "ok" and json.loads(answer.body)["result"]["n_txs"] == 0:
                drained_s = round(time.monotonic() - began, 1)
                break
            await trio.sleep(0.5)
    return {
        "sent": {
            "senders": len(target.investors),
            "txs": sum(answers.values()),
            "bytes": sent_bytes,
            "send_s": round(sending_s, 1),
        },
        "answers": dict(answers),
        "mempool_during_squat": pool,
        "gap_fillers": dict(filled),
        "drained_s": drained_s,
    }


# ------------------------------------------------------------------------------ reads


async def big_answers(target: Target, clients: int = 6, count: int = 600) -> dict:
    urls = target.urls()
    tip = max(0, target.net.height(next(iter(target.net.rpc))))
    answers = Counter()
    received = Counter()
    largest = Counter()
    slowest = 0.0

    async def work(i: int) -> None:
        nonlocal slowest
        address = urls[i % len(urls)]
        if i % 2 == 0:
            start = target.rng.randint(1, max(1, tip - 32))
            calls = [
                {"jsonrpc": "2.0", "id": k, "method": "block", "params": {"height": start + k}}
                for k in range(32)
            ]
            body, kind = json.dumps(calls).encode(), "block_x32"
        else:
            params = {"per_page": 1000, "page": 1 + (i // 2) % 3}
            body, kind = rpc_body("events", params), "events_1000"
        answer = await http(address, await signed_post(address, body, target.reader), 15.0)
        answers[f"{kind}/{answer.outcome}"] += 1
        received[kind] += answer.size
        largest[kind] = max(largest[kind], answer.size)
        slowest = max(slowest, answer.seconds)

    await for_a_while(target.seconds, count, clients, work)
    return {
        "sent": {"requests": sum(answers.values()), "clients": clients},
        "answers": dict(answers),
        "received_bytes": dict(received),
        "largest_answer_bytes": dict(largest),
        "slowest_answer_s": round(slowest, 2),
    }


async def read_flood(target: Target, clients: int = 32, count: int = 3000) -> dict:
    urls = target.urls()
    answers = Counter()
    received = 0
    pages: dict[int, int] = {}
    latencies: list[float] = []

    async def work(i: int) -> None:
        nonlocal received
        client = i % clients
        page = pages.get(client, 1)
        address = urls[client % len(urls)]
        params = {"per_page": 1000, "page": page}
        answer = await call(address, "events", params, 15.0, signer=target.reader)
        answers[answer.outcome] += 1
        received += answer.size
        latencies.append(answer.seconds)
        more = False
        if answer.outcome == "ok":
            more = len(json.loads(answer.body)["result"]["events"]) == 1000
        pages[client] = page + 1 if more else 1

    await for_a_while(target.seconds, count, clients, work)
    latencies.sort()
    return {
        "sent": {"requests": sum(answers.values()), "clients": clients, "per_page": 1000},
        "answers": dict(answers),
        "received_bytes": received,
        "p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
        "max_s": round(latencies[-1], 3) if latencies else None,
    }


async def legit_client(address, stop: trio.Event, answers: Counter, latencies: list) -> None:
    """A well-behaved client: `status` every 200 ms, 3 s deadline each."""
    while not stop.is_set():
        answer = await call(address, "status", {}, 3.0)
        answers[answer.outcome] += 1
        latencies.append(answer.seconds)
        await trio.sleep(0.2)


def _legit_summary(answers: Counter, latencies: list[float]) -> dict:
    latencies = sorted(latencies)
    total = sum(answers.values())
    return {
        "calls": total,
        "answers": dict(answers),
        "failed": total - answers.get("ok", 0),
        "p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
        "max_s": round(latencies[-1], 3) if latencies else None,
    }


# ------------------------------------------------------------------------------ slow HTTP


async def slow_http(target: Target, sockets: int = 400) -> dict:
    """Slowloris: each socket sends a request head announcing a 1 MB body, then one byte every
    2 s; the legitimate client's calls go to the same node meanwhile."""
    name = next(iter(target.net.rpc))
    address = target.net.rpc[name]
    opened = Counter()
    legit, latencies = Counter(), []
    stop = trio.Event()

    async def slow(index: int) -> None:
        try:
            # From another address than the legitimate client's (127.0.0.2-9 here): per-address
            # caps are the node's defence, and one address cannot be both.
            stream = await open_from(address, f"127.0.0.{2 + index % 8}")
        except OSError:
            opened["refused"] += 1
            return
        opened["opened"] += 1
        head = (
            f"POST / HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{"
        )
        try:
            async with stream:
                await stream.send_all(head.encode())
                while not stop.is_set():
                    with trio.move_on_after(2.0):
                        data = await stream.receive_some(4096)
                        if not data:
                            opened["closed_by_node"] += 1
                            return
                        opened["answered_by_node"] += 1
                        return
                    await stream.send_all(b" ")
        except (OSError, trio.BrokenResourceError):
            opened["reset_by_node"] += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(legit_client, address, stop, legit, latencies)
        for index in range(sockets):
            nursery.start_soon(slow, index)
            if index % 50 == 49:
                await trio.sleep(0.05)
        await trio.sleep(target.seconds)
        stop.set()
    return {
        "sent": {"slow_sockets": sockets, "node": name},
        "answers": dict(opened),
        "legitimate_client": _legit_summary(legit, latencies),
    }


# ------------------------------------------------------------------------------ WebSocket


async def _legit_subscriber(address) -> str:
    """Can a legitimate client subscribe to NewBlock and get a block within 10 s?"""
    try:
        client = await WsClient.open(address)
    except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError):
        return "could_not_connect"
    async with client.stream:
        try:
            await client.send(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "subscribe",
                    "params": {"query": "tm.event='NewBlock'"},
                }
            )
            while True:
                message = await client.next_text(10.0)
                if message is None:
                    return "closed_by_node"
                if "error" in message:
                    return f"error_{message['error'].get('code')}"
                if message.get("result", {}).get("data"):
                    return "got_block"
        except trio.TooSlowError:
            return "no_block_in_10s"
        except (OSError, trio.BrokenResourceError, ValueError):
            return "reset"


async def ws_idle(target: Target, connections: int = 200) -> dict:
    name = next(iter(target.net.rpc))
    address = target.net.rpc[name]
    outcomes = Counter()
    held: list[WsClient] = []
    for _ in range(connections):
        try:
            held.append(await WsClient.open(address))
            outcomes["accepted"] += 1
        except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            outcomes[f"refused:{type(exc).__name__}"] += 1
    legit = await _legit_subscriber(address)
    await trio.sleep(max(0.0, target.seconds - 5))
    closed = 0
    for client in held:  # did the node close them (at once, or while idle)?
        with trio.move_on_after(0.01):
            try:
                if await client.next_text(0.01) is None:
                    closed += 1
            except (trio.TooSlowError, OSError, trio.BrokenResourceError, ValueError):
                pass
        await client.stream.aclose()
    return {
        "sent": {"connections": connections, "node": name},
        "answers": dict(outcomes),
        "closed_by_node": closed,
        "legitimate_subscriber": legit,
    }


async def ws_nonreader(target: Target, connections: int = 16, requests: int = 200) -> dict:
    """Each connection subscribes to NewBlock and Tx and then sends `requests` `events` calls
    for a 1,000-event page, with a tiny receive buffer and never a read."""
    name = next(iter(target.net.rpc))
    address = target.net.rpc[name]
    outcomes = Counter()
    sent = 0
    stop = trio.Event()

    async def nonreader(index: int) -> None:
        nonlocal sent
        try:
            client = await WsClient.open(address, rcvbuf=4096)
        except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError):
            outcomes["refused"] += 1
            return
        outcomes["accepted"] += 1
        async with client.stream:
            try:
                for query in ("tm.event='NewBlock'", "tm.event='Tx'"):
                    params = {"query": query}
                    await client.send(
                        {"jsonrpc": "2.0", "id": 0, "method": "subscribe", "params": params}
                    )
                for k in range(requests):
                    if stop.is_set():
                        break
                    params = {"per_page": 1000, "page": 1}
                    with trio.move_on_after(2.0) as scope:
                        await client.send(
                            {"jsonrpc": "2.0", "id": k + 1, "method": "events", "params": params}
                        )
                        sent += 1
                    if scope.cancelled_caught:
                        outcomes["send_blocked"] += 1  # the node stopped reading from us
                        await stop.wait()
                        return
                await stop.wait()
            except (OSError, trio.BrokenResourceError):
                outcomes["reset_by_node"] += 1

    legit = "not_measured"
    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(nonreader, index)
        await trio.sleep(min(3.0, target.seconds / 2))
        legit = await _legit_subscriber(address)
        await trio.sleep(max(0.0, target.seconds - 3.0))
        stop.set()
    return {
        "sent": {"connections": connections, "requests": sent, "node": name},
        "answers": dict(outcomes),
        "legitimate_subscriber": legit,
    }


# ------------------------------------------------------------------------------ P2P


async def _hold(address, handshake: bool, stop: trio.Event, counts: Counter) -> None:
    """Keep one socket open on a P2P port (reconnecting when it closes); with `handshake`
    send a valid-looking first Noise message (an ephemeral key) and then stall."""
    while not stop.is_set():
        try:
            stream = await trio.open_tcp_stream(*address)
        except OSError:
            counts["refused"] += 1
            await trio.sleep(0.2)
            continue
        counts["opened"] += 1
        async with stream:
            try:
                if handshake:
                    await stream.send_all((32).to_bytes(4, "big") + os.urandom(32))
                while not stop.is_set():
                    with trio.move_on_after(0.5):
                        if not await stream.receive_some(1 << 16):
                            counts["closed_by_node"] += 1
                            break
            except (OSError, trio.BrokenResourceError):
                counts["reset_by_node"] += 1
        await trio.sleep(0.05)


async def open_from(address: tuple[str, int], source: str) -> trio.SocketStream:
    """A TCP connection to `address` from the local address `source` (loopback aliases)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        await sock.bind((source, 0))
        await sock.connect(address)
    except OSError:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _linked(target: Target, name: str, tip: int, peers: int, bound_s: float):
    """Seconds until `name` has `peers` peers and is past `tip`; None if not within bound."""
    began = trio.current_time()
    address = target.net.rpc[name]
    while trio.current_time() - began < bound_s:
        answer = await call(address, "net_info", {}, 2.0, signer=target.reader)
        if answer.outcome == "ok" and json.loads(answer.body)["result"]["n_peers"] >= peers:
            if await trio.to_thread.run_sync(target.net.height, name) > tip:
                return round(trio.current_time() - began, 2)
        await trio.sleep(0.2)
    return None


async def p2p_hold(target: Target, per_port: int = 64, bound_s: float = 30.0) -> dict:
    """First one validator is restarted with no attack (the control), then `per_port` sockets
    (half of them with a stalled handshake) are held on every P2P port while validators are
    restarted one after another; for each, the seconds until it has every peer again and is
    past the tip it was stopped at."""
    names = list(target.net.p2p)
    peers = len(names) - 1
    restarts = []

    async def restart(name: str, held: bool) -> dict:
        tip = max([await trio.to_thread.run_sync(target.net.height, n) for n in names])
        began = trio.current_time()
        stopped_at_ms = time.time_ns() // 1_000_000
        await trio.to_thread.run_sync(target.net.restart, name)
        relinked = await _linked(target, name, tip, peers, bound_s)
        entry = {
            "node": name,
            "held": held,
            "relinked_s": None if relinked is None else round(trio.current_time() - began, 2),
            "stopped_at_ms": stopped_at_ms,
            "relinked_at_ms": None if relinked is None else time.time_ns() // 1_000_000,
        }
        restarts.append(entry)
        return entry

    await restart(names[-1], False)
    counts = Counter()
    stop = trio.Event()
    deadline = trio.current_time() + target.seconds
    async with trio.open_nursery() as nursery:
        for name in names:
            for index in range(per_port):
                nursery.start_soon(_hold, target.net.p2p[name], index % 2 == 1, stop, counts)
        await trio.sleep(2.0)  # every port full before the first restart
        for index, name in enumerate(names):
            if index and trio.current_time() > deadline:
                break
            await restart(name, True)
        stop.set()
    # A validator that did not link while the sockets were held: does it once they are gone?
    for entry in restarts:
        if entry["relinked_s"] is None:
            after = await _linked(target, entry["node"], -1, peers, 30)
            entry["relinked_after_release_s"] = after
            if after is not None:
                entry["relinked_at_ms"] = time.time_ns() // 1_000_000
    held = [r["relinked_s"] for r in restarts if r["held"]]
    return {
        "sent": {"sockets_per_port": per_port, "ports": len(names)},
        "answers": dict(counts),
        "restarts": restarts,
        "control_relinked_s": restarts[0]["relinked_s"],
        "max_relinked_s": None if None in held else max(held, default=None),
        "relink_bound_s": bound_s,
    }


# ------------------------------------------------------------------------------ foreign


async def foreign_host(target: Target, each: int = 20) -> dict:
    """Requests a browser page could make: a foreign Host (DNS rebinding) and a cross-site
    `text/plain` POST (a "simple" request, sent without a CORS preflight)."""
    address = next(iter(target.net.rpc.values()))
    body = rpc_body("status", {})
    kinds = {
        "foreign_host": post_bytes(*address, body, host_header="attacker.example"),
        "foreign_host_with_port": post_bytes(
            *address, body, host_header=f"rebind.attacker.example:{address[1]}"
        ),
        "cross_site_text_plain": (
            f"POST / HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
            "Content-Type: text/plain\r\nOrigin: http://attacker.example\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + body,
        "foreign_host_get": (
            b"GET /status HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n"
        ),
    }
    by_kind: dict[str, Counter] = {}
    for kind, raw in kinds.items():
        for _ in range(each):
            answer = await http(address, raw)
            by_kind.setdefault(kind, Counter())[answer.outcome] += 1
    total = Counter()
    for counter in by_kind.values():
        total.update(counter)
    answered = {k: v.get("ok", 0) for k, v in by_kind.items()}
    return {
        "sent": {"requests": sum(total.values())},
        "answers": dict(total),
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "answered": answered,
    }


ATTACKS = {
    "forged_envelopes": forged_envelopes,
    "mempool_squat": mempool_squat,
    "big_answers": big_answers,
    "read_flood": read_flood,
    "slow_http": slow_http,
    "ws_idle": ws_idle,
    "ws_nonreader": ws_nonreader,
    "p2p_hold": p2p_hold,
    "foreign_host": foreign_host,
}
