"""A sans-IO Tendermint BFT core: messages and timeouts in, a `Ready` record out.

No I/O, clocks or randomness here; signing and verification are injected. See docs/CONSENSUS.md.
`consensus.types` holds the records and the signing-byte layouts, `consensus.core` the state
machine (`Core`, `Hooks`, `CoreConfig`).
"""
