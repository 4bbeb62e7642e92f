"""Fault plans: which faults a run injects, when, and how strongly.

A `FaultPlan` is plain data, fixed before the run starts, so a run is a pure function of
(seed, plan) and a failing case can be replayed exactly. Every fault stops at `heal_ms`:
from then on the network is synchronous (latency 1..5 ms, nothing lost), crashed replicas are
back up, and the LIVE check starts its clock.

Plans are drawn by `draw_plan(pick, ...)`, where `pick(lo, hi)` returns an integer in
[lo, hi]. The command line passes `random.Random(seed).randint`; the hypothesis tests pass a
function that draws from `st.integers`, so hypothesis shrinks plans with the same code path.
Probabilities are integers per mille: nothing that affects a run is a float.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

Pick = Callable[[int, int], int]

# Network and crash faults (`--faults`). Byzantine behaviours are chosen separately.
FAULT_KINDS = ("drop", "delay", "reorder", "duplicate", "partition", "crash")

# What a byzantine validator does (see `byzantine.py`).
BEHAVIOURS = ("equivocate", "double-vote", "silent", "twins")

# Where a crash strikes inside one replica's handling of a `Ready` (see `simulator.py`):
# - "idle":         between two inputs; nothing is lost but volatile state.
# - "before_send":  after persisting a Ready, before its messages leave: they are lost.
# - "before_apply": after sending, before the decisions of that Ready reach the block store:
#                   the replica restarts with consensus state ahead of its applied height.
FAILPOINTS = ("idle", "before_send", "before_apply")

MAX_PARTITIONS = 3
MAX_CRASHES = 4


@dataclass(frozen=True, slots=True)
class PartitionEpisode:
    """From `start_ms` to `end_ms`, messages between different groups are lost.

    With `one_way`, only messages from `groups[0]` to the other groups are lost (a link that
    sends but does not receive). Replicas in no group form a group of their own.
    """

    start_ms: int
    end_ms: int
    groups: tuple[tuple[int, ...], ...]
    one_way: bool = False

    def group_of(self, replica: int) -> int:
        for index, group in enumerate(self.groups):
            if replica in group:
                return index
        return len(self.groups)

    def blocks(self, src: int, dst: int) -> bool:
        src_group, dst_group = self.group_of(src), self.group_of(dst)
        if src_group == dst_group:
            return False
        return src_group == 0 if self.one_way else True


@dataclass(frozen=True, slots=True)
class CrashEpisode:
    """Replica `replica` crashes at `at_ms` (at `failpoint`) and restarts at `restart_ms`."""

    replica: int
    at_ms: int
    restart_ms: int
    failpoint: str


@dataclass(frozen=True, slots=True)
class ByzantineRole:
    """Validator `validator` (an index into the validator list) runs `behaviour`."""

    validator: int
    behaviour: str


@dataclass(frozen=True, slots=True)
class FaultPlan:
    kinds: tuple[str, ...]
    heal_ms: int
    drop_permille: int = 0
    duplicate_permille: int = 0
    delay_permille: int = 0
    delay_max_ms: int = 0
    reorder_jitter_ms: int = 0
    partitions: tuple[PartitionEpisode, ...] = ()
    crashes: tuple[CrashEpisode, ...] = ()
    byzantine: tuple[ByzantineRole, ...] = ()

    def replica_count(self, validators: int) -> int:
        """Twins add one extra replica (a second copy of the key) per twin validator."""
        return validators + sum(1 for role in self.byzantine if role.behaviour == "twins")


def parse_kinds(text: str) -> tuple[str, ...]:
    """`"all"`, `"none"` or a comma-separated subset of FAULT_KINDS, in canonical order."""
    if text in ("", "none"):
        return ()
    if text == "all":
        return FAULT_KINDS
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(FAULT_KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; choose from {list(FAULT_KINDS)}")
    return tuple(kind for kind in FAULT_KINDS if kind in wanted)


def _shuffle(pick: Pick, members: Sequence[int]) -> list[int]:
    """Fisher-Yates with the injected chooser."""
    order = list(members)
    for i in range(len(order) - 1, 0, -1):
        j = pick(0, i)
        order[i], order[j] = order[j], order[i]
    return order


def _split(pick: Pick, members: Sequence[int], parts: int) -> list[list[int]]:
    """Deal `members` into `parts` non-empty groups (requires len(members) >= parts)."""
    order = _shuffle(pick, members)
    groups: list[list[int]] = [[order[i]] for i in range(parts)]
    for member in order[parts:]:
        groups[pick(0, parts - 1)].append(member)
    return groups


def draw_plan(
    pick: Pick,
    validators: int,
    byzantine: int,
    kinds: Sequence[str],
    behaviours: Sequence[str] = BEHAVIOURS,
    max_heal_ms: int = 1500,
) -> FaultPlan:
    """Draw a random plan. With byzantine >= validators/3 see `fork_plan` instead."""
    if not 0 <= byzantine < validators:
        raise ValueError(f"byzantine must be in [0, {validators}), got {byzantine}")
    kinds = tuple(kind for kind in FAULT_KINDS if kind in kinds)
    heal_ms = pick(0, max_heal_ms) if kinds or byzantine else 0
    byz_validators = _shuffle(pick, range(validators))[:byzantine]
    roles = tuple(
        ByzantineRole(v, behaviours[pick(0, len(behaviours) - 1)]) for v in sorted(byz_validators)
    )
    replicas = validators + sum(1 for role in roles if role.behaviour == "twins")

    partitions: list[PartitionEpisode] = []
    if "partition" in kinds and heal_ms > 0 and replicas >= 2:
        for _ in range(pick(1, MAX_PARTITIONS)):
            start = pick(0, heal_ms - 1)
            end = min(heal_ms, start + pick(20, 600))
            parts = min(replicas, pick(2, 3))
            groups = tuple(tuple(sorted(g)) for g in _split(pick, range(replicas), parts))
            partitions.append(PartitionEpisode(start, end, groups, one_way=pick(0, 3) == 0))

    crashes: list[CrashEpisode] = []
    if "crash" in kinds and heal_ms > 0:
        for _ in range(pick(1, MAX_CRASHES)):
            at = pick(0, heal_ms - 1)
            restart = min(heal_ms, at + pick(1, 500))
            failpoint = FAILPOINTS[pick(0, len(FAILPOINTS) - 1)]
            crashes.append(CrashEpisode(pick(0, replicas - 1), at, restart, failpoint))

    return FaultPlan(
        kinds=kinds,
        heal_ms=heal_ms,
        drop_permille=pick(10, 300) if "drop" in kinds else 0,
        duplicate_permille=pick(10, 300) if "duplicate" in kinds else 0,
        delay_permille=pick(50, 500) if "delay" in kinds else 0,
        delay_max_ms=pick(20, 400) if "delay" in kinds else 0,
        reorder_jitter_ms=pick(5, 60) if "reorder" in kinds else 0,
        partitions=tuple(sorted(partitions, key=lambda p: (p.start_ms, p.end_ms))),
        crashes=tuple(sorted(crashes, key=lambda c: (c.at_ms, c.replica))),
        byzantine=roles,
    )


def fork_plan(pick: Pick, validators: int, byzantine: int, kinds: Sequence[str]) -> FaultPlan:
    """The negative control: byzantine >= 1/3, all of them Twins, and a partition that puts one
    copy of every twin on each side and splits the honest replicas in two.

    Each side then holds the honest power of its half plus all byzantine power; when that is
    above 2/3 on both sides, both sides can decide, and a correct checker must see the fork.
    """
    if not 0 < byzantine < validators:
        raise ValueError(f"byzantine must be in (0, {validators}), got {byzantine}")
    heal_ms = pick(800, 1500)
    honest = list(range(byzantine, validators))
    # Halves, so that each side's honest power is as large as it can be on both sides.
    order = _shuffle(pick, honest)
    left, right = order[: len(order) // 2], order[len(order) // 2 :]
    # Replica ids: validator i is replica i; the second copy of the j-th twin (in validator
    # order) is replica validators + j. Here the twins are validators 0..byzantine-1.
    left_side = sorted([*range(byzantine), *left])
    right_side = sorted([validators + i for i in range(byzantine)] + right)
    partition = PartitionEpisode(0, heal_ms, (tuple(left_side), tuple(right_side)))
    return FaultPlan(
        kinds=tuple(kind for kind in FAULT_KINDS if kind in kinds),
        heal_ms=heal_ms,
        partitions=(partition,),
        byzantine=tuple(ByzantineRole(v, "twins") for v in range(byzantine)),
    )


def plan_to_json(plan: FaultPlan) -> str:
    return json.dumps(asdict(plan), separators=(",", ":"), sort_keys=True)


def plan_from_json(text: str) -> FaultPlan:
    raw = json.loads(text)
    return FaultPlan(
        kinds=tuple(raw["kinds"]),
        heal_ms=raw["heal_ms"],
        drop_permille=raw["drop_permille"],
        duplicate_permille=raw["duplicate_permille"],
        delay_permille=raw["delay_permille"],
        delay_max_ms=raw["delay_max_ms"],
        reorder_jitter_ms=raw["reorder_jitter_ms"],
        partitions=tuple(
            PartitionEpisode(
                p["start_ms"], p["end_ms"], tuple(map(tuple, p["groups"])), p["one_way"]
            )
            for p in raw["partitions"]
        ),
        crashes=tuple(CrashEpisode(**c) for c in raw["crashes"]),
        byzantine=tuple(ByzantineRole(**b) for b in raw["byzantine"]),
    )
