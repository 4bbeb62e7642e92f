"""`khazana keygen --encrypt` and `khazana key encrypt|decrypt|change-passphrase`: key files
sealed under a passphrase (ledger/keyseal.py; docs/OPERATIONS.md, "Keys").

Passphrases never travel on the command line (they would be in the shell history and in
`ps`): a new one comes from the file named by KHAZANA_NEW_PASSPHRASE_FILE (for keygen and
encrypt also KHAZANA_PASSPHRASE_FILE), else it is asked for twice on the terminal; the
current one of an encrypted file comes from KHAZANA_PASSPHRASE_FILE, else the terminal.
`khazana key hsm-generate` (a key inside a PKCS#11 token) lives in node/hsmcli.py.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

import nacl.pwhash.argon2id as argon2id

from ledger.crypto import (
    PASSPHRASE_FILE_ENV,
    KeyFileError,
    generate_key,
    is_encrypted_key_file,
    read_key_file,
    read_passphrase_file,
    write_key_file,
)
from node.hsm import is_reference_file
from node.hsmcli import add_hsm_parsers, cmd_hsm_generate

NEW_PASSPHRASE_FILE_ENV = "KHAZANA_NEW_PASSPHRASE_FILE"
EXIT_REFUSED = 1

# libsodium's named costs of Argon2id (opslimit, memlimit).
KDF_COSTS = {
    "interactive": (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),  # 64 MiB
    "moderate": (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),  # 256 MiB
    "sensitive": (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),  # 1 GiB
}


def add_key_parsers(sub: argparse._SubParsersAction, keygen: argparse.ArgumentParser) -> None:
    keygen.add_argument(
        "--encrypt",
        action="store_true",
        help="seal the key under a passphrase (KHAZANA_PASSPHRASE_FILE, else asked twice)",
    )
    _cost_option(keygen)
    key = sub.add_parser(
        "key", help="encrypt, decrypt or re-encrypt a key file; make a key in an HSM"
    )
    actions = key.add_subparsers(dest="key_action", required=True)
    encrypt = actions.add_parser("encrypt", help="seal a plain key file in place")
    encrypt.add_argument("file")
    _cost_option(encrypt)
    decrypt = actions.add_parser("decrypt", help="write the plain key to a NEW file")
    decrypt.add_argument("file")
    decrypt.add_argument("--out", required=True, help="the plain key file to create (0600)")
    change = actions.add_parser("change-passphrase", help="re-seal under a new passphrase")
    change.add_argument("file")
    _cost_option(change)
    add_hsm_parsers(actions)


def _cost_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kdf-cost",
        choices=sorted(KDF_COSTS),
        default="moderate",
        help="Argon2id cost of opening the file (default moderate: 256 MiB, about a second)",
    )


def keygen_encrypted(args: argparse.Namespace):
    """The new key of `khazana keygen --encrypt`, written sealed; returns (key, address)."""
    passphrase = new_passphrase((PASSPHRASE_FILE_ENV, NEW_PASSPHRASE_FILE_ENV))
    key = generate_key()
    opslimit, memlimit = KDF_COSTS[args.kdf_cost]
    address = write_key_file(
        args.out, key, passphrase=passphrase, opslimit=opslimit, memlimit=memlimit
    )
    return key, address


def cmd_key(args: argparse.Namespace) -> int:
    if args.key_action == "hsm-generate":
        return cmd_hsm_generate(args)
    try:
        if is_reference_file(args.file):
            raise KeyFileError(
                f"{args.file} names a key in a hardware security module: it has no seed to "
                "encrypt or export (the token's own PIN and backup protect it)"
            )
        if args.key_action == "encrypt":
            if is_encrypted_key_file(args.file):
                raise KeyFileError(f"key file {args.file} is encrypted already")
            key = read_key_file(args.file)
            passphrase = new_passphrase((NEW_PASSPHRASE_FILE_ENV, PASSPHRASE_FILE_ENV))
            _rewrite(args, key, passphrase)
        elif args.key_action == "decrypt":
            key = read_key_file(args.file)
            write_key_file(args.out, key)
        else:  # change-passphrase
            if not is_encrypted_key_file(args.file):
                raise KeyFileError(f"key file {args.file} is not encrypted: use key encrypt")
            key = read_key_file(args.file)
            _rewrite(args, key, new_passphrase((NEW_PASSPHRASE_FILE_ENV,)))
    except (KeyFileError, OSError) as exc:
        print(f"khazana key {args.key_action}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"{args.key_action}: {key.address_text}")
    return 0


def _rewrite(args: argparse.Namespace, key, passphrase: bytes) -> None:
    opslimit, memlimit = KDF_COSTS[args.kdf_cost]
    write_key_file(
        args.file, key, passphrase=passphrase, opslimit=opslimit, memlimit=memlimit, replace=True
    )


def new_passphrase(env_names: tuple[str, ...]) -> bytes:
    """A new passphrase: from the first of `env_names` that is set, else typed twice."""
    for name in env_names:
        if os.environ.get(name):
            return read_passphrase_file(os.environ[name])
    if sys.stdin is None or not sys.stdin.isatty():
        raise KeyFileError(
            f"no passphrase: set {env_names[0]} to a file holding it, or run on a terminal"
        )
    first = getpass.getpass("new passphrase: ")
    if getpass.getpass("the same again: ") != first:
        raise KeyFileError("the two passphrases differ")
    if len(first) < 12:
        raise KeyFileError("a passphrase of at least 12 characters, please")
    return first.encode("utf-8")
