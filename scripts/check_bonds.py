"""Check every coupon, part and redemption the ledger pays against QuantLib, over generated bonds.

    .venv/bin/python scripts/check_bonds.py --count 5000 --seed 1

Each bond is registered, issued, paid every coupon (and every part of an amortising bond) and
redeemed on an in-memory chain through signed transactions (tests/ledger/bond_oracle.py), and
every payment is compared with QuantLib's own instrument for the bond (FixedRateBond,
FloatingRateBond with the chain's fixings, AmortizingFixedRateBond /
AmortizingFloatingRateBond, truncated at a call: tests/ledger/bond_instruments.py), with
QuantLib's schedule, calendar and day count, and with the rounding docs/PROTOCOL.md states.
Prints the bonds, coupons and payments checked, the total that rounding left unpaid (reported
on chain as each receipt's `residual`), what was exercised, the coupons where QuantLib's
instrument is wrong by ICMA Rule 251 (its reference-period quirk, checked piece by piece
instead), and every difference; then quotes as many generated bonds (amortising, called and
priced ones included) at a random settlement date and yield against QuantLib's CashFlows
functions (tests/ledger/quote_oracle.py), and as many floating-rate notes registered on a
chain with fixings published up to a random settlement date (the current period at its
fixing, the later ones at the index's latest fixing plus the spread, against QuantLib's
floored Ibor coupons given those fixings); exits 1 if there is any difference. The test suite
runs a smaller fixed count (tests/ledger/test_bond_oracle.py). QuantLib is a test
dependency: `pip install -e '.[test]'`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.ledger import bond_oracle, quote_oracle  # noqa: E402  (needs ROOT on the path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="bonds to generate (5000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    started = time.monotonic()
    bonds, coupons, payments, residual, differences = bond_oracle.check(args.count, args.seed)
    elapsed = time.monotonic() - started
    for line in differences:
        print(line)
    print(
        f"seed {args.seed}: {bonds} bonds, {coupons} coupons, {payments} payments checked in "
        f"{elapsed:.1f} s; {len(differences)} differences; rounding left "
        f"{float(residual):.6f} minor units unpaid in total; floating-rate coupons "
        f"{bond_oracle.COUNTS['floating_coupons']}, refused for a missing fixing "
        f"{bond_oracle.COUNTS['missing_fixings']}; called {bond_oracle.COUNTS['called']}, "
        f"redeemed at a stated price {bond_oracle.COUNTS['priced']}, Ijara sukuk "
        f"{bond_oracle.COUNTS['sukuk']}, amortising {bond_oracle.COUNTS['amortising']} "
        f"({bond_oracle.COUNTS['amortisations']} parts paid); QuantLib's instrument wrong by "
        f"Rule 251 (reference-period quirk) on {bond_oracle.COUNTS['reference_quirks']} coupons; "
        f"floating periods QuantLib fixes a day earlier (0 days before a holiday start) "
        f"{bond_oracle.COUNTS['fixing_quirks']}"
    )
    started = time.monotonic()
    quotes, quote_differences = quote_oracle.check(args.count, args.seed)
    for line in quote_differences:
        print(line)
    print(
        f"seed {args.seed}: {quotes} quotes (yield, clean and dirty price, accrued interest) "
        f"checked in {time.monotonic() - started:.1f} s; {len(quote_differences)} differences"
    )
    started = time.monotonic()
    notes, floating_differences = quote_oracle.check_floating(args.count, args.seed)
    for line in floating_differences:
        print(line)
    counts = quote_oracle.FLOATING
    print(
        f"seed {args.seed}: {notes} floating-rate notes quoted (current period at its fixing, "
        f"later ones at the latest fixing + spread) in {time.monotonic() - started:.1f} s; "
        f"{len(floating_differences)} differences; refused for a missing current fixing "
        f"{counts.refused}, later periods already fixed {counts.known}, projected "
        f"{counts.projected}, floored at 0 {counts.floored}"
    )
    return 1 if differences or quote_differences or floating_differences else 0


if __name__ == "__main__":
    sys.exit(main())
