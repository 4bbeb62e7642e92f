"""`khazana key hsm-generate`: an Ed25519 key made inside a PKCS#11 token, and the reference
file that names it (node/hsm.py; docs/OPERATIONS.md, "Hardware security modules (PKCS#11)").

The PIN never travels on the command line: `--pin-file` names a 0600 file holding it,
`--pin-env` the environment variable that will hold it; the reference records which, so
every later command that opens the key logs in the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ledger.crypto import address_from_public_key, address_to_text
from node.hsm import HsmError, generate_in_token, write_reference

EXIT_REFUSED = 1


def add_hsm_parsers(actions: argparse._SubParsersAction) -> None:
    generate = actions.add_parser(
        "hsm-generate",
        help="make an Ed25519 key inside a PKCS#11 token and write its reference file",
        description="The private key is generated in the token (sensitive, not extractable) "
        "and never leaves it; --out gets a reference file that every command taking a key "
        "file accepts.",
    )
    generate.add_argument("--module", required=True, help="path of the PKCS#11 library")
    generate.add_argument("--token", required=True, help="the token's label")
    generate.add_argument("--label", required=True, help="label of the new key in the token")
    pin = generate.add_mutually_exclusive_group(required=True)
    pin.add_argument("--pin-file", help="file (0600) holding the token's user PIN")
    pin.add_argument("--pin-env", help="name of the environment variable holding the PIN")
    generate.add_argument("--out", required=True, help="reference file to write (0600, new)")


def cmd_hsm_generate(args: argparse.Namespace) -> int:
    try:
        if os.path.lexists(args.out):
            raise FileExistsError(f"refusing to overwrite {args.out}")
        reference = generate_in_token(
            args.module, args.token, args.label, pin_file=args.pin_file, pin_env=args.pin_env
        )
        write_reference(args.out, reference)
    except (HsmError, OSError) as exc:
        print(f"khazana key hsm-generate: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    public_key = reference.public_key or b""
    address = address_to_text(address_from_public_key(public_key))
    print(json.dumps({"address": address, "public_key": public_key.hex(), "reference": args.out}))
    return 0
