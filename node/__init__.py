"""The Khazana node: the trio shell around the ledger and the consensus core (I/O lives here only)."""
