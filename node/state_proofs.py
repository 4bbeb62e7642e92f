"""State proofs served by the driver task (verifiable reads, `Driver.prove`): the request, the
answer, and the requests waiting for a moment with no block pending.

A proof must be against the last committed state, whose root is the last committed app_hash;
while a block is pending the state tree holds its changes, so requests wait (at most
`MAX_HELD_PROOFS` of them) and the driver serves them between inbox items once no block is
pending. When the driver stops, the waiting requests end without a result
(`ProofUnavailable` for their callers).
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ledger.chain import Chain
from ledger.commitment import Proof

MAX_HELD_PROOFS = 1024


class ProofUnavailable(Exception):
    """The driver cannot serve a state proof now (too many waiting, or stopping)."""


@dataclass(frozen=True, slots=True)
class StateProofs:
    """Proofs of some state keys against the committed state of `height` (root `app_hash`,
    the app_hash of that block's header), in the order the keys were asked."""

    height: int
    app_hash: bytes
    proofs: tuple[Proof, ...]


class ProofRequest:
    """A request for state proofs; served by the driver task when no block is pending (the
    state tree then holds exactly the committed state)."""

    __slots__ = ("done", "keys", "result")

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self.keys = keys
        self.result: StateProofs | None = None
        self.done = trio.Event()


class HeldProofs:
    """The proof requests waiting for the driver task."""

    def __init__(self) -> None:
        self.requests: list[ProofRequest] = []

    def full(self) -> bool:
        return len(self.requests) >= MAX_HELD_PROOFS

    def serve(self, chain: Chain) -> None:
        # Only called with no pending block: the tree's root is the committed app_hash.
        held, self.requests = self.requests, []
        tree = chain.tree
        for request in held:
            proofs = tuple(tree.prove(key) for key in request.keys)
            request.result = StateProofs(chain.height, tree.root, proofs)
            request.done.set()

    def release(self) -> None:
        """The driver stops: every waiting request ends without a result."""
        for request in self.requests:
            request.done.set()  # no result: ProofUnavailable for the caller
