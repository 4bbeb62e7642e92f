"""Block sync: a node that is behind fetches committed blocks with their commit certificates.

What it owns:

* `SyncState`: which peers claim which heights, the height we want to reach, and the single
  request in flight (one outstanding request at a time, so at most one per peer; bounded
  size; a deadline after which another peer is asked). Pure bookkeeping: the driver task owns
  it and does the I/O, so there is no locking and tests need no network.
* `check_synced_block`: the checks on one received block before it may touch the chain --
  it decodes, is the next height, its certificate is for exactly this block and verifies
  with `consensus.types.verify_commit` against the validator set we know for that height.
  Re-execution (`Chain.execute_block`, which checks app_hash, results_hash, links and time)
  is the second half, done by the driver with the same code path as a decided block.
* `serve_sync_request`: the answer to a peer's request, read from committed blocks only.

Any failure of a peer's block or certificate is a `SyncError`: the driver penalises that peer
and asks another one. A peer that answers nothing is not penalised (it may be slow or gone);
its request just times out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consensus.errors import RemoteProtocolError
from consensus.types import Commit, ValidatorSet, verify_commit
from consensus.wire import WireError, decode_message
from ledger.block import Block, decode_block
from ledger.codes import LedgerError
from ledger.store import Store
from node.messages import MAX_MESSAGE_SIZE, SyncedBlock, SyncRequest, SyncResponse

Verify = Callable[[bytes, bytes, bytes], bool]


class SyncError(RemoteProtocolError):
    """A peer's synced block or certificate is invalid (the peer misbehaved)."""


@dataclass(frozen=True, slots=True)
class InFlight:
    peer: bytes
    from_height: int
    deadline: float  # trio clock seconds


class SyncState:
    """Who is ahead, how far we want to go, and the one request in flight."""

    def __init__(self, batch: int, timeout_s: float) -> None:
        self.batch = batch
        self.timeout_s = timeout_s
        self.target = 0  # highest height we know to exist (claimed by a peer or the core)
        self.peer_heights: dict[bytes, int] = {}
        self.in_flight: InFlight | None = None
        self._rotation = 0  # round-robin start among candidates, deterministic

    @property
    def syncing(self) -> bool:
        return self.in_flight is not None

    def note_peer_height(self, peer: bytes, height: int) -> None:
        # Bounded: one integer per peer key, and only authenticated (allowed) peers exist.
        self.peer_heights[peer] = height

    def want(self, height: int) -> None:
        self.target = max(self.target, height)

    def next_request(
        self, our_height: int, connected: tuple[bytes, ...], now: float
    ) -> tuple[bytes, SyncRequest] | None:
        """The request to send now, if we are behind and nothing is in flight."""
        if self.in_flight is not None:
            if now < self.in_flight.deadline:
                return None
            self.in_flight = None  # timed out: try another peer
            self._rotation += 1
        if self.target <= our_height or not connected:
            return None
        # Prefer peers that told us they have the next block; else anyone connected.
        ahead = tuple(p for p in connected if self.peer_heights.get(p, 0) > our_height)
        candidates = ahead or connected
        peer = candidates[self._rotation % len(candidates)]
        count = min(self.batch, self.target - our_height)
        self.in_flight = InFlight(peer, our_height + 1, now + self.timeout_s)
        return peer, SyncRequest(our_height + 1, max(1, count))

    def accept_response(self, peer: bytes) -> bool:
        """True if `peer` answers the request we sent it (then nothing is in flight)."""
        if self.in_flight is None or self.in_flight.peer != peer:
            return False
        self.in_flight = None
        return True

    def failed(self, peer: bytes) -> None:
        """`peer` sent bad data: forget its claims and ask someone else next time."""
        self.peer_heights.pop(peer, None)
        self._rotation += 1


def check_synced_block(
    synced: SyncedBlock,
    height: int,
    prev_hash: bytes,
    valset: ValidatorSet | None,
    chain_id: str,
    verify: Verify,
) -> tuple[Block, Commit]:
    """Decode one synced block expected at `height` on top of `prev_hash`, and verify its
    certificate. Raises `SyncError` naming what is wrong."""
    try:
        block = decode_block(synced.block)
    except LedgerError as exc:
        raise SyncError(f"synced block {height} does not decode: {exc}") from None
    try:
        commit = decode_message(synced.commit, max_size=MAX_MESSAGE_SIZE)
    except WireError as exc:
        raise SyncError(f"certificate of block {height} does not decode: {exc}") from None
    if not isinstance(commit, Commit):
        raise SyncError(f"certificate of block {height} is a {type(commit).__name__}")
    header = block.header
    if header.height != height or commit.height != height:
        raise SyncError(
            f"expected block {height}, got {header.height} (certificate {commit.height})"
        )
    if header.prev_hash != prev_hash:
        raise SyncError(f"block {height} does not extend our chain (prev_hash differs)")
    if commit.value_id != header.hash:
        raise SyncError(f"certificate of block {height} is for another block")
    if valset is None:
        raise SyncError(f"no validator set known for height {height}")
    if not verify_commit(valset, chain_id, commit, verify):
        raise SyncError(f"certificate of block {height} lacks > 2/3 valid precommits")
    return block, commit


def serve_sync_request(store: Store, request: SyncRequest, max_bytes: int) -> SyncResponse:
    """Consecutive committed blocks from `request.from_height`, stopping at our tip, at
    `request.max_blocks`, or before the response would exceed `max_bytes`. Runs in a worker
    thread (store reads)."""
    blocks: list[SyncedBlock] = []
    size = 64
    height = request.from_height
    while len(blocks) < request.max_blocks:
        stored = store.blocks.block(height)
        commit = store.blocks.commit(height) if stored is not None else None
        if stored is None or not commit:
            break
        size += len(stored.block) + len(commit) + 16
        if blocks and size > max_bytes:
            break
        if size > max_bytes:  # a single block too big for one message: cannot serve it
            break
        blocks.append(SyncedBlock(stored.block, commit))
        height += 1
    return SyncResponse(tuple(blocks))
