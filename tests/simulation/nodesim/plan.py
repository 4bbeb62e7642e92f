"""The fault plan of one whole-node run: plain data drawn from the seed before the run starts.

A `NodePlan` fixes everything the simulator injects -- per-link latencies, drops, duplicates
and delay spikes, partition episodes, crash-and-restart episodes (and where in a node's store
calls the crash strikes), clock skews, byzantine validators and what they do -- so a run is a
function of (seed, plan) and a failing seed replays exactly. Every fault stops at `heal_ms`:
from then on links have only their base latency, nobody is partitioned and every crashed node
is back up; the LIVE check measures from there.

Probabilities are integers per mille and times integer milliseconds: no floats decide a run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..faults import PartitionEpisode

# Where a crash strikes (see `replica.SimDisk`):
# - "idle":         at `at_ms`, wherever the node's tasks are waiting;
# - "before_store": at the node's first store call after `at_ms`, before it writes anything
#                   (a consensus record or a block that never reached the disk);
# - "after_store":  at that call, right after the write: durable, but nothing after it ran
#                   (votes persisted but never sent, a block committed but never announced).
CRASH_POINTS = ("idle", "before_store", "after_store")

# What a byzantine validator does. The first two are node/byzantine.py's behaviours (the
# driver signs a conflicting twin of each vote / proposal); "twins" runs a second real node
# with the same key and its own store, which signs whatever its own view makes it sign.
BYZANTINE_BEHAVIOURS = ("double-vote", "double-propose", "double-both", "twins")

MAX_PARTITIONS = 3
MAX_CRASHES = 3


@dataclass(frozen=True, slots=True)
class NodeCrash:
    """Replica `replica` crashes at `at_ms` (at `point`) and restarts `down_ms` later."""

    replica: int
    at_ms: int
    down_ms: int
    point: str


@dataclass(frozen=True, slots=True)
class ByzantineNode:
    validator: int
    behaviour: str


@dataclass(frozen=True, slots=True)
class NodePlan:
    heal_ms: int
    latency_ms: tuple[tuple[int, ...], ...]  # base latency of link [src][dst], 1..30 ms
    drop_permille: int = 0
    duplicate_permille: int = 0
    delay_permille: int = 0
    delay_max_ms: int = 0
    partitions: tuple[PartitionEpisode, ...] = ()
    crashes: tuple[NodeCrash, ...] = ()
    byzantine: tuple[ByzantineNode, ...] = ()
    skew_ms: tuple[int, ...] = ()  # per replica: its clock runs this far ahead (or behind)

    @property
    def twins(self) -> tuple[int, ...]:
        """Validators that run a second copy (replica ids validators + j, in this order)."""
        return tuple(b.validator for b in self.byzantine if b.behaviour == "twins")

    def replicas(self, validators: int) -> int:
        return validators + len(self.twins)


def _links(rng: random.Random, replicas: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(rng.randint(1, 30) for _ in range(replicas)) for _ in range(replicas))


def draw_node_plan(
    seed: int,
    validators: int,
    byzantine: int,
    faults: bool = True,
    behaviours: Sequence[str] = BYZANTINE_BEHAVIOURS,
) -> NodePlan:
    """The plan of `seed`: `byzantine` (< 1/3 of the power) misbehaving validators, each with
    a behaviour drawn from `behaviours`, and, with `faults`, partitions, crashes, drops,
    duplicates, delay spikes and clock skew."""
    rng = random.Random(f"node-plan/{seed}")
    byz_ids = sorted(rng.sample(range(validators), byzantine))
    roles = tuple(ByzantineNode(v, behaviours[rng.randrange(len(behaviours))]) for v in byz_ids)
    replicas = validators + sum(1 for r in roles if r.behaviour == "twins")
    latency = _links(rng, replicas)
    if not faults:
        return NodePlan(heal_ms=0, latency_ms=latency, byzantine=roles)
    heal_ms = rng.randint(1000, 6000)
    partitions = []
    for _ in range(rng.randint(0, MAX_PARTITIONS)):
        start = rng.randrange(heal_ms)
        end = min(heal_ms, start + rng.randint(100, 2500))
        order = list(range(replicas))
        rng.shuffle(order)
        cut = rng.randint(1, replicas - 1)
        groups = (tuple(sorted(order[:cut])), tuple(sorted(order[cut:])))
        partitions.append(PartitionEpisode(start, end, groups, one_way=rng.randrange(4) == 0))
    crashes = []
    for _ in range(rng.randint(0, MAX_CRASHES)):
        at = rng.randrange(heal_ms)
        down = rng.randint(1, max(1, heal_ms - at))
        point = CRASH_POINTS[rng.randrange(len(CRASH_POINTS))]
        crashes.append(NodeCrash(rng.randrange(replicas), at, down, point))
    return NodePlan(
        heal_ms=heal_ms,
        latency_ms=latency,
        drop_permille=rng.choice((0, rng.randint(5, 200))),
        duplicate_permille=rng.choice((0, rng.randint(5, 100))),
        delay_permille=rng.choice((0, rng.randint(20, 300))),
        delay_max_ms=rng.randint(20, 600),
        partitions=tuple(sorted(partitions, key=lambda p: (p.start_ms, p.end_ms))),
        crashes=tuple(sorted(crashes, key=lambda c: (c.at_ms, c.replica))),
        byzantine=roles,
        skew_ms=tuple(rng.randint(-300, 300) for _ in range(replicas)),
    )


def fork_node_plan(seed: int, validators: int, byzantine: int) -> NodePlan:
    """The negative control: `byzantine` validators (>= 1/3 of the power) each run as Twins,
    and a partition until `heal_ms` puts one copy of every twin on each side and splits the
    honest validators in two halves. When the byzantine power is above 1/3 (the default 2 of
    4), each side holds more than 2/3 of the power and decides on its own: a fork the checker
    must report. (At exactly 1/3, n = 3f, quorums of 2f + 1 still intersect in an honest
    validator: the twins cannot fork the chain that way.)"""
    rng = random.Random(f"node-fork/{seed}")
    honest = list(range(byzantine, validators))
    rng.shuffle(honest)
    left, right = honest[: len(honest) // 2], honest[len(honest) // 2 :]
    heal_ms = rng.randint(2000, 4000)
    left_side = tuple(sorted([*range(byzantine), *left]))
    right_side = tuple(sorted([validators + j for j in range(byzantine)] + right))
    replicas = validators + byzantine
    return NodePlan(
        heal_ms=heal_ms,
        latency_ms=_links(rng, replicas),
        partitions=(PartitionEpisode(0, heal_ms, (left_side, right_side)),),
        byzantine=tuple(ByzantineNode(v, "twins") for v in range(byzantine)),
    )


def node_plan_to_json(plan: NodePlan) -> str:
    return json.dumps(asdict(plan), separators=(",", ":"), sort_keys=True)


def node_plan_from_json(text: str) -> NodePlan:
    raw = json.loads(text)
    return NodePlan(
        heal_ms=raw["heal_ms"],
        latency_ms=tuple(tuple(row) for row in raw["latency_ms"]),
        drop_permille=raw["drop_permille"],
        duplicate_permille=raw["duplicate_permille"],
        delay_permille=raw["delay_permille"],
        delay_max_ms=raw["delay_max_ms"],
        partitions=tuple(
            PartitionEpisode(
                p["start_ms"], p["end_ms"], tuple(map(tuple, p["groups"])), p["one_way"]
            )
            for p in raw["partitions"]
        ),
        crashes=tuple(NodeCrash(**c) for c in raw["crashes"]),
        byzantine=tuple(ByzantineNode(**b) for b in raw["byzantine"]),
        skew_ms=tuple(raw["skew_ms"]),
    )
