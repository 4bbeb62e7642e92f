"""Running one seed or many: plan choice, the JSON summary, and the reproduction command.

`run_seed` is the single entry point the command line and the tests share: given a seed and
the knobs of `scripts/simulate.py`, it draws the fault plan from the seed (or takes the plan
it is given), runs the simulation and returns the `Outcome`. `repro_command` prints the one
line that replays a case; a plan hypothesis drew is passed along as `--plan JSON`.
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from .faults import BEHAVIOURS, FaultPlan, draw_plan, fork_plan, plan_to_json
from .simulator import Outcome, SimConfig, Simulation


@dataclass(frozen=True, slots=True)
class Case:
    """Everything that determines a run (the knobs of `scripts/simulate.py`)."""

    seed: int
    validators: int = 4
    byzantine: int = 0
    faults: tuple[str, ...] = ()
    heights: int = 20
    behaviours: tuple[str, ...] = BEHAVIOURS
    scheme: str = "fake"
    plan: FaultPlan | None = None  # None: drawn from the seed

    @property
    def expects_fork_possible(self) -> bool:
        """Byzantine power >= 1/3 (equal powers): safety is no longer guaranteed."""
        return 3 * self.byzantine >= self.validators


def plan_for(case: Case) -> FaultPlan:
    if case.plan is not None:
        return case.plan
    pick = random.Random(f"plan/{case.seed}").randint
    if case.expects_fork_possible:
        return fork_plan(pick, case.validators, case.byzantine, case.faults)
    return draw_plan(pick, case.validators, case.byzantine, case.faults, case.behaviours)


def run_seed(case: Case) -> Outcome:
    config = SimConfig(
        seed=case.seed,
        plan=plan_for(case),
        validators=case.validators,
        heights=case.heights,
        scheme=case.scheme,
    )
    return Simulation(config).run()


def repro_command(case: Case) -> str:
    args = [
        "python",
        "scripts/simulate.py",
        "--seeds",
        "1",
        "--first-seed",
        str(case.seed),
        "--validators",
        str(case.validators),
        "--byzantine",
        str(case.byzantine),
        "--faults",
        ",".join(case.faults) or "none",
        "--heights",
        str(case.heights),
    ]
    if tuple(case.behaviours) != BEHAVIOURS:
        args += ["--behaviours", ",".join(case.behaviours)]
    if case.scheme != "fake":
        args += ["--scheme", case.scheme]
    if case.plan is not None:
        args += ["--plan", plan_to_json(case.plan)]
    return shlex.join(args)


def describe(outcome: Outcome, case: Case) -> str:
    """A failure report: what broke, then the line that replays it."""
    lines = [f"seed {case.seed}: {len(outcome.violations)} violation(s)"]
    lines += [f"  {v.kind} at {v.time_ms} ms: {v.detail}" for v in outcome.violations[:10]]
    lines.append(f"  reproduce: {repro_command(case)}")
    return "\n".join(lines)


def summarize(outcomes: Sequence[Outcome]) -> dict[str, int]:
    return {
        "safety_violations": sum(o.safety_violations for o in outcomes),
        "liveness_failures": sum(o.liveness_failures for o in outcomes),
        "evidence_failures": sum(o.evidence_failures for o in outcomes),
        "heights": sum(o.min_height for o in outcomes),
    }
