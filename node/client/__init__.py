"""The Khazana Python SDK: JSON-RPC clients, transaction builders, signing, proofs.

    from node.client import Client, AsyncClient, TxBuilder
    from ledger.crypto import read_key_file

    client = Client("http://127.0.0.1:26657")          # AsyncClient: same methods, awaited
    key = read_key_file("clients/ministry.key")
    op = TxBuilder.issue(instrument="USD-BOND-2031", to="kz1...", amount=1_000)
    committed = client.send(op, [key])                  # nonce read from the account

Modules: `core` (the sans-IO plans, JSON-RPC and HTTP bytes, typed results), `sync` and
`aio` (the two transports), `ops` (the table of operations and `TxBuilder`), `signing`
(signing several institutions' signatures, the signed-transaction file), `proofs` (checking
proofs against a trusted validator set), `errors`. The `khazana tx` / `khazana query` command
line is `node/client/cli.py`.
"""

from node.client.aio import AsyncClient
from node.client.core import Admission, Committed, Plans, Status
from node.client.errors import (
    ClientError,
    CommitTimeout,
    NodeUnreachable,
    ProtocolError,
    RpcError,
    SignedTxFileError,
    TxRejected,
)
from node.client.ops import OPS, BuildError, Operation, TxBuilder
from node.client.proofs import ProofError, TrustedValidators, verify_account, verify_tx
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
from node.client.sync import Client

__all__ = [
    "OPS",
    "Admission",
    "AsyncClient",
    "BuildError",
    "Client",
    "ClientError",
    "CommitTimeout",
    "Committed",
    "NodeUnreachable",
    "Operation",
    "Plans",
    "ProofError",
    "ProtocolError",
    "RpcError",
    "SignedTxFileError",
    "Status",
    "TrustedValidators",
    "TxBuilder",
    "TxRejected",
    "add_signatures",
    "load_tx",
    "read_tx_file",
    "sign",
    "summary",
    "tx_from_base64",
    "tx_to_base64",
    "verify_account",
    "verify_tx",
    "write_tx_file",
]
