"""`khazana dashboard`: its arguments, and running the server until Ctrl-C / SIGTERM.

    khazana dashboard --rpc http://127.0.0.1:26657 --key regulator.key [--listen 127.0.0.1:8650]

Prints the address to open (it carries the access token, node/dashboard/server.py) and
serves until stopped. The key is an institution's (encrypted files are opened as every
command opens them); the node decides what that key may read.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import trio

from ledger.crypto import KeyFileError, read_key_file
from node.client.aio import AsyncClient
from node.dashboard.server import new_token, run_dashboard

DEFAULT_LISTEN = "127.0.0.1:8650"
KEY_ENV = "KHAZANA_KEY"
EXIT_REFUSED = 2


def add_dashboard_parser(sub: argparse._SubParsersAction) -> None:
    dashboard = sub.add_parser(
        "dashboard", help="serve the supervision dashboard for one node (institutions' staff)"
    )
    dashboard.add_argument("--rpc", required=True, help="the node's RPC URL")
    dashboard.add_argument(
        "--key", dest="auth_key", help=f"an institution's key file (default ${KEY_ENV})"
    )
    dashboard.add_argument("--ca-file", help="CA of the node's RPC certificate (https URLs)")
    dashboard.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"host:port to serve on (default {DEFAULT_LISTEN})"
    )
    dashboard.add_argument(
        "--token-file",
        help="write the access token here (0600) instead of only printing it",
    )


def cmd_dashboard(args: argparse.Namespace) -> int:
    path = args.auth_key or os.environ.get(KEY_ENV)
    if not path:
        print("khazana dashboard: --key (or $KHAZANA_KEY) is required: the reads are "
              "institutions' only", file=sys.stderr)  # fmt: skip
        return EXIT_REFUSED
    try:
        key = read_key_file(path)
    except (KeyFileError, OSError) as exc:
        print(f"khazana dashboard: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(
            f"khazana dashboard: --listen must be host:port, got {args.listen!r}", file=sys.stderr
        )
        return EXIT_REFUSED
    token = new_token()
    if args.token_file:
        descriptor = os.open(args.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(token + "\n")
    client = AsyncClient(args.rpc, key=key, ca_file=args.ca_file)

    def say(url: str) -> None:
        print(f"dashboard for {args.rpc}: open {url}", flush=True)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_dashboard, client.call, host, int(port), token, say)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0
