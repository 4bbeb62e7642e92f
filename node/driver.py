"""The driver: the one trio task that owns the consensus `Core` and the ledger `Chain`, and
its `Ready` loop.

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
3. schedule `ready.timeouts` (node/timeouts.py);
4. record `ready.evidence` (kept for the next block: node/evidence_pool.py);
5. apply `ready.decisions`: commit the pending block if it is the decided one, else abandon
   it and execute the decided value first; `Chain.commit` runs on the worker thread
   (synchronous=FULL); then the validator schedule and the mempool learn of the block;
6. sync if `ready.sync_needed` (block sync, node/sync.py);
7. propose if `ready.need_value`, when node/proposal_timer.py says it is time;
8. `advance()` after decisions, else wait for the next input.

The driver's helpers, each in a module of its own, own the rest: the check of proposals
(node/proposal_check.py), the validator sets and keys (node/validator_set.py), the evidence
pool (node/evidence_pool.py), the signing hold after a lost record (node/signing_hold.py),
admission batching and gossip (node/admission_batch.py), proposal timing and block time
(node/proposal_timer.py), the consensus timers (node/timeouts.py) and state proofs
(node/state_proofs.py). They are called from this task only.

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
are a member at the core's height, else None. A node held from signing (node/signing_hold.py)
starts with no address in its core.

Fail points (`KHAZANA_FAILPOINTS=after_persist,before_send,...`) end the process with
`os._exit(137)` at that step, for the crash tests; they are off unless the variable is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from consensus.core import Core, Hooks
from consensus.types import Commit, Decision, DurableState, Ready, Timeout
from consensus.wire import decode_message, encode_message
from ledger.block import decode_block
from ledger.chain import PendingBlock
from ledger.codes import InvalidBlock, LedgerError
from ledger.crypto import hash256, verify_signature
from ledger.tx import decode_cache_stats
from node import messages
from node.admission_batch import Admission, AdmissionBatcher
from node.driver_parts import DriverConfig, DriverOptions, DriverParts, PeerNet
from node.events import CommittedBlock
from node.evidence_pool import EvidencePool
from node.mempool import AdmissionResult, AdmissionView
from node.messages import (
    ConsensusMessage,
    MessageError,
    Status,
    SyncRequest,
    SyncResponse,
    TxGossip,
)
from node.proposal_check import ProposalCheck, abandon_pending
from node.proposal_timer import BlockClock, ProposalTimer
from node.signing_hold import SigningHold
from node.state_proofs import HeldProofs, ProofRequest, ProofUnavailable, StateProofs
from node.sync import SyncError, SyncState, check_synced_block, serve_sync_request
from node.timeouts import ConsensusTimers
from node.validator_set import ValidatorSets

# Re-exported: what callers of the driver name with it.
__all__ = [
    "FAILPOINTS",
    "Driver",
    "DriverConfig",
    "DriverOptions",
    "DriverParts",
    "PeerNet",
    "ProofUnavailable",
    "StateProofs",
    "failpoints_from_env",
]

log = logging.getLogger(__name__)

FAILPOINTS = ("after_persist", "before_send", "after_send", "before_apply", "after_apply")
FAILPOINT_EXIT_CODE = 137
BAD_MESSAGE_PENALTY = 25
BAD_SYNC_PENALTY = 50


def failpoints_from_env(environ: dict[str, str] | None = None) -> frozenset[str]:
    """The fail points named in `KHAZANA_FAILPOINTS` (comma-separated); unknown names refused."""
    text = (os.environ if environ is None else environ).get("KHAZANA_FAILPOINTS", "")
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = names - set(FAILPOINTS)
    if unknown:
        raise ValueError(f"unknown fail points {sorted(unknown)}; known: {FAILPOINTS}")
    return names


def _failpoint(failpoints: frozenset[str], name: str, node: str) -> None:
    if name in failpoints:
        log.critical("%s: fail point %s hit: exiting", node, name)
        os._exit(FAILPOINT_EXIT_CODE)


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
        parts: DriverParts,
        config: DriverConfig,
        *,
        identity: Any | None,  # node's KeyPair: signs while in the set; None = never signs
        durable: DurableState | None = None,
        options: DriverOptions | None = None,  # None: DriverOptions() (named "node")
    ) -> None:
        options = DriverOptions() if options is None else options
        chain = parts.chain
        self.chain = chain
        self.store = parts.store
        self.net = parts.net
        self.mempool = parts.mempool
        self.clock_ms = parts.clock_ms
        self.config = config
        self.name = name = options.name
        self.failpoints = options.failpoints
        self.metrics = options.metrics
        self.events = options.events
        self.byzantine = options.byzantine
        self.validators = ValidatorSets(chain)
        self.schedule = self.validators.schedule
        self.evidence_pool = EvidencePool(chain, self.schedule, name)
        self.block_clock = BlockClock(chain, parts.clock_ms)
        self.check = ProposalCheck(
            chain, self.mempool, self.evidence_pool, self.block_clock, config.max_future_ms, name
        )
        # The core always knows our address and key; whether we sign at a height is its
        # per-height membership test (see "Membership" in the module docstring).
        self._identity = identity
        own = None if identity is None else identity.address
        self._was_member = False  # membership at the core's height, for the switch log
        # Double-sign protection after a lost record (node/signing_hold.py).
        self.hold = SigningHold(identity, chain.height, durable, config.tick_ms, name)
        if self.hold.held:
            own = None  # an observer until the hold ends
        last_commit = None
        if chain.height >= 1:
            raw = chain.last_commit  # read when the chain opened: no SQLite here
            if raw:
                decoded = decode_message(raw)
                last_commit = decoded if isinstance(decoded, Commit) else None
        sign = identity.sign if identity is not None else _never_sign
        self.core = Core(
            chain.chain_id,
            own,
            self.schedule.for_height,
            Hooks(
                sign=sign, verify=_verify, value_id=_value_id, validate_value=self.check.validate
            ),
            config.core,
            durable=durable,
            start_height=chain.height + 1,
            last_commit=last_commit,
        )
        self._inbox_send, self._inbox = trio.open_memory_channel[Any](config.inbox_size)
        self._timers = ConsensusTimers(lambda timeout: self._post(_Fired(timeout)))
        self.proposals = ProposalTimer(
            chain,
            self.mempool,
            config,
            self.block_clock,
            lambda height, round_: self._post(_ProposeNow(height, round_)),
        )
        self.admissions = AdmissionBatcher(
            chain, self.mempool, self.net, config, self.proposals, self.metrics
        )
        self._sync = SyncState(config.sync_batch, config.sync_timeout_ms / 1000)
        self._nursery: trio.Nursery | None = None
        self._proofs = HeldProofs()
        self._stopping = False
        self.committed = trio.Event()  # set (and replaced) after every committed block
        self.last_block_time_ms = chain.last_time_ms
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
        request = Admission(tuple(raws), None, check_only, trio.current_time())
        await self._inbox_send.send(request)
        assert request.done is not None  # a client's admission always has its event
        await request.done.wait()
        return request.results

    async def prove(self, keys: Sequence[bytes]) -> StateProofs:
        """Proofs of `keys` against the last committed state, served by the driver task as
        soon as no block is pending. `ProofUnavailable` if too many requests wait or the driver
        stops; the caller bounds the wait (a pending block may last a consensus round)."""
        request = ProofRequest(tuple(keys))
        if self._proofs.full():
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
        """The peer allow-list's dynamic part (`ValidatorSets.allowed_keys`)."""
        return self.validators.allowed_keys()

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
                if self._proofs.requests and self.chain.pending is None:
                    self._proofs.serve(self.chain)
                if self.admissions.gossip_due(self._inbox.statistics().current_buffer_used == 0):
                    self.admissions.send_gossip()
                if self._stopping:
                    break
            self._proofs.release()
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
                if self.hold.held:
                    self.hold.learn_peer_tip(peer, height)
                if height >= self.chain.height + 2:
                    self._sync.want(height)
                    self._request_sync()
                return None
            case _FromPeer(peer, SyncResponse() as response):
                return await self._apply_sync_response(peer, response)
            case _Fired(timeout):
                self._timers.fired(timeout)
                return self.core.on_timeout(timeout)
            case _ProposeNow(height, round_):
                return self._propose(height, round_)
            case _Tick():
                self._broadcast_status()
                self._request_sync()
                if self.admissions.hold_expired():
                    abandon_pending(self.chain)  # re-executed at the decision if it is decided
                    self.admissions.flush()
                if self.hold.held:
                    return self.hold.resume_mid_height(self.core, self.chain.height)
                return None
            case Admission():
                self.admissions.admit(item)
                return None
            case _Gossiped(peer, txs):
                # Copies of transactions already waiting or just committed (most gossip on a
                # full mesh) are dropped here, even while a block is pending.
                knows = self.mempool.knows
                fresh = [raw for raw in txs if not knows(raw)]
                if fresh:
                    self.admissions.admit(Admission(fresh, peer, False, trio.current_time()))
                return None
            case ProofRequest():
                self._proofs.requests.append(item)  # served after this item (run loop)
                return None
        raise TypeError(f"unexpected inbox item {item!r}")

    # ---- the Ready contract -----------------------------------------------------------

    async def _handle(self, ready: Ready) -> None:
        while True:
            if ready.persist is not None:
                await self.store.save_consensus_record(ready.persist.to_bytes())
                _failpoint(self.failpoints, "after_persist", self.name)
            if ready.messages:
                _failpoint(self.failpoints, "before_send", self.name)
                for out in ready.messages:
                    self._send(out.message, out.to)
                _failpoint(self.failpoints, "after_send", self.name)
            for timeout in ready.timeouts:
                assert self._nursery is not None
                self._timers.schedule(timeout, self._nursery)
            for evidence in ready.evidence:
                self.evidence_pool.record(evidence)
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
                # Answered at once when transactions wait; else the proposal timer holds the
                # answer until one arrives or the heartbeat passes (empty blocks that often).
                assert self._nursery is not None
                if self.proposals.start(*ready.need_value, self._nursery):
                    proposed = self._propose(*ready.need_value)
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
        key = self.validators.key_of(to)
        if key is not None:
            self.net.send_to(key, data)

    # ---- proposals ----------------------------------------------------------------------

    def _propose(self, height: int, round_: int) -> Ready | None:
        if not self.proposals.take(height, round_):
            return None
        if (self.core.height, self.core.round) != (height, round_) or height != self.height + 1:
            return None  # the round moved on meanwhile; the core asks again if needed
        abandon_pending(self.chain)
        self.admissions.flush()
        txs = self.mempool.reap(self.config.max_block_txs, self.config.max_block_bytes)
        pending = self.chain.build_block(
            txs,
            self.block_clock.next_time_ms(),
            self.own_address or b"\x00" * 20,
            verified=self.mempool.verified_ids,
            evidence=self.evidence_pool.items(),
        )
        for receipt in pending.dropped:
            self.mempool.evict(receipt.tx_id)
        value = pending.block.encode()
        self.check.remember(value)
        return self.core.propose_value(height, round_, value)

    # ---- applying blocks --------------------------------------------------------------

    async def _apply_decision(self, decision: Decision) -> None:
        if decision.height != self.chain.height + 1:
            return  # already applied through sync
        pending = self.chain.pending
        if pending is None or pending.block.encode() != decision.value:
            abandon_pending(self.chain)
            # Decided by > 2/3: it is valid, so a failure here is a bug -- crash loudly.
            block = decode_block(decision.value)
            pending = self.chain.execute_block(block, verified=self.mempool.verified_for(block.txs))
        await self._commit(pending, encode_message(decision.commit))

    async def _commit(self, pending: PendingBlock, certificate: bytes) -> None:
        _failpoint(self.failpoints, "before_apply", self.name)
        chain = self.chain
        # On the store's worker thread; trio.to_thread.run_sync is not abandoned on
        # cancellation, so a started commit always finishes (graceful shutdown).
        await self.store.run(chain.commit, pending, certificate)
        _failpoint(self.failpoints, "after_apply", self.name)
        header = pending.header
        self.validators.record_commit(header.height)
        self.evidence_pool.forget_committed()
        self.validators.learn_keys(header.height + 2)
        self.proposals.note_commit()
        view = AdmissionView(
            chain.state, chain.context(header.height + 1, self.block_clock.next_time_ms())
        )
        # The block's changes: only the senders whose account it wrote are rechecked.
        self.mempool.remove_committed(
            (r.tx_id for r in pending.receipts), view, changes=pending.changes
        )
        self.admissions.flush()
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
        self._timers.cancel_below(header.height + 1)
        self.check.clear()
        if self.events is not None:
            # Non-blocking: a slow subscriber is dropped, never waited for (node/events.py).
            self.events.publish(
                CommittedBlock.of(pending.block, pending.receipts), pending.changes.keys()
            )
        self.committed.set()
        self.committed = trio.Event()
        self._broadcast_status()
        if self.hold.held:
            self.hold.resume_after_commit(self.core, self.chain.height)
        self.chain.check_next_block_supported()  # UnsupportedProtocol stops the node here
        log.info(
            "%s: committed block %d (%d txs) %s",
            self.name,
            header.height,
            len(pending.block.txs),
            header.hash.hex()[:16],
        )

    # ---- sync -------------------------------------------------------------------------

    def _request_sync(self) -> None:
        connected = tuple(p.key for p in self.net.peers())
        request = self._sync.next_request(self.chain.height, connected, trio.current_time())
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
                    self.chain.chain_id,
                    _verify,
                )
                abandon_pending(self.chain)
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
                # Membership logged once per switch; the core decides per height whether we
                # sign. A held node is not signing for another reason, logged by the hold.
                member = self.core.is_validator
                if not self.hold.held:
                    if member != self._was_member and self._identity is not None:
                        log.info(
                            "%s: %s the validator set at height %d",
                            self.name,
                            "joins" if member else "is not in",
                            self.core.height,
                        )
                    self._was_member = member
        self._last_round = now


def _never_sign(data: bytes) -> bytes:
    raise RuntimeError("an observer never signs")
