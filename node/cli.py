"""The `khazana` command line (argparse): one sub-command per entry in CONTRACT.md.

    khazana keygen --out FILE [--json] [--encrypt [--kdf-cost C]]
    khazana key encrypt FILE | key decrypt FILE --out NEW | key change-passphrase FILE
    khazana key hsm-generate --module SO --token LABEL --label KEY --pin-file F --out REF
    khazana keyinfo FILE                          (public key and address of a key file)

Every command that takes a key file also takes a PKCS#11 key reference (node/keyload.py).
    khazana genesis --out FILE --chain-id ID --validator NAME=PUBKEY ... --institution NAME=ADDR ...
    khazana init-node --home DIR --name NAME --genesis FILE --node-key FILE [--peer ...] [...]
    khazana init --home DIR --validators N [--observers M] [--chain-id ID] [--base-port P]
                 [--host H] [--force]
    khazana start --home DIR/NAME
    khazana localnet --home DIR [--validators N] [--observers M] [--fresh] [--demo]
    khazana backup --home DIR/NAME --out FILE    (node stopped; SQLite backup API)
    khazana init-signer --home DIR ... | signer --home DIR   (a remote signer, node/signercli.py)
    khazana tx OP --key FILE [...] | tx sign ... | tx submit ...   (node/client/cli.py)
    khazana query WHAT [...]                                        (node/client/cli.py)

Exit codes: 0 success, 1 a refusal or failure (the message says why), 2 bad usage
(argparse); for `tx` and `query`, 3 means the node is unreachable (see node/client/cli.py);
`start`: 78 (EX_CONFIG) a validator's key file is not encrypted and its config does not say
`allow_plaintext_key = true` (encrypt it or use a remote signer), 74 (EX_IOERR) the node stopped because its store could not write, e.g. a full disk,
76 (EX_PROTOCOL) the chain activated a protocol version this release does not run
(node/app.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from ledger.genesis import DEFAULT_CHAIN_ID
from node.home import DEFAULT_BASE_PORT, DEFAULT_HOST
from node.keycli import add_key_parsers, cmd_key, keygen_encrypted
from node.signercli import add_signer_parsers, cmd_init_signer, cmd_signer

EXIT_REFUSED = 1
EXIT_PLAINTEXT_KEY = 78  # EX_CONFIG: a validator's key is in clear and its config forbids it


TIME_STEP_HELP = (
    "test networks only: every block's time is the previous one's + this many ms "
    "(genesis block_time_step_ms), so chain time outruns the clock"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="khazana", description="Khazana sovereign-asset node")
    sub = parser.add_subparsers(dest="command", required=True)

    keygen = sub.add_parser("keygen", help="create a new Ed25519 key file (0600)")
    keygen.add_argument("--out", required=True, help="path of the key file to write")
    keygen.add_argument(
        "--json", action="store_true", help='print {"address", "public_key"} instead'
    )

    add_key_parsers(sub, keygen)

    keyinfo = sub.add_parser(
        "keyinfo", help="the public key and address of a key file (never the private key)"
    )
    keyinfo.add_argument("file", help="a key file (node_key.json or a client key)")

    genesis = sub.add_parser(
        "genesis",
        help="assemble a genesis from validators' public keys and institutions' addresses",
        description="The coordinator's step of a network whose keys were made on separate "
        "machines (docs/OPERATIONS.md). Prints the file's SHA-256, which every operator "
        "compares before using it.",
    )
    genesis.add_argument("--out", required=True, help="genesis file to write (must not exist)")
    genesis.add_argument("--chain-id", required=True)
    genesis.add_argument(
        "--validator",
        action="append",
        required=True,
        metavar="NAME=PUBLIC_KEY",
        help="a validator: its name and the public key `khazana keyinfo` printed (repeat)",
    )
    genesis.add_argument(
        "--institution",
        action="append",
        required=True,
        metavar="NAME=ADDRESS",
        help="an institution and its client key's kz1 address (repeat); ministry, "
        "central-bank, regulator and auditor get their default roles",
    )
    genesis.add_argument(
        "--genesis-time-ms", type=int, default=0, help="chain time of the genesis (Unix ms)"
    )

    init_node = sub.add_parser(
        "init-node",
        help="one node's home from a genesis and a key made elsewhere",
        description="The operator's step of a network whose keys were made on separate "
        "machines (docs/OPERATIONS.md).",
    )
    init_node.add_argument("--home", required=True, help="the node's home folder (new or empty)")
    init_node.add_argument("--name", required=True, help="the node's name, e.g. central-bank")
    init_node.add_argument("--genesis", required=True, help="the network's genesis file")
    init_node.add_argument(
        "--node-key", required=True, help="this node's key file (copied into the home)"
    )
    init_node.add_argument("--role", choices=["validator", "observer"], default="validator")
    init_node.add_argument(
        "--listen", default="0.0.0.0:26650", help="p2p listen address (default 0.0.0.0:26650)"
    )
    init_node.add_argument(
        "--external", required=True, help="the p2p address the other nodes dial (host:port)"
    )
    init_node.add_argument(
        "--rpc", default="127.0.0.1:26651", help="JSON-RPC listen address (default 127.0.0.1:26651)"
    )
    init_node.add_argument(
        "--metrics", default=None, help="Prometheus listen address (default: none)"
    )
    init_node.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=PUBLIC_KEY@HOST:PORT",
        help="a node to dial and the key it must prove (repeat)",
    )
    init_node.add_argument(
        "--observer",
        action="append",
        default=[],
        metavar="PUBLIC_KEY",
        help="an observer's public key this validator accepts links from (repeat)",
    )
    init_node.add_argument(
        "--rpc-tls",
        action="store_true",
        help="serve the RPC over TLS (with --rpc-tls-cert/--rpc-tls-key, else a certificate "
        "of a new CA in HOME/tls/, made with the openssl command)",
    )
    init_node.add_argument("--rpc-tls-cert", help="PEM certificate (chain) of the RPC")
    init_node.add_argument("--rpc-tls-key", help="PEM private key of --rpc-tls-cert")
    init_node.add_argument(
        "--rpc-tls-client-ca", help="PEM CA: RPC clients must present a certificate it signed"
    )
    init_node.add_argument(
        "--signer",
        nargs=3,
        metavar=("ADDRESS", "SIGNER_PUBLIC_KEY", "VALIDATOR_PUBLIC_KEY"),
        help="a remote signer holds the validator key (what `khazana init-signer` prints); "
        "--node-key is then this node's own P2P key",
    )
    init_node.add_argument(
        "--allow-plaintext-key",
        action="store_true",
        help="test networks only: accept a validator key that is not encrypted",
    )

    init = sub.add_parser("init", help="genesis + one home folder per node + client keys")
    init.add_argument("--home", required=True, help="folder that receives one home per node")
    init.add_argument("--validators", type=int, required=True)
    init.add_argument("--observers", type=int, default=0)
    init.add_argument("--chain-id", default=DEFAULT_CHAIN_ID)
    init.add_argument(
        "--base-port", type=int, default=DEFAULT_BASE_PORT, help="first of 3 ports per node"
    )
    init.add_argument(
        "--host", default=DEFAULT_HOST, help="address the nodes listen on and dial each other at"
    )
    init.add_argument("--force", action="store_true", help="replace an existing network")
    init.add_argument("--time-step-ms", type=int, default=None, help=TIME_STEP_HELP)
    init.add_argument(
        "--rpc-tls",
        action="store_true",
        help="serve the RPC over TLS: a new CA (HOME/tls/ca.pem, for clients) signs each "
        "node's certificate (needs the openssl command)",
    )

    start = sub.add_parser("start", help="run one node in the foreground")
    start.add_argument("--home", required=True, help="the node's home folder")

    localnet = sub.add_parser("localnet", help="run a whole network, one process per node")
    localnet.add_argument("--home", required=True)
    localnet.add_argument("--validators", type=int, default=4)
    localnet.add_argument("--observers", type=int, default=0)
    localnet.add_argument("--fresh", action="store_true", help="wipe the network first")
    localnet.add_argument("--demo", action="store_true", help="run scripts/demo.py once healthy")
    localnet.add_argument(
        "--hsm-signer",
        metavar="NAME",
        help="a new network's validator NAME signs through a remote signer whose key is "
        "generated in a SoftHSM2 token (needs softhsm2; docs/OPERATIONS.md, Keys)",
    )
    localnet.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        help="do not start the supervision dashboard (khazana dashboard) on the first node",
    )
    localnet.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    localnet.add_argument("--host", default=DEFAULT_HOST)
    localnet.add_argument(
        "--time-step-ms",
        type=int,
        default=None,
        help=TIME_STEP_HELP + " (a new network made with --demo gets one day per block)",
    )
    localnet.add_argument(
        "--health-timeout", type=float, default=60.0, help="seconds to wait for every node"
    )
    localnet.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds between SIGTERM and SIGKILL on stop (a node waits up to 10 s for its commit)",
    )
    add_signer_parsers(sub)
    backup = sub.add_parser("backup", help="copy a stopped node's database (SQLite backup API)")
    backup.add_argument("--home", required=True, help="the node's home folder")
    backup.add_argument("--out", required=True, help="file to write (must not exist)")
    from node.client.cli import add_query_parser, add_tx_parser
    from node.client.report import add_report_parser
    from node.dashboard.cli import add_dashboard_parser

    add_tx_parser(sub)
    add_query_parser(sub)
    add_dashboard_parser(sub)
    add_report_parser(sub)
    return parser


def cmd_keygen(args: argparse.Namespace) -> int:
    from ledger.crypto import KeyFileError, generate_key, write_key_file

    try:
        if args.encrypt:
            key, address = keygen_encrypted(args)
        else:
            key = generate_key()
            address = write_key_file(args.out, key)
    except (KeyFileError, OSError) as exc:  # FileExistsError: a key file is never overwritten
        print(f"khazana keygen: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(_public_half(key) if args.json else address)
    return 0


def _public_half(key) -> str:
    """What may be handed to others about a key, as JSON: its address and public key."""
    from ledger.crypto import address_to_text

    return json.dumps({"address": address_to_text(key.address), "public_key": key.public_key.hex()})


def cmd_keyinfo(args: argparse.Namespace) -> int:
    """Print what may be handed to others about a key file: its public key and address."""
    from ledger.crypto import (
        KeyFileError,
        is_encrypted_key_file,
        public_half_of_key_file,
    )
    from node.keyload import load_key

    try:
        if is_encrypted_key_file(args.file):
            # The public half is in clear in an encrypted file: no passphrase needed to show it.
            print(json.dumps(public_half_of_key_file(args.file)))
            return 0
        key = load_key(args.file)  # an HSM reference: the token proves it holds the key
    except (KeyFileError, OSError) as exc:
        print(f"khazana keyinfo: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(_public_half(key))
    return 0


def cmd_genesis(args: argparse.Namespace) -> int:
    from ledger.genesis import GenesisError
    from node.ceremony import build_genesis, parse_institution, parse_validator, sha256_hex
    from node.home import HomeError

    try:
        document = build_genesis(
            chain_id=args.chain_id,
            validators=[parse_validator(text) for text in args.validator],
            institutions=[parse_institution(text) for text in args.institution],
            genesis_time_ms=args.genesis_time_ms,
        )
        with open(args.out, "xb") as file:  # never overwrite a genesis
            file.write(document)
    except (HomeError, GenesisError, OSError) as exc:
        print(f"khazana genesis: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"wrote {args.out} for chain {args.chain_id}")
    print(f"sha256 {sha256_hex(document)}  (every operator compares this before using the file)")
    return 0


def cmd_init_node(args: argparse.Namespace) -> int:
    from ledger.crypto import KeyFileError
    from ledger.genesis import GenesisError
    from node.ceremony import PeerSpec, RpcTls, init_node_home, parse_public_key, sha256_hex
    from node.config import ConfigError, HostPort
    from node.home import HomeError
    from node.rpc.tls import TlsError

    def address(option: str, text: str | None) -> HostPort | None:
        if text is None:
            return None
        try:
            return HostPort.parse(text)
        except ValueError as exc:
            raise HomeError(f"--{option}: {exc}") from None

    try:
        config = init_node_home(
            args.home,
            name=args.name,
            genesis_file=args.genesis,
            node_key_file=args.node_key,
            role=args.role,
            listen=address("listen", args.listen),
            external=address("external", args.external),
            rpc=address("rpc", args.rpc),
            metrics=address("metrics", args.metrics),
            peers=[PeerSpec.parse(text) for text in args.peer],
            observers=[parse_public_key(text, "--observer") for text in args.observer],
            rpc_tls=RpcTls(args.rpc_tls_cert, args.rpc_tls_key, args.rpc_tls_client_ca)
            if args.rpc_tls or args.rpc_tls_cert or args.rpc_tls_key or args.rpc_tls_client_ca
            else None,
            allow_plaintext_key=args.allow_plaintext_key,
            signer=None
            if args.signer is None
            else dict(zip(("address", "public_key", "validator_key"), args.signer, strict=True)),
        )
    except (HomeError, ConfigError, GenesisError, KeyFileError, OSError, TlsError) as exc:
        print(f"khazana init-node: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    genesis_sha = sha256_hex(config.genesis_path.read_bytes())
    print(f"{config.name} ({config.role}) in {config.home}, chain {config.chain_id}")
    print(f"  genesis sha256 {genesis_sha}")
    print(
        f"  p2p {config.p2p.listen} (dialled at {config.p2p.external_address}), rpc {config.rpc.url}"
    )
    print(f"  {len(config.p2p.peers)} peers; start it with: khazana start --home {config.home}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from ledger.genesis import GenesisError
    from node.home import HomeError, init_network
    from node.rpc.tls import TlsError

    try:
        network = init_network(
            args.home,
            validators=args.validators,
            observers=args.observers,
            chain_id=args.chain_id,
            base_port=args.base_port,
            host=args.host,
            force=args.force,
            time_step_ms=args.time_step_ms,
            rpc_tls=args.rpc_tls,
        )
    except (HomeError, GenesisError, OSError, TlsError) as exc:
        print(f"khazana init: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"network {network.chain_id} in {network.root}")
    for node in network.nodes:
        print(f"  {node.name:<14} {node.role:<10} p2p {node.p2p}  rpc {node.rpc_url}")
    for name, path in network.clients:
        print(f"  client key {name}: {path}")
    if network.ca_file is not None:
        print(f"  RPC certificates' CA (clients: --ca-file): {network.ca_file}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from ledger.crypto import KeyFileError
    from ledger.store import StoreError
    from node.config import ConfigError
    from node.home import HomeError, PlaintextKeyError, prepare_start
    from node.logs import configure_logging, log_event

    try:
        plan = prepare_start(args.home)
    except PlaintextKeyError as exc:
        print(f"khazana start: refusing to start: {exc}", file=sys.stderr)
        return EXIT_PLAINTEXT_KEY
    except (ConfigError, HomeError, KeyFileError, StoreError) as exc:
        print(f"khazana start: refusing to start: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        config = plan.config
        configure_logging(config.name, config.log_level, json_lines=config.log_format == "json")
        log = logging.getLogger("node.cli")
        log_event(
            log,
            "node.checked",
            role=config.role,
            chain_id=config.chain_id,
            p2p=str(config.p2p.listen),
            rpc=config.rpc.url,
            pid_file=str(config.pid_path),
        )
        # import_module returns sys.modules' entry, which tests may replace; `import
        # node.app as app` would take the package attribute left by an earlier import.
        app = importlib.import_module("node.app")
        return _run_node(app.run_node, config)
    except KeyboardInterrupt:
        return 0  # the runtime handles SIGINT itself; this is a Ctrl-C before it took over
    finally:
        plan.lock.release()


def _run_node(run_node, config) -> int:
    """`async def run_node(config: NodeConfig) -> int` (node/app.py) under trio."""
    import trio

    from node.byzantine import ByzantineConfigError

    try:
        result = trio.run(run_node, config)
    except ByzantineConfigError as exc:
        # The test-only byzantine flag half set: refuse in one line, never run byzantine.
        print(f"khazana start: refusing to start: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        # A port another program holds, an address this host does not have: the operator's
        # to fix, so a clear line rather than a traceback.
        print(f"khazana start: {exc.strerror or exc} ({_addresses(config)})", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def _addresses(config) -> str:
    parts = []
    for name in ("p2p", "rpc", "metrics"):
        section = getattr(config, name, None)
        listen = getattr(section, "listen", None)
        if listen is not None:
            parts.append(f"{name} {listen}")
    return "listening on " + ", ".join(parts) if parts else "check the listen addresses"


def cmd_localnet(args: argparse.Namespace) -> int:
    from node.localnet import run_localnet

    return run_localnet(
        args.home,
        validators=args.validators,
        observers=args.observers,
        fresh=args.fresh,
        demo=args.demo,
        dashboard=args.dashboard,
        hsm_signer=args.hsm_signer,
        base_port=args.base_port,
        host=args.host,
        time_step_ms=args.time_step_ms,
        health_timeout_s=args.health_timeout,
        grace_s=args.grace,
    )


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy HOME's database with `store.db.backup` (ledger/store_schema.py). The store's
    process lock refuses a running node's database: back up between stop and start
    (docs/OPERATIONS.md)."""
    from ledger.genesis import genesis_hash
    from ledger.store import Store, StoreError, StoreLockedError
    from node.config import ConfigError, NodeConfig
    from node.home import HomeError, load_genesis

    try:
        config = NodeConfig.load(args.home)
        if not config.db_path.exists():  # Store.open would create an empty one
            raise StoreError(f"{config.db_path} does not exist: nothing to back up")
        genesis = load_genesis(config.genesis_path)
        store = Store.open(
            config.db_path, chain_id=genesis["chain_id"], genesis_hash=genesis_hash(genesis)
        )
        try:
            store.db.backup(args.out)
            height = store.blocks.latest_height()
        finally:
            store.close()
    except StoreLockedError as exc:
        print(f"khazana backup: {exc}: stop the node first", file=sys.stderr)
        return EXIT_REFUSED
    except (ConfigError, HomeError, StoreError, OSError, ValueError) as exc:
        print(f"khazana backup: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"backed up {config.db_path} at height {height} to {args.out}")
    return 0


def cmd_tx(args: argparse.Namespace) -> int:
    from node.client.cli import cmd_tx as run

    return run(args)


def cmd_query(args: argparse.Namespace) -> int:
    from node.client.cli import cmd_query as run

    return run(args)


def cmd_report(args: argparse.Namespace) -> int:
    from node.client.report import cmd_report as run

    return run(args)


COMMANDS = {
    "keygen": cmd_keygen,
    "keyinfo": cmd_keyinfo,
    "key": cmd_key,
    "genesis": cmd_genesis,
    "init-node": cmd_init_node,
    "init": cmd_init,
    "start": cmd_start,
    "localnet": cmd_localnet,
    "backup": cmd_backup,
    "init-signer": cmd_init_signer,
    "signer": cmd_signer,
    "tx": cmd_tx,
    "query": cmd_query,
    "dashboard": lambda args: _dashboard(args),
    "report": cmd_report,
}


def _dashboard(args: argparse.Namespace) -> int:
    from node.dashboard.cli import cmd_dashboard  # trio and the SDK only when asked for

    return cmd_dashboard(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)
