"""The Tendermint state machine (Algorithm 1 of "The latest gossip on BFT consensus").

Theory of operation
-------------------
`Core` holds one node's view of one height at a time. The driver calls a method with one
input -- a message from a peer (`step`), a fired timeout (`on_timeout`), a block to propose
(`propose_value`), "blocks up to H are applied" (`on_synced`), or nothing (`advance`) -- and
gets back one `Ready`: the durable state to persist, messages to send, timeouts to schedule,
decisions, evidence, and requests (`sync_needed`, `need_value`). No I/O happens here.

Inside, every accepted message lands in a per-round tally (`_Round`); after each change the
paper's "upon" rules are evaluated for the affected round (`_run_rules`). Each rule is a small
method named after its line in the paper (`_line_22_...`), so the code reads next to the paper.

Safety does not depend on the driver being honest about anything but persistence: every
signature goes through `_sign_vote` / `_sign_proposal`, which consult the last signed
(height, round) of each kind. A restored core re-sends exactly what it signed before or signs
only at a later (height, round); it can never sign two different votes for one slot.

Liveness in a lossy network comes from three additions to the paper (see docs/CONSENSUS.md):
a retransmit timer that re-sends the node's own messages of the current round, decided nodes
handing their commit certificate to peers still voting at an old height, and `sync_needed`
when the node sees it is behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consensus.errors import LocalProtocolError
from consensus.types import (
    PROPOSAL_DOMAIN_TAG,
    VOTE_DOMAIN_TAG,
    Commit,
    ConsensusError,
    Decision,
    DurableState,
    Evidence,
    Message,
    Outbound,
    Proposal,
    ProposalRecord,
    Ready,
    Step,
    Timeout,
    ValidatorSet,
    Vote,
    VoteType,
    chain_prefix,
    make_evidence,
    proposal_bytes_with_prefix,
    verify_commit,
    vote_bytes_with_prefix,
    well_formed_commit,
    well_formed_proposal,
    well_formed_vote,
)

NIL = None


class SigningUnavailable(Exception):
    """Raised by `Hooks.sign` when it cannot sign now (a remote signer that is down, slow or
    refuses): the core then signs nothing for that message -- it records nothing and sends
    nothing, as a validator that missed its turn -- and carries on (`stats.sign_failed`).
    A later rule or round asks again; the signer's own record keeps it from signing twice."""


class BrokenInvariant(LocalProtocolError, AssertionError):
    """A rule of the algorithm that the core itself broke: a bug of ours, never a peer's doing
    (a peer's bad input is dropped where it arrives). The node stops loudly rather than go on
    wrong. Raised by checks that run in production, not only in tests."""


@dataclass(frozen=True, slots=True)
class Hooks:
    """What the core needs from outside: keys, hashing and the application's `valid(v)`.

    `verify` must return False, never raise, for any malformed key or signature bytes (a
    peer chooses them); `validate_value` likewise returns False for any bad block.
    """

    sign: Callable[[bytes], bytes]
    verify: Callable[[bytes, bytes, bytes], bool]
    value_id: Callable[[bytes], bytes]
    validate_value: Callable[[int, bytes], bool]


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Timeouts in milliseconds (integers) and the bounds that keep memory finite."""

    timeout_propose_ms: int = 3000
    timeout_propose_delta_ms: int = 500
    timeout_prevote_ms: int = 1000
    timeout_prevote_delta_ms: int = 500
    timeout_precommit_ms: int = 1000
    timeout_precommit_delta_ms: int = 500
    max_backoff_rounds: int = 10
    """Timeouts grow with the round only up to this round: no unbounded backoff."""
    retransmit_ms: int = 2000
    height_window: int = 4
    """Messages for heights h+1 .. h+height_window are buffered; higher ones are dropped."""
    round_window: int = 8
    """Messages for rounds r+1 .. r+round_window are kept; higher ones only count for skips."""
    max_buffered_per_validator: int = 32
    max_proposals_per_round: int = 2
    max_rounds_kept: int = 16

    def timeout_ms(self, step: Step, round: int) -> int:
        grow = min(round, self.max_backoff_rounds)
        if step is Step.PROPOSE:
            return self.timeout_propose_ms + self.timeout_propose_delta_ms * grow
        if step is Step.PREVOTE:
            return self.timeout_prevote_ms + self.timeout_prevote_delta_ms * grow
        if step is Step.PRECOMMIT:
            return self.timeout_precommit_ms + self.timeout_precommit_delta_ms * grow
        return self.retransmit_ms


@dataclass(slots=True)
class CoreStats:
    """Counters of what the core dropped or noticed (for metrics; never affect state)."""

    accepted: int = 0
    duplicate: int = 0
    malformed: int = 0
    bad_signature: int = 0
    unknown_validator: int = 0
    wrong_proposer: int = 0
    old_height: int = 0
    far_future: int = 0
    buffered: int = 0
    buffer_full: int = 0
    stale_timeouts: int = 0
    evidence: int = 0
    refused_to_sign: int = 0
    sign_failed: int = 0


class _Round:
    """Everything received for one round of the current height."""

    __slots__ = (
        "prevotes",
        "precommits",
        "prevote_power",
        "precommit_power",
        "prevote_total",
        "precommit_total",
        "proposals",
        "proposal_sigs",
        "prevote_timeout_scheduled",
        "precommit_timeout_scheduled",
        "line_36_done",
        "extra_prevotes",
    )

    def __init__(self) -> None:
        self.prevotes: dict[bytes, Vote] = {}
        self.precommits: dict[bytes, Vote] = {}
        self.prevote_power: dict[bytes | None, int] = {}
        self.precommit_power: dict[bytes | None, int] = {}
        self.prevote_total = 0
        self.precommit_total = 0
        # value id -> proposal, in arrival order; several only if the proposer equivocates.
        self.proposals: dict[bytes, Proposal] = {}
        self.proposal_sigs: set[bytes] = set()  # membership only (dedup), never iterated
        self.prevote_timeout_scheduled = False
        self.precommit_timeout_scheduled = False
        self.line_36_done = False
        # (validator, value id) -> a validly signed prevote for a value we hold that is NOT
        # the validator's first prevote of the round (an equivocator's other vote). Counted
        # only for line 28's proof of lock; see `_note_extra_prevote`.
        self.extra_prevotes: dict[tuple[bytes, bytes], Vote] = {}


class Core:
    """One node's Tendermint state machine. See the module docstring and docs/CONSENSUS.md."""

    def __init__(
        self,
        chain_id: str,
        own_address: bytes | None,
        validator_sets: Callable[[int], ValidatorSet | None],
        hooks: Hooks,
        config: CoreConfig | None = None,
        durable: DurableState | None = None,
        start_height: int = 1,
        last_commit: Commit | None = None,
    ) -> None:
        if start_height < 1:
            raise ConsensusError(f"start_height must be >= 1, got {start_height}")
        self.chain_id = chain_id
        self.own_address = own_address
        self._valsets = validator_sets
        self.hooks = hooks
        self.config = config or CoreConfig()
        self.stats = CoreStats()
        self._vote_prefix = chain_prefix(VOTE_DOMAIN_TAG, chain_id)
        self._proposal_prefix = chain_prefix(PROPOSAL_DOMAIN_TAG, chain_id)

        # The double-sign guard survives everything, whatever height we restart at.
        self._last_proposal = durable.last_proposal if durable else None
        self._last_prevote = durable.last_prevote if durable else None
        self._last_precommit = durable.last_precommit if durable else None

        self._last_commit = last_commit
        self._future: dict[bytes, dict[tuple, tuple[Message, bytes]]] = {}
        self._max_height_seen: dict[bytes, int] = {}
        self._sync_requested = 0
        self._commit_hint = 0  # highest height a valid certificate was seen for
        self._epoch = 0
        self._started = False
        self._resume = durable if durable is not None and durable.height == start_height else None
        self._enter_height(start_height)
        if self._resume is not None:
            d = self._resume
            self.round, self.current_step = d.round, d.step
            self.locked_round, self.locked_value = d.locked_round, d.locked_value
            self.valid_round, self.valid_value = d.valid_round, d.valid_value
            self._valid_polka = d.valid_polka
            for value in (d.locked_value, d.valid_value):
                if value is not None:
                    self._values[self.hooks.value_id(value)] = value
            self._restore_polka()
        self._reset_output()

    # ------------------------------------------------------------------ public API

    @property
    def is_validator(self) -> bool:
        return self.own_address is not None and self.valset.get(self.own_address) is not None

    def start_signing_as(self, address: bytes) -> None:
        """Sign as `address` from now on: a node that held its signing back (it lost the record
        of what it signed) resumes once the network has decided past anything it could have
        signed. Called by the driver between heights, after a commit, so the core enters the
        next height as a validator; nothing already signed at this height is at stake."""
        self.own_address = address

    def join_round_as(self, address: bytes) -> Ready:
        """Sign as `address` from the middle of a height at which this core has signed nothing
        (the caller's guarantee: the same resumption as `start_signing_as`, on a timer). The
        rules that would have had it vote in this round fired while it was not signing, and
        the others may be waiting for its vote to reach a quorum of any kind (no quorum, no
        timeout, no next round): so it prevotes nil if the round is past its propose step, and
        precommits nil if past its prevote step. Nil votes are always safe (lines 44 and 61
        cast them); then the rules run as for any vote."""
        self._begin()
        self.own_address = address
        if self.is_validator and not self._decided:
            if self.current_step is not Step.PROPOSE:
                self._sign_vote(VoteType.PREVOTE, None)
            if self.current_step is Step.PRECOMMIT:
                self._sign_vote(VoteType.PRECOMMIT, None)
            self._run_rules(self.round)
        return self._finish()

    def durable_state(self) -> DurableState:
        return DurableState(
            height=self.height,
            round=self.round,
            step=self.current_step,
            locked_round=self.locked_round,
            locked_value=self.locked_value,
            valid_round=self.valid_round,
            valid_value=self.valid_value,
            valid_polka=self._valid_polka,
            last_proposal=self._last_proposal,
            last_prevote=self._last_prevote,
            last_precommit=self._last_precommit,
        )

    def start(self) -> Ready:
        """First call after construction: enter round 0, or resume a restored round."""
        if self._started:
            raise ConsensusError("start() called twice")
        self._started = True
        if self._resume is None:
            self._start_round(0)
        else:
            self._resume_round()
        self._replay_buffered()
        return self._finish()

    def step(self, message: Message) -> Ready:
        """A message from a peer. Anything invalid is dropped and counted, never raised."""
        self._begin()
        if isinstance(message, Vote):
            self._on_vote(message, None)
        elif isinstance(message, Proposal):
            self._on_proposal(message, None)
        elif isinstance(message, Commit):
            self._on_commit(message)
        else:
            raise ConsensusError(f"step() takes a Proposal, Vote or Commit, not {message!r}")
        return self._finish()

    def on_timeout(self, timeout: Timeout) -> Ready:
        self._begin()
        if timeout.height != self.height or timeout.round != self.round or self._decided:
            self.stats.stale_timeouts += 1
        elif timeout.step is Step.PROPOSE:
            self._line_57_on_timeout_propose()
        elif timeout.step is Step.PREVOTE:
            self._line_61_on_timeout_prevote()
        elif timeout.step is Step.PRECOMMIT:
            self._line_65_on_timeout_precommit()
        else:
            self._on_retransmit_timer()
        return self._finish()

    def propose_value(self, height: int, round: int, value: bytes) -> Ready:
        """The driver's answer to `need_value`; ignored if the core has moved on."""
        self._begin()
        if not isinstance(value, bytes):
            raise ConsensusError("a proposed value must be bytes")
        if (height, round) == (self.height, self.round) and self._is_proposer(round):
            self._propose(round, value, -1)
        return self._finish()

    def advance(self) -> Ready:
        """After the driver applied the decisions of the previous `Ready`: start the next height."""
        self._begin()
        return self._finish()

    def on_synced(self, height: int, commit: Commit | None = None) -> Ready:
        """Blocks up to `height` are applied (by block sync): resume consensus at height + 1."""
        self._begin()
        if height >= self.height:
            if commit is not None:
                self._last_commit = commit
            self._enter_height(height + 1)
            self._start_round(0)
            self._replay_buffered()
        return self._finish()

    # ------------------------------------------------------------------ call bracket

    def _reset_output(self) -> None:
        self._out_messages: list[Outbound] = []
        self._out_timeouts: list[Timeout] = []
        self._out_decisions: list[Decision] = []
        self._out_evidence: list[Evidence] = []
        self._out_sync: int | None = None
        self._out_need_value: tuple[int, int] | None = None
        self._dirty = False

    def _begin(self) -> None:
        if not self._started:
            raise ConsensusError("call start() first")
        if self._decided:
            # The previous Ready carried a decision; the contract says it is applied now.
            self._enter_height(self.height + 1)
            self._start_round(0)
            self._replay_buffered()

    def _finish(self) -> Ready:
        ready = Ready(
            persist=self.durable_state() if self._dirty else None,
            messages=tuple(self._out_messages),
            timeouts=tuple(self._out_timeouts),
            decisions=tuple(self._out_decisions),
            evidence=tuple(self._out_evidence),
            sync_needed=self._out_sync,
            need_value=self._out_need_value,
        )
        self._reset_output()
        return ready

    # ------------------------------------------------------------------ heights and rounds

    def _enter_height(self, height: int) -> None:
        valset = self._valsets(height)
        if valset is None:
            raise ConsensusError(f"the validator set provider does not know height {height}")
        self.height = height
        self.valset = valset
        self.round = 0
        self.current_step = Step.PROPOSE
        self.locked_round, self.locked_value = -1, None
        self.valid_round, self.valid_value = -1, None
        self._valid_polka: tuple[tuple[bytes, bytes], ...] = ()
        self._decided = False
        self._rounds: dict[int, _Round] = {}
        self._values: dict[bytes, bytes] = {}
        self._validity: dict[bytes, bool] = {}
        self._max_round_seen: dict[bytes, int] = {}
        self._evidence_seen: set[tuple] = set()  # membership only
        self._commit_sent: dict[bytes, int] = {}
        self._height_commit: Commit | None = None
        self._epoch += 1
        self._dirty = True
        # Forget what is now in the past: buffered messages and height hints below us.
        for address in list(self._future):
            kept = {k: m for k, m in self._future[address].items() if k[1] >= height}
            if kept:
                self._future[address] = kept
            else:
                del self._future[address]
        self._max_height_seen = {a: h for a, h in self._max_height_seen.items() if h > height}

    def _start_round(self, round: int) -> None:
        """StartRound (lines 11-21), plus the liveness timer."""
        self.round = round
        self.current_step = Step.PROPOSE
        self._dirty = True
        self._prune_rounds()
        # The paper schedules this only for non-proposers; the proposer schedules it too, so a
        # driver that is slow to answer `need_value` cannot stall the round (documented).
        self._schedule(Step.PROPOSE)
        self._schedule(Step.RETRANSMIT)
        if self._is_proposer(round):
            if self.valid_value is not None:
                self._propose(round, self.valid_value, self.valid_round)
                return  # _propose ran the rules
            if self._last_proposal_at(round) is not None:
                self._resend_own_proposal()
            else:
                self._out_need_value = (self.height, round)
        self._run_rules(round)

    def _restore_polka(self) -> None:
        """Put the durable polka of the valid value back into its round's tally (our own
        durable state: trusted, not re-verified), so a re-proposal can carry it again."""
        if self.valid_value is None:
            return
        value_id = self.hooks.value_id(self.valid_value)
        rs = self._round_state(self.valid_round)
        for validator, signature in self._valid_polka:
            member = self.valset.get(validator)
            if member is not None and validator not in rs.prevotes:
                vote = Vote(
                    VoteType.PREVOTE, self.height, self.valid_round, value_id, validator, signature
                )
                self._add_vote(rs, vote, member.power)

    def _resume_round(self) -> None:
        """After a restart at the same height: re-arm timers, re-send what we signed here."""
        if self.current_step is Step.PROPOSE:
            self._schedule(Step.PROPOSE)
        self._schedule(Step.RETRANSMIT)
        if self._is_proposer(self.round) and self.current_step is Step.PROPOSE:
            if self._last_proposal_at(self.round) is not None:
                self._resend_own_proposal()
            elif self.valid_value is not None:
                self._propose(self.round, self.valid_value, self.valid_round)
            else:
                self._out_need_value = (self.height, self.round)
        else:
            self._resend_own_proposal()
        self._resend_own_votes()  # runs the rules

    def _schedule(self, step: Step) -> None:
        self._out_timeouts.append(
            Timeout(step, self.height, self.round, self.config.timeout_ms(step, self.round))
        )

    def _round_state(self, round: int) -> _Round:
        rs = self._rounds.get(round)
        if rs is None:
            rs = self._rounds[round] = _Round()
            if len(self._rounds) > self.config.max_rounds_kept:
                self._prune_rounds()
        return rs

    def _prune_rounds(self) -> None:
        """Keep at most `max_rounds_kept` rounds: drop the oldest that no rule still needs."""
        excess = len(self._rounds) - self.config.max_rounds_kept
        if excess <= 0:
            return
        keep = {self.round, self.locked_round, self.valid_round}
        current = self._rounds.get(self.round)
        if current is not None:
            keep.update(p.pol_round for p in current.proposals.values())  # line 28 needs them
        for r in sorted(self._rounds):
            if excess <= 0 or r >= self.round:
                break
            if r not in keep:
                del self._rounds[r]
                excess -= 1

    def _is_proposer(self, round: int) -> bool:
        return self.is_validator and self.valset.proposer(self.height, round) == self.own_address

    # ------------------------------------------------------------------ receiving

    def _on_vote(self, vote: Vote, verified_key: bytes | None) -> None:
        if not well_formed_vote(vote):
            self.stats.malformed += 1
            return
        if vote.height != self.height:
            self._other_height(vote, vote.validator, vote.height, verified_key)
            return
        validator = self.valset.get(vote.validator)
        if validator is None:
            self.stats.unknown_validator += 1
            return
        if vote.round > self.round + self.config.round_window:
            if self._verify_vote(vote, validator.pub_key, verified_key):
                self._note_round(vote.validator, vote.round)
                self._run_rules(vote.round)
            return
        rs = self._round_state(vote.round)
        table = rs.prevotes if vote.vote_type == VoteType.PREVOTE else rs.precommits
        existing = table.get(vote.validator)
        if existing is not None:
            if existing.value_id == vote.value_id:
                self.stats.duplicate += 1
            else:
                self._conflicting_vote(existing, vote, validator.pub_key, verified_key)
                self._note_extra_prevote(rs, vote, validator.pub_key, verified_key)
            return
        if not self._verify_vote(vote, validator.pub_key, verified_key):
            return
        self._add_vote(rs, vote, validator.power)
        self._note_round(vote.validator, vote.round)
        self._run_rules(vote.round)

    def _add_vote(self, rs: _Round, vote: Vote, power: int) -> None:
        self.stats.accepted += 1
        if vote.vote_type == VoteType.PREVOTE:
            rs.prevotes[vote.validator] = vote
            rs.prevote_power[vote.value_id] = rs.prevote_power.get(vote.value_id, 0) + power
            rs.prevote_total += power
        else:
            rs.precommits[vote.validator] = vote
            rs.precommit_power[vote.value_id] = rs.precommit_power.get(vote.value_id, 0) + power
            rs.precommit_total += power

    def _verify_vote(self, vote: Vote, pub_key: bytes, verified_key: bytes | None) -> bool:
        if verified_key == pub_key:
            return True
        data = vote_bytes_with_prefix(
            self._vote_prefix, vote.vote_type, vote.height, vote.round, vote.value_id
        )
        if self.hooks.verify(pub_key, data, vote.signature):
            return True
        self.stats.bad_signature += 1
        return False

    def _conflicting_vote(
        self, first: Vote, second: Vote, pub_key: bytes, verified_key: bytes | None
    ) -> None:
        """Two different votes for one slot: evidence, emitted once per slot."""
        slot = (second.validator, second.vote_type, second.round)
        if slot in self._evidence_seen:
            self.stats.duplicate += 1
            return
        if not self._verify_vote(second, pub_key, verified_key):
            return
        self._evidence_seen.add(slot)
        self.stats.evidence += 1
        self._out_evidence.append(make_evidence(first, second))

    def _note_extra_prevote(
        self, rs: _Round, vote: Vote, pub_key: bytes, verified_key: bytes | None
    ) -> None:
        """Keep an equivocator's other prevote for a value we hold, for line 28.

        The paper counts 2f + 1 PREVOTE messages for v at round vr, whoever else the senders
        voted for; the tally keeps each validator's first prevote only. Without this, an
        equivocator that prevoted nil to some and v to others at vr can leave an honest
        validator locked on v while the others never see v's polka when it is re-proposed:
        the chain stalls for good (found by the whole-node simulation, seeds 8 and 16 of
        `scripts/simulate.py --node`). Counting the extra vote is safe: the proof still
        names 2f + 1 distinct validators that signed a prevote for v at vr, so f + 1 honest
        ones did. Bounded: only values of proposals held at this height, one per
        (validator, value)."""
        if vote.vote_type != VoteType.PREVOTE or vote.value_id is None:
            return
        key = (vote.validator, vote.value_id)
        if vote.value_id not in self._values or key in rs.extra_prevotes:
            return
        if not self._verify_vote(vote, pub_key, verified_key):
            return
        rs.extra_prevotes[key] = vote
        self._run_rules(vote.round)

    def _pol_power(self, pol: _Round, value_id: bytes) -> int:
        """The power of distinct validators with a prevote for `value_id` in round `pol`."""
        power = pol.prevote_power.get(value_id, 0)
        for validator, voted in pol.extra_prevotes:
            first = pol.prevotes.get(validator)
            if voted == value_id and first is not None and first.value_id != value_id:
                member = self.valset.get(validator)
                power += 0 if member is None else member.power
        return power

    def _on_proposal(self, p: Proposal, verified_key: bytes | None) -> None:
        if not well_formed_proposal(p):
            self.stats.malformed += 1
            return
        if p.height != self.height:
            self._other_height(p, p.proposer, p.height, verified_key)
            return
        if self.valset.proposer(p.height, p.round) != p.proposer:
            self.stats.wrong_proposer += 1
            return
        far = p.round > self.round + self.config.round_window
        rs = None if far else self._round_state(p.round)
        if rs is not None and p.signature in rs.proposal_sigs:
            self.stats.duplicate += 1
            return
        if rs is not None and len(rs.proposals) >= self.config.max_proposals_per_round:
            self.stats.duplicate += 1
            return
        value_id = self.hooks.value_id(p.value)
        if rs is not None and value_id in rs.proposals:
            self.stats.duplicate += 1
            return
        pub_key = self.valset.get(p.proposer).pub_key
        if verified_key != pub_key:
            data = proposal_bytes_with_prefix(
                self._proposal_prefix, p.height, p.round, value_id, p.pol_round
            )
            if not self.hooks.verify(pub_key, data, p.signature):
                self.stats.bad_signature += 1
                return
        self._note_round(p.proposer, p.round)
        if rs is None:
            self._run_rules(p.round)
            return
        self.stats.accepted += 1
        rs.proposal_sigs.add(p.signature)
        rs.proposals[value_id] = p
        self._values.setdefault(value_id, p.value)
        commit = self._height_commit
        if commit is not None and commit.value_id == value_id:
            # We held a verified certificate but lacked the block: now we have it.
            self._decide(commit.round, value_id, commit)
            return
        self._run_rules(p.round)

    def _on_commit(self, c: Commit) -> None:
        if not well_formed_commit(c):
            self.stats.malformed += 1
            return
        if c.height < self.height or (c.height == self.height and self._height_commit):
            self.stats.old_height += 1
            return
        if c.height > self.height:
            if c.height <= self._sync_requested:
                self.stats.duplicate += 1
                return
            # The set of a far height may be unknown yet; the current one is a good hint (block
            # sync verifies properly).
            valset = self._valsets(c.height) or self.valset
            if verify_commit(valset, self.chain_id, c, self.hooks.verify):
                self._commit_hint = max(self._commit_hint, c.height)
                self._request_sync(c.height, retry=False)
            else:
                self.stats.bad_signature += 1
            return
        if not verify_commit(self.valset, self.chain_id, c, self.hooks.verify):
            self.stats.bad_signature += 1
            return
        self._height_commit = c
        if c.value_id in self._values:
            self._decide(c.round, c.value_id, c)
        else:
            self._request_sync(c.height, retry=False)

    def _other_height(
        self, msg: Message, sender: bytes, height: int, verified_key: bytes | None
    ) -> None:
        if height < self.height:
            self.stats.old_height += 1
            self._help_laggard(sender)
            return
        valset = self._valsets(height) or self.valset
        validator = valset.get(sender)
        if validator is None:
            self.stats.unknown_validator += 1
            return
        buffer = self._future.get(sender)
        if height > self.height + self.config.height_window:
            # Too far to keep, but worth a hint that we are behind (verified, and at most once
            # per validator per new height, so it costs little).
            self.stats.far_future += 1
            if height > self._max_height_seen.get(sender, 0) and self._verify_any(
                msg, validator.pub_key
            ):
                self._note_height(sender, height)
            return
        key = _buffer_key(msg)
        if buffer is not None and key in buffer:
            self.stats.duplicate += 1
            return
        if buffer is not None and len(buffer) >= self.config.max_buffered_per_validator:
            self.stats.buffer_full += 1
            return
        if isinstance(msg, Proposal) and valset.proposer(height, msg.round) != sender:
            self.stats.wrong_proposer += 1
            return
        if not self._verify_any(msg, validator.pub_key):
            self.stats.bad_signature += 1
            return
        self.stats.buffered += 1
        self._future.setdefault(sender, {})[key] = (msg, validator.pub_key)
        self._note_height(sender, height)

    def _verify_any(self, msg: Message, pub_key: bytes) -> bool:
        if isinstance(msg, Vote):
            data = vote_bytes_with_prefix(
                self._vote_prefix, msg.vote_type, msg.height, msg.round, msg.value_id
            )
        else:
            data = proposal_bytes_with_prefix(
                self._proposal_prefix,
                msg.height,
                msg.round,
                self.hooks.value_id(msg.value),
                msg.pol_round,
            )
        return self.hooks.verify(pub_key, data, msg.signature)

    def _replay_buffered(self) -> None:
        """Feed the messages buffered for the new height, in arrival order per validator."""
        batch: list[tuple[Message, bytes]] = []
        for address in list(self._future):
            entries = self._future[address]
            mine = [k for k in entries if k[1] == self.height]
            for k in mine:
                batch.append(entries.pop(k))
            if not entries:
                del self._future[address]
        for msg, pub_key in batch:
            if self._decided:
                return
            if isinstance(msg, Vote):
                self._on_vote(msg, pub_key)
            else:
                self._on_proposal(msg, pub_key)

    def _help_laggard(self, sender: bytes) -> None:
        """A peer still votes at an old height: hand it our latest commit certificate, at most
        once per retransmit period, so it can decide (or see it must sync)."""
        if self._last_commit is None or self.valset.get(sender) is None:
            return
        if self._commit_sent.get(sender) == self._epoch:
            return
        self._commit_sent[sender] = self._epoch
        self._out_messages.append(Outbound(self._last_commit, to=sender))

    # ------------------------------------------------------------------ lagging and skipping

    def _note_round(self, validator: bytes, round: int) -> None:
        """Line 55 input: the highest round each validator has sent a verified message for."""
        if round <= self.round or round <= self._max_round_seen.get(validator, -1):
            return
        self._max_round_seen[validator] = round

    def _line_55_round_skip_target(self) -> int:
        """The highest round R such that validators at rounds >= R hold > 1/3 of the power."""
        need = self.valset.skip_power
        power = 0
        for round, address in sorted(
            ((r, a) for a, r in self._max_round_seen.items() if r > self.round), reverse=True
        ):
            power += self.valset.get(address).power
            if power >= need:
                return round
        return -1

    def _note_height(self, validator: bytes, height: int) -> None:
        if height <= self._max_height_seen.get(validator, 0):
            return
        self._max_height_seen[validator] = height
        self._check_lagging(retry=False)

    def _check_lagging(self, retry: bool) -> None:
        """> 1/3 of power at heights >= H means block H - 1 is decided: ask to sync up to it.

        From a message, only when others are two or more heights ahead: one height ahead is the
        normal case right after a decision, and the commit re-sent by peers covers it. From the
        retransmit timer (no progress for a while), one height ahead is enough.
        """
        need = self.valset.skip_power
        power = 0
        for height, address in sorted(
            ((h, a) for a, h in self._max_height_seen.items()), reverse=True
        ):
            validator = self.valset.get(address)
            power += validator.power if validator else 0
            if power >= need:
                target = height - 1
                if target >= self.height + (0 if retry else 1):
                    self._request_sync(target, retry)
                return

    def _request_sync(self, target: int, retry: bool) -> None:
        if target > self._sync_requested or (retry and target >= self.height):
            self._sync_requested = max(self._sync_requested, target)
            self._out_sync = max(self._out_sync or 0, target)

    # ------------------------------------------------------------------ the rules

    def _run_rules(self, round: int) -> None:
        """Evaluate every "upon" rule that a change in `round` can enable, until stable."""
        if self._decided:
            return
        if round != self.round:
            rs = self._rounds.get(round)
            if rs is not None and self._line_49_decide(round, rs):
                return
            if round > self.round:
                target = self._line_55_round_skip_target()
                if target > self.round:
                    self._start_round(target)  # runs the rules of the new round
                return
            # An earlier round: its prevotes may complete line 28's proof of lock, below.
        while not self._decided:
            rs = self._rounds.get(self.round)
            if rs is None or self._line_49_decide(self.round, rs):
                return
            if not self._current_round_rules(rs):
                return

    def _current_round_rules(self, rs: _Round) -> bool:
        """One pass over the rules of the current round; True if the state changed."""
        if self.current_step is Step.PROPOSE and self._line_22_or_28_prevote(rs):
            return True
        if self.current_step is Step.PREVOTE and not rs.prevote_timeout_scheduled:
            if rs.prevote_total >= self.valset.quorum_power:
                self._line_34_schedule_timeout_prevote(rs)
        if (
            self.current_step is not Step.PROPOSE
            and not rs.line_36_done
            and self._line_36_polka(rs)
        ):
            return True
        if self.current_step is Step.PREVOTE and self._line_44_precommit_nil(rs):
            return True
        if not rs.precommit_timeout_scheduled and rs.precommit_total >= self.valset.quorum_power:
            self._line_47_schedule_timeout_precommit(rs)
        return False

    def _line_22_or_28_prevote(self, rs: _Round) -> bool:
        for value_id, p in rs.proposals.items():
            vr = p.pol_round
            if vr == -1:
                # Line 22: a fresh proposal; prevote it if valid and we are not locked elsewhere.
                ok = self._valid(value_id) and (
                    self.locked_round == -1 or self._locked_id() == value_id
                )
            else:
                # Line 28: a re-proposal justified by a polka at vr < round.
                pol = self._rounds.get(vr)
                if pol is None or self._pol_power(pol, value_id) < self.valset.quorum_power:
                    continue
                ok = self._valid(value_id) and (
                    self.locked_round <= vr or self._locked_id() == value_id
                )
            self._sign_vote(VoteType.PREVOTE, value_id if ok else NIL)
            self.current_step = Step.PREVOTE
            self._dirty = True
            return True
        return False

    def _line_34_schedule_timeout_prevote(self, rs: _Round) -> None:
        rs.prevote_timeout_scheduled = True
        self._schedule(Step.PREVOTE)

    def _line_36_polka(self, rs: _Round) -> bool:
        """A polka for the proposal: lock and precommit (if in prevote), remember as valid."""
        for value_id in rs.proposals:
            if rs.prevote_power.get(value_id, 0) >= self.valset.quorum_power:
                if not self._valid(value_id):
                    continue
                rs.line_36_done = True
                value = self._values[value_id]
                if self.current_step is Step.PREVOTE:
                    self.locked_value, self.locked_round = value, self.round
                    self._sign_vote(VoteType.PRECOMMIT, value_id)
                    self.current_step = Step.PRECOMMIT
                self.valid_value, self.valid_round = value, self.round
                self._valid_polka = tuple(
                    sorted(
                        (v.validator, v.signature)
                        for v in rs.prevotes.values()
                        if v.value_id == value_id
                    )
                )
                self._dirty = True
                return True
        return False

    def _line_44_precommit_nil(self, rs: _Round) -> bool:
        if rs.prevote_power.get(NIL, 0) < self.valset.quorum_power:
            return False
        self._sign_vote(VoteType.PRECOMMIT, NIL)
        self.current_step = Step.PRECOMMIT
        self._dirty = True
        return True

    def _line_47_schedule_timeout_precommit(self, rs: _Round) -> None:
        rs.precommit_timeout_scheduled = True
        self._schedule(Step.PRECOMMIT)

    def _line_49_decide(self, round: int, rs: _Round) -> bool:
        """> 2/3 precommits for a value we hold (and that is valid) at any round: decide."""
        quorum = self.valset.quorum_power
        for value_id, power in rs.precommit_power.items():
            if value_id is None or power < quorum or value_id not in self._values:
                continue
            if not self._valid(value_id):
                continue
            signatures = tuple(
                sorted(
                    (v.validator, v.signature)
                    for v in rs.precommits.values()
                    if v.value_id == value_id
                )
            )
            commit = Commit(self.height, round, value_id, signatures)
            self._check_decision_quorum(value_id, commit)
            self._decide(round, value_id, commit)
            return True
        return False

    def _decide(self, round: int, value_id: bytes, commit: Commit) -> None:
        self._out_decisions.append(
            Decision(self.height, round, self._values[value_id], value_id, commit)
        )
        self._last_commit = commit
        # The next height starts on the next call, after the driver applied this block.
        self._decided = True

    def _check_decision_quorum(self, value_id: bytes, commit: Commit) -> None:
        """A decision from our own tally carries precommits for its value from distinct members
        of the set with more than two thirds of its power (a certificate received whole passed
        `verify_commit` instead). Checked where it is made (TigerBeetle's habit): a
        broken tally is a bug of ours, and going on would commit a block without a quorum.
        Costs one pass over the signatures (at most one per validator)."""
        signers: set[bytes] = set()  # membership only, never iterated
        power = 0
        for validator, _signature in commit.signatures:
            member = self.valset.get(validator)
            if member is None or validator in signers:
                raise BrokenInvariant(
                    f"decision at height {self.height}: signer {validator.hex()} is not a "
                    "distinct member of the validator set"
                )
            precommit = self._rounds[commit.round].precommits.get(validator)
            if precommit is None or precommit.value_id != value_id:
                raise BrokenInvariant(
                    f"decision at height {self.height}: {validator.hex()} did not precommit it"
                )
            signers.add(validator)
            power += member.power
        if commit.value_id != value_id or power < self.valset.quorum_power:
            raise BrokenInvariant(
                f"decision at height {self.height}: {power} of {self.valset.total_power} power "
                f"precommitted, a quorum is {self.valset.quorum_power}"
            )

    def _line_57_on_timeout_propose(self) -> None:
        if self.current_step is Step.PROPOSE:
            self._sign_vote(VoteType.PREVOTE, NIL)
            self.current_step = Step.PREVOTE
            self._dirty = True
            self._run_rules(self.round)

    def _line_61_on_timeout_prevote(self) -> None:
        if self.current_step is Step.PREVOTE:
            self._sign_vote(VoteType.PRECOMMIT, NIL)
            self.current_step = Step.PRECOMMIT
            self._dirty = True
            self._run_rules(self.round)

    def _line_65_on_timeout_precommit(self) -> None:
        self._start_round(self.round + 1)

    def _on_retransmit_timer(self) -> None:
        self._epoch += 1
        self._resend_own_proposal()
        self._resend_own_votes()
        self._check_lagging(retry=True)
        if self._height_commit is not None:
            # We hold a certificate for this height but never got the block: ask again.
            self._request_sync(self.height, retry=True)
        if self._commit_hint > self.height:
            self._request_sync(self._commit_hint, retry=True)
        self._schedule(Step.RETRANSMIT)

    def _valid(self, value_id: bytes) -> bool:
        ok = self._validity.get(value_id)
        if ok is None:
            ok = self._validity[value_id] = bool(
                self.hooks.validate_value(self.height, self._values[value_id])
            )
        return ok

    def _locked_id(self) -> bytes | None:
        if self.locked_value is None:
            return None
        return self.hooks.value_id(self.locked_value)

    # ------------------------------------------------------------------ signing (the guard)

    def _last_proposal_at(self, round: int) -> ProposalRecord | None:
        p = self._last_proposal
        if p is not None and (p.height, p.round) == (self.height, round):
            return p
        return None

    def _propose(self, round: int, value: bytes, pol_round: int) -> None:
        value_id = self.hooks.value_id(value)
        last = self._last_proposal
        if last is not None and (last.height, last.round) >= (self.height, round):
            # Already proposed here (re-send the same one) or at a later slot: never re-sign.
            if (last.height, last.round, last.value_id) == (self.height, round, value_id):
                self._resend_own_proposal()
            else:
                self.stats.refused_to_sign += 1
            return
        data = proposal_bytes_with_prefix(
            self._proposal_prefix, self.height, round, value_id, pol_round
        )
        signature = self._sign(data)
        if signature is None:
            return
        self._last_proposal = ProposalRecord(self.height, round, pol_round, value_id, signature)
        self._dirty = True
        self._values.setdefault(value_id, value)
        proposal = Proposal(self.height, round, value, pol_round, self.own_address, signature)
        self._broadcast_proposal(proposal, value_id)
        rs = self._round_state(round)
        if value_id not in rs.proposals:
            rs.proposals[value_id] = proposal
            rs.proposal_sigs.add(signature)
        self._run_rules(round)

    def _broadcast_proposal(self, proposal: Proposal, value_id: bytes) -> None:
        """Send a proposal, and with a re-proposal the polka that justifies it (line 28 needs
        those prevotes, and a peer that missed them would otherwise never accept it)."""
        self._out_messages.append(Outbound(proposal))
        if proposal.pol_round >= 0:
            pol = self._rounds.get(proposal.pol_round)
            if pol is not None:
                for vote in pol.prevotes.values():
                    if vote.value_id == value_id:
                        self._out_messages.append(Outbound(vote))

    def _resend_own_proposal(self) -> None:
        p = self._last_proposal_at(self.round)
        if p is None or p.value_id not in self._values:
            return
        proposal = Proposal(
            p.height, p.round, self._values[p.value_id], p.pol_round, self.own_address, p.signature
        )
        self._broadcast_proposal(proposal, p.value_id)
        rs = self._round_state(p.round)
        if p.value_id not in rs.proposals:
            rs.proposals[p.value_id] = proposal
            rs.proposal_sigs.add(p.signature)

    def _sign_vote(self, vote_type: VoteType, value_id: bytes | None) -> None:
        """Sign and broadcast our vote for the current slot -- unless that would conflict."""
        if not self.is_validator:
            return
        h, r = self.height, self.round
        last = self._last_prevote if vote_type == VoteType.PREVOTE else self._last_precommit
        if last is not None and (last.height, last.round) >= (h, r):
            if (last.height, last.round, last.value_id) == (h, r, value_id):
                self._emit_own_vote(last)
            else:
                self.stats.refused_to_sign += 1
            return
        data = vote_bytes_with_prefix(self._vote_prefix, vote_type, h, r, value_id)
        signature = self._sign(data)
        if signature is None:
            return
        vote = Vote(vote_type, h, r, value_id, self.own_address, signature)
        if vote_type == VoteType.PREVOTE:
            self._last_prevote = vote
        else:
            self._last_precommit = vote
        self._dirty = True
        self._emit_own_vote(vote)

    def _sign(self, data: bytes) -> bytes | None:
        """The hook's signature, or None when it cannot sign now (`SigningUnavailable`)."""
        try:
            return self.hooks.sign(data)
        except SigningUnavailable:
            self.stats.sign_failed += 1
            return None

    def _emit_own_vote(self, vote: Vote) -> None:
        self._out_messages.append(Outbound(vote))
        self._absorb_own_vote(vote)

    def _absorb_own_vote(self, vote: Vote) -> None:
        rs = self._round_state(vote.round)
        table = rs.prevotes if vote.vote_type == VoteType.PREVOTE else rs.precommits
        if vote.validator not in table:
            self._add_vote(rs, vote, self.valset.get(vote.validator).power)

    def _resend_own_votes(self) -> None:
        """Re-send our votes of this round and the previous one.

        The previous round matters: a node that timed out of round r - 1 may be the only one
        ahead, while the others still wait in round r - 1 for its votes there; without them
        neither side reaches a quorum (f + 1 is needed to skip, and it is alone).
        """
        if not self.is_validator:
            return
        for vote in (self._last_prevote, self._last_precommit):
            # After a restore the tallies are empty: put our durable votes back first.
            if vote is not None and vote.height == self.height and vote.round >= self.round - 1:
                self._absorb_own_vote(vote)
        for round in (self.round - 1, self.round):
            rs = self._rounds.get(round)
            if rs is None:
                continue
            for table in (rs.prevotes, rs.precommits):
                vote = table.get(self.own_address)
                if vote is not None:
                    self._out_messages.append(Outbound(vote))
        self._run_rules(self.round)


def _buffer_key(msg: Message) -> tuple:
    """Deduplication key of a buffered future message; element 1 is always the height."""
    if isinstance(msg, Vote):
        return ("v", msg.height, msg.round, int(msg.vote_type), msg.value_id)
    return ("p", msg.height, msg.round, msg.signature)
