"""Reliability under faults: the fault proxy, a short chaos run, a byzantine validator.

- The fault proxy (scripts/faultproxy.py) is checked in-process against an echo server: a
  clean link forwards, a one-way block holds bytes and delivers them intact on healing, delay
  is visible in round-trip time, loss resets the connection.
- `scripts/chaos.py` runs for real against four node processes (~2 minutes): kills, pauses,
  a restart of all, partitions 1|3, 2|2 and one-way, loss, a truncated -wal and a deleted
  last-signed record, under load; its JSON summary must say forks 0, lost_acked 0, every
  acknowledged transaction counted, no honest crash, live.
- The byzantine flag needs both the environment variable and the written acknowledgement;
  the twins it signs are real double signs (the checker finds them).
- One byzantine validator of four (double proposals and double votes): the honest three
  agree on every block, certificates verify, the chain keeps growing, no honest validator
  double-signs, and the byzantine one's double votes are committed as block evidence.
- A lone validator whose last-signed record was deleted after a crash refuses to sign
  (the signing hold, node/driver.py): it used to re-sign its slot for another block.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from consensus.types import Vote, VoteType, vote_signing_bytes
from ledger.block import decode_block
from ledger.crypto import address_from_public_key, generate_key, verify_signature
from ledger.genesis import genesis_hash
from ledger.ops.evidence import decode_evidence_item
from ledger.store import Store
from node.byzantine import ACK_FILE, ACK_SENTENCE, ENV, ByzantineConfigError, from_env
from tests.node.netsupport import (
    DOUBLE_SIGN_LOG,
    NAMES,
    Net,
    check_agreement,
    check_certificates,
    find_double_signs,
    free_base_port,
    init_network,
    signed_votes,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from chaos import NO_NAMESPACES_EXIT  # noqa: E402
from faultproxy import FaultProxy, Rule  # noqa: E402

needs_init = pytest.mark.skipif(init_network is None, reason="node/home.py not available")


# ---------------------------------------------------------------------- the fault proxy


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


def _dial(proxy: FaultProxy) -> socket.socket:
    port = int(proxy.address_for("a", "b").rsplit(":", 1)[1])
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.settimeout(5)
    return client


def test_fault_proxy_forwards_blocks_holds_delays_and_resets():
    server, _ = _echo_server()
    target = server.getsockname()
    with FaultProxy({"a": ("127.0.0.1", 1), "b": target}, seed=7) as proxy:
        client = _dial(proxy)
        client.sendall(b"hello")
        assert client.recv(100) == b"hello"

        # One-way block a -> b: nothing arrives, and nothing is lost -- healed, it comes.
        proxy.block("a", "b")
        client.sendall(b"held")
        client.settimeout(0.6)
        with pytest.raises(TimeoutError):
            client.recv(100)
        proxy.heal()
        client.settimeout(5)
        assert client.recv(100) == b"held"

        # The reverse direction only: a -> b passes, b's echo is held.
        proxy.block("b", "a")
        client.sendall(b"echo")
        client.settimeout(0.6)
        with pytest.raises(TimeoutError):
            client.recv(100)
        proxy.heal()
        client.settimeout(5)
        assert client.recv(100) == b"echo"

        proxy.set_rule("a", "b", Rule(delay_ms=300))
        started = time.monotonic()
        client.sendall(b"slow")
        assert client.recv(100) == b"slow"
        assert time.monotonic() - started >= 0.3

        proxy.set_all(Rule(loss=1000))  # every chunk resets the connection
        client.sendall(b"lost")
        assert client.recv(100) == b""
        assert proxy.resets >= 1
        client.close()

        proxy.partition(["a"], ["b"])
        assert proxy.rule("a", "b").blocked and proxy.rule("b", "a").blocked
    server.close()


# ---------------------------------------------------------------------- the byzantine flag


def test_byzantine_flag_needs_the_variable_and_the_written_acknowledgement(tmp_path):
    key = generate_key(b"\x05" * 32)
    env = {ENV: "double-vote"}
    assert from_env(tmp_path, "c", key.sign, environ={}) is None
    with pytest.raises(ByzantineConfigError, match="does not say"):
        from_env(tmp_path, "c", key.sign, environ=env)
    (tmp_path / ACK_FILE).write_text("yes\n")
    with pytest.raises(ByzantineConfigError, match="does not say"):
        from_env(tmp_path, "c", key.sign, environ=env)
    (tmp_path / ACK_FILE).write_text(ACK_SENTENCE + "\n")
    with pytest.raises(ByzantineConfigError, match="not set"):
        from_env(tmp_path, "c", key.sign, environ={})  # a stray file alone refuses too
    with pytest.raises(ByzantineConfigError, match="unknown"):
        from_env(tmp_path, "c", key.sign, environ={ENV: "double-vote,lie"})
    with pytest.raises(ByzantineConfigError, match="not a validator"):
        from_env(tmp_path, "c", None, environ=env)
    byzantine = from_env(tmp_path, "c", key.sign, environ={ENV: "double-propose,double-vote"})
    assert byzantine is not None
    assert byzantine.behaviours == {"double-propose", "double-vote"}


def test_byzantine_twin_vote_is_a_double_sign_the_checker_finds(tmp_path):
    key = generate_key(b"\x06" * 32)
    genesis = {"chain_id": "khz-byz", "validators": [{"public_key": key.public_key.hex()}]}
    (tmp_path / ACK_FILE).write_text(ACK_SENTENCE)
    byzantine = from_env(tmp_path, "khz-byz", key.sign, environ={ENV: "double-vote"})
    value = b"\x11" * 32
    data = vote_signing_bytes("khz-byz", VoteType.PREVOTE, 3, 1, value)
    vote = Vote(VoteType.PREVOTE, 3, 1, value, key.address, key.sign(data))
    twin = byzantine.conflicting(vote)
    assert (twin.vote_type, twin.height, twin.round) == (VoteType.PREVOTE, 3, 1)
    assert twin.value_id != value
    twin_data = vote_signing_bytes("khz-byz", VoteType.PREVOTE, 3, 1, twin.value_id)
    assert verify_signature(key.public_key, twin_data, twin.signature)
    genesis["validators"][0]["power"] = 1
    assert find_double_signs([vote, twin], genesis) == [(vote, twin)]
    # A nil vote has no twin: there is no value to contradict.
    nil = Vote(VoteType.PREVOTE, 3, 1, None, key.address, b"\x00" * 64)
    assert byzantine.conflicting(nil) is None


# ---------------------------------------------------------------------- real processes

CI_FAULTS = (
    "kill,partition_1_3,pause,one_way,restart_all,partition_2_2,loss,truncate_wal,delete_record"
)


@needs_init
def test_short_chaos_run_loses_nothing_and_never_forks(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "chaos.py"),
            "--localnet",
            str(tmp_path / "net"),
            "--duration",
            "30",
            "--faults",
            CI_FAULTS,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print(done.stderr[-3000:])
    assert summary["forks"] == 0, summary
    assert summary["lost_acked"] == 0, summary
    assert summary["acked"] >= 20, summary  # the load really ran through the faults
    assert summary["honest_crashes"] == 0, summary
    assert summary["double_signs"] == 0 and summary["bad_certificates"] == 0, summary
    assert summary["live"] is True, summary
    assert set(summary["faults"]) == set(CI_FAULTS.split(",")), summary  # each at least once
    assert summary["max_recovery_s"] < 60, summary
    assert done.returncode == 0, summary
    # Every acknowledged line on disk is one the summary counted.
    acked = (tmp_path / "net" / "acked.jsonl").read_text().splitlines()
    assert len({json.loads(line)["hash"] for line in acked}) == summary["acked"]


@needs_init
def test_chaos_across_network_namespaces_partitions_and_kills(tmp_path):
    """The same invariants with each node in its own namespace (several "hosts"): a kill and
    a 1|3 partition by blackhole routes. Skipped where namespaces cannot be made."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("cannot create network namespaces: not root or no `ip`")
    command = [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--netns"]
    command += ["--localnet", str(tmp_path / "net"), "--duration", "1"]
    command += ["--faults", "kill,partition_1_3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT)
    if done.returncode == NO_NAMESPACES_EXIT:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["netns"] is True, summary
    assert summary["faults"] == {"kill": 1, "partition_1_3": 1}, summary
    assert (summary["forks"], summary["lost_acked"], summary["honest_crashes"]) == (0, 0, 0)
    assert summary["acked"] >= 1 and summary["live"] is True, summary
    assert done.returncode == 0, summary


def _evidence_by_key(path: Path, genesis: dict) -> dict[bytes, int]:
    """Evidence items committed in a stopped node's blocks, counted by accused public key."""
    store = Store.open(path, chain_id=genesis["chain_id"], genesis_hash=genesis_hash(genesis))
    found: dict[bytes, int] = {}
    try:
        for height in range(1, (store.blocks.latest_height() or 0) + 1):
            for raw in decode_block(store.blocks.block(height).block).evidence:
                item = decode_evidence_item(raw)
                found[item.public_key] = found.get(item.public_key, 0) + 1
    finally:
        store.close()
    return found


@needs_init
def test_one_byzantine_validator_of_four_keeps_the_chain_safe_and_is_caught(tmp_path):
    net = Net(tmp_path / "net", free_base_port(), chain_id="khazana-byztest")
    villain = "auditor"
    honest = [n for n in NAMES if n != villain]
    (net.root / villain / ACK_FILE).write_text(ACK_SENTENCE + "\n")
    try:
        for name in honest:
            net.start(name)
        net.start(villain, env={ENV: "double-propose,double-vote"})
        net.wait(lambda: all(net.height(n) >= 2 for n in NAMES), "first blocks", 40)
        hashes = [net.submit(honest[i % 3], i, f"BZ{i}") for i in range(3)]
        net.wait(lambda: all(net.rpc(n, "tx", hash=h) for n in honest for h in hashes), "txs")
        start = max(net.height(n) for n in honest)
        net.wait(lambda: all(net.height(n) >= start + 8 for n in honest), "growth", 60)
        assert net.procs[villain].poll() is None, net.log(villain)[-1500:]
        for name in NAMES:
            assert net.stop(name) == 0, net.log(name)[-1500:]
    finally:
        net.stop_all()

    views = {name: net.read_store(name) for name in NAMES}
    for view in views.values():
        check_certificates(view, net.genesis)
    assert check_agreement(views) >= start
    records = [v.record for v in views.values() if v.record is not None]
    doubles = find_double_signs(signed_votes(views.values(), records), net.genesis)
    # Only the byzantine validator double-signs (its doubles may or may not be in stores).
    assert {first.validator for first, _ in doubles} <= {_address(net, villain)}, doubles
    # The honest validators saw its double votes, and the chain holds them as evidence.
    assert any(DOUBLE_SIGN_LOG in net.log(n) for n in honest)
    evidence = _evidence_by_key(net.root / honest[0] / "data" / "node.db", net.genesis)
    assert evidence.get(net.node_public_key(villain), 0) >= 1, evidence
    assert set(evidence) == {net.node_public_key(villain)}, "an honest validator accused"


def _address(net: Net, name: str) -> bytes:
    return address_from_public_key(net.node_public_key(name))


@needs_init
def test_deleted_last_signed_record_never_leads_to_a_double_sign(tmp_path):
    """Reproduction: one validator, crashed right after persisting its record for height
    H+1 (fail point after_persist), the record deleted, restarted. Before the signing hold it
    committed H+1 at once with another block: a double sign. Now it must refuse to sign (it is
    alone, so no peer can show it the network has moved past its tip) and say why."""
    net = Net(tmp_path / "net", free_base_port(1), chain_id="khazana-norecord", validators=1)
    name = net.names[0]
    try:
        net.start(name)
        net.wait(lambda: net.height(name) >= 2, "first blocks")
        assert net.stop(name) == 0
        net.start(name, env={"KHAZANA_FAILPOINTS": "after_persist"})
        assert net.wait_exit(name, "the fail point") == 137
        crashed = net.read_store(name)
        assert crashed.record is not None and crashed.record.height == crashed.height + 1
        db = sqlite3.connect(net.root / name / "data" / "node.db")
        db.execute("DELETE FROM meta WHERE key = 'store.consensus_record'")
        db.commit()
        db.close()
        net.start(name)
        net.wait(lambda: "NOT SIGNING" in net.log(name), "the refusal in the log")
        time.sleep(3)  # several heartbeats: before the fix it committed H+1 within one
        assert net.height(name) == crashed.height, "signed without its record"
        assert net.procs[name].poll() is None, net.log(name)[-1500:]
        assert net.stop(name) == 0
    finally:
        net.stop_all()
    after = net.read_store(name)
    assert after.height == crashed.height  # the slot it may have signed was never re-signed
    records = [r for r in (crashed.record, after.record) if r is not None]
    assert find_double_signs(signed_votes([after], records), net.genesis) == []
