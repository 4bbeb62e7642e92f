"""Real processes: `khazana localnet --hsm-signer central-bank` runs four validators, one of
them signing through `khazana signer` with a key generated inside a SoftHSM2 token
(node/localnet_hsm.py). The HSM-backed validator agrees with the others and keeps up: its
signs both votes of every height, no vote is signed twice, and its node
reports the round trip of each signature (`khazana_signer_sign_seconds`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ledger.crypto import address_from_public_key
from node.localnet_hsm import softhsm_module
from tests.node.netsupport import (
    check_agreement,
    check_certificates,
    find_double_signs,
    free_base_port,
    read_store,
    rpc,
    signed_votes,
)

ROOT = Path(__file__).resolve().parents[2]
VICTIM = "central-bank"
BLOCKS = 12


def _skip_reason() -> str | None:
    if softhsm_module() is None or shutil.which("softhsm2-util") is None:
        return "softhsm2 not installed: apt-get install softhsm2 (.ci/run does)"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 not installed: pip install -e '.[test]'"
    return None


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_a_validator_signing_in_softhsm_agrees_and_keeps_up(tmp_path):
    home = tmp_path / "net"
    command = [
        sys.executable, "-m", "node", "localnet", "--home", str(home), "--validators", "4",
        "--base-port", str(free_base_port()), "--hsm-signer", VICTIM, "--no-dashboard",
        "--grace", "10",
    ]  # fmt: skip
    localnet = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (home / "localnet.json").exists():
            assert localnet.poll() is None, localnet.stdout.read().decode()
            assert time.monotonic() < deadline, "localnet not healthy within 90 s"
            time.sleep(0.2)
        nodes = json.loads((home / "localnet.json").read_text())["nodes"]
        urls = {node["name"]: node["rpc"] for node in nodes}

        def heights() -> list[int]:
            return [rpc(url, "status")["sync_info"]["latest_block_height"] for url in urls.values()]

        while min(heights()) < BLOCKS:
            assert time.monotonic() < deadline + 60, f"no {BLOCKS} blocks: {heights()}"
            time.sleep(0.5)
        metrics_url = urls[VICTIM].rsplit(":", 1)
        metrics_url = f"{metrics_url[0]}:{int(metrics_url[1]) + 1}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=5) as answer:
            metrics = answer.read().decode()
    finally:
        if localnet.poll() is None:
            os.killpg(localnet.pid, signal.SIGTERM)
            try:
                localnet.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(localnet.pid, signal.SIGKILL)
                localnet.wait()

    genesis = json.loads((home / VICTIM / "genesis.json").read_text())
    reference = json.loads((home / "hsm" / f"{VICTIM}.key.json").read_text())
    (validator,) = [v for v in genesis["validators"] if v["name"] == VICTIM]
    # The genesis names the key made in the token, not the node's own (P2P) key.
    assert validator["public_key"] == reference["public_key"]
    node_key = json.loads((home / VICTIM / "node_key.json").read_text())["public_key"]
    assert node_key != validator["public_key"]
    views = {
        node["name"]: read_store(Path(node["home"]) / "data" / "node.db", genesis) for node in nodes
    }
    top = check_agreement(views)
    for view in views.values():
        check_certificates(view, genesis)
    records = [v.record for v in views.values() if v.record is not None]
    address = address_from_public_key(bytes.fromhex(validator["public_key"]))
    assert not find_double_signs(signed_votes(views.values(), records), genesis)
    # It keeps up: a certificate holds the first three precommits to arrive, so a validator
    # whose signature takes a round trip to the signer is seldom in one; what shows it kept
    # up is that it signed both votes of every height (each timed by its node) and that its
    # own record is at the tip, with a precommit the HSM key signed.
    count = float(metrics.split("khazana_signer_sign_seconds_count ")[1].split()[0])
    assert count >= 2 * (top - 2), (count, top)
    record = views[VICTIM].record
    assert record is not None and record.height >= top
    ours = [v for v in signed_votes([views[VICTIM]], [record]) if v.validator == address]
    assert any(v.height >= top for v in ours), ours
