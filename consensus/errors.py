"""The two roots of Khazana's exceptions that say whose fault it was (docs/ARCHITECTURE.md).

Following h11 (STYLE.md), an error either comes from outside or is ours:

* `RemoteProtocolError` -- a remote party misbehaved: a peer or a client sent bytes or a
  request that break the protocol (undecodable consensus or node messages, a bad handshake or
  frame, a synced block that does not verify, a malformed JSON-RPC request or parameter, a
  subscription query outside the language). The caller refuses that input (drops the
  message, closes the connection, answers an error) and goes on; it never crashes the node.
* `LocalProtocolError` -- our own misuse: code of ours broke a contract of code of ours
  (a call out of order, a record that cannot be written, a broken invariant). It is a bug;
  nothing catches it on purpose, and the node stops loudly.

The specific exceptions keep their own names, codes and other bases (`WireError` is still a
`ValueError`, `BrokenInvariant` still an `AssertionError`, `InvalidRecordError` still a
`StoreError`), so every existing `except` clause catches what it caught before.

Deliberately in neither: the ledger's refusals (`LedgerError` with its stable codes, and
`InvalidBlock`) are verdicts of a deterministic rule on bytes that may come from a client, a
peer, our own mempool or our own proposer: who is to blame is the caller's to say, not the
rule's. Environment failures (`StoreError` for a full disk, `ConnectionClosed`, timeouts,
configuration errors) are nobody's misbehaviour either.

This module holds no code and imports nothing, so every layer may import it: `ledger/`, which
imports nothing else of consensus, included (tests/test_layering.py).
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "RemoteProtocolError"]


class RemoteProtocolError(Exception):
    """A remote party (peer or client) sent something that breaks the protocol."""


class LocalProtocolError(Exception):
    """Our own code broke a contract of our own code: a bug."""
