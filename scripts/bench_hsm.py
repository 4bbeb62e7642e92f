#!/usr/bin/env python3
"""Signing latency per signature: an Ed25519 key in a PKCS#11 token (node/hsm.py, CKM_EDDSA)
against the same operation in-process with pynacl (ledger.crypto.KeyPair).

Each signature is timed on its own (wall clock, `time.perf_counter_ns`): the latency a vote
or a transaction waits for. Messages are 128 bytes (the size of a consensus vote's signing
bytes). Without `--reference` the script makes a throw-away SoftHSM2 token in a temporary
folder (needs softhsm2-util and python-pkcs11: `apt-get install softhsm2`,
`pip install -e '.[hsm]'`); with `--reference REF.json` it signs with that key (any module).
Prints one line per signer and, last, JSON with the same figures.

    .venv/bin/python scripts/bench_hsm.py [--count 1000] [--reference REF.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.crypto import generate_key, verify_signature
from node import hsm
from node.keyload import load_key

SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
MESSAGE_BYTES = 128


def latencies_us(sign, count: int) -> list[float]:
    messages = [os.urandom(MESSAGE_BYTES) for _ in range(count)]
    for message in messages[:20]:  # warm-up, untimed
        sign(message)
    out = []
    for message in messages:
        started = time.perf_counter_ns()
        sign(message)
        out.append((time.perf_counter_ns() - started) / 1000)
    return out


def summary(name: str, samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "signer": name,
        "count": len(samples),
        "median_us": round(statistics.median(ordered), 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1], 1),
        "max_us": round(ordered[-1], 1),
        "per_second": round(1e6 / statistics.mean(ordered)),
    }


def softhsm_reference(folder: Path) -> str:
    module = next((path for path in SOFTHSM_MODULES if os.path.isfile(path)), None)
    if module is None or shutil.which("softhsm2-util") is None:
        sys.exit("softhsm2 not installed: apt-get install softhsm2 (or give --reference)")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = folder / "user.pin"
    pin.write_text("bench-pin-1234\n")
    pin.chmod(0o600)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "bench"]
        + ["--pin", "bench-pin-1234", "--so-pin", "bench-so-pin"],
        check=True,
        capture_output=True,
    )
    reference = hsm.generate_in_token(module, "bench", "bench-key", pin_file=str(pin))
    path = folder / "bench.ref.json"
    hsm.write_reference(path, reference)
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="signatures per signer")
    parser.add_argument("--reference", help="an HSM key reference (default: a new SoftHSM2 key)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hsm-") as folder:
        path = args.reference or softhsm_reference(Path(folder))
        token_key = load_key(path)
        plain_key = generate_key()
        probe = os.urandom(MESSAGE_BYTES)
        assert verify_signature(token_key.public_key, probe, token_key.sign(probe))
        results = [
            summary("pynacl (in-process)", latencies_us(plain_key.sign, args.count)),
            summary(
                f"pkcs11 ({token_key.reference.module})", latencies_us(token_key.sign, args.count)
            ),
        ]
    for row in results:
        print(
            f"{row['signer']:<50} median {row['median_us']:>8.1f} us  p99 {row['p99_us']:>8.1f} us"
            f"  max {row['max_us']:>8.1f} us  ({row['per_second']:,}/s)"
        )
    ratio = results[1]["median_us"] / results[0]["median_us"]
    print(
        json.dumps(
            {"results": results, "median_ratio": round(ratio, 1), "load": os.getloadavg()[0]}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
