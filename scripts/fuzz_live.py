"""Hostile input against a running localnet's RPC and peer ports, counted (issue 7 item 3).

    python scripts/fuzz_live.py --localnet DIR --seconds S [--seed N]

DIR holds `localnet.json` (CONTRACT.md: nodes with name, role, home, rpc, p2p, pid). For S
seconds, round-robin over the validators, the script sends inputs of these families:

* rpc/<family>: the hostile bodies of `tests/fuzz/rpcsupport.py` (malformed JSON, NaN,
  duplicate keys, huge integers, deep nesting, empty and huge batches, invalid UTF-8), each
  answer judged by `check_answer` (a result or a stable error code, no traceback);
* tx/<kind>: hostile transactions through `broadcast_tx_sync` (random bytes, S+L malleated
  signature, another chain id, a vote signature as a tx signature); each must be refused with
  a ledger code;
* p2p/raw: garbage, huge length prefixes and truncated frames on a fresh TCP connection to a
  peer port (the node must close it);
* p2p/authenticated: when the localnet has an observer, a real Noise handshake with its key,
  then a garbage frame (the node must disconnect; after a few it bans the key and refuses the
  handshake, which is counted as `banned`);
* rpc/slow_body: once per node, a body dribbled a byte per 0.5 s: the node must answer or
  close within the RPC request timeout (+2 s).

At the end every node must be alive (its pid) and committing (height grew during the run);
RSS of each node process is read from /proc before and after. The last line printed is JSON:
inputs per family, errors by code, invariant breaks with examples, liveness, RSS, and `ok`.
Exit status 0 iff ok.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from consensus.types import VoteType, vote_signing_bytes  # noqa: E402
from ledger.crypto import read_key_file  # noqa: E402
from ledger.tx import Signature, SignedTx, TxBody, encode_signed_tx, sign_tx  # noqa: E402
from node.p2p.connection import handshake_initiator  # noqa: E402
from node.p2p.errors import ConnectionClosed, PeerProtocolError  # noqa: E402
from tests.fuzz.rpcsupport import InvariantBroken, check_answer, random_body  # noqa: E402

ED25519_L = 2**252 + 27742317777372353535851937790883648493
HTTP_TIMEOUT_S = 15
MAX_EXAMPLES = 5  # invariant breaks kept per family


class Tally:
    """Counts per family, error codes, and invariant breaks (with a few examples)."""

    def __init__(self) -> None:
        self.inputs: dict[str, int] = {}
        self.codes: dict[str, int] = {}
        self.breaks: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def count(self, family: str, codes=()) -> None:
        self.inputs[family] = self.inputs.get(family, 0) + 1
        for code in codes:
            self.codes[str(code)] = self.codes.get(str(code), 0) + 1

    def broken(self, family: str, what: str) -> None:
        self.breaks[family] = self.breaks.get(family, 0) + 1
        kept = self.examples.setdefault(family, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(what[:300])


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def rpc_call(url: str, method: str, **params) -> dict:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    return json.loads(post(url, body)[1])


def height(url: str) -> int:
    try:
        return rpc_call(url, "status")["result"]["sync_info"]["latest_block_height"]
    except (OSError, ValueError, KeyError):
        return -1


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def alive(pid: int) -> bool:
    if pid <= 0:  # not started by the localnet (0 would signal our own process group)
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- families


def fuzz_rpc(rng: random.Random, url: str, tally: Tally) -> None:
    family, body = random_body(rng)
    name = f"rpc/{family}"
    try:
        status, reply = post(url, body)
        tally.count(name, check_answer(status, reply))
    except InvariantBroken as exc:
        tally.count(name)
        tally.broken(name, f"{exc} <- {body[:120]!r}")
    except OSError as exc:
        tally.count(name)
        tally.broken(name, f"no answer: {exc!r} <- {body[:120]!r}")


def hostile_tx(rng: random.Random, chain_id: str, client) -> tuple[str, bytes]:
    args = {"instrument": "PKR", "to": client.address, "amount": 1}
    kind = rng.choice(("random", "malleated", "wrong_chain", "vote_signature"))
    if kind == "random":
        return kind, rng.randbytes(rng.randrange(1, 400))
    chain = chain_id if kind != "wrong_chain" else chain_id + "-other"
    body = TxBody(chain, client.address, rng.randrange(0, 2**40), "transfer", args)
    if kind == "wrong_chain":
        return kind, sign_tx(body, [client]).raw
    if kind == "malleated":
        sig = sign_tx(body, [client]).signatures[0].signature
        sig = sig[:32] + (int.from_bytes(sig[32:], "little") + ED25519_L).to_bytes(32, "little")
    else:
        sig = client.sign(vote_signing_bytes(chain_id, VoteType.PREVOTE, 1, 0, body.tx_id))
    tx = SignedTx(body, (Signature(client.public_key, sig),), b"", body.tx_id)
    return kind, encode_signed_tx(tx)


def fuzz_tx(rng: random.Random, url: str, chain_id: str, client, tally: Tally) -> None:
    kind, raw = hostile_tx(rng, chain_id, client)
    name = f"tx/{kind}"
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "broadcast_tx_sync",
            "params": {"tx": base64.b64encode(raw).decode()},
            "id": 1,
        }
    ).encode()
    try:
        status, reply = post(url, body)
        check_answer(status, reply)
        answer = json.loads(reply)
        code = answer["result"]["code"] if "result" in answer else answer["error"]["code"]
        tally.count(name, [f"tx{code}" if "result" in answer else code])
        if code == 0:
            tally.broken(name, f"a hostile tx was accepted: {raw[:80].hex()}")
    except (InvariantBroken, OSError, ValueError, KeyError) as exc:
        tally.count(name)
        tally.broken(name, repr(exc))


def _host_header(host: str, port: int) -> str:
    """The Host header a client of `host`:`port` sends (the node refuses foreign ones)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_port(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


def fuzz_p2p_raw(rng: random.Random, address: str, tally: Tally) -> None:
    """Unauthenticated garbage on a peer port: the node must close the connection."""
    kind = rng.choice(("random", "huge_prefix", "truncated"))
    if kind == "random":
        data = rng.randbytes(rng.randrange(1, 300))
    elif kind == "huge_prefix":
        data = rng.randrange(65536, 2**32).to_bytes(4, "big") + b"\x00" * 16
    else:
        data = (200).to_bytes(4, "big") + rng.randbytes(rng.randrange(0, 199))
    name = f"p2p/raw_{kind}"
    tally.count(name)
    try:
        with socket.create_connection(_host_port(address), timeout=5) as sock:
            sock.sendall(data)
            if kind == "truncated":
                sock.shutdown(socket.SHUT_WR)  # end of stream inside the frame
            sock.settimeout(12)  # the handshake deadline is 10 s
            while sock.recv(4096):
                pass
    except TimeoutError:
        tally.broken(name, f"connection held open after {data[:24].hex()}")
    except OSError:
        pass  # reset by the node: closed, as it should be


async def _authenticated_garbage(address: str, chain_id: str, observer, rng) -> str:
    host, port = _host_port(address)
    stream = await trio.open_tcp_stream(host, port)
    try:
        with trio.fail_after(10):
            link = await handshake_initiator(stream, observer, chain_id, lambda key: True)
        garbage = rng.randbytes(rng.randrange(1, 200))
        await link._frames.write_frames([garbage])  # not a ciphertext under the link's key
        with trio.fail_after(10):
            while True:
                await link.receive()  # the node may send status first; then it must close
    except PeerProtocolError as exc:
        return "banned" if "UNKNOWN_PEER" in str(exc) or "TRUNCATED" in str(exc) else "closed"
    except (ConnectionClosed, OSError, trio.BrokenResourceError):
        return "closed"
    except trio.TooSlowError:
        return "held"
    finally:
        await trio.aclose_forcefully(stream)


def fuzz_p2p_authenticated(rng, address: str, chain_id: str, observer, tally: Tally) -> None:
    name = "p2p/authenticated_garbage"
    try:
        outcome = trio.run(_authenticated_garbage, address, chain_id, observer, rng)
    except OSError as exc:
        outcome = f"connect failed: {exc!r}"
    tally.count(name, [f"p2p_{outcome.split(':')[0]}"])
    if outcome == "held":
        tally.broken(name, "the node kept an authenticated link after a garbage frame")


def slow_body(url: str, limit_s: float, tally: Tally) -> None:
    """A body dribbled a byte at a time: the node must be done with us within `limit_s`."""
    name = "rpc/slow_body"
    tally.count(name)
    host, port = _host_port(url.split("//", 1)[1].rstrip("/"))
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            f"POST / HTTP/1.1\r\nhost: {_host_header(host, port)}\r\ncontent-type: application/json\r\n"
            "content-length: 1000\r\n\r\n{".encode()
        )
        sock.setblocking(False)
        while time.monotonic() - start < limit_s:
            try:
                if sock.recv(4096) == b"":
                    return  # closed by the node
                return  # answered (an error about the slow body)
            except BlockingIOError:
                pass
            except OSError:
                return
            try:
                sock.send(b" ")
            except OSError:
                return
            time.sleep(0.5)
    tally.broken(name, f"a dribbled body held a request for {limit_s:.0f}s without an answer")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--localnet", required=True, type=Path)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--slow-body-s", type=float, default=12, help="request timeout + slack (0: skip)"
    )
    args = parser.parse_args(argv)
    doc = json.loads((args.localnet / "localnet.json").read_text())
    chain_id = doc["chain_id"]
    validators = [n for n in doc["nodes"] if n["role"] == "validator"]
    observers = [n for n in doc["nodes"] if n["role"] == "observer"]
    observer_key = (
        read_key_file(Path(observers[0]["home"]) / "node_key.json") if observers else None
    )
    clients = sorted(doc.get("clients", {}).items())
    client = (
        read_key_file(clients[0][1])
        if clients
        else read_key_file(Path(validators[0]["home"]) / "node_key.json")
    )
    rng = random.Random(args.seed)
    tally = Tally()
    start_heights = {n["name"]: height(n["rpc"]) for n in validators}
    rss_before = {n["name"]: rss_kib(n["pid"]) for n in doc["nodes"] if n.get("pid")}

    if args.slow_body_s > 0:
        for node in validators[:1]:
            slow_body(node["rpc"], args.slow_body_s, tally)
    deadline = time.monotonic() + args.seconds
    turn = 0
    while time.monotonic() < deadline:
        node = validators[turn % len(validators)]
        turn += 1
        for _ in range(8):
            fuzz_rpc(rng, node["rpc"], tally)
        fuzz_tx(rng, node["rpc"], chain_id, client, tally)
        if turn % 4 == 0:
            fuzz_p2p_raw(rng, node["p2p"], tally)
        if observer_key is not None and turn % 8 == 0:
            fuzz_p2p_authenticated(rng, node["p2p"], chain_id, observer_key, tally)

    # Liveness: every node alive and committing past where it was at the start.
    committing = {}
    for node in validators:
        target = start_heights[node["name"]] + 2
        until = time.monotonic() + 30
        while height(node["rpc"]) < target and time.monotonic() < until:
            time.sleep(0.3)
        committing[node["name"]] = height(node["rpc"]) >= target
    alive_nodes = {n["name"]: alive(n["pid"]) for n in doc["nodes"] if n.get("pid")}
    rss_after = {n["name"]: rss_kib(n["pid"]) for n in doc["nodes"] if n.get("pid")}
    ok = not tally.breaks and all(alive_nodes.values()) and all(committing.values())
    summary = {
        "seconds": args.seconds,
        "inputs": dict(sorted(tally.inputs.items())),
        "inputs_total": sum(tally.inputs.values()),
        "errors_by_code": dict(sorted(tally.codes.items())),
        "invariant_breaks": dict(sorted(tally.breaks.items())),
        "examples": tally.examples,
        "alive": alive_nodes,
        "committing": committing,
        "heights": {n["name"]: height(n["rpc"]) for n in validators},
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "ok": ok,
    }
    print(json.dumps(summary, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
