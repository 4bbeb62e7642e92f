"""`khazana tx` and `khazana query`: the SDK on the command line (wired in `node/cli.py`).

    khazana tx OP --key FILE [--key FILE ...] [--OP-ARG VALUE ...] [--rpc URL] [--wait]
                  [--sign-only --nonce N [--chain-id ID | --genesis FILE]] [--out FILE] [--json]
    khazana tx sign --key FILE --in FILE [--out FILE]      add a co-signature, offline
    khazana tx submit --in FILE|BASE64 [--rpc URL] [--wait]
    khazana query status|block|commit|tx|account|instrument|instruments|quote|holders|events|
                  validators|net-info|genesis|unconfirmed ... [--rpc URL] [--json]
    khazana query account|tx ... --prove --genesis FILE   verified against trusted validators
    khazana query subscribe QUERY [--count N] [--timeout S] [--json]   events as committed

One sub-command per ledger operation, generated from `node.client.ops.OPS` (flags are the
args with `-` for `_`). The first `--key` is the sender unless `--sender` says otherwise;
every key signs. `--sign-only` contacts nobody: it needs `--nonce`, and the chain id from
`--chain-id` or `--genesis` (default khazana-local); it prints the signed transaction as
base64, or with `--out FILE` writes the signed-transaction file other institutions co-sign
(`tx sign`) before anyone submits it (`tx submit`). `--out` without `--sign-only` asks the
node for the nonce and chain id, writes the file and submits nothing.

Output: aligned `key: value` lines, amounts shown with their instrument's decimals; `--json`
prints one JSON document for scripts (`query subscribe`: one line per event, readable, or
with `--json` one JSON object per line). Errors are one line on stderr, never a traceback;
a reader that stops early (`khazana query ... | head`) ends the command quietly.

The node is `--rpc URL`, else `$KHAZANA_RPC`, else the first node `khazana init` writes
(http://127.0.0.1:26651). Credentials (docs/RPC.md, "Authentication"): `khazana query` and
`khazana tx submit` sign their requests with `--key FILE`, else `$KHAZANA_KEY` (without
either they ask as an anonymous client); `khazana tx OP` with its first `--key`. An https://
node is verified against `--ca-file FILE`, else `$KHAZANA_CA_FILE`, else the system's CAs.

Exit codes: 0 ok; 1 refused (a rejected transaction: code, name and meaning; an RPC error;
not found; not committed in time; a proof that does not verify); 2 bad usage or input (argparse, a bad argument value, an
unreadable key or transaction file); 3 the node is unreachable.

Every `--key FILE` may be a key file (plain or encrypted) or a PKCS#11 key reference
(`khazana key hsm-generate`): the transaction or request is then signed inside the hardware
security module, and `--sign-only` / `--out` / `tx sign` sign offline with it the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from ledger.codes import Code
from ledger.crypto import KeyFileError
from ledger.genesis import DEFAULT_CHAIN_ID
from node.client.core import DEFAULT_RPC, NOT_FOUND, Admission, Committed
from node.client.errors import (
    ClientError,
    CommitTimeout,
    NodeUnreachable,
    QueryRefused,
    RpcError,
    SignedTxFileError,
    TxRejected,
)
from node.client.ops import AMOUNT, AMOUNT_HINT, OPS, BuildError, build, parse_cli_value
from node.client.proofs import (
    TrustedValidators,
    verify_account,
    verify_account_absence,
    verify_tx,
)
from node.client.signing import (
    add_signatures,
    load_tx,
    read_tx_file,
    sign,
    summary,
    tx_to_base64,
    write_tx_file,
)
from node.client.sync import Client
from node.keyload import SigningKey, load_key

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
RPC_ENV = "KHAZANA_RPC"
KEY_ENV = "KHAZANA_KEY"  # the key a query signs its requests with (docs/RPC.md)
CA_ENV = "KHAZANA_CA_FILE"

# What each refusal means, in words for the person who sent the transaction.
MEANINGS: dict[Code, str] = {
    Code.MALFORMED: "the bytes are not a transaction",
    Code.TOO_LARGE: "the transaction is larger than the ledger accepts",
    Code.TOO_DEEP: "the transaction nests too deeply",
    Code.TRAILING_BYTES: "bytes follow the transaction",
    Code.NON_CANONICAL: "the encoding is not the canonical one",
    Code.FORBIDDEN_TYPE: "the transaction holds a value type the ledger refuses (e.g. a float)",
    Code.BAD_FIELD: "an argument is missing, unknown or out of range",
    Code.UNKNOWN_OPERATION: "the ledger has no such operation",
    Code.BAD_ADDRESS: "an address is not a valid kz1 address",
    Code.BAD_SIGNATURE: "a signature does not verify (wrong key or altered transaction)",
    Code.WRONG_CHAIN: "the transaction was signed for another chain id",
    Code.NONCE_USED: "another transaction of this sender already used the nonce: "
    "build it again only if you mean a new one",
    Code.NONCE_GAP: "the nonce is ahead of the account's next nonce",
    Code.MISSING_APPROVALS: "the policy needs more institutions' signatures (keys of one "
    "institution count once): have each one add its own with "
    "`khazana tx sign --key FILE --in FILE`, then submit again",
    Code.UNAUTHORIZED: "the sender lacks the role this operation needs",
    Code.DUPLICATE_TX: "this very transaction was already submitted",
    Code.SENDER_NOT_SIGNED: "the sender's own key did not sign",
    Code.ACCOUNT_NOT_FOUND: "an account named in the transaction does not exist on the chain: "
    "a new key has no account until it is onboarded -- a regulator or a licensed VASP runs "
    "`khazana tx onboard_investor --investor kz1... --country CC --category retail "
    "--kyc-expiry YYYY-MM-DD --key ITS.key` first",
    Code.INSTITUTION_MISMATCH: "the account belongs to another institution than the grant names",
    Code.INSTRUMENT_PAUSED: "the instrument is paused",
    Code.CLOSED_PERIOD: "the instrument is in its closed period before a payment",
    Code.ACCOUNT_FROZEN: "an account involved is frozen by legal order",
    Code.INSUFFICIENT_UNFROZEN_BALANCE: "part of the balance is frozen; not enough is free",
    Code.INSUFFICIENT_BALANCE: "the balance is too small",
    Code.KYC_MISSING: "an investor has no KYC file",
    Code.KYC_EXPIRED: "an investor's KYC file has expired",
    Code.VASP_SUSPENDED: "the investor's VASP is suspended or not licensed",
    Code.VASP_NOT_LICENSED: "the VASP is not licensed",
    Code.COUNTRY_NOT_ALLOWED: "the instrument is not open to investors from that country",
    Code.CATEGORY_NOT_ALLOWED: "the instrument is not open to that investor category",
    Code.HOLDER_LIMIT: "the instrument has reached its number of holders",
    Code.BALANCE_LIMIT: "the recipient would exceed the per-holder limit",
    Code.INSTRUMENT_CAP: "issuance would pass the instrument's cap",
    Code.PROGRAMME_CAP: "issuance would pass the sovereign programme's cap",
    Code.RESERVE_STALE: "the reserve attestation is too old",
    Code.RESERVE_EXCEEDED: "issuance would pass the attested reserve",
    Code.INSTRUMENT_NOT_FOUND: "no instrument of that id",
    Code.INSTRUMENT_EXISTS: "an instrument of that id or ISIN already exists",
    Code.NOT_MATURED: "the instrument has not matured yet",
    Code.INSTRUMENT_MATURED: "the instrument has matured; its units no longer move",
    Code.INVALID_AMOUNT: "the amount must be a positive integer",
    Code.COUPON_NOT_DUE: "that coupon is not the next one due",
    Code.COUPON_UNPAID: "an earlier coupon is still unpaid",
    Code.WRONG_INSTRUMENT_KIND: "the operation does not apply to this kind of instrument",
    Code.RATE_FIXING_MISSING: "the rate fixing a floating coupon resets from is not published",
    Code.RATE_FIXING_EXISTS: "a fixing of that index for that date is already published",
    Code.NOT_CALLABLE: "the bond has no call terms, or is already called or redeemed",
    Code.CALL_NOTICE_TOO_SHORT: "the call date is closer than the bond's notice period",
    Code.AMORTISATION_NOT_DUE: "that amortisation is not the next one scheduled, is already "
    "paid, or is not yet due",
    Code.AMORTISATION_UNPAID: "an amortisation due on or before that payment is still unpaid",
    Code.AMORTISATION_CALLED: "the bond is called: parts from its call date on are redeemed by it",
    Code.MEMPOOL_FULL: "the node's mempool is full: try again later",
    Code.TX_TOO_LARGE: "the transaction is larger than the node admits",
    Code.ALREADY_IN_MEMPOOL: "the node already holds this transaction",
    Code.NONCE_TOO_FAR: "the nonce is too far ahead of the account's next nonce",
    Code.SENDER_QUOTA: "the sender already has its share of the node's mempool: try again later",
    Code.VASP_QUOTA: "the sender's VASP already has its share of the node's mempool",
    Code.TX_TOO_COMPLEX: "the transaction's decoded form would take more memory than the node admits",
    Code.TOO_MANY_PARKED: "too many transactions wait behind a nonce gap: send the missing nonce",
    Code.ALREADY_COMMITTED: "this very transaction is already committed and final: do not "
    "build it again (read it with `khazana query tx HASH`)",
}


class UsageError(Exception):
    """Bad input on the command line (exit 2)."""


# --------------------------------------------------------------------------- parsers


def _rpc_default() -> str:
    return os.environ.get(RPC_ENV, DEFAULT_RPC)


def _output_flags(parser: argparse.ArgumentParser, rpc: bool = True) -> None:
    if rpc:
        parser.add_argument(
            "--rpc", default=None, help=f"node JSON-RPC URL (default ${RPC_ENV} or {DEFAULT_RPC})"
        )
        parser.add_argument(
            "--ca-file", default=None, help=f"CA (PEM) of an https:// node (default ${CA_ENV})"
        )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_tx_parser(sub: argparse._SubParsersAction) -> None:
    tx = sub.add_parser("tx", help="build, sign and submit a transaction")
    ops = tx.add_subparsers(dest="tx_op", required=True, metavar="OP")
    for spec in OPS.values():
        parser = ops.add_parser(spec.name, help=spec.help, description=spec.help)
        for arg in spec.args:
            parser.add_argument(
                "--" + arg.name.replace("_", "-"),
                dest=arg.param,
                required=arg.required,
                metavar=arg.kind.upper(),
                help=arg.help
                + (f": {AMOUNT_HINT}" if arg.kind == AMOUNT else "")
                + ("" if arg.required else " (optional)"),
            )
        parser.add_argument(
            "--key", action="append", required=True, help="key file; repeat to co-sign"
        )
        parser.add_argument("--sender", help="sender address (default: the first key's)")
        parser.add_argument("--nonce", type=int, help="nonce (default: asked of the node)")
        parser.add_argument("--chain-id", help=f"chain id for --sign-only ({DEFAULT_CHAIN_ID})")
        parser.add_argument("--genesis", help="genesis file: chain id and approval policy")
        parser.add_argument("--wait", action="store_true", help="wait until it is in a block")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds for --wait")
        parser.add_argument(
            "--sign-only", action="store_true", help="print the signed tx; contact nobody"
        )
        parser.add_argument("--out", help="write the signed-transaction file for co-signers")
        _output_flags(parser)
    cosign = ops.add_parser("sign", help="add your signature to a signed-transaction file")
    cosign.add_argument("--key", action="append", required=True, help="key file; repeatable")
    cosign.add_argument("--in", dest="infile", required=True, help="signed-transaction file")
    cosign.add_argument("--out", help="file to write (default: replace --in)")
    cosign.add_argument("--genesis", help="genesis file: the approval policy to show")
    _output_flags(cosign, rpc=False)
    submit = ops.add_parser("submit", help="submit a signed transaction (file or base64)")
    submit.add_argument("--in", dest="infile", required=True, help="file or base64 text")
    submit.add_argument("--key", dest="auth_key", help=f"sign the request (default ${KEY_ENV})")
    submit.add_argument("--wait", action="store_true", help="wait until it is in a block")
    submit.add_argument("--timeout", type=float, default=30.0, help="seconds for --wait")
    _output_flags(submit)


_PROVE = (
    ("--prove", {"action": "store_true", "help": "ask for a proof and verify it (--genesis)"}),
    ("--genesis", {"help": "genesis file whose validators you trust (for --prove)"}),
)
QUERIES: dict[str, tuple[str, tuple[tuple[str, dict], ...]]] = {
    "status": ("the node's chain, height and sync state", ()),
    "block": ("a block (latest without HEIGHT)", (("height", {"type": int, "nargs": "?"}),)),
    "commit": ("a block's signed header", (("height", {"type": int, "nargs": "?"}),)),
    "tx": ("a committed transaction by hash", (("hash", {}), *_PROVE)),
    "account": ("an account: roles, KYC, freeze, nonce, balances", (("address", {}), *_PROVE)),
    "instrument": ("an instrument: definition, supply, cap, status", (("id", {}),)),
    "instruments": ("every instrument", ()),
    "quote": (
        "a bond's yield, clean and dirty price and accrued interest for a settlement date",
        (
            ("id", {}),
            ("settlement", {"metavar": "YYYY-MM-DD"}),
            ("--price", {"help": "clean price per 100 of face, e.g. 99.125"}),
            ("--yield", {"dest": "yield_", "help": "yield as a fraction, e.g. 0.0525"}),
        ),
    ),
    "holders": ("the holders of an instrument", (("id", {}),)),
    "events": (
        "the audit trail",
        (
            ("--account", {}),
            ("--instrument", {}),
            ("--from-height", {"type": int}),
            ("--to-height", {"type": int}),
            ("--page", {"type": int}),
            ("--per-page", {"type": int}),
        ),
    ),
    "validators": ("the validator set", (("height", {"type": int, "nargs": "?"}),)),
    "net-info": ("the node's peers", ()),
    "genesis": ("the genesis document", ()),
    "unconfirmed": ("the mempool's size", ()),
    "subscribe": (
        "print events as they are committed (WebSocket), e.g. \"tm.event='NewBlock'\"",
        (
            ("subscription", {"metavar": "QUERY", "help": "a query of docs/RPC.md"}),
            ("--count", {"type": int, "help": "stop after N events (default: never)"}),
            ("--timeout", {"type": float, "help": "give up after S seconds without an event"}),
        ),
    ),
}


def add_query_parser(sub: argparse._SubParsersAction) -> None:
    query = sub.add_parser("query", help="read chain state through JSON-RPC")
    reads = query.add_subparsers(dest="query", required=True, metavar="WHAT")
    for name, (help_text, arguments) in QUERIES.items():
        parser = reads.add_parser(name, help=help_text, description=help_text)
        for flag, options in arguments:
            parser.add_argument(flag, **options)
        parser.add_argument(
            "--key", dest="auth_key", help=f"key file to read with (default ${KEY_ENV})"
        )
        _output_flags(parser)


# --------------------------------------------------------------------------- output


def format_amount(units: int, decimals: int) -> str:
    """`units` of an instrument with `decimals` display decimals, exactly (no floats)."""
    sign = "-" if units < 0 else ""
    if decimals <= 0:
        return f"{sign}{abs(units):,}"
    whole, fraction = divmod(abs(units), 10**decimals)
    return f"{sign}{whole:,}.{fraction:0{decimals}d}"


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        if not value:
            return [(prefix, "{}")] if prefix else []
        rows = []
        for key, item in value.items():
            rows.extend(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list):
        if not value or all(not isinstance(v, (dict, list)) for v in value):
            return [(prefix, ", ".join(str(v) for v in value) or "-")]
        rows = []
        for index, item in enumerate(value):
            rows.extend(_flatten(item, f"{prefix}[{index}]"))
        return rows
    return [(prefix, "-" if value is None else str(value))]


def print_fields(value: Any, out=None) -> None:
    """Aligned `key: value` lines (nested keys dotted)."""
    out = out or sys.stdout
    rows = _flatten(value)
    width = max((len(key) for key, _ in rows), default=0)
    for key, text in rows:
        print(f"{key + ':':<{width + 1}} {text}", file=out)


def print_table(rows: list[dict], columns: list[str], out=None) -> None:
    out = out or sys.stdout
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _emit(args: argparse.Namespace, obj: Any, human: Callable[[], None] | None = None) -> None:
    if args.json:
        print(json.dumps(obj, indent=2))
    elif human is not None:
        human()
    else:
        print_fields(obj)


def _say(message: str) -> None:
    print(f"khazana: {message}", file=sys.stderr)


def _rejection(exc: TxRejected) -> str:
    where = "at admission" if exc.height is None else f"in block {exc.height}"
    try:
        meaning = MEANINGS.get(Code(exc.code), "")
    except ValueError:
        meaning = ""
    text = f"transaction rejected {where}: {exc.name} ({exc.code}): {exc.log}"
    return text + (f" -- {meaning}" if meaning else "")


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Map the SDK's exceptions to one line on stderr and the documented exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            code = command(args)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
            return code
        except BrokenPipeError:
            # The reader went away (`| head`): nothing more to say to anyone. Point stdout
            # at /dev/null so the interpreter's own flush at exit does not complain again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except NodeUnreachable as exc:
            _say(str(exc))
            return EXIT_UNREACHABLE
        except TxRejected as exc:
            if getattr(args, "json", False):
                print(json.dumps(_rejection_json(exc), indent=2))
            _say(_rejection(exc))
            return EXIT_REFUSED
        except (UsageError, BuildError, KeyFileError, SignedTxFileError, ValueError) as exc:
            _say(str(exc))
            return EXIT_USAGE
        except QueryRefused as exc:
            _say(str(exc))
            return EXIT_REFUSED
        except RpcError as exc:
            _say(f"the node refused the request: {exc.message} ({exc.code})" + _data(exc))
            return EXIT_REFUSED
        except (CommitTimeout, ClientError) as exc:
            _say(str(exc))
            return EXIT_REFUSED

    return run


def _data(exc: RpcError) -> str:
    return f": {exc.data}" if exc.data is not None else ""


def _rejection_json(exc: TxRejected) -> dict:
    return {
        "status": "rejected",
        "hash": exc.tx_hash,
        "height": exc.height,
        "code": exc.code,
        "name": exc.name,
        "log": exc.log,
    }


# --------------------------------------------------------------------------- tx


def _client(args: argparse.Namespace, key: SigningKey | None = None) -> Client:
    """The client of `--rpc`, signing with `key`, else `--key` / $KHAZANA_KEY if given."""
    if key is None:
        path = getattr(args, "auth_key", None) or os.environ.get(KEY_ENV)
        key = load_key(path) if path else None
    ca_file = getattr(args, "ca_file", None) or os.environ.get(CA_ENV) or None
    return Client(args.rpc or _rpc_default(), key=key, ca_file=ca_file)


def _load_genesis(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as src:
            genesis = json.load(src)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read genesis {path}: {exc}") from None
    if not isinstance(genesis, dict) or "chain_id" not in genesis:
        raise UsageError(f"{path} is not a genesis document")
    return genesis


def _print_summary(document: dict, out=None) -> None:
    out = out or sys.stdout
    shown = {key: value for key, value in document.items() if key not in ("type", "version")}
    print_fields(shown, out)


def _result_json(result: Committed | Admission) -> dict:
    if isinstance(result, Committed):
        return {
            "status": "committed",
            "hash": result.hash,
            "height": result.height,
            "code": result.code,
            "log": result.log,
            "events": list(result.events),
        }
    return {"status": "accepted", "hash": result.hash, "code": result.code, "log": result.log}


def _print_result(args: argparse.Namespace, result: Committed | Admission) -> None:
    obj = _result_json(result)
    if args.json:
        print(json.dumps(obj, indent=2))
        return
    if isinstance(result, Committed):
        print_fields(
            {
                "status": "committed",
                "hash": result.hash,
                "height": result.height,
                "events": ", ".join(e.get("type", "?") for e in result.events) or "-",
            }
        )
    else:
        print_fields({"status": "accepted into the mempool", "hash": result.hash})


@_guarded
def cmd_tx_op(args: argparse.Namespace) -> int:
    spec = OPS[args.tx_op]
    values = {}
    for arg in spec.args:
        text = getattr(args, arg.param)
        if text is not None:
            values[arg.param] = parse_cli_value(arg, text)
    operation = build(spec.name, **values)
    keys = [load_key(path) for path in args.key]
    genesis = _load_genesis(args.genesis)
    chain_id = args.chain_id or (genesis["chain_id"] if genesis else None)
    if args.sign_only:
        if args.nonce is None:
            raise UsageError("--sign-only contacts nobody: give the sender's --nonce")
        sender = keys[0].address if args.sender is None else args.sender
        body = operation.body(chain_id or DEFAULT_CHAIN_ID, sender, args.nonce)
        tx = sign(body, keys)
    else:
        client = _client(args, keys[0])
        tx = client.prepare(
            operation, keys, sender=args.sender, nonce=args.nonce, chain_id=chain_id
        )
    if args.out:
        document = write_tx_file(args.out, tx, genesis)
        _emit(args, document, lambda: (_print_summary(document), print(f"written: {args.out}")))
        return EXIT_OK
    if args.sign_only:
        if args.json:
            print(json.dumps({"tx": tx_to_base64(tx)} | summary(tx, genesis), indent=2))
        else:
            print(tx_to_base64(tx))
        return EXIT_OK
    client = _client(args, keys[0])
    result = client.broadcast_commit(tx, args.timeout) if args.wait else client.broadcast(tx)
    _print_result(args, result)
    return EXIT_OK


@_guarded
def cmd_tx_sign(args: argparse.Namespace) -> int:
    tx = read_tx_file(args.infile)
    keys = [load_key(path) for path in args.key]
    signed = add_signatures(tx, keys)
    out = args.out or args.infile
    document = write_tx_file(out, signed, _load_genesis(args.genesis))
    _emit(args, document, lambda: (_print_summary(document), print(f"written: {out}")))
    return EXIT_OK


@_guarded
def cmd_tx_submit(args: argparse.Namespace) -> int:
    tx = load_tx(args.infile)
    client = _client(args)
    result = client.broadcast_commit(tx, args.timeout) if args.wait else client.broadcast(tx)
    _print_result(args, result)
    return EXIT_OK


def cmd_tx(args: argparse.Namespace) -> int:
    if args.tx_op == "sign":
        return cmd_tx_sign(args)
    if args.tx_op == "submit":
        return cmd_tx_submit(args)
    return cmd_tx_op(args)


# --------------------------------------------------------------------------- query


def _decimals(client: Client, cache: dict[str, int], instrument_id: str) -> int:
    if instrument_id not in cache:
        cache[instrument_id] = client.instrument(instrument_id)["decimals"]
    return cache[instrument_id]


@_guarded
def cmd_query(args: argparse.Namespace) -> int:
    client = _client(args)
    what = args.query
    if what == "subscribe":
        return _subscribe(client, args)
    if what == "status":
        status = client.status()
        _emit(args, status.raw)
    elif what == "block":
        result = client.block(args.height)
        _emit(args, result, lambda: _print_block(result))
    elif what == "commit":
        _emit(args, client.commit(args.height))
    elif what == "tx":
        trusted = _trusted(args)
        result = client.tx(args.hash, prove=args.prove)
        if trusted is not None:
            included = verify_tx(result, trusted)
            result = {k: v for k, v in result.items() if k != "proof"} | {
                "verified": f"in block {included.height} at index {included.index}, "
                f"certified by {len(trusted.validators)} trusted validators"
            }
        _emit(args, result)
    elif what == "account":
        trusted = _trusted(args)
        try:
            account = client.account(args.address, prove=args.prove)
        except RpcError as exc:
            if trusted is None or exc.code != NOT_FOUND or not isinstance(exc.data, dict):
                raise
            absent = verify_account_absence(exc, trusted, args.address)
            raise RpcError(
                exc.code,
                exc.message,
                f"no account {args.address}: absence verified at height {absent.height}, "
                f"app_hash {absent.app_hash.hex()}",
            ) from None
        if trusted is not None:
            proven = verify_account(account, trusted, args.address)
            account = {k: v for k, v in account.items() if k != "proof"} | {
                "verified": f"at height {proven.height}, app_hash {proven.app_hash.hex()}"
            }
        _emit(args, account, lambda: _print_account(client, account))
    elif what == "instrument":
        instrument = client.instrument(args.id)
        _emit(args, instrument, lambda: _print_instrument(instrument))
    elif what == "quote":
        answer = client.quote(args.id, args.settlement, price=args.price, yield_=args.yield_)
        _emit(args, answer)
    elif what == "instruments":
        items = client.instruments()
        _emit(args, items, lambda: _print_instruments(items))
    elif what == "holders":
        holders = client.holders(args.id)
        decimals = _decimals(client, {}, args.id)
        rows = [
            {
                "address": h["address"],
                "balance": format_amount(h["balance"], decimals),
                "frozen": format_amount(h["frozen"], decimals),
            }
            for h in holders
        ]
        _emit(args, holders, lambda: print_table(rows, ["address", "balance", "frozen"]))
    elif what == "events":
        events = client.events(
            account=args.account,
            instrument=args.instrument,
            from_height=args.from_height,
            to_height=args.to_height,
            page=args.page,
            per_page=args.per_page,
        )
        _emit(args, events, lambda: _print_events(events))
    elif what == "validators":
        result = client.validators(args.height)
        columns = ["name", "address", "voting_power"]
        _emit(args, result, lambda: print_table(result["validators"], columns))
    elif what == "net-info":
        _emit(args, client.net_info())
    elif what == "genesis":
        _emit(args, client.genesis())
    elif what == "unconfirmed":
        _emit(args, client.num_unconfirmed_txs())
    return EXIT_OK


def _trusted(args: argparse.Namespace) -> TrustedValidators | None:
    """The validators a `--prove` query is checked against: a genesis file the user trusts,
    never the node being asked."""
    if not args.prove:
        return None
    genesis = _load_genesis(args.genesis)
    if genesis is None:
        raise UsageError("--prove needs --genesis FILE: the validators you trust")
    return TrustedValidators.from_genesis(genesis)


def _print_block(result: dict) -> None:
    block = result["block"]
    print_fields({"hash": result["block_id"]["hash"], **block["header"]})
    print(f"txs: {len(block['txs'])}")


def _print_account(client: Client, account: dict) -> None:
    shown = {key: value for key, value in account.items() if key != "balances"}
    print_fields(shown)
    cache: dict[str, int] = {}
    rows = [
        {
            "instrument": b["instrument"],
            "balance": format_amount(b["balance"], _decimals(client, cache, b["instrument"])),
            "frozen": format_amount(b["frozen"], cache[b["instrument"]]),
        }
        for b in account.get("balances", [])
    ]
    if rows:
        print()
        print_table(rows, ["instrument", "balance", "frozen"])


def _print_instrument(instrument: dict) -> None:
    decimals = instrument.get("decimals", 0)
    shown = dict(instrument)
    for key in ("supply", "cap", "max_balance"):
        if isinstance(shown.get(key), int):
            shown[key] = format_amount(shown[key], decimals)
    print_fields(shown)


def _print_instruments(items: list[dict]) -> None:
    rows = [
        {
            "id": i["id"],
            "kind": i["kind"],
            "supply": format_amount(i.get("supply", 0), i.get("decimals", 0)),
            "cap": format_amount(i["cap"], i.get("decimals", 0)),
            "status": i.get("status", ""),
            "name": i["name"],
        }
        for i in items
    ]
    print_table(rows, ["id", "kind", "supply", "cap", "status", "name"])


def _print_events(events: list[dict]) -> None:
    for event in events:
        attributes = " ".join(f"{k}={v}" for k, v in event["attributes"].items())
        print(f"{event['height']:>8} {event['tx_index']:>4}  {event['type']:<22} {attributes}")


def _subscribe(client: Client, args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout:g}")
    try:
        with client.subscribe(args.subscription, timeout=args.timeout) as events:
            for seen, event in enumerate(events, 1):
                if args.json:
                    print(json.dumps(event.to_json(), separators=(",", ":")))
                else:
                    print(_event_line(event))
                sys.stdout.flush()  # each event as it comes, also into a pipe
                if args.count is not None and seen >= args.count:
                    break
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK


def _event_line(event: Any) -> str:
    value = event.value
    if event.kind == "NewBlock":
        txs = len(value["block"].get("txs", []))
        return f"block {event.height} {event.hash} txs={txs}"
    outcome = value.get("tx_result", {})
    kinds = ",".join(e.get("type", "?") for e in outcome.get("events", [])) or "-"
    line = f"tx {event.hash} height={event.height} index={value.get('index')} "
    line += f"code={outcome.get('code')} events={kinds}"
    if outcome.get("code"):
        line += f" log={outcome.get('log', '')!r}"
    return line
