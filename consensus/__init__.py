"""A sans-IO Tendermint BFT core: messages and timeouts in, a `Ready` record out.

No I/O, clocks or randomness here; signing and verification are injected. See docs/CONSENSUS.md.
"""
