"""A byzantine validator, for tests only: it signs double proposals and double votes.

Never on by accident: it takes BOTH an environment variable naming the behaviours,

    KHAZANA_BYZANTINE=double-propose,double-vote

AND a file `BYZANTINE_ACK` in the node's home holding exactly the sentence `ACK_SENTENCE`
(the node's config schema is owned elsewhere and refuses unknown sections, so the written
acknowledgement lives next to config.toml rather than in it). With only one of the two the
node refuses to start (`from_env` raises), so a stray variable on a production host cannot
turn a validator byzantine silently, and neither can a stray file.

What it does (`Byzantine.send`, called by the driver instead of its plain send):

- double-vote: every prevote and precommit for a value is sent as signed, and a second vote of
  the same type, height and round for a different value id (a hash no block has) is signed
  too. Half of the peers (by key order) get the honest vote first, the other half the forged
  one first; everybody gets both, so every honest validator holds the evidence.
- double-propose: every proposal is followed by a second signed proposal for the same height
  and round with a different value (the block's bytes with one byte appended, so it is not a
  valid block: honest validators that see it first prevote nil, which is the split the attack
  aims at), sent the same split way.

The key is the validator's own; the signatures are real. With one such validator of four
(< 1/3 of the power) the chain must stay safe and live, and its double votes end up as
evidence in blocks (tests/test_chaos.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from consensus.types import (
    Proposal,
    Vote,
    proposal_signing_bytes,
    vote_signing_bytes,
)
from ledger.crypto import hash256

ENV = "KHAZANA_BYZANTINE"
ACK_FILE = "BYZANTINE_ACK"
ACK_SENTENCE = "I understand this breaks safety"
BEHAVIOURS = ("double-propose", "double-vote")


class ByzantineConfigError(ValueError):
    """The byzantine flag is half set, or names an unknown behaviour."""


@dataclass(frozen=True, slots=True)
class Byzantine:
    behaviours: frozenset[str]
    chain_id: str
    sign: Callable[[bytes], bytes]
    value_id: Callable[[bytes], bytes]  # the driver's value id (block hash) of a value

    def conflicting(self, message: Any) -> Any | None:
        """The forged twin of an outgoing proposal or vote, or None to send it alone."""
        if isinstance(message, Vote) and "double-vote" in self.behaviours:
            if message.value_id is None:
                return None
            other = hash256(b"byzantine:" + message.value_id)
            data = vote_signing_bytes(
                self.chain_id, message.vote_type, message.height, message.round, other
            )
            return replace(message, value_id=other, signature=self.sign(data))
        if isinstance(message, Proposal) and "double-propose" in self.behaviours:
            value = message.value + b"\x00"
            data = proposal_signing_bytes(
                self.chain_id,
                message.height,
                message.round,
                self.value_id(value),
                message.pol_round,
            )
            return replace(message, value=value, signature=self.sign(data))
        return None

    def send(self, message: Any, to: bytes | None, net: Any, encode: Callable[[Any], bytes]):
        """Send `message` and, for a broadcast proposal or vote, its forged twin, split."""
        twin = self.conflicting(message) if to is None else None
        if twin is None:
            return False  # not ours to handle: the driver sends it as usual
        honest, forged = encode(message), encode(twin)
        keys = sorted(peer.key for peer in net.peers())
        for index, key in enumerate(keys):
            first, second = (honest, forged) if index % 2 == 0 else (forged, honest)
            net.send_to(key, first)
            net.send_to(key, second)
        return True


def from_env(
    home: Path,
    chain_id: str,
    sign: Callable[[bytes], bytes] | None,
    environ: dict[str, str] | None = None,
) -> Byzantine | None:
    """The byzantine behaviour asked for, or None (the normal case: no variable, no file)."""
    text = (os.environ if environ is None else environ).get(ENV, "").strip()
    ack_path = Path(home) / ACK_FILE
    if not text:
        if ack_path.exists():
            raise ByzantineConfigError(f"{ack_path} exists but {ENV} is not set: remove the file")
        return None
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = names - set(BEHAVIOURS)
    if unknown:
        raise ByzantineConfigError(f"{ENV}: unknown behaviours {sorted(unknown)}")
    try:
        ack = ack_path.read_text().strip()
    except OSError:
        ack = ""
    if ack != ACK_SENTENCE:
        raise ByzantineConfigError(
            f"{ENV} is set but {ack_path} does not say {ACK_SENTENCE!r}: refusing to start"
        )
    if sign is None:
        raise ByzantineConfigError(f"{ENV} is set on a node that is not a validator")
    from node.driver import _value_id  # the driver's block-hash id; imported late (cycle)

    return Byzantine(names, chain_id, sign, _value_id)
