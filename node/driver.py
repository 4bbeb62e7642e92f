"""The driver: the one trio task that owns the consensus `Core` and the ledger `Chain`.

Theory of operation
-------------------
Everything that can change the core or the chain arrives in one bounded inbox and is handled
by `Driver.run`, one item at a time: a peer's consensus message or sync response (decoded
by the pump task, which penalises undecodable input), a fired timeout, a "propose now" from
the proposal waiter, a periodic tick (status broadcast, sync deadlines). Other tasks never
touch the core or the chain, so there are no locks.

For each `Ready` the core returns, `_handle` follows docs/CONSENSUS.md exactly:

1. persist `ready.persist` (`Store.save_consensus_record`, its own fsynced SQLite
   transaction, on the store's worker thread) -- BEFORE anything leaves the process;
2. send `ready.messages` (broadcast, or to one validator's key);
3. schedule `ready.timeouts` (one cancel scope per (step, height, round); a newer timer of
   the same key replaces the old one, timers of finished heights are cancelled);
4. record `ready.evidence` (kept for the next block -- see "Evidence" below);
5. apply `ready.decisions`: commit the pending block if it is the decided one, else abandon
   it and execute the decided value first; `Chain.commit` runs on the worker thread
   (synchronous=FULL); then the validator schedule and the mempool learn of the block;
6. sync if `ready.sync_needed` (block sync, node/sync.py);
7. propose if `ready.need_value`: with transactions waiting, at once; with an empty mempool
   the waiter task holds the answer back until a transaction arrives or the heartbeat
   interval passes (empty blocks only at the heartbeat; the core's propose timeout is larger);
8. `advance()` after decisions, else wait for the next input.

`validate_value(h, value)` decodes the block, refuses a time more than `max_future_ms` ahead
of our clock (on a test network with a genesis `block_time_step_ms`: any time other than the
previous block's + the step, see "Chain time" in docs/NODE.md), and executes it with `Chain.execute_block` (every transaction verified, reusing
the mempool's verifications); the verdict is cached per value id for the height. At most one
block is pending in the chain: a different proposal abandons it first.

After each commit the block and its receipts are published to the `EventBus` (node/events.py)
without waiting. `prove(keys)` (verifiable reads) is served in this task between inbox items
whenever no block is pending, so the state tree's root is the last committed app_hash.

Membership: the driver hands the core its address and signing key whenever it has an
`identity`, member of the set or not. The core asks the schedule for the set of each height
and signs (proposes, votes, re-sends) only at heights whose set holds our address
(`Core.is_validator`), so a validator-set change decided at H switches a node between
validator and observer exactly at H + 2, the height the core gives, without a restart and
without rebuilding the core: the same core keeps its double-sign guard (the last signed
proposal and votes, persisted before anything leaves, per docs/CONSENSUS.md) and its
messages buffered for the new height, so a removed-then-re-added node can never sign a
conflicting message and nothing is lost at the switch. `own_address` is our address while we
are a member at the core's height, else None. `allowed_keys()` (the peer allow-list's
dynamic part) is the keys of the sets of the next two heights: a new validator may connect
as soon as the change that adds it is committed, two heights before it signs.

Signing hold (double-sign protection after a lost record, like CometBFT's
`double_sign_check_height`): the consensus record is the only memory of what we signed. A
validator whose record is missing while its store holds blocks (height S > 0), or whose record
is older than the store (height < S), cannot know what it signed before, so it starts as a
follower that never signs (`signing_held`; the core gets no address). It learns the network's
tip T from the peers' Status messages (the highest of each peer's first report, heard in the
first `2 * tick_ms` after the first one), syncs and follows consensus, and once it has applied a block at height
>= max(S, T) + 1 -- decided by the others after this start -- it signs again (checked after
each commit and on each tick, so a network stalled for want of its signature still gets it). Why that is safe: before the crash it could only sign at heights <= its store height
+ 1 and <= the network tip at the crash + 1, both <= max(S, T) + 1. Both switches are logged
at WARNING. A brand-new validator (empty store, no record) signs at once; a lone validator
with a lost record never signs again (no peer can tell it the tip): restore the record or
accept the risk by hand.

Fail points (`KHAZANA_FAILPOINTS=after_persist,before_send,...`) end the process with
`os._exit(137)` at that step, for the crash tests; they are off unless the variable is set.

Evidence: the core reports two conflicting signed votes by one validator (`ready.evidence`);
the driver keeps them (bounded) in `Driver.evidence` and puts each, as a block evidence item
(`ledger.ops.evidence`: the consensus wire bytes and the validator's public key), into its
next proposal. Before prevoting for a proposal, a validator verifies every item of it
(`consensus.types.verify_evidence` against the validator set of the evidence's height; the
schedule keeps the sets of the last `MAX_EVIDENCE_AGE` heights for that, rebuilt on start
from the chain's validator-set history, `ledger/validator_history.py`); one it cannot verify
makes the proposal invalid. The ledger records each committed item in state (no slashing)
and refuses it a second time; a committed item leaves `Driver.evidence`.

Unknowable sets: a node whose store predates the validator-set history knows no set below
the height it was upgraded at. Refusing evidence about such a height would make every
proposal carrying it invalid to this node for up to `MAX_EVIDENCE_AGE` heights (defect 5 in
docs/RELIABILITY.md); instead the node checks all it can -- shape, one slot, conflicting
values, and both signatures by the key the item names (whose address the ledger checks) --
and accepts it. Only membership goes unchecked, and a double vote by a non-member can only
be signed by that key's own holder: it cannot be forged against anyone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from consensus.core import Core, CoreConfig, Hooks
from consensus.types import (
    Commit,
    Decision,
    DurableState,
    Evidence,
    Ready,
    Timeout,
    Validator,
    ValidatorSchedule,
    ValidatorSet,
    ValidatorUpdate,
    verify_evidence,
)
from consensus.wire import WireError, decode_message, encode_message
from ledger.block import Block, decode_block
from ledger.chain import Chain, PendingBlock
from ledger.codes import Code, InvalidBlock, LedgerError
from ledger.commitment import Proof
from ledger.crypto import address_from_public_key, hash256, verify_signature
from ledger.genesis import block_time_step_ms
from ledger.ops.evidence import (
    MAX_EVIDENCE_AGE,
    decode_evidence_item,
    encode_evidence_item,
    recorded,
)
from ledger.store import AsyncStore
from ledger.tx import decode_cache_stats
from node import messages
from node.events import CommittedBlock, EventBus
from node.mempool import CODESPACE_MEMPOOL, AdmissionResult, AdmissionView, Mempool
from node.messages import (
    ConsensusMessage,
    MessageError,
    Status,
    SyncRequest,
    SyncResponse,
    TxGossip,
)
from node.sync import SyncError, SyncState, check_synced_block, serve_sync_request

log = logging.getLogger(__name__)

FAILPOINTS = ("after_persist", "before_send", "after_send", "before_apply", "after_apply")
FAILPOINT_EXIT_CODE = 137
MAX_EVIDENCE_KEPT = 256
BAD_MESSAGE_PENALTY = 25
BAD_SYNC_PENALTY = 50
GOSSIP_CHUNK_BYTES = 1024 * 1024  # well under messages.MAX_MESSAGE_SIZE with the framing
GOSSIP_DELAY_S = 0.02  # a busy node's admitted txs wait at most about this long to be gossiped


def failpoints_from_env(environ: dict[str, str] | None = None) -> frozenset[str]:
    """The fail points named in `KHAZANA_FAILPOINTS` (comma-separated); unknown names refused."""
    text = (os.environ if environ is None else environ).get("KHAZANA_FAILPOINTS", "")
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = names - set(FAILPOINTS)
    if unknown:
        raise ValueError(f"unknown fail points {sorted(unknown)}; known: {FAILPOINTS}")
    return names


class PeerNet(Protocol):
    """What the driver needs of the `PeerManager` (an in-memory hub in tests)."""

    inbound: trio.MemoryReceiveChannel[tuple[bytes, bytes]]

    def broadcast(self, message: bytes) -> int: ...
    def send_to(self, key: bytes, message: bytes) -> bool: ...
    def report_misbehaviour(self, key: bytes, reason: str, penalty: int = ...) -> None: ...
    def peers(self) -> tuple[Any, ...]: ...  # items with a `.key`


@dataclass(frozen=True, slots=True)
class DriverConfig:
    core: CoreConfig = field(default_factory=CoreConfig)
    max_block_txs: int = 2000
    max_block_bytes: int = 2 * 1024 * 1024
    heartbeat_ms: int = 1000  # an empty block at most this often; < core.timeout_propose_ms
    min_block_interval_ms: int = 0  # a non-empty proposal at least this long after our commit
    max_future_ms: int = 5000  # a proposal's time may be this far ahead of our clock
    tick_ms: int = 500  # status broadcast and sync deadlines
    sync_batch: int = 16
    sync_timeout_ms: int = 3000
    sync_max_bytes: int = 3 * 1024 * 1024
    inbox_size: int = 256
    admission_hold_ms: int = 1000  # longest a tx waits for a pending block to end
    max_held_admissions: int = 4096

    def __post_init__(self) -> None:
        if self.heartbeat_ms >= self.core.timeout_propose_ms:
            raise ValueError("heartbeat_ms must be below the core's timeout_propose_ms")
        if not 0 <= self.min_block_interval_ms < self.core.timeout_propose_ms:
            raise ValueError("min_block_interval_ms must be below the core's timeout_propose_ms")


# ---- inbox items -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FromPeer:
    peer: bytes
    message: ConsensusMessage | SyncResponse | Status


@dataclass(frozen=True, slots=True)
class _Fired:
    timeout: Timeout


@dataclass(frozen=True, slots=True)
class _ProposeNow:
    height: int
    round: int


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


@dataclass(frozen=True, slots=True)
class _Gossiped:
    """The transactions of one peer's `TxGossip` message, admitted together."""

    peer: bytes
    txs: tuple[bytes, ...]


MAX_HELD_PROOFS = 1024


class ProofUnavailable(Exception):
    """The driver cannot serve a state proof now (too many waiting, or stopping)."""


@dataclass(frozen=True, slots=True)
class StateProofs:
    """Proofs of some state keys against the committed state of `height` (root `app_hash`,
    the app_hash of that block's header), in the order the keys were asked."""

    height: int
    app_hash: bytes
    proofs: tuple[Proof, ...]


class _Prove:
    """A request for state proofs; served by the driver task when no block is pending (the
    state tree then holds exactly the committed state)."""

    __slots__ = ("done", "keys", "result")

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self.keys = keys
        self.result: StateProofs | None = None
        self.done = trio.Event()


class _Admission:
    """Transactions to admit together, in order (a client's call, a client's JSON-RPC batch,
    or one peer's gossip message), and where their verdicts go (filled in by the driver
    task). One inbox item for many transactions: a batch costs one channel send, one wakeup
    and one event, not one of each per transaction."""

    __slots__ = ("check_only", "done", "peer", "raws", "results", "since")

    def __init__(
        self, raws: Sequence[bytes], peer: bytes | None, check_only: bool, since: float
    ) -> None:
        self.raws = raws
        self.peer = peer
        self.check_only = check_only
        self.since = since
        self.results: list[AdmissionResult] = []
        # Nobody waits for a gossiped transaction's verdict: no event to allocate and set.
        self.done: trio.Event | None = trio.Event() if peer is None else None

    def finish(self, results: list[AdmissionResult]) -> None:
        self.results = results
        if self.done is not None:
            self.done.set()


# ---- validator sets from the ledger ----------------------------------------------------


def consensus_set(validators: Sequence[Any]) -> ValidatorSet:
    """A consensus `ValidatorSet` from ledger validators (public_key, power)."""
    return ValidatorSet.of(
        Validator(address_from_public_key(v.public_key), v.public_key, v.power)
        for v in validators
        if v.power > 0
    )


def updates_decided_at(chain: Chain, height: int) -> tuple[ValidatorUpdate, ...]:
    """The validator changes the ledger recorded as decided in block `height`."""
    return tuple(
        ValidatorUpdate(address_from_public_key(v.public_key), v.public_key, v.power)
        for change in chain.state.validator_set.pending
        if change.decided_height == height
        for v in change.changes
    )


def schedule_from_chain(chain: Chain) -> ValidatorSchedule:
    """The schedule for heights up to chain.height + 2, rebuilt from the ledger on start.

    The chain puts a change decided at H in force at the start of block H + VALSET_DELAY
    (`ledger.ops.governance.promote_validator_changes`), so after block h is committed the
    ledger's validators are the set in force at h, and its pending changes are those decided
    at h - 1 (in force at h + 1) and at h (in force at h + 2). The sets of the past heights
    the evidence window needs (down to h - MAX_EVIDENCE_AGE) come from the chain's
    validator-set history (`Chain.validator_history`, loaded when the chain opened: no block
    is read here), so a restarted validator verifies evidence from before its restart."""
    height = chain.height
    if height == 0:
        # genesis: heights 1 and 2, nothing pending
        return ValidatorSchedule(1, consensus_set(chain.state.validator_set.validators))
    points = [(p.height, consensus_set(p.validators)) for p in chain.validator_history]
    schedule = ValidatorSchedule.from_history(points, known_until=height)
    schedule.record(height - 1, updates_decided_at(chain, height - 1))
    schedule.record(height, updates_decided_at(chain, height))
    return schedule


def _verify(pub_key: bytes, data: bytes, signature: bytes) -> bool:
    return verify_signature(pub_key, data, signature)


def _value_id(value: bytes) -> bytes:
    # The block hash; an undecodable value still needs a stable id (it is then refused
    # by validate_value), and a distinct prefix keeps it from colliding with a header hash.
    try:
        return decode_block(value).header.hash
    except LedgerError:
        return b"\x00" + hash256(value)


class Driver:
    """Owns the core and the chain; see the module docstring."""

    def __init__(
        self,
        *,
        chain: Chain,
        store: AsyncStore,
        net: PeerNet,
        mempool: Mempool,
        identity: Any | None,  # node's KeyPair: signs while in the set; None = never signs
        config: DriverConfig,
        clock_ms: Callable[[], int],
        durable: DurableState | None = None,
        failpoints: frozenset[str] = frozenset(),
        name: str = "node",
        metrics: Any | None = None,  # node.metrics.Metrics
        events: EventBus | None = None,  # committed blocks are published here
        byzantine: Any | None = None,  # node.byzantine.Byzantine: tests only, double-signs
    ) -> None:
        self.byzantine = byzantine
        self.metrics = metrics
        self.events = events
        self.chain = chain
        self.store = store
        self.net = net
        self.mempool = mempool
        self.config = config
        self.clock_ms = clock_ms
        self.failpoints = failpoints
        self.name = name
        self.chain_id = chain.chain_id
        self.schedule = schedule_from_chain(chain)
        self._keys: dict[bytes, bytes] = {}  # validator address -> public key (all seen)
        self._learn_keys(chain.height + 1)
        self._learn_keys(chain.height + 2)
        # The core always knows our address and key; whether we sign at a height is its
        # per-height membership test (see "Membership" in the module docstring).
        self._identity = identity
        own = None if identity is None else identity.address
        self._was_member = False  # membership at the core's height, for the switch log
        # Double-sign protection after a lost record (see "Signing hold" above): with blocks
        # stored but no record of what we signed (or one older than the store), follow
        # without signing until the network has decided past anything we could have signed.
        self.signing_held = (
            identity is not None
            and chain.height > 0
            and (durable is None or durable.height < chain.height)
        )
        self._hold_store_height = chain.height  # S: we signed at most at S + 1 (intact store)
        self._peer_tip: int | None = None  # T: the highest of the peers' first reports
        self._tip_reporters: set[bytes] = set()  # the peers whose first report is counted
        self._learn_tip_until: float | None = None  # T is final once this trio time passes
        if self.signing_held:
            own = None  # an observer until `_maybe_resume_signing`
            log.warning(
                "%s: NOT SIGNING: %s while the store holds %d blocks; following the network "
                "until it decides a block past its tip (double-sign protection)",
                name,
                "no consensus record" if durable is None else f"record at {durable.height}",
                chain.height,
            )
        last_commit = None
        if chain.height >= 1:
            raw = chain.last_commit  # read when the chain opened: no SQLite here
            if raw:
                decoded = decode_message(raw)
                last_commit = decoded if isinstance(decoded, Commit) else None
        sign = identity.sign if identity is not None else _never_sign
        self.core = Core(
            self.chain_id,
            own,
            self.schedule.for_height,
            Hooks(sign=sign, verify=_verify, value_id=_value_id, validate_value=self._validate),
            config.core,
            durable=durable,
            start_height=chain.height + 1,
            last_commit=last_commit,
        )
        self._inbox_send, self._inbox = trio.open_memory_channel[Any](config.inbox_size)
        self._timers: dict[tuple[int, int, int], trio.CancelScope] = {}
        self._verdicts: dict[bytes, bool] = {}
        self._verdict_height = 0
        self._tx_arrived = trio.Event()
        self._waiting_value: tuple[int, int] | None = None
        self._sync = SyncState(config.sync_batch, config.sync_timeout_ms / 1000)
        self._nursery: trio.Nursery | None = None
        self._held: list[_Admission] = []
        self._held_txs = 0  # transactions in `_held` (bounded by max_held_admissions)
        self._gossip_out: list[bytes] = []  # admitted, not yet gossiped (bounded by the pool)
        self._gossip_since = 0.0  # when the oldest of them was admitted
        self._held_proofs: list[_Prove] = []
        self._hold_s = config.admission_hold_ms / 1000
        self._stopping = False
        self.evidence: list[Evidence] = []
        self.committed = trio.Event()  # set (and replaced) after every committed block
        self.last_block_time_ms = chain.last_time_ms
        # Test networks: header time advances by exactly this step (None: the proposer's clock).
        self.time_step_ms: int | None = block_time_step_ms(chain.genesis)
        self._last_commit_clock_ms = clock_ms()
        self.block_interval_ms = 0
        self.txs_committed = 0
        self.round_changes = 0
        self._last_round = (0, 0)

    # ---- public -----------------------------------------------------------------------

    @property
    def height(self) -> int:
        """The last committed height."""
        return self.chain.height

    @property
    def own_address(self) -> bytes | None:
        """Our validator address while we are in the set of the height consensus is at, else
        None (an observer now; a key added or removed by a validator-set change switches it
        at the height the change takes effect)."""
        return self.core.own_address if self.core.is_validator else None

    @property
    def catching_up(self) -> bool:
        return self._sync.target > self.chain.height + 1 or self._sync.syncing

    async def submit(self, raw: bytes, *, check_only: bool = False) -> AdmissionResult:
        """Mempool admission of a client's transaction (gossiped on success), or with
        `check_only` the same verdict with nothing stored. Admission runs in the driver task
        against the committed state: while a block is pending it waits (at most
        `admission_hold_ms`) for that block to be committed or abandoned."""
        (result,) = await self.submit_many((raw,), check_only=check_only)
        return result

    async def submit_many(
        self, raws: Sequence[bytes], *, check_only: bool = False
    ) -> list[AdmissionResult]:
        """`submit` for several transactions at once, admitted in this order (a JSON-RPC
        batch): one inbox item, one verdict per transaction."""
        request = _Admission(tuple(raws), None, check_only, trio.current_time())
        await self._inbox_send.send(request)
        assert request.done is not None  # a client's admission always has its event
        await request.done.wait()
        return request.results

    async def prove(self, keys: Sequence[bytes]) -> StateProofs:
        """Proofs of `keys` against the last committed state, served by the driver task as
        soon as no block is pending. `ProofUnavailable` if too many requests wait or the driver
        stops; the caller bounds the wait (a pending block may last a consensus round)."""
        request = _Prove(tuple(keys))
        if len(self._held_proofs) >= MAX_HELD_PROOFS:
            raise ProofUnavailable("too many proof requests waiting")
        try:
            await self._inbox_send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ProofUnavailable("the node is stopping") from None
        await request.done.wait()
        if request.result is None:
            raise ProofUnavailable("the node is stopping")
        return request.result

    def allowed_keys(self) -> frozenset[bytes]:
        """Public keys of the validators of the sets in force now and next (heights
        chain.height + 1 and + 2), for the peer allow-list: a validator added by a decided
        change is allowed as soon as the change is committed (two heights before it signs);
        one removed stops being allowed once its last height is committed."""
        return frozenset(self._allowed)

    def stop(self) -> None:
        """Graceful stop: the current item (a commit included) finishes, then run() returns."""
        self._stopping = True
        self._inbox_send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # A chain that activates a protocol version this code does not run: stop before it.
        self.chain.check_next_block_supported()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._pump)
            nursery.start_soon(self._ticker)
            task_status.started()
            await self._handle(self.core.start())
            self._broadcast_status()
            async for item in self._inbox:
                ready = await self._dispatch(item)
                if ready is not None:
                    await self._handle(ready)
                if self._held_proofs and self.chain.pending is None:
                    self._serve_proofs()
                if self._gossip_out and (
                    self._inbox.statistics().current_buffer_used == 0
                    or len(self._gossip_out) >= messages.MAX_GOSSIP_TXS
                    or trio.current_time() - self._gossip_since >= GOSSIP_DELAY_S
                ):
                    self._send_gossip()
                if self._stopping:
                    break
            for request in self._held_proofs:
                request.done.set()  # no result: ProofUnavailable for the caller
            nursery.cancel_scope.cancel()

    # ---- inputs -----------------------------------------------------------------------

    async def _pump(self) -> None:
        """Decode peer messages; serve sync and gossip here, the rest goes to the inbox."""
        async for peer, data in self.net.inbound:
            try:
                message = messages.decode(data)
            except MessageError as exc:
                self.net.report_misbehaviour(peer, f"bad node message: {exc}", BAD_MESSAGE_PENALTY)
                continue
            if isinstance(message, SyncRequest):
                await self._serve_sync(peer, message)
            elif isinstance(message, TxGossip):
                await self._post(_Gossiped(peer, message.txs))  # one inbox item per message
            else:
                await self._post(_FromPeer(peer, message))

    async def _post(self, item: object) -> None:
        try:
            await self._inbox_send.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # stopping

    async def _serve_sync(self, peer: bytes, request: SyncRequest) -> None:
        store = self.store.store
        max_bytes = self.config.sync_max_bytes
        # On the store's worker thread (one call at a time), never on the trio thread.
        response = await self.store.run(serve_sync_request, store, request, max_bytes)
        self.net.send_to(peer, messages.encode(response))

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.config.tick_ms / 1000)
            await self._post(_Tick())

    async def _dispatch(self, item: object) -> Ready | None:
        match item:
            case _FromPeer(peer, ConsensusMessage(message)):
                return self.core.step(message)
            case _FromPeer(peer, Status(height, _)):
                self._sync.note_peer_height(peer, height)
                if self.signing_held:
                    self._learn_peer_tip(peer, height)
                if height >= self.chain.height + 2:
                    self._sync.want(height)
                    self._request_sync()
                return None
            case _FromPeer(peer, SyncResponse() as response):
                return await self._apply_sync_response(peer, response)
            case _Fired(timeout):
                self._timers.pop((int(timeout.step), timeout.height, timeout.round), None)
                return self.core.on_timeout(timeout)
            case _ProposeNow(height, round_):
                return self._propose(height, round_)
            case _Tick():
                self._broadcast_status()
                self._request_sync()
                if self._held and trio.current_time() - self._held[0].since >= self._hold_s:
                    self._abandon()  # re-executed at the decision if it is decided
                    self._flush_admissions()
                return self._resume_signing_mid_height() if self.signing_held else None
            case _Admission():
                self._admit(item)
                return None
            case _Gossiped(peer, txs):
                # Copies of transactions already waiting or just committed (most gossip on a
                # full mesh) are dropped here, even while a block is pending.
                knows = self.mempool.knows
                fresh = [raw for raw in txs if not knows(raw)]
                if fresh:
                    self._admit(_Admission(fresh, peer, False, trio.current_time()))
                return None
            case _Prove():
                self._held_proofs.append(item)  # served after this item (run loop)
                return None
        raise TypeError(f"unexpected inbox item {item!r}")

    # ---- the Ready contract -----------------------------------------------------------

    async def _handle(self, ready: Ready) -> None:
        while True:
            if ready.persist is not None:
                await self.store.save_consensus_record(ready.persist.to_bytes())
                self._failpoint("after_persist")
            if ready.messages:
                self._failpoint("before_send")
                for out in ready.messages:
                    self._send(out.message, out.to)
                self._failpoint("after_send")
            for timeout in ready.timeouts:
                self._schedule(timeout)
            for evidence in ready.evidence:
                self._record_evidence(evidence)
            for decision in ready.decisions:
                await self._apply_decision(decision)
            if ready.sync_needed is not None:
                self._sync.want(ready.sync_needed)
                self._request_sync()
            self._note_round()
            if ready.decisions:
                ready = self.core.advance()
                continue
            if ready.need_value is not None:
                proposed = self._start_proposal(*ready.need_value)
                if proposed is not None:
                    ready = proposed
                    continue
            return

    def _send(self, message: Any, to: bytes | None) -> None:
        if self.byzantine is not None and self.byzantine.send(
            message, to, self.net, lambda m: messages.encode(ConsensusMessage(m))
        ):
            return
        data = messages.encode(ConsensusMessage(message))
        if to is None:
            self.net.broadcast(data)
            return
        key = self._keys.get(to)
        if key is not None:
            self.net.send_to(key, data)

    def _schedule(self, timeout: Timeout) -> None:
        key = (int(timeout.step), timeout.height, timeout.round)
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        scope = trio.CancelScope()
        self._timers[key] = scope
        assert self._nursery is not None
        self._nursery.start_soon(self._timer, scope, timeout)

    async def _timer(self, scope: trio.CancelScope, timeout: Timeout) -> None:
        with scope:
            await trio.sleep(timeout.duration_ms / 1000)
            await self._post(_Fired(timeout))

    def _cancel_timers_below(self, height: int) -> None:
        for key in [k for k in sorted(self._timers) if k[1] < height]:
            self._timers.pop(key).cancel()

    def _record_evidence(self, evidence: Evidence) -> None:
        if evidence in self.evidence:
            return
        log.warning(
            "%s: evidence of double signing by %s at height %d round %d",
            self.name,
            evidence.vote_a.validator.hex(),
            evidence.vote_a.height,
            evidence.vote_a.round,
        )
        self.evidence.append(evidence)
        del self.evidence[:-MAX_EVIDENCE_KEPT]

    def _evidence_item(self, evidence: Evidence) -> bytes | None:
        """The block item for `evidence`, or None when its height's set is no longer known."""
        vset = self.schedule.for_height(evidence.vote_a.height)
        member = None if vset is None else vset.get(evidence.vote_a.validator)
        if member is None:
            return None
        return encode_evidence_item(encode_message(evidence), member.pub_key)

    def _evidence_items(self) -> list[bytes]:
        items = (self._evidence_item(ev) for ev in self.evidence)
        return [item for item in items if item is not None]

    def _evidence_ok(self, raw: bytes) -> bool:
        """Is this block evidence item two conflicting votes, validly signed by the member of
        that height's validator set whose key it names?"""
        try:
            item = decode_evidence_item(raw)
            evidence = decode_message(item.evidence)
        except (LedgerError, WireError):
            return False
        if not isinstance(evidence, Evidence):
            return False
        vset = self.schedule.for_height(item.height)
        if vset is None and item.height <= self.chain.height:
            # Before this node's history ("Unknowable sets" above): all but membership.
            vset = ValidatorSet.of([Validator(item.validator, item.public_key, 1)])
        member = None if vset is None else vset.get(item.validator)
        if member is None or member.pub_key != item.public_key:
            return False
        return verify_evidence(vset, self.chain_id, evidence, _verify)

    def _forget_committed_evidence(self) -> None:
        state = self.chain.state
        kept = []
        for evidence in self.evidence:
            item = self._evidence_item(evidence)
            if item is not None and recorded(state, hash256(item)) is None:
                kept.append(evidence)
        self.evidence = kept

    # ---- admission ----------------------------------------------------------------------

    def _admit(self, request: _Admission) -> None:
        """Admit a request's transactions in order (or hold the request while a block is
        pending). Newly admitted transactions join the outgoing gossip (sent by the run loop,
        see `_send_gossip`)."""
        if self.chain.pending is not None:
            # The mempool checks against the committed state only; hold the request.
            count = len(request.raws)
            if self._held_txs + count > self.config.max_held_admissions:
                busy = AdmissionResult(
                    int(Code.MEMPOOL_FULL),
                    "node busy: too many waiting admissions",
                    b"",
                    CODESPACE_MEMPOOL,
                )
                request.finish([busy] * count)
                if self.metrics is not None:
                    self.metrics.mempool_refused("node_busy")
                return
            self._held.append(request)
            self._held_txs += count
            return
        view = AdmissionView(
            self.chain.state, self.chain.context(self.chain.height + 1, self._next_time_ms())
        )
        if request.check_only:
            request.finish([self.mempool.check(raw, view) for raw in request.raws])
            return
        admit = self.mempool.admit if request.peer is None else self.mempool.add_gossiped
        results = []
        admitted = False
        for raw in request.raws:
            result = admit(raw, view)
            results.append(result)
            if result.ok:
                # Newly admitted only: a transaction crosses each link once.
                if not self._gossip_out:
                    self._gossip_since = trio.current_time()
                self._gossip_out.append(raw)
                admitted = True
        request.finish(results)
        # has_ready scans the senders: once per waiting proposer, not once per admission.
        if admitted and not self._tx_arrived.is_set() and self.mempool.has_ready():
            self._tx_arrived.set()

    def _serve_proofs(self) -> None:
        # Only called with no pending block: the tree's root is the committed app_hash.
        held, self._held_proofs = self._held_proofs, []
        tree = self.chain.tree
        for request in held:
            proofs = tuple(tree.prove(key) for key in request.keys)
            request.result = StateProofs(self.chain.height, tree.root, proofs)
            request.done.set()

    def _flush_admissions(self) -> None:
        held, self._held = self._held, []
        self._held_txs = 0
        for request in held:
            self._admit(request)

    def _send_gossip(self) -> None:
        """Send the transactions admitted since the last call. The run loop calls it when the
        inbox is drained (or the list is long), so a busy node sends a few large `TxGossip`
        messages, not one message (one frame, one encryption, one inbox item at each peer)
        per transaction (nor does any wait longer than GOSSIP_DELAY_S, if an item is handled by
        then); an idle node still sends each at once."""
        txs, self._gossip_out = self._gossip_out, []
        self._gossip(txs)

    def _gossip(self, txs: list[bytes]) -> None:
        """Broadcast `txs` in `TxGossip` messages of at most MAX_GOSSIP_TXS transactions and
        about GOSSIP_CHUNK_BYTES each (a peer's message size limit bounds them)."""
        start, size = 0, 0
        for end, raw in enumerate(txs):
            if end > start and (
                end - start >= messages.MAX_GOSSIP_TXS or size + len(raw) > GOSSIP_CHUNK_BYTES
            ):
                self.net.broadcast(messages.encode(TxGossip(tuple(txs[start:end]))))
                start, size = end, 0
            size += len(raw)
        if start < len(txs):
            self.net.broadcast(messages.encode(TxGossip(tuple(txs[start:]))))

    # ---- proposals ----------------------------------------------------------------------

    def _start_proposal(self, height: int, round_: int) -> Ready | None:
        """Answer `need_value` at once when transactions wait; else let the waiter hold the
        answer until one arrives or the heartbeat passes (empty blocks only that often)."""
        self._waiting_value = (height, round_)
        if self.mempool.has_ready():
            # Under load, a block cut the moment one transaction is ready costs every
            # validator a whole round of votes, fsyncs and commit for few transactions; a
            # minimum interval since our last commit lets a block gather what arrives
            # meanwhile (round 0 only: a later round proposes at once).
            interval = self.config.min_block_interval_ms
            wait_ms = self._last_commit_clock_ms + interval - self.clock_ms()
            if interval and round_ == 0 and wait_ms > 0:
                assert self._nursery is not None
                self._nursery.start_soon(self._propose_later, height, round_, wait_ms)
                return None
            return self._propose(height, round_)
        self._tx_arrived = trio.Event()
        assert self._nursery is not None
        self._nursery.start_soon(self._wait_for_txs, height, round_, self._tx_arrived)
        return None

    async def _propose_later(self, height: int, round_: int, wait_ms: int) -> None:
        # `_propose` ignores it if the round has moved on meanwhile.
        await trio.sleep(wait_ms / 1000)
        await self._post(_ProposeNow(height, round_))

    async def _wait_for_txs(self, height: int, round_: int, arrived: trio.Event) -> None:
        # An empty block no sooner than one heartbeat after the previous block's time (with a
        # time step, chain time is not our clock's: one heartbeat after we committed it).
        last_ms = (
            self.chain.last_time_ms if self.time_step_ms is None else self._last_commit_clock_ms
        )
        wait_ms = last_ms + self.config.heartbeat_ms - self.clock_ms()
        with trio.move_on_after(max(0, wait_ms) / 1000):
            await arrived.wait()
        if arrived.is_set() and round_ == 0:
            # A transaction arrived: still no sooner than the minimum block interval.
            rest_ms = self._last_commit_clock_ms + self.config.min_block_interval_ms
            await trio.sleep(max(0, rest_ms - self.clock_ms()) / 1000)
        await self._post(_ProposeNow(height, round_))

    def _propose(self, height: int, round_: int) -> Ready | None:
        if self._waiting_value != (height, round_):
            return None
        self._waiting_value = None
        if (self.core.height, self.core.round) != (height, round_) or height != self.height + 1:
            return None  # the round moved on meanwhile; the core asks again if needed
        self._abandon()
        self._flush_admissions()
        txs = self.mempool.reap(self.config.max_block_txs, self.config.max_block_bytes)
        pending = self.chain.build_block(
            txs,
            self._next_time_ms(),
            self.own_address or b"\x00" * 20,
            verified=self.mempool.verified_ids,
            evidence=self._evidence_items(),
        )
        for receipt in pending.dropped:
            self.mempool.evict(receipt.tx_id)
        value = pending.block.encode()
        self._verdicts[hash256(value)] = True
        return self.core.propose_value(height, round_, value)

    # ---- validation -------------------------------------------------------------------

    def _validate(self, height: int, value: bytes) -> bool:
        if height != self._verdict_height:
            self._verdicts.clear()
            self._verdict_height = height
        # Keyed by the hash of the exact bytes. (The value id, the block hash, would do as
        # well now that txs_hash covers every transaction byte, signatures included.)
        digest = hash256(value)
        cached = self._verdicts.get(digest)
        if cached is not None:
            return cached
        try:
            block = decode_block(value)
        except LedgerError:
            verdict = False
        else:
            verdict = self._check_proposal(height, block)
        self._verdicts[digest] = verdict
        return verdict

    def _check_proposal(self, height: int, block: Block) -> bool:
        if height != self.chain.height + 1 or block.header.height != height:
            return False
        if self.time_step_ms is not None:
            if block.header.time_ms != self._next_time_ms():
                log.info("%s: proposal %d breaks the time step", self.name, height)
                return False
        elif block.header.time_ms > self.clock_ms() + self.config.max_future_ms:
            log.info("%s: proposal %d too far in the future", self.name, height)
            return False
        for raw in block.evidence:
            if not self._evidence_ok(raw):
                log.info("%s: proposal %d holds evidence we cannot verify", self.name, height)
                return False
        pending = self.chain.pending
        if pending is not None and pending.block == block:
            return True
        self._abandon()
        try:
            self.chain.execute_block(block, verified=self.mempool.verified_for(block.txs))
        except (InvalidBlock, LedgerError) as exc:
            log.info("%s: refused proposal for height %d: %s", self.name, height, exc)
            return False
        return True

    def _next_time_ms(self) -> int:
        """The time of the next block: the proposer's clock, or on a test network with a time
        step exactly the last block's time + the step (what every validator checks)."""
        if self.time_step_ms is None:
            return self.clock_ms()
        return self.chain.last_time_ms + self.time_step_ms

    def _abandon(self) -> None:
        if self.chain.pending is not None:
            self.chain.abandon()

    # ---- applying blocks --------------------------------------------------------------

    async def _apply_decision(self, decision: Decision) -> None:
        if decision.height != self.chain.height + 1:
            return  # already applied through sync
        pending = self.chain.pending
        if pending is None or pending.block.encode() != decision.value:
            self._abandon()
            # Decided by > 2/3: it is valid, so a failure here is a bug -- crash loudly.
            block = decode_block(decision.value)
            pending = self.chain.execute_block(block, verified=self.mempool.verified_for(block.txs))
        await self._commit(pending, encode_message(decision.commit))

    async def _commit(self, pending: PendingBlock, certificate: bytes) -> None:
        self._failpoint("before_apply")
        chain = self.chain
        # On the store's worker thread; trio.to_thread.run_sync is not abandoned on
        # cancellation, so a started commit always finishes (graceful shutdown).
        await self.store.run(chain.commit, pending, certificate)
        self._failpoint("after_apply")
        header = pending.header
        self.schedule.record(header.height, updates_decided_at(chain, header.height))
        # Kept back MAX_EVIDENCE_AGE heights: evidence that old is verified against them.
        self.schedule.prune(header.height - MAX_EVIDENCE_AGE)
        self._forget_committed_evidence()
        self._learn_keys(header.height + 2)
        self._last_commit_clock_ms = self.clock_ms()
        view = AdmissionView(chain.state, chain.context(header.height + 1, self._next_time_ms()))
        # The block's changes: only the senders whose account it wrote are rechecked.
        self.mempool.remove_committed(
            (r.tx_id for r in pending.receipts), view, changes=pending.changes
        )
        self._flush_admissions()
        self.block_interval_ms = header.time_ms - self.last_block_time_ms
        if self.metrics is not None:
            # Block 1 follows the genesis time, not a block: no interval to observe.
            interval_s = self.block_interval_ms / 1000 if header.height > 1 else None
            self.metrics.block_committed(header.height, len(pending.block.txs), interval_s)
            self.metrics.set_catching_up(self.catching_up)
            self.metrics.set_mempool(
                len(self.mempool), self.mempool.total_bytes, self.mempool.usage()
            )
            self.metrics.set_decode_cache(decode_cache_stats()[1])
            self.metrics.set_state_log(chain.store.state.state_slices, chain.store.state.held_back)
        self.last_block_time_ms = header.time_ms
        self.txs_committed += len(pending.block.txs)
        self._cancel_timers_below(header.height + 1)
        self._verdicts.clear()
        if self.events is not None:
            # Non-blocking: a slow subscriber is dropped, never waited for (node/events.py).
            self.events.publish(
                CommittedBlock.of(pending.block, pending.receipts), pending.changes.keys()
            )
        self.committed.set()
        self.committed = trio.Event()
        self._broadcast_status()
        if self.signing_held:
            self._maybe_resume_signing()
        self.chain.check_next_block_supported()  # UnsupportedProtocol stops the node here
        log.info(
            "%s: committed block %d (%d txs) %s",
            self.name,
            header.height,
            len(pending.block.txs),
            header.hash.hex()[:16],
        )

    def _learn_keys(self, height: int) -> None:
        # `_keys` (address -> key, for send_to) keeps every key seen; `_allowed` only the
        # sets of the next two heights (recomputed when the schedule learns `height`).
        vset = self.schedule.for_height(height)
        if vset is not None:
            for v in vset.validators:
                self._keys[v.address] = v.pub_key
        sets = (self.schedule.for_height(h) for h in (self.chain.height + 1, self.chain.height + 2))
        self._allowed = frozenset(v.pub_key for s in sets if s is not None for v in s.validators)

    # ---- sync -------------------------------------------------------------------------

    def _connected(self) -> tuple[bytes, ...]:
        return tuple(p.key for p in self.net.peers())

    def _request_sync(self) -> None:
        request = self._sync.next_request(self.chain.height, self._connected(), trio.current_time())
        if request is not None:
            peer, message = request
            log.info("%s: sync from %d asks %s", self.name, message.from_height, peer.hex()[:16])
            self.net.send_to(peer, messages.encode(message))

    async def _apply_sync_response(self, peer: bytes, response: SyncResponse) -> Ready | None:
        if not self._sync.accept_response(peer):
            return None  # unsolicited or late: ignore (not necessarily malicious)
        start = self.chain.height
        last_commit: Commit | None = None
        for synced in response.blocks:
            if self._stopping:
                break  # a long batch must not hold a graceful stop (SIGTERM) back
            height = self.chain.height + 1
            try:
                block, commit = check_synced_block(
                    synced,
                    height,
                    self.chain.last_block_hash,
                    self.schedule.for_height(height),
                    self.chain_id,
                    _verify,
                )
                self._abandon()
                try:
                    verified = self.mempool.verified_for(block.txs)
                    pending = self.chain.execute_block(block, verified=verified)
                except (InvalidBlock, LedgerError) as exc:
                    raise SyncError(f"block {height} does not execute: {exc}") from None
            except SyncError as exc:
                self._sync.failed(peer)
                self.net.report_misbehaviour(peer, str(exc), BAD_SYNC_PENALTY)
                break
            await self._commit(pending, synced.commit)
            last_commit = commit
        if self.chain.height > start:
            log.info("%s: synced to %d", self.name, self.chain.height)
            ready = self.core.on_synced(self.chain.height, last_commit)
            self._request_sync()
            return ready
        self._request_sync()
        return None

    # ---- misc -------------------------------------------------------------------------

    def _broadcast_status(self) -> None:
        status = Status(self.chain.height, self.chain.last_block_hash)
        self.net.broadcast(messages.encode(status))

    def _note_round(self) -> None:
        now = (self.core.height, self.core.round)
        if now != self._last_round:
            if now[0] == self._last_round[0] and now[1] > self._last_round[1]:
                self.round_changes += 1
            if self.metrics is not None:
                self.metrics.set_round(now[1])
            if now[0] != self._last_round[0]:
                self._note_membership()
        self._last_round = now

    # ---- signing hold ------------------------------------------------------------------

    def _learn_peer_tip(self, peer: bytes, height: int) -> None:
        """T is the highest of the peers' first reports heard during `2 * tick_ms` from the
        first Status we get (every peer broadcasts one per tick, so each connected peer is
        heard). A peer's first report after our start is at least its tip at our start, which
        bounds what we could have signed; its later reports do not raise T, or blocks decided
        inside the window would push the target past the tip, and a network that needs our
        signature to decide it would stall for good (chaos: a second validator stopped)."""
        now = trio.current_time()
        if self._learn_tip_until is None:
            self._learn_tip_until = now + 2 * self.config.tick_ms / 1000
        if now > self._learn_tip_until or peer in self._tip_reporters:
            return
        self._tip_reporters.add(peer)
        if self._peer_tip is None or height > self._peer_tip:
            self._peer_tip = height

    @property
    def signing_resumes_after(self) -> int | None:
        """The height whose commit ends the signing hold (max(S, T) + 1), once T is final."""
        if self._peer_tip is None or self._learn_tip_until is None:
            return None
        if trio.current_time() <= self._learn_tip_until:
            return None
        return max(self._hold_store_height, self._peer_tip) + 1

    def _hold_is_over(self) -> bool:
        target = self.signing_resumes_after
        return target is not None and self.chain.height >= target

    def _maybe_resume_signing(self) -> None:
        """Called after each commit: once a block at height >= max(S, T) + 1 is applied, sign
        again from the next height (the core enters it with our address)."""
        if not self._hold_is_over():
            return
        assert self._identity is not None
        self._end_hold()
        self.core.start_signing_as(self._identity.address)

    def _resume_signing_mid_height(self) -> Ready | None:
        """Called on each tick while held: the blocks past the target may all have been
        committed (synced) while T was still being learned, and a network that then stalls
        for want of our signature commits nothing more to end the hold. The core's height is
        past the target here, so it has signed nothing there: it joins the round (core)."""
        if not self._hold_is_over() or self.core.height <= self.chain.height:
            return None
        assert self._identity is not None
        self._end_hold()
        return self.core.join_round_as(self._identity.address)

    def _end_hold(self) -> None:
        self.signing_held = False
        log.warning(
            "%s: SIGNING AGAIN from height %d: the network decided block %d after this start "
            "(store was at %d, peers' tip %d)",
            self.name,
            self.chain.height + 1,
            self.chain.height,
            self._hold_store_height,
            self._peer_tip,
        )

    def _note_membership(self) -> None:
        # Logged once per switch; the core itself decides per height whether we sign.
        member = self.core.is_validator
        if self.signing_held:
            return  # not signing for another reason, logged at start and at the end of it
        if member != self._was_member and self._identity is not None:
            log.info(
                "%s: %s the validator set at height %d",
                self.name,
                "joins" if member else "is not in",
                self.core.height,
            )
        self._was_member = member

    def _failpoint(self, name: str) -> None:
        if name in self.failpoints:
            log.critical("%s: fail point %s hit: exiting", self.name, name)
            os._exit(FAILPOINT_EXIT_CODE)


def _never_sign(data: bytes) -> bytes:
    raise RuntimeError("an observer never signs")
