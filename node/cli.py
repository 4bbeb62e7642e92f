"""The `khazana` command line (argparse): one sub-command per entry in CONTRACT.md."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="khazana", description="Khazana sovereign-asset node")
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="create a new Ed25519 key file (0600)")
    keygen.add_argument("--out", required=True, help="path of the key file to write")
    return parser


def cmd_keygen(args: argparse.Namespace) -> int:
    from ledger.crypto import generate_key, write_key_file

    key = generate_key()
    address = write_key_file(args.out, key)
    print(address)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "keygen":
        return cmd_keygen(args)
    print(f"khazana: unknown command {args.command}", file=sys.stderr)
    return 2
