"""Seeds that once failed stay here for good: a failing seed becomes a permanent example.

`REGRESSIONS` are cases that exposed a simulator or core problem that is fixed; they must
pass. `NODE_REGRESSIONS` are the same for the whole-node simulation (`scripts/simulate.py
--node`, tests/simulation/nodesim/). `KNOWN_CORE_BUGS` are cases where the simulator finds a
bug in `consensus/` that is not fixed yet: each must still fail, so the day the core is fixed
the test turns red and the case moves to `REGRESSIONS`. No list is parametrised over (an
empty parameter list would be a skip that hides nothing ran): each test walks its list. Each entry says what went wrong and how to replay it
(`python scripts/simulate.py --seeds 1 --first-seed S ...`, see campaign.repro_command).
"""

from __future__ import annotations

import pytest

from .campaign import Case, describe, run_seed
from .faults import FAULT_KINDS
from .nodesim.run import NodeCase, run_node_seed
from .nodesim.run import describe as describe_node

ALL = FAULT_KINDS

# (case, violation kinds it must produce -- empty for "none" --, what went wrong once)
REGRESSIONS: list[tuple[Case, tuple[str, ...], str]] = [
    (
        Case(seed=seed, validators=7, byzantine=3, faults=(), heights=10),
        ("SAFE",),
        "negative control found no fork: fork_plan split the honest replicas 3|1, so one "
        "side of the partition had no quorum; it now splits them in halves",
    )
    for seed in range(3)
]

# Liveness bugs the simulator found in the core, fixed by counting every signed vote of a
# validator toward the value it names (the paper counts distinct senders per value) and by
# retransmitting the previous round's votes too (core commit 26926b4).
REGRESSIONS += [
    (
        Case(seed=48, validators=4, byzantine=1, faults=ALL),
        (),
        "double voter: the core counted only the first vote per validator and slot, so a "
        "polka that existed was invisible to honest replicas that got the other half first: "
        "livelock at height 2",
    ),
    (
        Case(seed=56, validators=4, byzantine=1, faults=ALL, behaviours=("double-vote",)),
        (),
        "double voter, same livelock as seed 48",
    ),
    (
        Case(seed=77, validators=7, byzantine=2, faults=ALL),
        (),
        "retransmit re-sent only the current round: v0/v3 moved to round 1 after their "
        "round-0 precommits were lost; v1/v5/v6 in round 0 held 4 of the 5 precommits "
        "needed for timeout_precommit and saw only 2 validators (< 1/3) in round 1: livelock",
    ),
]

KNOWN_CORE_BUGS: list[tuple[Case, str]] = []

# (case, what went wrong once) for the whole node: each must now run with no violation.
# Seed 128 is `test_node_simulation.py::test_a_restarted_validator_and_a_double_voter_...`.
NODE_REGRESSIONS: list[tuple[NodeCase, str]] = [
    (
        NodeCase(175),
        "docs/RELIABILITY.md defect 5: a restarted validator rebuilt its validator schedule "
        "for chain.height - 1 .. + 2 only, refused every proposal carrying evidence from "
        "before its restart, and with a double voter splitting the polkas the chain stalled "
        "(LIVE); the schedule is now rebuilt from the store's validator-set history",
    ),
]


def _id(entry: tuple) -> str:
    case = entry[0]
    return f"seed{case.seed}-n{case.validators}-b{case.byzantine}"


@pytest.mark.parametrize("entry", REGRESSIONS, ids=_id)
def test_regression(entry):
    case, kinds, _why = entry
    outcome = run_seed(case)
    assert sorted({v.kind for v in outcome.violations}) == sorted(kinds), describe(outcome, case)


def test_known_core_bugs_still_fail():
    # A plain loop, not a parametrisation: with the list empty this passes (nothing to
    # check) instead of being skipped.
    for case, why in KNOWN_CORE_BUGS:
        outcome = run_seed(case)
        assert outcome.violations != (), f"fixed? move it to REGRESSIONS: {why}"


def test_node_regressions():
    assert NODE_REGRESSIONS, "the list is the point of this test"
    for case, why in NODE_REGRESSIONS:
        outcome = run_node_seed(case)
        assert outcome.violations == (), f"{why}\n{describe_node(outcome, case)}"
