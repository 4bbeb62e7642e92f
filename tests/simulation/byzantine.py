"""Byzantine behaviours: how a misbehaving validator rewrites what its core sends.

A byzantine replica runs an ordinary core (so it follows the protocol well enough to take
part), and its behaviour rewrites the core's outbound messages before they reach the network.
It can sign anything with its own key -- and only with its own key, so it only ever rewrites
its own proposals and votes (the core also relays other validators' votes).

- `Silent`:       sends nothing at all (a crashed-forever validator that still counts in the
                  validator set).
- `Equivocate`:   whenever it proposes, it also signs a second, different valid value for the
                  same height and round; half of its peers (chosen afresh per round) get one
                  proposal, the other half the other.
- `DoubleVote`:   for every prevote and precommit it also signs a conflicting vote (for a
                  valid value nobody proposed); each peer gets its "own" vote first and the
                  other one as well, so honest replicas can see and report the double vote.
- Twins are not a rewrite: two replicas run honest cores with one key, placed on both sides
                  of a partition by the fault plan (see `faults.fork_plan`), so `Twin` passes
                  messages through unchanged.

`split` decides which peers get which half; it draws from the replica's own random stream.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

from consensus.types import Proposal, Vote, proposal_signing_bytes, vote_signing_bytes

from .values import make_value, value_id

# (message, destination replica ids) pairs a behaviour asks the simulator to send.
Sends = list[tuple[object, tuple[int, ...]]]


class Behaviour:
    """Pass-through: what an honest replica (and a Twin) does."""

    name = "honest"

    def __init__(
        self,
        chain_id: str,
        address: bytes,
        sign: Callable[[bytes], bytes],
        seed: int,
    ) -> None:
        self._chain_id = chain_id
        self._address = address
        self._sign = sign
        self._rng = random.Random(f"byzantine/{seed}")

    def outgoing(self, message: object, peers: Sequence[int]) -> Sends:
        return [(message, tuple(peers))]

    def split(self, peers: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        order = sorted(peers)
        self._rng.shuffle(order)
        half = max(1, len(order) // 2)
        return tuple(sorted(order[:half])), tuple(sorted(order[half:]))


class Twin(Behaviour):
    name = "twins"


class Silent(Behaviour):
    name = "silent"

    def outgoing(self, message: object, peers: Sequence[int]) -> Sends:
        return []


class Equivocate(Behaviour):
    name = "equivocate"

    def outgoing(self, message: object, peers: Sequence[int]) -> Sends:
        # Only its own proposals: it cannot sign for anyone else.
        mine = isinstance(message, Proposal) and message.proposer == self._address
        if not mine or len(peers) < 2:
            return [(message, tuple(peers))]
        other_value = make_value(message.height, message.round, message.proposer, variant=1)
        if other_value == message.value:
            other_value = make_value(message.height, message.round, message.proposer, variant=0)
        data = proposal_signing_bytes(
            self._chain_id, message.height, message.round, value_id(other_value), message.pol_round
        )
        other = dataclasses.replace(message, value=other_value, signature=self._sign(data))
        first, second = self.split(peers)
        return [(message, first), (other, second)]


class DoubleVote(Behaviour):
    name = "double-vote"

    def outgoing(self, message: object, peers: Sequence[int]) -> Sends:
        # Only its own votes: the core also relays others' votes (the polka behind a
        # re-proposal), which this replica cannot re-sign.
        mine = isinstance(message, Vote) and message.validator == self._address
        if not mine or not peers:
            return [(message, tuple(peers))]
        other_id = value_id(make_value(message.height, message.round, message.validator, 1))
        if other_id == message.value_id:
            other_id = None
        data = vote_signing_bytes(
            self._chain_id, message.vote_type, message.height, message.round, other_id
        )
        other = dataclasses.replace(message, value_id=other_id, signature=self._sign(data))
        first, second = self.split(peers)
        # Every peer gets both votes (so the double vote is detectable), its half's one first.
        return [(message, first), (other, second), (other, first), (message, second)]


BEHAVIOUR_CLASSES: dict[str, type[Behaviour]] = {
    "honest": Behaviour,
    "twins": Twin,
    "silent": Silent,
    "equivocate": Equivocate,
    "double-vote": DoubleVote,
}
