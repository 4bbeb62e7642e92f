"""scripts/preload_state.py: a fresh network gets a large funded state offline, then runs.

Checked: the preloaded blocks carry genuine commit certificates (they verify against the
genesis validators, as block sync would check them); every validator's database holds the
same blocks and state; the network then starts with no validator in the signing hold and
commits past the preloaded height with the preloaded state intact (same app_hash on every
node, the token's holders there); and a network that already has databases is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from consensus.types import verify_commit
from consensus.wire import decode_message
from ledger.crypto import read_key_file, verify_signature
from ledger.genesis import genesis_hash, state_from_genesis
from ledger.store import Store
from node.home import init_network
from node.validator_set import consensus_set
from tests.node.netsupport import free_base_port, rpc
from tests.test_bench import start_localnet, stop_localnet

ROOT = Path(__file__).resolve().parents[1]
ACCOUNTS = 150


def preload(home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/preload_state.py", "--home", str(home),
         "--accounts", str(ACCOUNTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_preloaded_network_verifies_starts_and_keeps_its_state(tmp_path):
    home = tmp_path / "net"
    base_port = free_base_port(4)
    init_network(home, validators=4, base_port=base_port)
    out = preload(home)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["height"] == 2 and len(result["nodes"]) == 4

    genesis = json.loads((home / "ministry" / "genesis.json").read_text())
    validators = consensus_set(state_from_genesis(genesis).validator_set.validators)
    blocks = set()
    for name in result["nodes"]:
        store = Store.open(
            home / name / "data" / "node.db",
            chain_id=genesis["chain_id"],
            genesis_hash=genesis_hash(genesis),
        )
        try:
            for height in (1, 2):
                stored = store.blocks.block(height)
                commit = decode_message(store.blocks.commit(height))
                assert commit.value_id == stored.hash and commit.height == height
                assert verify_commit(validators, genesis["chain_id"], commit, verify_signature)
                blocks.add((height, stored.hash, stored.app_hash))
            assert store.load_consensus_record() is not None
        finally:
            store.close()
    assert len(blocks) == 2  # the same two blocks on every node
    assert preload(home).returncode != 0  # databases exist now: refused

    proc = start_localnet(home, validators=4, base_port=base_port)
    try:
        urls = [n["rpc"] for n in json.loads((home / "localnet.json").read_text())["nodes"]]
        deadline = time.monotonic() + 60
        while min(height_of(url) for url in urls) < 4:
            assert time.monotonic() < deadline, "the preloaded network did not commit"
            time.sleep(0.3)
        target = min(height_of(url) for url in urls)
        hashes = {rpc(url, "block", height=target)["block"]["header"]["app_hash"] for url in urls}
        assert len(hashes) == 1
        reader = read_key_file(home / "clients" / "regulator.key")  # holders: institutions
        first = rpc(urls[0], "holders", id="BENCH-PRELOAD", limit=100, signer=reader)
        rest = rpc(
            urls[0], "holders", id="BENCH-PRELOAD", limit=100, after=first["next"], signer=reader
        )
        holders = first["holders"] + rest["holders"]
        assert len(holders) == ACCOUNTS and rest["next"] is None
        assert {h["balance"] for h in holders} == {1_000_000}
        for name in result["nodes"]:
            assert "NOT SIGNING" not in (home / name / "node.log").read_text()
    finally:
        stop_localnet(proc)


def height_of(url: str) -> int:
    try:
        return int(rpc(url, "status")["sync_info"]["latest_block_height"])
    except OSError:
        return -1
