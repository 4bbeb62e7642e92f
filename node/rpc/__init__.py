"""The node's client interface: JSON-RPC 2.0 over HTTP and WebSocket (docs/RPC.md).

One module per job, imported by their own names (this package re-exports nothing, so no module
in it imports the package back):

    app.py           the ASGI application (routing, the GET form, HTTP limits, CORS) and
                     `serve_rpc`
    framing.py       JSON-RPC 2.0 itself: requests, batches, notifications, ids, params binding
    errors.py        the JSON-RPC error codes and `RpcError`
    limits.py        `RpcLimits`, the `[rpc]` section as the server reads it
    params.py        parsing of client-supplied params (heights, hashes, addresses, ...)
    render.py        committed ledger records as JSON (hex hashes, kz1 addresses, base64 txs)
    nodeview.py      `NodeView`: the typed protocol of what the RPC may ask of a running node
    methods.py       the method table, assembled from the groups below, and `rpc.discover`
    schemas.py       the JSON Schemas of every method's params and result
    openrpc.py       the OpenRPC document of the table (docs/openrpc.json)
    chain_methods.py node and block reads: health, status, net_info, genesis, validators,
                     block, commit, num_unconfirmed_txs
    tx_methods.py    transactions: broadcast_tx_sync / _commit, check_tx, tx
    state_methods.py committed state: account (with proofs), instrument(s), holders, events
    websocket.py     `/websocket` subscriptions
"""
