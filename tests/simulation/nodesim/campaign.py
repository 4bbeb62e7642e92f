"""Running many seeds of the whole-node simulation: the progress lines and the JSON summary.

`run_campaign(cases, jobs)` runs each `NodeCase` (in `jobs` worker processes when > 1; each
seed is independent and deterministic, so the order of completion changes nothing but the
progress lines), prints a failure report with the replay command for every failing seed, and
returns the summary `scripts/simulate.py --node` prints as its last line.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import time
from collections.abc import Iterator, Sequence

from .run import NodeCase, NodeOutcome, describe, run_node_seed


def _set_log_level(level: int) -> None:
    logging.getLogger().setLevel(level)


def _outcomes(cases: Sequence[NodeCase], jobs: int) -> Iterator[NodeOutcome]:
    if jobs <= 1:
        for case in cases:
            yield run_node_seed(case)
        return
    level = logging.getLogger().level  # the workers log (or not) as this process does
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs, initializer=_set_log_level, initargs=(level,)) as pool:
        yield from pool.imap(run_node_seed, cases)


def run_campaign(cases: Sequence[NodeCase], jobs: int = 1, quiet: bool = False) -> dict:
    started = time.perf_counter()
    failing: list[int] = []
    totals = {"safety_violations": 0, "liveness_failures": 0}
    kinds: dict[str, int] = {}
    heights = commits = crashes = txs = evidence = sim_ms = 0
    for done, (case, outcome) in enumerate(zip(cases, _outcomes(cases, jobs), strict=True), 1):
        totals["safety_violations"] += outcome.safety_violations
        totals["liveness_failures"] += outcome.liveness_failures
        for violation in outcome.violations:
            kinds[violation.kind] = kinds.get(violation.kind, 0) + 1
        heights += outcome.min_height
        commits += outcome.commits
        crashes += outcome.crashes
        txs += outcome.txs_committed
        evidence += outcome.evidence_committed
        sim_ms += outcome.sim_ms
        if outcome.violations:
            failing.append(case.seed)
            if not quiet:
                print(describe(outcome, case), flush=True)
        if done % 10 == 0 or done == len(cases):
            print(
                f"{done}/{len(cases)} seeds, {len(failing)} failing, "
                f"{time.perf_counter() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    first = cases[0] if cases else NodeCase(0)
    return {
        "seeds": len(cases),
        **totals,
        "violations_by_kind": dict(sorted(kinds.items())),
        "mode": "node",
        "validators": first.validators,
        "byzantine": first.byzantine,
        "behaviours": list(first.behaviours),
        "faults": first.faults,
        "heights": heights,
        "blocks_committed": commits,
        "crashes": crashes,
        "txs_committed": txs,
        "evidence_committed": evidence,
        "simulated_s": round(sim_ms / 1000, 1),
        "seconds": round(time.perf_counter() - started, 2),
        "failing_seeds": failing[:50],
    }
