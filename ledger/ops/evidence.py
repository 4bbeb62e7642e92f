"""Misbehaviour evidence on chain: two conflicting signed votes by one validator.

A block carries `evidence: [item, ...]` (see `ledger/block.py`, header `evidence_hash`). Each
item is the canonical encoding of

    {"evidence": <the consensus wire bytes of an Evidence>, "public_key": bytes32}

where the consensus wire format (consensus/wire.py, docs/CONSENSUS.md) is

    Evidence = [4, vote_a, vote_b]
    Vote     = [2, vote_type (1 prevote | 2 precommit), height, round, value_id (bin32 | nil),
                validator (bin20, the address of the signing key), signature (bin64)]

The ledger never imports consensus and never checks vote signatures: the node verifies every
piece (`consensus.types.verify_evidence` against the validator set of that height) before it
proposes or prevotes for a block holding it, so a committed piece was checked by more than
two thirds of the voting power. What the ledger checks itself, deterministically: the shape,
that both votes are for one slot (validator, type, height, round) with different value ids,
that `public_key` is the key of that validator address, the height window, and that the piece
is not already on chain.

Each accepted piece becomes a `MisbehaviourRecord` in state under `b"e" + evidence_hash`
(`evidence_hash = hash256(item)`), so it can be proved and queried later and is never taken
twice, and a `misbehaviour` event of the block itself (tx index -1 in the store). There is no
slashing: the record is for the institutions to act on.

State note: `ledger/state.py` has no namespace for these records yet; until it has, they are
kept in `State.singletons` under their own state keys (`put_misbehaviour` below writes them
through the state's journal, so savepoints, `take_changes`, the commitment and `State.items`
all see them) and `Chain.open` loads them back (`is_misbehaviour_key` / `record_from_bytes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger import codec
from ledger.codes import Code, DecodeError, InvalidBlock, LedgerError
from ledger.crypto import PUBLIC_KEY_BYTES, address_from_public_key, hash256, is_strict_public_key
from ledger.state import State
from ledger.types import Event

MISBEHAVIOUR = b"e"
MAX_EVIDENCE_BYTES = 1024  # two votes of ~140 bytes and a key: generous
MAX_BLOCK_EVIDENCE = 64
MAX_EVIDENCE_AGE = 1000
"""Evidence about a height more than this far below the block is refused (the node keeps
the validator sets of that many past heights to verify it)."""

_WIRE_EVIDENCE = 4
_WIRE_VOTE = 2
_VOTE_TYPES = (1, 2)  # prevote, precommit


@dataclass(frozen=True, slots=True)
class MisbehaviourRecord:
    """One validator's double vote, as recorded on chain at `recorded_height`."""

    evidence_hash: bytes
    public_key: bytes
    validator: bytes  # address of public_key
    height: int
    round: int
    vote_type: int
    recorded_height: int

    def to_map(self) -> dict:
        return {
            "evidence_hash": self.evidence_hash,
            "height": self.height,
            "public_key": self.public_key,
            "recorded_height": self.recorded_height,
            "round": self.round,
            "validator": self.validator,
            "vote_type": self.vote_type,
        }

    @classmethod
    def from_map(cls, value: object) -> MisbehaviourRecord:
        keys = (
            "evidence_hash",
            "height",
            "public_key",
            "recorded_height",
            "round",
            "validator",
            "vote_type",
        )
        if type(value) is not dict or tuple(value) != keys:
            raise ValueError("a misbehaviour record is a map with exactly the keys " + str(keys))
        return cls(
            evidence_hash=value["evidence_hash"],
            public_key=value["public_key"],
            validator=value["validator"],
            height=value["height"],
            round=value["round"],
            vote_type=value["vote_type"],
            recorded_height=value["recorded_height"],
        )

    def event(self) -> Event:
        return Event(
            "misbehaviour",
            {
                "evidence_hash": self.evidence_hash,
                "height": self.height,
                "public_key": self.public_key,
                "round": self.round,
                "validator": self.validator,
                "vote_type": self.vote_type,
            },
        )


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """A decoded block evidence item (shape checked; signatures are the node's business)."""

    raw: bytes
    evidence: bytes  # the consensus wire bytes
    public_key: bytes
    validator: bytes
    vote_type: int
    height: int
    round: int

    @property
    def hash(self) -> bytes:
        return hash256(self.raw)


def misbehaviour_key(evidence_hash: bytes) -> bytes:
    return MISBEHAVIOUR + evidence_hash


def is_misbehaviour_key(key: bytes) -> bool:
    return key[:1] == MISBEHAVIOUR


def record_from_bytes(raw: bytes) -> MisbehaviourRecord:
    return MisbehaviourRecord.from_map(codec.decode(raw, max_size=4096, max_depth=2))


def encode_evidence_item(evidence: bytes, public_key: bytes) -> bytes:
    """The block item for consensus wire `evidence` signed by `public_key` (node side)."""
    return codec.encode({"evidence": evidence, "public_key": public_key})


def decode_evidence_item(raw: bytes) -> EvidenceItem:
    """Parse and shape-check one block evidence item; `DecodeError` (stable code) if bad."""
    obj = codec.decode(raw, max_size=MAX_EVIDENCE_BYTES, max_depth=1)
    if type(obj) is not dict or tuple(obj) != ("evidence", "public_key"):
        raise DecodeError(
            Code.BAD_FIELD, "an evidence item is a map with keys evidence, public_key"
        )
    public_key = obj["public_key"]
    if (
        type(public_key) is not bytes
        or len(public_key) != PUBLIC_KEY_BYTES
        or not is_strict_public_key(public_key)
    ):
        raise DecodeError(Code.BAD_FIELD, "evidence public_key is not a valid Ed25519 key")
    wire = obj["evidence"]
    if type(wire) is not bytes:
        raise DecodeError(Code.BAD_FIELD, "evidence must be the consensus wire bytes")
    votes = codec.decode(wire, max_size=MAX_EVIDENCE_BYTES, max_depth=2)
    if type(votes) is not list or len(votes) != 3 or votes[0] != _WIRE_EVIDENCE:
        raise DecodeError(Code.BAD_FIELD, "evidence is not a consensus Evidence [4, vote, vote]")
    a, b = (_vote(v) for v in votes[1:])
    if a[:4] != b[:4]:
        raise DecodeError(Code.BAD_FIELD, "the two votes are not for the same validator and slot")
    if a[4] == b[4]:
        raise DecodeError(Code.BAD_FIELD, "the two votes do not conflict (same value id)")
    validator, vote_type, height, round_ = a[:4]
    if address_from_public_key(public_key) != validator:
        raise DecodeError(Code.BAD_FIELD, "evidence public_key is not the voting validator's key")
    return EvidenceItem(raw, wire, public_key, validator, vote_type, height, round_)


def _vote(obj: object) -> tuple:
    if type(obj) is not list or len(obj) != 7 or obj[0] != _WIRE_VOTE:
        raise DecodeError(
            Code.BAD_FIELD, "an evidence vote is [2, type, height, round, id, val, sig]"
        )
    _, vote_type, height, round_, value_id, validator, signature = obj
    if vote_type not in _VOTE_TYPES or type(vote_type) is not int:
        raise DecodeError(Code.BAD_FIELD, "evidence vote type must be 1 (prevote) or 2 (precommit)")
    for value in (height, round_):
        if type(value) is not int or not 0 <= value < 2**63:
            raise DecodeError(
                Code.BAD_FIELD, "evidence vote height/round must be ints in [0, 2**63)"
            )
    if value_id is not None and (type(value_id) is not bytes or len(value_id) != 32):
        raise DecodeError(Code.BAD_FIELD, "evidence vote value id must be 32 bytes or nil")
    if type(validator) is not bytes or len(validator) != 20:
        raise DecodeError(Code.BAD_FIELD, "evidence vote validator must be a 20-byte address")
    if type(signature) is not bytes or len(signature) != 64:
        raise DecodeError(Code.BAD_FIELD, "evidence vote signature must be 64 bytes")
    return (validator, vote_type, height, round_, value_id)


def recorded(state: State, evidence_hash: bytes) -> MisbehaviourRecord | None:
    """The record of a piece already on chain, if any."""
    return state.singletons.get(misbehaviour_key(evidence_hash))


def put_misbehaviour(state: State, record: MisbehaviourRecord) -> None:
    key = misbehaviour_key(record.evidence_hash)
    state._write(state.singletons, key, record, key)  # journaled: see the module docstring


def select_evidence(state: State, items: Sequence[bytes], height: int) -> tuple[bytes, ...]:
    """The items a proposer of block `height` may include: well formed, in the height window,
    not already on chain, each once, at most MAX_BLOCK_EVIDENCE (the rest are left out)."""
    chosen: list[bytes] = []
    seen: set[bytes] = set()
    for raw in items:
        try:
            item = decode_evidence_item(raw)
        except LedgerError:
            continue
        digest = item.hash
        if (
            height - MAX_EVIDENCE_AGE <= item.height <= height
            and digest not in seen
            and recorded(state, digest) is None
        ):
            seen.add(digest)
            chosen.append(raw)
            if len(chosen) == MAX_BLOCK_EVIDENCE:
                break
    return tuple(chosen)


def apply_evidence(state: State, items: Sequence[bytes], height: int) -> list[Event]:
    """Record each evidence item of block `height`; `InvalidBlock` (state unchanged) if one is
    malformed, too old, about a later height, repeated in the block or already on chain."""
    if len(items) > MAX_BLOCK_EVIDENCE:
        raise InvalidBlock(f"block {height} holds more than {MAX_BLOCK_EVIDENCE} evidence items")
    decoded = []
    seen: set[bytes] = set()
    for index, raw in enumerate(items):
        try:
            item = decode_evidence_item(raw)
        except LedgerError as exc:
            raise InvalidBlock(f"block {height}: evidence {index} is malformed: {exc}") from None
        if not height - MAX_EVIDENCE_AGE <= item.height <= height:
            raise InvalidBlock(
                f"block {height}: evidence {index} is about height {item.height}, outside "
                f"[{height - MAX_EVIDENCE_AGE}, {height}]"
            )
        digest = item.hash
        if digest in seen or recorded(state, digest) is not None:
            raise InvalidBlock(f"block {height}: evidence {index} is already on chain")
        seen.add(digest)
        decoded.append(item)
    events = []
    for item in decoded:
        record = MisbehaviourRecord(
            item.hash,
            item.public_key,
            item.validator,
            item.height,
            item.round,
            item.vote_type,
            height,
        )
        put_misbehaviour(state, record)
        events.append(record.event())
    return events
