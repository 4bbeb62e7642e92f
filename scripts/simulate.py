#!/usr/bin/env python3
"""Deterministic fault simulation: run many seeds, print a JSON summary line last.

    python scripts/simulate.py --seeds 300                      # 4 validators, all faults
    python scripts/simulate.py --seeds 300 --validators 7 --byzantine 2
    python scripts/simulate.py --seeds 20 --byzantine 2 --expect-violation   # negative control

    python scripts/simulate.py --node --seeds 200 --jobs 2      # the whole node, 1 byzantine
    python scripts/simulate.py --node --seeds 10 --byzantine 2 --expect-violation

Without --node, the consensus core alone (tests/simulation/); each seed draws its own fault
plan (tests/simulation/faults.py). With --node, the whole node: real drivers, chains, SQLite
stores and mempools under a simulated network and clock, with clients, crashes that keep
only what was durable and byzantine validators (tests/simulation/nodesim/, docs/RELIABILITY.md);
--byzantine defaults to 1 there. A failing seed prints what broke and a one-line command
that replays exactly that seed. Exit code 0 when no seed violated anything -- or, with
--expect-violation, when a safety violation was found (the checker can see a fork when
byzantine power reaches 1/3).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.simulation.campaign import Case, describe, run_seed
from tests.simulation.faults import BEHAVIOURS, FAULT_KINDS, parse_kinds, plan_from_json
from tests.simulation.nodesim.campaign import run_campaign
from tests.simulation.nodesim.plan import BYZANTINE_BEHAVIOURS, node_plan_from_json
from tests.simulation.nodesim.run import NodeCase
from tests.simulation.signing import SCHEMES


def parse_behaviours(text: str, known: tuple[str, ...] = BEHAVIOURS) -> tuple[str, ...]:
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(wanted) - set(known))
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"choose behaviours from {list(known)}")
    return tuple(b for b in known if b in wanted)


def parse_faults(text: str) -> tuple[str, ...]:
    try:
        return parse_kinds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main_node(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`--node`: the whole-node simulation (tests/simulation/nodesim/)."""
    byzantine = 1 if args.byzantine is None else args.byzantine
    if args.seeds < 1 or args.jobs < 1 or args.investors < 2:
        parser.error("need --seeds >= 1, --jobs >= 1 and --investors >= 2")
    if not 0 <= byzantine < args.validators or args.validators < 1:
        parser.error("need 0 <= --byzantine < --validators")
    try:
        behaviours = (
            parse_behaviours(args.behaviours, BYZANTINE_BEHAVIOURS)
            if args.behaviours
            else BYZANTINE_BEHAVIOURS
        )
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.faults not in ((), FAULT_KINDS):
        parser.error("--node takes --faults all or --faults none")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    cases = [
        NodeCase(
            seed=seed,
            validators=args.validators,
            byzantine=byzantine,
            faults=bool(args.faults),
            investors=args.investors,
            plan=node_plan_from_json(args.plan) if args.plan else None,
            behaviours=behaviours,
        )
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    summary = run_campaign(cases, jobs=args.jobs, quiet=args.expect_violation)
    print(json.dumps(summary), flush=True)
    if args.expect_violation:
        return 0 if summary["safety_violations"] else 1
    return 0 if not summary["failing_seeds"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument(
        "--byzantine", type=int, default=None, help="byzantine validators (0; 1 with --node)"
    )
    parser.add_argument(
        "--faults", type=parse_faults, default="all", help="all, none, or drop,delay,..."
    )
    parser.add_argument("--heights", type=int, default=20, help="target height per seed")
    parser.add_argument(
        "--behaviours",
        help=f"byzantine behaviours to draw from: {','.join(BEHAVIOURS)} "
        f"(with --node: {','.join(BYZANTINE_BEHAVIOURS)})",
    )
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default="fake")
    parser.add_argument("--plan", help="a fault plan as JSON (replays a hypothesis case)")
    parser.add_argument(
        "--expect-violation",
        action="store_true",
        help="negative control: succeed only if a safety violation is found",
    )
    parser.add_argument("--node", action="store_true", help="simulate the whole node")
    parser.add_argument("--investors", type=int, default=4, help="--node: trading clients")
    parser.add_argument("--jobs", type=int, default=1, help="--node: worker processes")
    parser.add_argument("-v", "--verbose", action="store_true", help="--node: node logs")
    args = parser.parse_args(argv)
    if args.node:
        return main_node(parser, args)
    if args.byzantine is None:
        args.byzantine = 0
    try:
        args.behaviours = parse_behaviours(args.behaviours) if args.behaviours else BEHAVIOURS
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    faults = args.faults  # argparse runs `type` on the string default too
    if args.seeds < 1 or args.heights < 1 or not 0 <= args.byzantine < args.validators:
        parser.error("need --seeds >= 1, --heights >= 1 and 0 <= --byzantine < --validators")
    plan = plan_from_json(args.plan) if args.plan else None

    started = time.perf_counter()
    totals = {"safety_violations": 0, "liveness_failures": 0, "evidence_failures": 0}
    heights = 0
    failing: list[int] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        case = Case(
            seed=seed,
            validators=args.validators,
            byzantine=args.byzantine,
            faults=faults,
            heights=args.heights,
            behaviours=args.behaviours,
            scheme=args.scheme,
            plan=plan,
        )
        outcome = run_seed(case)
        heights += outcome.min_height
        totals["safety_violations"] += outcome.safety_violations
        totals["liveness_failures"] += outcome.liveness_failures
        totals["evidence_failures"] += outcome.evidence_failures
        if outcome.violations:
            failing.append(seed)
            if not args.expect_violation:
                print(describe(outcome, case), flush=True)
        done = seed - args.first_seed + 1
        if done % 10 == 0 or done == args.seeds:
            print(
                f"{done}/{args.seeds} seeds, {len(failing)} failing, "
                f"{time.perf_counter() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    seconds = time.perf_counter() - started
    summary = {
        "seeds": args.seeds,
        **totals,
        "heights": heights,
        "heights_per_s": round(heights / seconds, 1) if seconds > 0 else 0,
        "validators": args.validators,
        "byzantine": args.byzantine,
        "faults": list(faults),
        "seconds": round(seconds, 2),
        "failing_seeds": failing[:50],
    }
    print(json.dumps(summary), flush=True)
    if args.expect_violation:
        return 0 if totals["safety_violations"] else 1
    return 0 if not failing else 1


if __name__ == "__main__":
    sys.exit(main())
