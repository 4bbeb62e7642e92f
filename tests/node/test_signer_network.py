"""Real processes: one validator of four moved onto a remote signer (`khazana init-signer`,
`khazana signer`), the signer killed and restarted while the network runs.

The validator keeps following while its signer is down (the other three decide), signs
again once it is back, and no vote in any store or consensus record conflicts with another.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

from ledger.crypto import generate_key, read_key_file, write_key_file
from node import cli
from node.config import NodeConfig
from node.signer import RECORD_FILE, SignRecord
from tests.node.netsupport import (
    ROOT,
    Net,
    check_agreement,
    check_certificates,
    find_double_signs,
    free_base_port,
    signed_votes,
)


def start_signer(net: Net, home) -> subprocess.Popen:
    log = open(net.root / "signer.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "signer", "--home", str(home)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    log.close()
    return proc


def test_a_validator_behind_a_remote_signer_survives_the_signers_restart(tmp_path, capsys):
    base = free_base_port(5)
    net = Net(tmp_path / "net", base)
    victim = "ministry"
    home = net.root / victim
    validator = read_key_file(home / "node_key.json")
    # Move the validator key to the signer; the node gets a P2P key of its own.
    node_key = generate_key()
    signer_home = tmp_path / "signer"
    signer_port = base + 12
    argv = [
        "init-signer", "--home", str(signer_home), "--chain-id", net.chain_id,
        "--validator-key", str(home / "node_key.json"), "--node", node_key.public_key.hex(),
        "--listen", f"127.0.0.1:{signer_port}", "--from-node-home", str(home),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    signer_table = capsys.readouterr().out.split("[signer]\n", 1)[1]
    (home / "node_key.json").unlink()
    write_key_file(home / "node_key.json", node_key)
    config = home / "config.toml"
    config.write_text(config.read_text() + "\n[signer]\n" + signer_table)
    assert NodeConfig.load(home).signer["validator_key"] == validator.public_key.hex()
    for other in net.names[1:]:  # the others now expect the node's new P2P key
        loaded = NodeConfig.load(net.root / other)
        peers = tuple(
            dataclasses.replace(p, pub_key=node_key.public_key) if p.name == victim else p
            for p in loaded.p2p.peers
        )
        dataclasses.replace(loaded, p2p=dataclasses.replace(loaded.p2p, peers=peers)).write()

    signer = start_signer(net, signer_home)
    try:
        for name in net.names:
            net.start(name)
        net.wait(lambda: min(net.height(n) for n in net.names) >= 3, "blocks with the signer")
        signing = "signing through the remote signer"
        net.wait(lambda: net.log(victim).count(signing) == 1, "a signature through the signer")
        signer.send_signal(signal.SIGKILL)
        signer.wait(timeout=10)
        down_at = net.height("auditor")
        net.wait(
            lambda: min(net.height(n) for n in net.names) >= down_at + 2,
            "the network (the victim following) while the signer is down",
        )
        signer = start_signer(net, signer_home)
        back_at = net.height("auditor")
        net.wait(lambda: net.log(victim).count(signing) == 2, "signing after the signer's restart")
        assert "NOT SIGNING: the remote signer is unavailable" in net.log(victim)
        net.wait(lambda: min(net.height(n) for n in net.names) > back_at + 1, "no halt after it")
    finally:
        net.stop_all()
        if signer.poll() is None:
            signer.send_signal(signal.SIGKILL)
            signer.wait(timeout=10)
    views = {name: net.read_store(name) for name in net.names}
    check_agreement(views)
    for view in views.values():
        check_certificates(view, net.genesis)
    records = [v.record for v in views.values() if v.record is not None]
    assert not find_double_signs(signed_votes(views.values(), records), net.genesis)
    record = SignRecord(signer_home / RECORD_FILE)  # the signer signed after its restart
    assert record.last().height > back_at
    record.close()
