#!/usr/bin/env python3
"""Deterministic consensus fault simulation: run many seeds, print a JSON summary line last.

    python scripts/simulate.py --seeds 300                      # 4 validators, all faults
    python scripts/simulate.py --seeds 300 --validators 7 --byzantine 2
    python scripts/simulate.py --seeds 20 --byzantine 2 --expect-violation   # negative control

Each seed draws its own fault plan (see tests/simulation/faults.py). A failing seed prints
what broke and a one-line command that replays exactly that seed. Exit code 0 when no seed
violated anything -- or, with --expect-violation, when a safety violation was found (the
checker can see a fork when byzantine power reaches 1/3).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.simulation.campaign import Case, describe, run_seed
from tests.simulation.faults import BEHAVIOURS, parse_kinds, plan_from_json
from tests.simulation.signing import SCHEMES


def parse_behaviours(text: str) -> tuple[str, ...]:
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(wanted) - set(BEHAVIOURS))
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"choose behaviours from {list(BEHAVIOURS)}")
    return tuple(b for b in BEHAVIOURS if b in wanted)


def parse_faults(text: str) -> tuple[str, ...]:
    try:
        return parse_kinds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--byzantine", type=int, default=0, help="byzantine validators")
    parser.add_argument(
        "--faults", type=parse_faults, default="all", help="all, none, or drop,delay,..."
    )
    parser.add_argument("--heights", type=int, default=20, help="target height per seed")
    parser.add_argument(
        "--behaviours",
        type=parse_behaviours,
        default=BEHAVIOURS,
        help=f"byzantine behaviours to draw from: {','.join(BEHAVIOURS)}",
    )
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default="fake")
    parser.add_argument("--plan", help="a fault plan as JSON (replays a hypothesis case)")
    parser.add_argument(
        "--expect-violation",
        action="store_true",
        help="negative control: succeed only if a safety violation is found",
    )
    args = parser.parse_args(argv)
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
