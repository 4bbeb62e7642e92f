"""The ports the real-process tests give their nodes (tests/node/netsupport.py `free_ports`), and
a node's listeners binding the same port again right after they stopped (a restart).

The flake this pins (test_network's restart once failed with "Address already in use"): the
ports used to be probed free inside the kernel's ephemeral range and then left unbound while a
node was down between its kill and its restart. Any `connect()` on the machine (another test
run, the other nodes dialling their peers) may be given such a port as its source port, and a
listener cannot bind a port a connected socket holds -- SO_REUSEADDR or not, and for the whole
TIME_WAIT after it closed. Reserved ports are now outside that range and locked per process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

from node.asgi import answer_lifespan, serve_asgi
from tests.node.netsupport import PORT_BLOCK, PROJECT_PORTS, _test_port_ranges, free_ports


def test_a_connection_on_a_port_keeps_a_listener_from_binding_it():
    """The hazard itself: an outgoing connection's source port cannot be bound by a
    SO_REUSEADDR listener, neither while it is open nor in TIME_WAIT after it closed."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.socket()
        client.connect(server.getsockname())
        source_port = client.getsockname()[1]
        accepted, _ = server.accept()
        for _ in ("open", "closed: TIME_WAIT"):
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", source_port))
                raise AssertionError("bound a port a connection holds")
            except OSError:
                pass
            finally:
                listener.close()
            client.close()  # the active close: TIME_WAIT on the client's side
        accepted.close()


def test_reserved_ports_are_not_ephemeral_and_never_shared():
    ranges = _test_port_ranges()
    bases = [free_ports(12) for _ in range(8)] + [free_ports(40)]
    ports = [
        p for base, n in zip(bases, [12] * 8 + [40], strict=True) for p in range(base, base + n)
    ]
    assert len(set(ports)) == len(ports), "a port reserved twice"
    assert all(any(p in r for r in ranges) for p in ports)
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert not any(low <= p <= high for p in ports), "a port a connect() may be given"
    assert not any(p in PROJECT_PORTS for p in ports), "a localnet's or a benchmark's port"
    # Another process (another test run) cannot take them: every block is locked.
    directory = Path(tempfile.gettempdir()) / f"khazana-test-ports-{os.getuid()}"
    blocks = sorted({p - p % PORT_BLOCK for p in ports})
    probe = (
        "import fcntl, os, sys\n"
        "taken = 0\n"
        "for path in sys.argv[1:]:\n"
        "    fd = os.open(path, os.O_RDWR)\n"
        "    try:\n"
        "        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    except OSError:\n"
        "        taken += 1\n"
        "    os.close(fd)\n"
        "print(taken)\n"
    )
    paths = [str(directory / str(b)) for b in blocks]
    out = subprocess.run(
        [sys.executable, "-c", probe, *paths], capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == len(blocks)


async def _one_request(port: int) -> trio.SocketStream:
    """A keep-alive connection with one answered request, left open (the server must close
    it when it stops: its side then sits in TIME_WAIT on the listening port)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    data = b""
    while b"ok" not in data:
        data += await stream.receive_some(4096)
    return stream


def test_listeners_bind_their_port_again_at_once_after_stopping():
    """A restarted node binds its RPC/metrics port (hypercorn, both serving paths) and its
    p2p port (trio's listeners) at once, while the connections of its previous life are in
    TIME_WAIT on them: both set SO_REUSEADDR. Five stop/start cycles each."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await answer_lifespan(receive, send)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main(port: int) -> None:
        with trio.fail_after(20):
            for send_timeout_ms in (None, 5000):
                for _ in range(5):
                    async with trio.open_nursery() as nursery:
                        bound = await nursery.start(
                            partial(
                                serve_asgi,
                                app,
                                f"127.0.0.1:{port}",
                                name="restart",
                                send_timeout_ms=send_timeout_ms,
                            )
                        )
                        assert bound == port
                        client = await _one_request(port)
                        nursery.cancel_scope.cancel()
                    await client.aclose()
            p2p = port + 1
            for _ in range(5):
                listeners = await trio.open_tcp_listeners(p2p, host="127.0.0.1")
                client = await trio.open_tcp_stream("127.0.0.1", p2p)
                accepted = await listeners[0].accept()
                await accepted.aclose()  # the server closes first: TIME_WAIT on p2p
                for listener in listeners:
                    await listener.aclose()
                await client.aclose()

    trio.run(main, free_ports(2))
