"""Seeds that once failed stay here for good: a failing seed becomes a permanent example.

`REGRESSIONS` are cases that exposed a simulator or core problem that is fixed; they must
pass. `KNOWN_CORE_BUGS` are cases where the simulator finds a bug in `consensus/` that is not
fixed yet; they are strict xfails, so the day the core is fixed the test turns red and the
case moves to `REGRESSIONS`. Each entry says what went wrong and how to replay it
(`python scripts/simulate.py --seeds 1 --first-seed S ...`, see campaign.repro_command).
"""

from __future__ import annotations

import pytest

from .campaign import Case, describe, run_seed
from .faults import FAULT_KINDS

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


def _id(entry: tuple) -> str:
    case = entry[0]
    return f"seed{case.seed}-n{case.validators}-b{case.byzantine}"


@pytest.mark.parametrize("entry", REGRESSIONS, ids=_id)
def test_regression(entry):
    case, kinds, _why = entry
    outcome = run_seed(case)
    assert sorted({v.kind for v in outcome.violations}) == sorted(kinds), describe(outcome, case)


@pytest.mark.parametrize(
    "entry",
    [pytest.param(e, marks=pytest.mark.xfail(strict=True, reason=e[1])) for e in KNOWN_CORE_BUGS],
    ids=_id,
)
def test_known_core_bug(entry):
    case, _why = entry
    outcome = run_seed(case)
    assert outcome.violations == (), describe(outcome, case)
