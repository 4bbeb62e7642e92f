// A CometBFT client library (cosmjs' @cosmjs/tendermint-rpc, Comet38Client) against a Khazana
// node, anonymously (cosmjs cannot sign Khazana's per-request credentials): every read call
// the library offers, each reported as
//   ok        the library returned a value (it could decode the node's answer)
//   accepted  the node answered the library's request with a result (not a JSON-RPC error)
//   error     what went wrong, shortened
// Run by tests/node/test_rpc_openrpc.py: node cometbft_client.js URL HEIGHT TX_HASH_HEX
// The last line of output is the JSON report.
"use strict";

const { Comet38Client, HttpClient } = require("@cosmjs/tendermint-rpc");

async function main() {
  const [url, heightText, txHashHex] = process.argv.slice(2);
  const height = Number(heightText);
  const http = new HttpClient(url);
  let last = null; // what the node answered to the library's latest request
  const recording = {
    execute: async (request) => {
      try {
        const response = await http.execute(request);
        last = { accepted: true, request };
        return response;
      } catch (error) {
        last = { accepted: false, request, error: String(error.message || error) };
        throw error;
      }
    },
    disconnect: () => http.disconnect(),
  };
  const client = Comet38Client.create(recording);
  const hash = Uint8Array.from(Buffer.from(txHashHex, "hex"));
  const calls = {
    health: () => client.health(),
    status: () => client.status(),
    block: () => client.block(height),
    commit: () => client.commit(height),
    validators: () => client.validators({ height: height }),
    genesis: () => client.genesis(),
    numUnconfirmedTxs: () => client.numUnconfirmedTxs(),
    tx: () => client.tx({ hash: hash }),
    blockchain: () => client.blockchain(1, height),
    blockResults: () => client.blockResults(height),
    abciInfo: () => client.abciInfo(),
    abciQuery: () => client.abciQuery({ path: "/store/acc/key", data: new Uint8Array([1]) }),
    txSearch: () => client.txSearch({ query: "tx.height=1" }),
    blockSearch: () => client.blockSearch({ query: "block.height=1" }),
  };
  const report = {};
  for (const [name, run] of Object.entries(calls)) {
    last = null;
    try {
      await run();
      report[name] = { ok: true, accepted: true };
    } catch (error) {
      const entry = { ok: false, accepted: last !== null && last.accepted };
      entry.error = String((last && last.error) || error.message || error).slice(0, 300);
      if (last !== null) entry.params = last.request.params;
      report[name] = entry;
    }
  }
  client.disconnect();
  console.log(JSON.stringify(report));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
