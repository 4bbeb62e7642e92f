"""Hostile-input fuzzers (issue 7 item 3): JSON-RPC, peer messages and frames, transactions.

Each module states the invariant it checks: a valid result or a clear error with a stable
code, the node alive, memory bounded. Budgets are modest (the whole package runs in well under
a minute); `scripts/fuzz_live.py` runs the same families against a live localnet for longer.
"""
