"""The signing hold: double-sign protection after a lost consensus record (like CometBFT's
`double_sign_check_height`; docs/RELIABILITY.md, defect 7).

The consensus record is the only memory of what we signed. A validator whose record is
missing while its store holds blocks (height S > 0), or whose record is older than the store
(height < S), cannot know what it signed before, so it starts as a follower that never signs
(`SigningHold.held`; the core gets no address). It learns the network's tip T from the peers'
Status messages (the highest of each peer's first report, heard in the first `2 * tick_ms`
after the first one), syncs and follows consensus, and once it has applied a block at height
>= max(S, T) + 1 -- decided by the others after this start -- it signs again (checked after
each commit and on each tick, so a network stalled for want of its signature still gets it).
Why that is safe: before the crash it could only sign at heights <= its store height + 1 and
<= the network tip at the crash + 1, both <= max(S, T) + 1. Both switches are logged at
WARNING. A brand-new validator (empty store, no record) signs at once; a lone validator with a
lost record never signs again (no peer can tell it the tip): restore the record or accept the
risk by hand.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from consensus.core import Core
from consensus.types import DurableState, Ready

# The driver's own log: these lines are the driver's decisions, filtered and read as such.
log = logging.getLogger("node.driver")


class SigningHold:
    """Whether we are held from signing, what ends the hold, and ending it."""

    def __init__(
        self,
        identity: Any | None,
        store_height: int,
        durable: DurableState | None,
        tick_ms: int,
        name: str,
    ) -> None:
        self._identity = identity
        self._name = name
        self._tick_ms = tick_ms
        # With blocks stored but no record of what we signed (or one older than the store),
        # follow without signing until the network has decided past anything we could have
        # signed.
        self.held = (
            identity is not None
            and store_height > 0
            and (durable is None or durable.height < store_height)
        )
        self.store_height = store_height  # S: we signed at most at S + 1 (intact store)
        self.peer_tip: int | None = None  # T: the highest of the peers' first reports
        self._tip_reporters: set[bytes] = set()  # the peers whose first report is counted
        self._learn_tip_until: float | None = None  # T is final once this trio time passes
        if self.held:
            log.warning(
                "%s: NOT SIGNING: %s while the store holds %d blocks; following the network "
                "until it decides a block past its tip (double-sign protection)",
                name,
                "no consensus record" if durable is None else f"record at {durable.height}",
                store_height,
            )

    def learn_peer_tip(self, peer: bytes, height: int) -> None:
        """T is the highest of the peers' first reports heard during `2 * tick_ms` from the
        first Status we get (every peer broadcasts one per tick, so each connected peer is
        heard). A peer's first report after our start is at least its tip at our start, which
        bounds what we could have signed; its later reports do not raise T, or blocks decided
        inside the window would push the target past the tip, and a network that needs our
        signature to decide it would stall for good (chaos: a second validator stopped)."""
        now = trio.current_time()
        if self._learn_tip_until is None:
            self._learn_tip_until = now + 2 * self._tick_ms / 1000
        if now > self._learn_tip_until or peer in self._tip_reporters:
            return
        self._tip_reporters.add(peer)
        if self.peer_tip is None or height > self.peer_tip:
            self.peer_tip = height

    @property
    def resumes_after(self) -> int | None:
        """The height whose commit ends the signing hold (max(S, T) + 1), once T is final."""
        if self.peer_tip is None or self._learn_tip_until is None:
            return None
        if trio.current_time() <= self._learn_tip_until:
            return None
        return max(self.store_height, self.peer_tip) + 1

    def _is_over(self, chain_height: int) -> bool:
        target = self.resumes_after
        return target is not None and chain_height >= target

    def resume_after_commit(self, core: Core, chain_height: int) -> None:
        """Called after each commit: once a block at height >= max(S, T) + 1 is applied, sign
        again from the next height (the core enters it with our address)."""
        if not self._is_over(chain_height):
            return
        assert self._identity is not None
        self._end(chain_height)
        core.start_signing_as(self._identity.address)

    def resume_mid_height(self, core: Core, chain_height: int) -> Ready | None:
        """Called on each tick while held: the blocks past the target may all have been
        committed (synced) while T was still being learned, and a network that then stalls
        for want of our signature commits nothing more to end the hold. The core's height is
        past the target here, so it has signed nothing there: it joins the round (core)."""
        if not self._is_over(chain_height) or core.height <= chain_height:
            return None
        assert self._identity is not None
        self._end(chain_height)
        return core.join_round_as(self._identity.address)

    def _end(self, chain_height: int) -> None:
        self.held = False
        log.warning(
            "%s: SIGNING AGAIN from height %d: the network decided block %d after this start "
            "(store was at %d, peers' tip %d)",
            self._name,
            chain_height + 1,
            chain_height,
            self.store_height,
            self.peer_tip,
        )
