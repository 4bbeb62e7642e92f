"""Coverage-guided fuzzing (atheris, libFuzzer) of the node's hostile-input decoders.

    python scripts/fuzz_atheris.py TARGET [libFuzzer options, e.g. -runs=100000 -max_len=4096]

TARGET is one of:

* `messages`: `node.messages.decode` -- a NodeMessage (canonical: re-encodes to the same
  bytes) or `MessageError`, nothing else;
* `tx`: `ledger.tx.decode_signed_tx` -- a SignedTx or a `LedgerError` with a stable code;
* `rpc`: the JSON-RPC app's `handle_body` over a node with no state -- an answer that
  `tests/fuzz/rpcsupport.check_answer` accepts (as JSON), never an exception.

Any other exception is a finding: libFuzzer stops and writes the crashing input. atheris is
not a project dependency (`pip install atheris`; it installed here as a manylinux wheel).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import atheris

with atheris.instrument_imports():
    import trio

    from ledger.codes import LedgerError
    from ledger.tx import decode_signed_tx
    from node import messages
    from node.rpc.app import RpcApp
    from tests.fuzz.rpcsupport import check_answer


def fuzz_messages(data: bytes) -> None:
    try:
        message = messages.decode(data)
    except messages.MessageError:
        return
    if messages.encode(message) != data:
        raise AssertionError("accepted a non-canonical node message")


def fuzz_tx(data: bytes) -> None:
    try:
        tx = decode_signed_tx(data)
    except LedgerError as exc:
        int(exc.code)  # a stable code is part of the contract
        return
    if tx.raw != data:
        raise AssertionError("decoded tx does not keep its exact bytes")


class _NoNode:
    """A NodeApi with nothing behind it: every read fails, which the app must contain."""

    name = role = chain_id = node_id = "fuzz"
    genesis: dict = {}
    validator_address = None
    events = None

    def __getattr__(self, name):
        raise RuntimeError(f"no node ({name})")


_APP = RpcApp(_NoNode())


def fuzz_rpc(data: bytes) -> None:
    answer = trio.run(_APP.jsonrpc.handle_body, data)
    if answer is None:
        return
    body = json.dumps(answer, ensure_ascii=False, allow_nan=False).encode("utf-8")
    # Internal errors are expected here (no node behind the app); anything else must be
    # a stable code.
    text = body.replace(b"-32603", b"-32000")
    check_answer(200, text)


TARGETS = {"messages": fuzz_messages, "tx": fuzz_tx, "rpc": fuzz_rpc}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
