"""The deterministic consensus fault simulator and its tests.

N replicas of the sans-IO consensus core (`consensus/`) run in one process over a seeded fake
network. Nothing here reads a clock or sleeps: simulated time advances through an event queue
ordered by (time, sequence), so one seed always yields the same run.

Modules, from the bottom up:

- `scheduler`  -- the event queue (simulated time) and the simulator's error type.
- `signing`    -- signature schemes injected into the core: a fast keyed-BLAKE2b fake and real
                  Ed25519 (pynacl).
- `values`     -- the deterministic proposal values and `validate_value`.
- `faults`     -- a fault plan: which faults, when, how strong; drawn from a seed.
- `network`    -- the fake network: latency, drop, duplicate, reorder, partitions.
- `byzantine`  -- misbehaving replicas: equivocating proposer, double voter, silent, Twins.
- `checker`    -- the invariants: SAFE, certificates, LIVE, evidence.
- `simulator`  -- replicas (driver of one core each), crash/restart, block sync, the run loop.

`nodesim/` is the whole-node simulation (real drivers, chains and stores; `--node`).

`scripts/simulate.py` is the command-line front end; `test_*.py` are the tests.
"""
