"""The Khazana ledger: the sovereign-asset state machine, its encoding, its commitment and its store.

Pure state transition plus a SQLite store adapter; no sockets, no trio, no consensus imports.
See docs/ARCHITECTURE.md for the module map.
"""
