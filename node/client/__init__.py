"""The Khazana Python SDK: JSON-RPC clients, transaction builders, signing, proofs.

    from node.client import Client, AsyncClient, TxBuilder
    from ledger.crypto import read_key_file

    client = Client("http://127.0.0.1:26651")          # AsyncClient: same methods, awaited
    key = read_key_file("clients/ministry.key")
    op = TxBuilder.issue(instrument="USD-BOND-2031", to="kz1...", amount=1_000)
    committed = client.send(op, [key])                  # nonce read from the account

    with client.subscribe("tm.event='NewBlock'", timeout=30) as blocks:   # WebSocket
        for event in blocks:                            # AsyncClient: `async with`/`async for`
            print(event.height, event.hash)

Modules: `core` (the sans-IO plans, JSON-RPC and HTTP bytes, typed results), `ws` (the
sans-IO WebSocket subscription session, on wsproto), `sync` and `aio` (the two transports),
`ops` (the table of operations), `builders` (`TxBuilder`), `signing` (signing several
institutions' signatures, the signed-transaction file), `proofs` (checking proofs against a
trusted validator set), `errors`. The `khazana tx` / `khazana query` command
line is `node/client/cli.py`.
"""

from node.client.aio import AsyncClient, AsyncSubscription, AsyncWebSocket
from node.client.builders import TxBuilder
from node.client.core import Admission, Committed, Plans, Status
from node.client.errors import (
    ClientError,
    CommitTimeout,
    NodeUnreachable,
    ProtocolError,
    QueryRefused,
    RpcError,
    SignedTxFileError,
    SubscriptionClosed,
    SubscriptionTimeout,
    TxRejected,
)
from node.client.ops import OPS, BuildError, Operation
from node.client.proofs import (
    ProofError,
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
    tx_from_base64,
    tx_to_base64,
    write_tx_file,
)
from node.client.sync import Client, Subscription, WebSocket
from node.client.ws import Event

__all__ = [
    "OPS",
    "Admission",
    "AsyncClient",
    "AsyncSubscription",
    "AsyncWebSocket",
    "BuildError",
    "Client",
    "ClientError",
    "CommitTimeout",
    "Committed",
    "Event",
    "NodeUnreachable",
    "Operation",
    "Plans",
    "ProofError",
    "ProtocolError",
    "QueryRefused",
    "RpcError",
    "SignedTxFileError",
    "Status",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionTimeout",
    "TrustedValidators",
    "TxBuilder",
    "TxRejected",
    "WebSocket",
    "add_signatures",
    "load_tx",
    "read_tx_file",
    "sign",
    "summary",
    "tx_from_base64",
    "tx_to_base64",
    "verify_account",
    "verify_account_absence",
    "verify_tx",
    "write_tx_file",
]
