"""`khazana init-signer` and `khazana signer`: a remote signer's home and its process
(node/signer.py; docs/OPERATIONS.md "Keys", "Remote signer").

    khazana init-signer --home DIR --chain-id ID --validator-key FILE --node PUBKEY
                        [--node PUBKEY] [--listen unix:PATH|HOST:PORT] [--from-node-home HOME]
    khazana signer --home DIR

`init-signer` copies the validator key file (plain or encrypted) into the signer's home, makes
the signer's own transport key, writes `signer.toml`, and prints the `[signer]` table for the
node's config.toml. `--from-node-home` starts the signer's record at the last slot the node
signed (its consensus record, read from its database; the node must be stopped), so a
validator moved onto a signer never signs twice. Exit codes: 0, 1 a refusal (the message says
why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from functools import partial
from pathlib import Path

EXIT_REFUSED = 1


def add_signer_parsers(sub: argparse._SubParsersAction) -> None:
    init = sub.add_parser("init-signer", help="a remote signer's home for one validator key")
    init.add_argument("--home", required=True, help="the signer's home folder (new or empty)")
    init.add_argument("--chain-id", required=True)
    init.add_argument("--validator-key", required=True, help="the validator key file (copied)")
    init.add_argument(
        "--node",
        action="append",
        required=True,
        metavar="PUBLIC_KEY",
        help="the node key (hex) of the node it serves (repeat for a failover twin)",
    )
    init.add_argument(
        "--listen",
        default=None,
        help="unix:PATH (default unix:HOME/signer.sock) or HOST:PORT (TCP, Noise-encrypted)",
    )
    init.add_argument(
        "--from-node-home",
        help="a stopped validator's home: start the record at the last slot it signed",
    )
    run = sub.add_parser("signer", help="run a remote signer in the foreground")
    run.add_argument("--home", required=True, help="the signer's home folder")


def cmd_init_signer(args: argparse.Namespace) -> int:
    from ledger.crypto import KeyFileError, generate_key, public_half_of_key_file, write_key_file
    from ledger.store import StoreError
    from node.config import ConfigError
    from node.home import HomeError
    from node.signer import (
        RECORD_FILE,
        SIGNER_CONFIG_FILE,
        SIGNER_KEY_FILE,
        VALIDATOR_KEY_FILE,
        SignerConfig,
        SignRecord,
    )

    home = Path(args.home)
    try:
        if home.exists() and any(home.iterdir()):
            raise ValueError(f"{home} exists and is not empty")
        public = public_half_of_key_file(args.validator_key)
        slot = _last_signed(Path(args.from_node_home)) if args.from_node_home else None
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        listen = args.listen or f"unix:{home.resolve() / 'signer.sock'}"
        nodes = ", ".join(f'"{key}"' for key in args.node)
        (home / SIGNER_CONFIG_FILE).write_text(
            f'chain_id = "{args.chain_id}"\nlisten = "{listen}"\nnodes = [{nodes}]\n'
            f'key_file = "{VALIDATOR_KEY_FILE}"\n'
        )
        SignerConfig.load(home)  # refuse now what `khazana signer` would refuse later
        shutil.copyfile(args.validator_key, home / VALIDATOR_KEY_FILE)
        os.chmod(home / VALIDATOR_KEY_FILE, 0o600)
        transport = generate_key()
        write_key_file(home / SIGNER_KEY_FILE, transport)
        record = SignRecord(home / RECORD_FILE)
        try:
            if slot is not None:
                record.set_last(slot)
        finally:
            record.close()
    except (ValueError, OSError, KeyFileError, ConfigError, HomeError, StoreError) as exc:
        print(f"khazana init-signer: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"signer for validator {public['public_key']} in {home}, listening on {listen}")
    if slot is not None:
        print(f"  record starts at height {slot.height} round {slot.round} step {slot.step}")
    address = listen
    print("  add to the node's config.toml (and remove its validator key):\n")
    print("[signer]")
    print(f'address = "{address}"')
    print(f'public_key = "{transport.public_key.hex()}"')
    print(f'validator_key = "{public["public_key"]}"')
    return 0


def _last_signed(node_home: Path):
    """The highest slot a stopped validator signed, from its consensus record; with blocks
    but no record, everything up to the next height (it may have signed anything there)."""
    from consensus.types import DurableState
    from ledger.genesis import genesis_hash
    from ledger.store import Store
    from node.config import NodeConfig
    from node.home import acquire_home_lock, load_genesis
    from node.signer import STEP_PRECOMMIT, STEP_PREVOTE, STEP_PROPOSAL, Slot

    config = NodeConfig.load(node_home)
    genesis = load_genesis(config.genesis_path)
    with acquire_home_lock(config.home):  # refuses while the node runs
        if not config.db_path.exists():
            return None
        store = Store.open(
            config.db_path, chain_id=genesis["chain_id"], genesis_hash=genesis_hash(genesis)
        )
        try:
            raw = store.load_consensus_record()
            height = store.blocks.latest_height() or 0
        finally:
            store.close()
    durable = DurableState.from_bytes(raw) if raw else None
    slots = []
    if durable is not None:
        for signed, step in (
            (durable.last_proposal, STEP_PROPOSAL),
            (durable.last_prevote, STEP_PREVOTE),
            (durable.last_precommit, STEP_PRECOMMIT),
        ):
            if signed is not None:
                slots.append(Slot(signed.height, signed.round, step))
    if durable is None or durable.height < height:
        slots.append(Slot(height + 1, 2**31 - 1, STEP_PRECOMMIT))
    return max(slots) if slots else None


def cmd_signer(args: argparse.Namespace) -> int:
    import trio

    from ledger.crypto import KeyFileError
    from node.config import ConfigError
    from node.home import HomeError, acquire_home_lock
    from node.keyload import load_key
    from node.logs import configure_logging
    from node.signer import SignerConfig, run_signer

    try:
        config = SignerConfig.load(args.home)
        lock = acquire_home_lock(config.home)
    except (ConfigError, HomeError) as exc:
        print(f"khazana signer: refusing to start: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        configure_logging("signer", "info")
        # A key file, an encrypted one, or a PKCS#11 reference (the key stays in its module).
        return trio.run(partial(run_signer, config, key_loader=load_key))
    except (KeyFileError, ValueError) as exc:
        print(f"khazana signer: refusing to start: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"khazana signer: {exc.strerror or exc} ({config.listen})", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 0
    finally:
        lock.release()
        logging.shutdown()
