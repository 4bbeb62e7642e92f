"""The values replicas propose, and the validity rule handed to the core.

A value is a deterministic byte string naming the height, round and proposer that made it,
plus a variant: variant 0 is what an honest proposer proposes; variant 1 is the second,
conflicting value an equivocating proposer or a double voter uses. Both variants are *valid*
(so `validate_value` accepts them): equivocation with an invalid value would be caught by
validity alone and would not exercise the quorum rules.

`value_id` is BLAKE2b-256 of the value: the identity votes and certificates refer to.
"""

from __future__ import annotations

import hashlib
import re

_VALUE = re.compile(rb"khz-sim\|h=(\d+)\|r=(\d+)\|p=([0-9a-f]{40})\|v=([01])")


def make_value(height: int, round_: int, proposer: bytes, variant: int = 0) -> bytes:
    return b"khz-sim|h=%d|r=%d|p=%s|v=%d" % (height, round_, proposer.hex().encode(), variant)


def value_id(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=32, person=b"khz-sim-value").digest()


def validate_value(height: int, value: bytes) -> bool:
    """Accept exactly the values `make_value` builds for this height (any round or proposer)."""
    match = _VALUE.fullmatch(value)
    return match is not None and int(match.group(1)) == height
