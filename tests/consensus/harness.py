"""Test helpers: deterministic fake keys, a validator set, and a tiny in-process network.

The fake signature is a keyed hash of the signing bytes, so it is unforgeable by anything that
does not call `sign_as` and it is deterministic (like Ed25519). The network is a FIFO queue with
explicit delivery; timeouts are collected and fired by hand, so every test controls time.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

from consensus.core import Core, CoreConfig, Hooks
from consensus.types import (
    Commit,
    DurableState,
    Outbound,
    Proposal,
    Ready,
    Timeout,
    Validator,
    ValidatorSchedule,
    ValidatorSet,
    Vote,
    VoteType,
    proposal_signing_bytes,
    vote_signing_bytes,
)

CHAIN = "khazana-test"


def address(i: int) -> bytes:
    return bytes([i]) * 20


def pub_key(addr: bytes) -> bytes:
    return b"pk:" + addr


def sign_as(addr: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, key=pub_key(addr), digest_size=16).digest()


def verify(pk: bytes, data: bytes, sig: bytes) -> bool:
    return hashlib.blake2b(data, key=pk, digest_size=16).digest() == sig


def value_id(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=32).digest()


def valset(powers: list[int]) -> ValidatorSet:
    return ValidatorSet.of(
        Validator(address(i + 1), pub_key(address(i + 1)), p) for i, p in enumerate(powers)
    )


def hooks_for(addr: bytes | None, invalid: frozenset[bytes] = frozenset()) -> Hooks:
    return Hooks(
        sign=lambda data: sign_as(addr, data),
        verify=verify,
        value_id=value_id,
        validate_value=lambda height, value: value not in invalid,
    )


def vote(
    addr: bytes, vote_type: VoteType, height: int, round: int, vid: bytes | None, chain=CHAIN
) -> Vote:
    data = vote_signing_bytes(chain, vote_type, height, round, vid)
    return Vote(vote_type, height, round, vid, addr, sign_as(addr, data))


def prevote(addr, height, round, vid):
    return vote(addr, VoteType.PREVOTE, height, round, vid)


def precommit(addr, height, round, vid):
    return vote(addr, VoteType.PRECOMMIT, height, round, vid)


def proposal(addr: bytes, height: int, round: int, value: bytes, pol_round: int = -1) -> Proposal:
    data = proposal_signing_bytes(CHAIN, height, round, value_id(value), pol_round)
    return Proposal(height, round, value, pol_round, addr, sign_as(addr, data))


def commit_for(addrs: list[bytes], height: int, round: int, value: bytes) -> Commit:
    vid = value_id(value)
    sigs = tuple(sorted((a, precommit(a, height, round, vid).signature) for a in addrs))
    return Commit(height, round, vid, sigs)


def make_core(
    own: bytes | None,
    vs: ValidatorSet,
    config: CoreConfig | None = None,
    durable: DurableState | None = None,
    start_height: int = 1,
    invalid: frozenset[bytes] = frozenset(),
    provider=None,
) -> Core:
    return Core(
        CHAIN,
        own,
        provider or (lambda h: vs),
        hooks_for(own, invalid),
        config or CoreConfig(),
        durable=durable,
        start_height=start_height,
    )


def sent(ready: Ready) -> list:
    return [o.message for o in ready.messages]


def votes_of(ready: Ready, vote_type: VoteType) -> list[Vote]:
    return [m for m in sent(ready) if isinstance(m, Vote) and m.vote_type is vote_type]


@dataclass
class Node:
    core: Core
    timeouts: list[Timeout] = field(default_factory=list)
    decided: list = field(default_factory=list)
    durable: DurableState | None = None
    evidence: list = field(default_factory=list)
    sync_needed: list[int] = field(default_factory=list)


class Net:
    """A few cores joined by a FIFO wire; the test decides what is delivered and when."""

    def __init__(self, powers: list[int], config: CoreConfig | None = None) -> None:
        self.vs = valset(powers)
        self.schedule = ValidatorSchedule(1, self.vs)
        self.config = config or CoreConfig()
        self.addrs = [v.address for v in self.vs.validators]
        self.nodes: dict[bytes, Node] = {}
        self.wire: deque[tuple[bytes, bytes, object]] = deque()  # (from, to, message)
        self.blocks: dict[int, bytes] = {}
        for a in self.addrs:
            self.nodes[a] = Node(self._core(a, None, 1))

    def _core(self, a: bytes, durable, start_height: int) -> Core:
        return Core(
            CHAIN,
            a,
            self.schedule_for,
            hooks_for(a),
            self.config,
            durable=durable,
            start_height=start_height,
        )

    def schedule_for(self, height: int):
        return self.vs

    def start(self) -> None:
        for a in self.addrs:
            self.handle(a, self.nodes[a].core.start())

    def handle(self, a: bytes, ready: Ready) -> None:
        node = self.nodes[a]
        if ready.persist is not None:
            node.durable = ready.persist
        for out in ready.messages:
            self.send(a, out)
        node.timeouts.extend(ready.timeouts)
        node.evidence.extend(ready.evidence)
        if ready.sync_needed is not None:
            node.sync_needed.append(ready.sync_needed)
        for d in ready.decisions:
            node.decided.append(d)
        if ready.need_value is not None:
            h, r = ready.need_value
            value = b"block-%d-%d-by-%s" % (h, r, a[:1].hex().encode())
            self.handle(a, node.core.propose_value(h, r, value))
        elif ready.decisions:
            self.handle(a, node.core.advance())

    def send(self, src: bytes, out: Outbound) -> None:
        targets = [out.to] if out.to is not None else [b for b in self.addrs if b != src]
        for dst in targets:
            self.wire.append((src, dst, out.message))

    def deliver_all(self, limit: int = 100_000) -> int:
        n = 0
        while self.wire and n < limit:
            src, dst, msg = self.wire.popleft()
            self.handle(dst, self.nodes[dst].core.step(msg))
            n += 1
        return n

    def fire(self, a: bytes, step=None) -> bool:
        """Fire the earliest-scheduled pending timeout of node `a` (optionally of one step)."""
        node = self.nodes[a]
        for i, t in enumerate(node.timeouts):
            if step is None or t.step is step:
                del node.timeouts[i]
                self.handle(a, node.core.on_timeout(t))
                return True
        return False

    def heights(self) -> list[int]:
        return [len(self.nodes[a].decided) for a in self.addrs]
