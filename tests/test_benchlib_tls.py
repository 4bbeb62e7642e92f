"""benchlib's pipelined lanes speak TLS to an https:// node (`khazana init --rpc-tls`), verify
its certificate against the CA given, and refuse a node whose certificate that CA did not
sign. In process: a small trio TLS server answers pipelined HTTP/1.1 POSTs in order."""

from __future__ import annotations

import shutil
import ssl
import sys
from pathlib import Path

import pytest
import trio

from node.client.core import Endpoint, tls_context
from node.rpc.tls import make_ca, make_server_cert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib.rpc import RpcLanes, open_stream  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command (apt-get install openssl)"
)


def parse_requests(buffer: bytearray) -> list[bytes]:
    """Remove every complete Content-Length request from the front of `buffer`; the bodies."""
    bodies = []
    while (end := buffer.find(b"\r\n\r\n")) >= 0:
        head = bytes(buffer[:end]).decode("latin-1").lower()
        length = int(head.split("content-length:")[1].split("\r\n")[0])
        if len(buffer) < end + 4 + length:
            break
        bodies.append(bytes(buffer[end + 4 : end + 4 + length]))
        del buffer[: end + 4 + length]
    return bodies


async def serve(listener: trio.SocketListener, context: ssl.SSLContext) -> None:
    """Answer each pipelined POST with its own body, in order (HTTP/1.1 keep-alive)."""

    async def one(stream: trio.SocketStream) -> None:
        secure = trio.SSLStream(stream, context, server_side=True)
        buffer = bytearray()
        try:
            while True:
                data = await secure.receive_some(1 << 16)
                if not data:
                    return
                buffer += data
                for body in parse_requests(buffer):
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n"
                    await secure.send_all(head.encode() + body)
        except trio.BrokenResourceError:
            return

    await trio.serve_listeners(one, [listener])


def tls_files(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    ca = make_ca(tmp_path / "ca")
    cert, key = make_server_cert(ca, tmp_path, "node", ["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return ca[0], context


async def lanes_round_trip(url: str, ca_file: Path, count: int) -> list[tuple[int, bytes | None]]:
    answers: list[tuple[int, bytes | None]] = []
    lanes = RpcLanes([url], lanes_per_url=2, per_connection=3, ca_file=str(ca_file))
    async with trio.open_nursery() as nursery:
        await nursery.start(lanes.run)
        for i in range(count):
            await lanes.submit(b'{"n":%d}' % i, lambda s, b: answers.append((s, b)))
        with trio.fail_after(10):
            while len(answers) < count:
                await trio.sleep(0.01)
        lanes.close()
    return answers


def test_lanes_over_tls_get_every_answer(tmp_path):
    ca_file, server_context = tls_files(tmp_path)

    async def main() -> list:
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(serve, listeners[0], server_context)
            # 10 requests over 2 lanes of 3 requests per connection: reconnects, over TLS.
            answers = await lanes_round_trip(f"https://127.0.0.1:{port}", ca_file, 10)
            nursery.cancel_scope.cancel()
            return answers

    answers = trio.run(main)
    assert sorted(b for _, b in answers) == sorted(b'{"n":%d}' % i for i in range(10))
    assert {s for s, _ in answers} == {200}


def test_a_certificate_from_another_ca_is_refused(tmp_path):
    _, server_context = tls_files(tmp_path / "real")
    other_ca = make_ca(tmp_path / "other")[0]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(serve, listeners[0], server_context)
            endpoint = Endpoint.parse(f"https://127.0.0.1:{port}")
            with pytest.raises(trio.BrokenResourceError):
                await open_stream(endpoint, tls_context(str(other_ca)))
            nursery.cancel_scope.cancel()

    trio.run(main)
