"""The consensus core's records: validators, messages, certificates, timeouts and `Ready`.

Everything here is a frozen, slotted dataclass of integers and bytes, plus the free functions
that anyone holding a validator set needs: the signing-byte layouts, `verify_commit` and
`verify_evidence`. The byte layouts are fixed and documented in docs/CONSENSUS.md; a client in
another language can rebuild them from that page.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import msgpack

from consensus.errors import LocalProtocolError

VALSET_DELAY = 2
"""Validator-set updates decided in block H take effect at height H + VALSET_DELAY."""

VOTE_DOMAIN_TAG = b"khazana/vote/v1\x00"
PROPOSAL_DOMAIN_TAG = b"khazana/proposal/v1\x00"
PROPOSAL_TYPE_BYTE = 3

MAX_HEIGHT = 2**64 - 1
MAX_ROUND = 2**31 - 1
MAX_ID_LEN = 255
ROTATION_SCALE = 4096
"""Proposer cycles are computed on powers scaled to about this total (see `proposer`)."""

Verify = Callable[[bytes, bytes, bytes], bool]


class ConsensusError(LocalProtocolError):
    """The driver misused the core (a bug on our side): crash loudly, never catch and go on."""


class VoteType(IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


class Step(IntEnum):
    """The paper's steps; RETRANSMIT only ever appears in a `Timeout` (the liveness timer)."""

    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    RETRANSMIT = 4


# --------------------------------------------------------------------------- validators


@dataclass(frozen=True, slots=True)
class Validator:
    address: bytes
    pub_key: bytes
    power: int


@dataclass(frozen=True, slots=True)
class ValidatorUpdate:
    """A change decided on chain: power 0 removes the validator, otherwise adds or replaces."""

    address: bytes
    pub_key: bytes
    power: int


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """A weighted validator set, sorted by address. Quorum maths is integer-only."""

    validators: tuple[Validator, ...]
    total_power: int = field(init=False, repr=False, compare=False)
    _index: dict[bytes, Validator] = field(init=False, repr=False, compare=False)
    _cycle: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vals = self.validators
        if not vals:
            raise ConsensusError("a validator set needs at least one validator")
        for a, b in zip(vals, vals[1:], strict=False):
            if a.address >= b.address:
                raise ConsensusError("validators must be sorted by address, without duplicates")
        for v in vals:
            if not isinstance(v.power, int) or v.power <= 0:
                raise ConsensusError(f"validator {v.address.hex()} has power {v.power!r}, not > 0")
        object.__setattr__(self, "total_power", sum(v.power for v in vals))
        object.__setattr__(self, "_index", {v.address: v for v in vals})
        object.__setattr__(self, "_cycle", _rotation_cycle(vals, self.total_power))
        encoded = msgpack.packb([[v.address, v.pub_key, v.power] for v in vals])
        object.__setattr__(self, "_hash", hashlib.blake2b(encoded, digest_size=32).digest())

    @classmethod
    def of(cls, validators: Iterable[Validator]) -> ValidatorSet:
        return cls(tuple(sorted(validators, key=lambda v: v.address)))

    @property
    def quorum_power(self) -> int:
        """The smallest power p with 3p > 2 * total: "more than two thirds"."""
        return self.total_power * 2 // 3 + 1

    @property
    def skip_power(self) -> int:
        """The smallest power p with 3p > total: "more than one third" (f + 1)."""
        return self.total_power // 3 + 1

    def get(self, address: bytes) -> Validator | None:
        return self._index.get(address)

    def proposer(self, height: int, round: int) -> bytes:
        cycle = self._cycle
        return cycle[(height + round) % len(cycle)]

    def hash(self) -> bytes:
        return self._hash

    def apply_updates(self, updates: Iterable[ValidatorUpdate]) -> ValidatorSet:
        """The set after `updates`, applied in order. Removing every validator is refused."""
        index = dict(self._index)
        for u in updates:
            if u.power < 0:
                raise ConsensusError(f"negative power {u.power} for {u.address.hex()}")
            if u.power == 0:
                index.pop(u.address, None)
            else:
                index[u.address] = Validator(u.address, u.pub_key, u.power)
        return ValidatorSet.of(index.values())


def _rotation_cycle(vals: tuple[Validator, ...], total: int) -> tuple[bytes, ...]:
    """One period of smooth weighted round-robin (nginx-style), computed once per set.

    Each step, every validator's priority grows by its power; the highest (ties: the lowest
    address, i.e. the earliest in the sorted tuple) is chosen and loses the total. After
    `total` steps every validator was chosen exactly `power` times and all priorities are back
    to zero, so the cycle repeats. Large totals are scaled down (each power at least 1) so the
    cycle stays at most a few thousand entries.
    """
    powers = [v.power for v in vals]
    if total > ROTATION_SCALE:
        powers = [max(1, p * ROTATION_SCALE // total) for p in powers]
        total = sum(powers)
    priority = [0] * len(vals)
    cycle = []
    for _ in range(total):
        best = 0
        for i, p in enumerate(powers):
            priority[i] += p
            if priority[i] > priority[best]:
                best = i
        priority[best] -= total
        cycle.append(vals[best].address)
    return tuple(cycle)


class ValidatorSchedule:
    """Driver-side helper: which validator set governs each height (a `validator_sets` provider).

    Updates decided in block H take effect at H + VALSET_DELAY, so after block H is applied the
    sets up to H + VALSET_DELAY are known. Stored as change points, so memory grows with the
    number of changes, not with the number of heights.
    """

    def __init__(self, initial_height: int, genesis: ValidatorSet) -> None:
        self._starts: list[int] = [initial_height]
        self._sets: list[ValidatorSet] = [genesis]
        self._known_until = initial_height + VALSET_DELAY - 1

    @classmethod
    def from_history(
        cls, points: Sequence[tuple[int, ValidatorSet]], known_until: int
    ) -> ValidatorSchedule:
        """A schedule that knows the sets of `points` ((first height, set), oldest first) up
        to `known_until`: a restarted driver rebuilds the past sets its evidence window needs.
        Heights below the first point are unknown (`for_height` gives None)."""
        if not points or any(a[0] >= b[0] for a, b in zip(points, points[1:], strict=False)):
            raise ConsensusError("a schedule needs change points in increasing height order")
        schedule = cls(points[0][0], points[0][1])
        schedule._starts = [start for start, _ in points]
        schedule._sets = [vset for _, vset in points]
        schedule._known_until = known_until
        return schedule

    def for_height(self, height: int) -> ValidatorSet | None:
        if height < self._starts[0] or height > self._known_until:
            return None
        return self._sets[bisect_right(self._starts, height) - 1]

    def record(self, height: int, updates: Iterable[ValidatorUpdate] = ()) -> None:
        """Block `height` was applied with these validator updates (record every block)."""
        effective = height + VALSET_DELAY
        if effective != self._known_until + 1:
            raise ConsensusError(f"record({height}) out of order: known until {self._known_until}")
        updates = tuple(updates)
        if updates:
            current = self._sets[-1]
            self._starts.append(effective)
            self._sets.append(current.apply_updates(updates))
        self._known_until = effective

    def prune(self, below: int) -> None:
        """Forget change points wholly below `below` (heights that will never be asked again)."""
        while len(self._starts) > 1 and self._starts[1] <= below:
            del self._starts[0]
            del self._sets[0]


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Proposal:
    height: int
    round: int
    value: bytes
    pol_round: int
    proposer: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Vote:
    vote_type: VoteType
    height: int
    round: int
    value_id: bytes | None
    validator: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """A commit certificate: precommits for `value_id` at (height, round) of > 2/3 power."""

    height: int
    round: int
    value_id: bytes
    signatures: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two conflicting signed votes by one validator at the same height, round and type."""

    vote_a: Vote
    vote_b: Vote


@dataclass(frozen=True, slots=True)
class Decision:
    height: int
    round: int
    value: bytes
    value_id: bytes
    commit: Commit


@dataclass(frozen=True, slots=True)
class Timeout:
    step: Step
    height: int
    round: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to send: `to=None` broadcasts to every peer, an address to that validator."""

    message: Proposal | Vote | Commit
    to: bytes | None = None


Message = Proposal | Vote | Commit


# --------------------------------------------------------------------------- signing bytes


def chain_prefix(tag: bytes, chain_id: str) -> bytes:
    raw = chain_id.encode("utf-8")
    if len(raw) > 255:
        raise ConsensusError(f"chain id is {len(raw)} bytes, at most 255")
    return tag + bytes([len(raw)]) + raw


def _id_bytes(value_id: bytes | None) -> bytes:
    if value_id is None:
        return b"\x00"
    return bytes([len(value_id)]) + value_id


def vote_signing_bytes(
    chain_id: str, vote_type: int, height: int, round: int, value_id: bytes | None
) -> bytes:
    return vote_bytes_with_prefix(
        chain_prefix(VOTE_DOMAIN_TAG, chain_id), vote_type, height, round, value_id
    )


def vote_bytes_with_prefix(
    prefix: bytes, vote_type: int, height: int, round: int, value_id: bytes | None
) -> bytes:
    return prefix + struct.pack(">BQI", vote_type, height, round) + _id_bytes(value_id)


def proposal_signing_bytes(
    chain_id: str, height: int, round: int, value_id: bytes, pol_round: int
) -> bytes:
    return proposal_bytes_with_prefix(
        chain_prefix(PROPOSAL_DOMAIN_TAG, chain_id), height, round, value_id, pol_round
    )


def proposal_bytes_with_prefix(
    prefix: bytes, height: int, round: int, value_id: bytes, pol_round: int
) -> bytes:
    return (
        prefix
        + struct.pack(">BQI", PROPOSAL_TYPE_BYTE, height, round)
        + _id_bytes(value_id)
        + struct.pack(">I", pol_round + 1)
    )


def well_formed_vote(vote: Vote) -> bool:
    """Field ranges a peer's vote must respect before anything else looks at it."""
    vid = vote.value_id
    return (
        type(vote.height) is int
        and type(vote.round) is int
        and 1 <= vote.height <= MAX_HEIGHT
        and 0 <= vote.round <= MAX_ROUND
        and isinstance(vote.vote_type, int)
        and not isinstance(vote.vote_type, bool)
        and vote.vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT)
        and (vid is None or (type(vid) is bytes and 1 <= len(vid) <= MAX_ID_LEN))
        and type(vote.validator) is bytes
        and type(vote.signature) is bytes
    )


def well_formed_proposal(p: Proposal) -> bool:
    return (
        type(p.height) is int
        and type(p.round) is int
        and type(p.pol_round) is int
        and 1 <= p.height <= MAX_HEIGHT
        and 0 <= p.round <= MAX_ROUND
        and -1 <= p.pol_round < p.round
        and type(p.value) is bytes
        and type(p.proposer) is bytes
        and type(p.signature) is bytes
    )


def well_formed_commit(c: Commit) -> bool:
    return (
        type(c.height) is int
        and type(c.round) is int
        and 1 <= c.height <= MAX_HEIGHT
        and 0 <= c.round <= MAX_ROUND
        and type(c.value_id) is bytes
        and 1 <= len(c.value_id) <= MAX_ID_LEN
        and isinstance(c.signatures, tuple)
    )


def verify_commit(valset: ValidatorSet, chain_id: str, commit: Commit, verify: Verify) -> bool:
    """True iff distinct members of `valset` with valid precommit signatures hold > 2/3 power.

    Signers not in the set, repeated signers and bad signatures are ignored (they add no
    power); the certificate still verifies if the rest reach the quorum.
    """
    if not well_formed_commit(commit):
        return False
    data = vote_signing_bytes(
        chain_id, VoteType.PRECOMMIT, commit.height, commit.round, commit.value_id
    )
    seen: set[bytes] = set()  # membership only, never iterated
    power = 0
    for entry in commit.signatures:
        if not (isinstance(entry, tuple) and len(entry) == 2):
            return False
        address, signature = entry
        if type(address) is not bytes or type(signature) is not bytes:
            return False
        validator = valset.get(address)
        if validator is None or address in seen:
            continue
        if verify(validator.pub_key, data, signature):
            seen.add(address)
            power += validator.power
            if power >= valset.quorum_power:
                return True
    return False


def verify_evidence(valset: ValidatorSet, chain_id: str, ev: Evidence, verify: Verify) -> bool:
    """True iff both votes are well formed, conflict, and are validly signed by one member."""
    a, b = ev.vote_a, ev.vote_b
    if not (well_formed_vote(a) and well_formed_vote(b)):
        return False
    same_slot = (a.validator, a.vote_type, a.height, a.round) == (
        b.validator,
        b.vote_type,
        b.height,
        b.round,
    )
    if not same_slot or a.value_id == b.value_id:
        return False
    validator = valset.get(a.validator)
    if validator is None:
        return False
    return all(
        verify(
            validator.pub_key,
            vote_signing_bytes(chain_id, v.vote_type, v.height, v.round, v.value_id),
            v.signature,
        )
        for v in (a, b)
    )


def make_evidence(first: Vote, second: Vote) -> Evidence:
    """Evidence in canonical order (nil first, then the smaller value id), so every node that
    sees the same pair produces the same record and the chain can deduplicate it."""
    key_a = first.value_id or b""
    key_b = second.value_id or b""
    if (first.value_id is not None, key_a) <= (second.value_id is not None, key_b):
        return Evidence(first, second)
    return Evidence(second, first)


# --------------------------------------------------------------------------- durable state


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """The last proposal this node signed, without the value (which may be large)."""

    height: int
    round: int
    pol_round: int
    value_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class DurableState:
    """What must be on disk before any message leaves: see "What is durable" in the docs.

    The last signed proposal, prevote and precommit are the double-sign guard: a core restored
    from this state re-sends exactly these messages (same signature) or signs only at a later
    (height, round); it never signs a different message for a (height, round) it signed at.
    """

    height: int
    round: int
    step: Step
    locked_round: int = -1
    locked_value: bytes | None = None
    valid_round: int = -1
    valid_value: bytes | None = None
    last_proposal: ProposalRecord | None = None
    last_prevote: Vote | None = None
    last_precommit: Vote | None = None
    valid_polka: tuple[tuple[bytes, bytes], ...] = ()
    """(validator, prevote signature) of the polka behind `valid_value` at `valid_round`:
    a restarted proposer must be able to show it again when it re-proposes (line 28)."""

    ENCODING_VERSION = 1

    def to_bytes(self) -> bytes:
        """msgpack array: [version, height, round, step, locked_round, locked_value,
        valid_round, valid_value, last_proposal, last_prevote, last_precommit, valid_polka];
        a proposal record is [h, r, pol_round, value_id, sig], a vote [type, h, r, value_id,
        validator, sig], the polka [[validator, sig], ...]; absent ones are nil."""
        p = self.last_proposal
        return msgpack.packb(
            [
                self.ENCODING_VERSION,
                self.height,
                self.round,
                int(self.step),
                self.locked_round,
                self.locked_value,
                self.valid_round,
                self.valid_value,
                None if p is None else [p.height, p.round, p.pol_round, p.value_id, p.signature],
                _vote_list(self.last_prevote),
                _vote_list(self.last_precommit),
                [list(entry) for entry in self.valid_polka],
            ],
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DurableState:
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
            version, h, r, step, lr, lv, vr, vv, p, pv, pc, polka = raw
            if version != cls.ENCODING_VERSION:
                raise ConsensusError(f"durable state version {version}, expected 1")
            return cls(
                height=h,
                round=r,
                step=Step(step),
                locked_round=lr,
                locked_value=lv,
                valid_round=vr,
                valid_value=vv,
                last_proposal=None if p is None else ProposalRecord(*p),
                last_prevote=_vote_from_list(pv),
                last_precommit=_vote_from_list(pc),
                valid_polka=tuple((bytes(a), bytes(sig)) for a, sig in polka),
            )
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ConsensusError(f"corrupt durable state: {exc}") from exc


def _vote_list(v: Vote | None) -> list | None:
    if v is None:
        return None
    return [int(v.vote_type), v.height, v.round, v.value_id, v.validator, v.signature]


def _vote_from_list(raw: list | None) -> Vote | None:
    if raw is None:
        return None
    t, h, r, vid, validator, sig = raw
    return Vote(VoteType(t), h, r, vid, validator, sig)


# --------------------------------------------------------------------------- output


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything one call produced. Driver order: persist, send, schedule, apply, next call."""

    persist: DurableState | None = None
    messages: tuple[Outbound, ...] = ()
    timeouts: tuple[Timeout, ...] = ()
    decisions: tuple[Decision, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    sync_needed: int | None = None
    need_value: tuple[int, int] | None = None

    @property
    def is_empty(self) -> bool:
        return (
            self.persist is None
            and not self.messages
            and not self.timeouts
            and not self.decisions
            and not self.evidence
            and self.sync_needed is None
            and self.need_value is None
        )
