"""The simulator proper: replicas driving one consensus core each, over the fake network.

Theory of operation
-------------------
`Simulation(config).run()` builds N validators (plus one extra replica per Twin), starts a
core for each, and then pops events from the queue in (time, sequence) order until every
honest replica has applied the target height or the LIVE deadline passes. Events are:

- `Deliver`  -- a message arrives at a replica (`core.step`);
- `Fire`     -- a timeout the core asked for fires (`core.on_timeout`); timers belong to one
                *incarnation* of a replica, so a crash silently cancels them;
- `CrashAt` / `Restart` -- the fault plan's crashes;
- `SyncTick` -- a laggard's block-sync request is answered.

Each `Ready` the core returns is handled as the driver contract in docs/CONSENSUS.md says:
persist (the replica keeps `persist.to_bytes()`, its only durable consensus state) -> send ->
schedule timeouts -> record evidence -> apply decisions to the replica's block store ->
request sync -> answer `need_value` -> `advance()`. Crashes can strike between inputs
("idle") or inside that sequence ("before_send", "before_apply"); everything not persisted --
vote sets, buffered messages, timers, unsent messages, unapplied decisions -- is lost, and the
restarted core gets `DurableState.from_bytes(...)` of the last persist, `start_height` =
applied + 1 and the last applied commit.

Block sync is simulated, not networked: a `SyncTick` picks an honest replica that is up,
reachable and ahead, checks each of its blocks' certificate with `verify_commit`, stores
them, and calls `core.on_synced(height, commit)`.

The invariants are checked by `checker.Checker` as things happen; `run()` returns an
`Outcome` with every violation found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consensus.core import Core, CoreConfig, Hooks
from consensus.types import (
    Commit,
    Decision,
    DurableState,
    Outbound,
    Ready,
    Step,
    Timeout,
    Validator,
    ValidatorSet,
    Vote,
    verify_commit,
)

from .byzantine import BEHAVIOUR_CLASSES, Behaviour
from .checker import Checker, Violation
from .faults import CrashEpisode, FaultPlan
from .network import Network
from .scheduler import EventQueue, SimulationError
from .signing import SCHEMES, KeyPair
from .values import make_value, validate_value, value_id

CHAIN_ID = "khazana-sim"
POWER = 10  # equal voting power per validator
SYNC_LATENCY_MS = 10  # a block-sync request/response round trip
SYNC_RETRY_MS = 50  # no honest peer could help: ask again this much later
SYNC_MAX_RETRIES = 20  # then give up; the core asks again when it still lags


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int
    plan: FaultPlan
    validators: int = 4
    heights: int = 20
    scheme: str = "fake"  # "fake" (keyed BLAKE2b) or "ed25519"
    live_bound_ms: int | None = None  # None: derived from the core's timeouts, see live_bound
    max_events: int = 1_000_000


@dataclass(frozen=True, slots=True)
class Outcome:
    seed: int
    violations: tuple[Violation, ...]
    min_height: int  # lowest height every honest replica has applied
    max_height: int
    time_ms: int
    events: int
    messages: int
    messages_lost: int
    decisions: int
    evidence_reports: int
    double_votes_seen: int
    crashes: int  # crashes that struck (a failpoint crash strikes only if its moment came)
    live_deadline_ms: int

    def count(self, *kinds: str) -> int:
        return sum(1 for violation in self.violations if violation.kind in kinds)

    @property
    def safety_violations(self) -> int:
        return self.count("SAFE", "CERT")

    @property
    def liveness_failures(self) -> int:
        return self.count("LIVE")

    @property
    def evidence_failures(self) -> int:
        return self.count("EVIDENCE")


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    dst: int
    src: int
    message: object


@dataclass(frozen=True, slots=True)
class Fire:
    replica: int
    incarnation: int
    timeout: Timeout


@dataclass(frozen=True, slots=True)
class CrashAt:
    episode: CrashEpisode


@dataclass(frozen=True, slots=True)
class Restart:
    replica: int


@dataclass(frozen=True, slots=True)
class SyncTick:
    replica: int
    incarnation: int
    retries: int


class Replica:
    """One simulated node: its identity, its (volatile) core and its durable stores."""

    __slots__ = (
        "rid",
        "name",
        "keys",
        "honest",
        "behaviour",
        "core",
        "incarnation",
        "durable",
        "blocks",
        "applied",
        "armed",
        "syncing",
    )

    def __init__(
        self, rid: int, name: str, keys: KeyPair, honest: bool, behaviour: Behaviour
    ) -> None:
        self.rid = rid
        self.name = name
        self.keys = keys
        self.honest = honest
        self.behaviour = behaviour
        self.core: Core | None = None  # None while crashed
        self.incarnation = 0
        self.durable: bytes | None = None  # the last persisted DurableState, encoded
        self.blocks: dict[int, tuple[bytes, Commit]] = {}  # the block store: height -> block
        self.applied = 0
        self.armed: str | None = None  # a failpoint waiting to strike
        self.syncing = False


# The core's defaults are tuned for a WAN (3 s propose timeout). The simulated network's
# latency is 1..5 ms, so the simulator scales timeouts down by 10x: rounds still fail and
# back off under the plan's faults (delays reach 400 ms, partitions last up to 600 ms), and
# runs need fewer events. Ratios between the timeouts stay those of the defaults.
SIM_CORE_CONFIG = CoreConfig(
    timeout_propose_ms=300,
    timeout_propose_delta_ms=50,
    timeout_prevote_ms=100,
    timeout_prevote_delta_ms=50,
    timeout_precommit_ms=100,
    timeout_precommit_delta_ms=50,
    retransmit_ms=200,
)


def round_ms(config: CoreConfig, round_: int) -> int:
    """The longest a round can last: all three step timeouts expire one after the other."""
    return sum(
        config.timeout_ms(step, round_) for step in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT)
    )


def live_bound(config: CoreConfig, byzantine: int, heights: int) -> int:
    """How long after the heal every honest replica may take to reach the target height.

    After the heal the network is synchronous, so a round with an honest proposer decides
    once all honest replicas are in it. The rounds reached during the faults are at most at
    the backoff cap, so catching up costs at most (byzantine + 3) capped rounds (rounds
    converge through the "> 1/3 in a higher round" rule, then up to `byzantine` rounds have a
    byzantine proposer); each later height costs at most the rounds 0..byzantine. Block sync
    and the retransmit timer add at most a few of their periods.
    """
    capped = round_ms(config, config.max_backoff_rounds)
    per_height = sum(round_ms(config, r) for r in range(byzantine + 1))
    slack = 4 * (config.retransmit_ms + SYNC_LATENCY_MS + SYNC_RETRY_MS)
    return (byzantine + 3) * capped + heights * per_height + slack


class Simulation:
    def __init__(self, config: SimConfig, core_config: CoreConfig | None = None) -> None:
        plan = config.plan
        if config.validators < 1 or config.heights < 1:
            raise SimulationError("need at least one validator and one height")
        self.config = config
        self.core_config = core_config or SIM_CORE_CONFIG
        scheme = SCHEMES[config.scheme]()
        self._verify = scheme.verify
        keys = [scheme.keypair(config.seed, index) for index in range(config.validators)]
        self.valset = ValidatorSet.of(Validator(k.address, k.pub_key, POWER) for k in keys)

        roles = {role.validator: role.behaviour for role in plan.byzantine}
        self.replicas: list[Replica] = []
        for index, key in enumerate(keys):
            behaviour = roles.get(index, "honest")
            self.replicas.append(self._replica(index, f"v{index}", key, behaviour))
        for index in sorted(v for v, b in roles.items() if b == "twins"):
            rid = len(self.replicas)
            self.replicas.append(self._replica(rid, f"v{index}'", keys[index], "twins"))
        self._honest = [r for r in self.replicas if r.honest]
        named = [c.replica for c in plan.crashes]
        named += [m for p in plan.partitions for g in p.groups for m in g]
        if any(not 0 <= rid < len(self.replicas) for rid in named):
            raise SimulationError(f"the plan names replicas outside 0..{len(self.replicas) - 1}")
        self._reached = 0  # honest replicas that applied the target height

        self.queue = EventQueue()
        self.network = Network(plan, config.seed)
        byzantine_addresses = frozenset(keys[v].address for v in roles)
        self.checker = Checker(CHAIN_ID, self.valset, self._verify, byzantine_addresses)
        bound = config.live_bound_ms
        if bound is None:
            bound = live_bound(self.core_config, len(roles), config.heights)
        self.deadline = plan.heal_ms + bound
        self._evidence_reports = 0
        self._crashes = 0

    def _replica(self, rid: int, name: str, keys: KeyPair, behaviour: str) -> Replica:
        seed = self.config.seed * 1000 + rid
        return Replica(
            rid,
            name,
            keys,
            behaviour == "honest",
            BEHAVIOUR_CLASSES[behaviour](CHAIN_ID, keys.address, keys.sign, seed),
        )

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        for episode in self.config.plan.crashes:
            self.queue.push(episode.at_ms, CrashAt(episode))
            self.queue.push(episode.restart_ms, Restart(episode.replica))
        for replica in self.replicas:
            self._boot(replica)
        events = 0
        while len(self.queue) and self._reached < len(self._honest):
            next_time = self.queue.peek_time()
            if next_time is not None and next_time > self.deadline:
                break
            if events >= self.config.max_events:
                # A livelock that keeps the queue busy (a message storm) is a finding about
                # the core, reported with the seed like any other stall.
                self.checker.violations.append(
                    Violation("LIVE", self.queue.now, f"event budget {events} exhausted")
                )
                break
            events += 1
            self._dispatch(self.queue.pop())
        now = max(self.queue.now, self.config.plan.heal_ms)
        for replica in self._honest:
            if replica.applied < self.config.heights:
                self.checker.violations.append(
                    Violation(
                        "LIVE",
                        now,
                        f"{replica.name} applied height {replica.applied} of "
                        f"{self.config.heights} by {now} ms (heal at "
                        f"{self.config.plan.heal_ms} ms, deadline {self.deadline} ms)",
                    )
                )
        self.checker.check_evidence_reached(now)
        heights = [r.applied for r in self._honest] or [0]
        return Outcome(
            seed=self.config.seed,
            violations=tuple(self.checker.violations),
            min_height=min(heights),
            max_height=max(heights),
            time_ms=self.queue.now,
            events=events,
            messages=self.network.sent,
            messages_lost=self.network.lost,
            decisions=self.checker.decisions_checked,
            evidence_reports=self._evidence_reports,
            double_votes_seen=self.checker.double_votes_seen,
            crashes=self._crashes,
            live_deadline_ms=self.deadline,
        )

    def _dispatch(self, event: object) -> None:
        if isinstance(event, Deliver):
            replica = self.replicas[event.dst]
            if replica.core is None:
                return  # a crashed replica hears nothing
            message = event.message
            if replica.honest and isinstance(message, Vote):
                self.checker.on_vote_delivered(
                    replica.name, replica.incarnation, replica.core.height, message
                )
            self._drive(replica, lambda core: core.step(message))
        elif isinstance(event, Fire):
            replica = self.replicas[event.replica]
            if replica.core is not None and replica.incarnation == event.incarnation:
                self._drive(replica, lambda core: core.on_timeout(event.timeout))
        elif isinstance(event, SyncTick):
            self._sync(event)
        elif isinstance(event, CrashAt):
            replica = self.replicas[event.episode.replica]
            if replica.core is not None:
                if event.episode.failpoint == "idle":
                    self._crash(replica)
                else:
                    replica.armed = event.episode.failpoint
        elif isinstance(event, Restart):
            replica = self.replicas[event.replica]
            replica.armed = None  # a failpoint that never struck expires
            if replica.core is None:
                self._boot(replica)
        else:
            raise SimulationError(f"unknown event {event!r}")

    # -- one replica -----------------------------------------------------------------------

    def _boot(self, replica: Replica) -> None:
        durable = DurableState.from_bytes(replica.durable) if replica.durable else None
        last = replica.blocks.get(replica.applied)
        replica.core = Core(
            CHAIN_ID,
            replica.keys.address,
            self._validator_set,
            Hooks(
                sign=replica.keys.sign,
                verify=self._verify,
                value_id=value_id,
                validate_value=validate_value,
            ),
            self.core_config,
            durable=durable,
            start_height=replica.applied + 1,
            last_commit=last[1] if last else None,
        )
        self._drive(replica, lambda core: core.start())

    def _validator_set(self, height: int) -> ValidatorSet:
        return self.valset

    def _crash(self, replica: Replica) -> None:
        self._crashes += 1
        replica.core = None
        replica.incarnation += 1
        replica.armed = None
        replica.syncing = False

    def _drive(self, replica: Replica, call: Callable[[Core], Ready]) -> None:
        """Call the core, then handle each Ready until the core has nothing more to say."""
        assert replica.core is not None
        ready: Ready | None = call(replica.core)
        while ready is not None:
            ready = self._handle(replica, ready)

    def _handle(self, replica: Replica, ready: Ready) -> Ready | None:
        """The driver contract for one Ready; returns the Ready of the follow-up call, if any."""
        now = self.queue.now
        if ready.persist is not None:
            replica.durable = ready.persist.to_bytes()
        if replica.armed == "before_send" and ready.messages:
            self._crash(replica)  # persisted, but the messages never leave
            return None
        for outbound in ready.messages:
            self._send(replica, outbound)
        for timeout in ready.timeouts:
            self.queue.push_after(
                timeout.duration_ms, Fire(replica.rid, replica.incarnation, timeout)
            )
        for evidence in ready.evidence:
            self._evidence_reports += 1
            self.checker.on_evidence(now, replica.name, evidence)
        if ready.decisions and replica.armed == "before_apply":
            self._crash(replica)  # sent its precommit, never stored the block
            return None
        for decision in ready.decisions:
            self.checker.on_decision(now, replica.name, replica.honest, decision)
            self._apply(replica, decision)
        if ready.sync_needed is not None and not replica.syncing:
            replica.syncing = True
            self.queue.push_after(SYNC_LATENCY_MS, SyncTick(replica.rid, replica.incarnation, 0))
        core = replica.core
        assert core is not None
        if ready.need_value is not None:
            height, round_ = ready.need_value
            return core.propose_value(
                height, round_, make_value(height, round_, replica.keys.address)
            )
        if ready.decisions:
            return core.advance()
        return None

    def _apply(self, replica: Replica, decision: Decision) -> None:
        height = decision.height
        stored = replica.blocks.get(height)
        if stored is not None:
            if value_id(stored[0]) != decision.value_id:
                self.checker.violations.append(
                    Violation(
                        "SAFE",
                        self.queue.now,
                        f"{replica.name} decided height {height} twice, differently",
                    )
                )
            return
        if height != replica.applied + 1:
            self.checker.violations.append(
                Violation(
                    "SAFE",
                    self.queue.now,
                    f"{replica.name} decided height {height} with {replica.applied} applied",
                )
            )
            return
        self._store(replica, height, decision.value, decision.commit)

    def _store(self, replica: Replica, height: int, value: bytes, commit: Commit) -> None:
        replica.blocks[height] = (value, commit)
        replica.applied = height
        if replica.honest and height == self.config.heights:
            self._reached += 1

    def _send(self, replica: Replica, outbound: Outbound) -> None:
        if outbound.to is None:
            peers = [r.rid for r in self.replicas if r.rid != replica.rid]
        else:
            peers = [
                r.rid
                for r in self.replicas
                if r.rid != replica.rid and r.keys.address == outbound.to
            ]
        now = self.queue.now
        for message, destinations in replica.behaviour.outgoing(outbound.message, peers):
            for dst in destinations:
                for delay in self.network.route(now, replica.rid, dst):
                    self.queue.push(now + delay, Deliver(dst, replica.rid, message))

    # -- block sync ------------------------------------------------------------------------

    def _sync(self, tick: SyncTick) -> None:
        replica = self.replicas[tick.replica]
        if replica.core is None or replica.incarnation != tick.incarnation:
            return
        now = self.queue.now
        sources = [
            r
            for r in self._honest
            if r is not replica
            and r.core is not None
            and r.applied > replica.applied
            and self.network.reachable(now, replica.rid, r.rid)
        ]
        if not sources:
            if tick.retries < SYNC_MAX_RETRIES:
                self.queue.push_after(
                    SYNC_RETRY_MS, SyncTick(replica.rid, replica.incarnation, tick.retries + 1)
                )
            else:
                replica.syncing = False
            return
        source = max(sources, key=lambda r: (r.applied, -r.rid))
        replica.syncing = False
        last_commit: Commit | None = None
        for height in range(replica.applied + 1, source.applied + 1):
            value, commit = source.blocks[height]
            if not self._block_verifies(height, value, commit):
                self.checker.violations.append(
                    Violation("CERT", now, f"{source.name} served a bad block {height}")
                )
                break
            if replica.honest:
                self.checker.on_honest_block(now, replica.name, height, commit.value_id)
            self._store(replica, height, value, commit)
            last_commit = commit
        if last_commit is not None:
            height = replica.applied
            self._drive(replica, lambda core: core.on_synced(height, last_commit))

    def _block_verifies(self, height: int, value: bytes, commit: Commit) -> bool:
        return (
            commit.height == height
            and commit.value_id == value_id(value)
            and validate_value(height, value)
            and verify_commit(self.valset, CHAIN_ID, commit, self._verify)
        )
