"""The wire form of consensus messages: strict msgpack arrays, one per message.

`encode_message` / `decode_message` are what the node's P2P layer puts in a frame. The
decoder treats its input as hostile: every input either decodes to a well-formed message
(field types and ranges checked, exactly one msgpack object, no maps, floats or extension
types) or raises `WireError` -- a remote protocol error the caller answers by dropping the
message and penalising the peer, never by crashing. Signatures are *not* checked here; the
core does that against the validator set of the message's height.

Layouts (msgpack arrays; `bin` = msgpack bin, `int` = msgpack integer):

    Proposal: [1, height, round, value: bin, pol_round, proposer: bin, signature: bin]
    Vote:     [2, vote_type, height, round, value_id: bin | nil, validator: bin, signature: bin]
    Commit:   [3, height, round, value_id: bin, [[validator: bin, signature: bin], ...]]
    Evidence: [4, vote_a, vote_b]   (each vote as the Vote array, kind 2 included)

Encoding is canonical (one byte string per message), so `encode(decode(b)) == b` for every
accepted `b`.
"""

from __future__ import annotations

import msgpack

from consensus.errors import RemoteProtocolError
from consensus.types import (
    Commit,
    Evidence,
    Proposal,
    Vote,
    VoteType,
    well_formed_commit,
    well_formed_proposal,
    well_formed_vote,
)

PROPOSAL_KIND, VOTE_KIND, COMMIT_KIND, EVIDENCE_KIND = 1, 2, 3, 4
DEFAULT_MAX_SIZE = 16 * 1024 * 1024
MAX_COMMIT_SIGNATURES = 10_000

WireMessage = Proposal | Vote | Commit | Evidence


class WireError(RemoteProtocolError, ValueError):
    """A peer sent bytes that are not a well-formed consensus message."""


def encode_message(msg: WireMessage) -> bytes:
    return msgpack.packb(_to_list(msg), use_bin_type=True)


def _to_list(msg: WireMessage) -> list:
    if isinstance(msg, Vote):
        return [
            VOTE_KIND,
            int(msg.vote_type),
            msg.height,
            msg.round,
            msg.value_id,
            msg.validator,
            msg.signature,
        ]
    if isinstance(msg, Proposal):
        return [
            PROPOSAL_KIND,
            msg.height,
            msg.round,
            msg.value,
            msg.pol_round,
            msg.proposer,
            msg.signature,
        ]
    if isinstance(msg, Commit):
        return [
            COMMIT_KIND,
            msg.height,
            msg.round,
            msg.value_id,
            [[a, s] for a, s in msg.signatures],
        ]
    if isinstance(msg, Evidence):
        return [EVIDENCE_KIND, _to_list(msg.vote_a), _to_list(msg.vote_b)]
    raise TypeError(f"not a consensus message: {msg!r}")


def _refuse_ext(code: int, data: bytes) -> None:
    raise WireError(f"msgpack extension type {code} is not allowed")


def decode_message(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> WireMessage:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("expected bytes")
    if len(data) > max_size:
        raise WireError(f"message of {len(data)} bytes exceeds {max_size}")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_map_len=0,
            max_ext_len=0,
        )
    except WireError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types for bad input; all mean the same
        raise WireError(f"undecodable message: {type(exc).__name__}: {exc}") from exc
    msg = _from_list(raw, nested=False)
    if encode_message(msg) != bytes(data):
        raise WireError("non-canonical encoding")
    return msg


def _ints(*values) -> bool:
    return all(type(v) is int for v in values)


def _bins(*values) -> bool:
    return all(type(v) is bytes for v in values)


def _from_list(raw, nested: bool) -> WireMessage:
    if not isinstance(raw, list) or not raw or type(raw[0]) is not int:
        raise WireError("a message is a non-empty array starting with its kind")
    kind = raw[0]
    if kind == VOTE_KIND and len(raw) == 7:
        _, t, h, r, vid, validator, sig = raw
        if not (_ints(t, h, r) and (vid is None or _bins(vid)) and _bins(validator, sig)):
            raise WireError("bad vote field types")
        if t not in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            raise WireError(f"unknown vote type {t}")
        vote = Vote(VoteType(t), h, r, vid, validator, sig)
        if not well_formed_vote(vote):
            raise WireError("vote fields out of range")
        return vote
    if nested:
        raise WireError("evidence holds votes only")
    if kind == PROPOSAL_KIND and len(raw) == 7:
        _, h, r, value, pol, proposer, sig = raw
        if not (_ints(h, r, pol) and _bins(value, proposer, sig)):
            raise WireError("bad proposal field types")
        proposal = Proposal(h, r, value, pol, proposer, sig)
        if not well_formed_proposal(proposal):
            raise WireError("proposal fields out of range")
        return proposal
    if kind == COMMIT_KIND and len(raw) == 5:
        _, h, r, vid, sigs = raw
        if not (_ints(h, r) and _bins(vid) and isinstance(sigs, list)):
            raise WireError("bad commit field types")
        if len(sigs) > MAX_COMMIT_SIGNATURES:
            raise WireError(f"{len(sigs)} commit signatures, at most {MAX_COMMIT_SIGNATURES}")
        pairs = []
        for entry in sigs:
            if not (isinstance(entry, list) and len(entry) == 2 and _bins(*entry)):
                raise WireError("a commit signature is [validator, signature]")
            pairs.append((entry[0], entry[1]))
        commit = Commit(h, r, vid, tuple(pairs))
        if not well_formed_commit(commit):
            raise WireError("commit fields out of range")
        return commit
    if kind == EVIDENCE_KIND and len(raw) == 3:
        return Evidence(_from_list(raw[1], nested=True), _from_list(raw[2], nested=True))
    raise WireError(f"unknown message kind {kind} or wrong arity {len(raw)}")
