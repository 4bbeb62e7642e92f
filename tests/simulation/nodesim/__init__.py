"""The whole node in a deterministic simulation (`scripts/simulate.py --node`).

Several real `node.driver.Driver`s, each with its real `ledger.chain.Chain`, SQLite `Store`
(a file per node) and `Mempool`, run in one `trio.run` on a `MockClock`, connected by a
simulated network, fed by simulated clients, crashed and restarted from their files, some of
them byzantine; the invariants of docs/RELIABILITY.md are checked at every commit. The
consensus-only simulator is the parent package; this one reuses its `Violation` record and
partition episodes.

Modules, from the bottom up:

- `plan`       -- a seed's fault plan: link latencies, drops, duplicates, delay spikes,
                  partitions, crashes (and where they strike), clock skews, byzantine roles.
- `net`        -- the simulated network: each node's `PeerNet` endpoint, the wire task.
- `clients`    -- keys, the genesis, and the clients that set up the cash token and trade.
- `invariants` -- the checker: SAFE, CERT, VALID, SIGN, LOSS, MONEY, EVIDENCE, ROBUST.
- `replica`    -- one node: chain with a commit hook, the store's simulated worker thread
                  (where crashes strike), the driver's life across crashes and restarts.
- `run`        -- one seed: build, run, watch for LIVE, the outcome and its replay command.
- `campaign`   -- many seeds (optionally in worker processes) and the JSON summary.
"""
