"""A network assembled from keys made on separate machines (node/ceremony.py, docs/OPERATIONS.md).

Only public material travels between the "machines" here: each institution's keys are made
in its own folder, the coordinator sees public keys and addresses only, and each operator
builds its home from the shared genesis, its own key and its peers' public keys. The last
test starts the four homes as real processes and checks that they agree on the chain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.crypto import read_key_file
from ledger.genesis import DEFAULT_ROLES
from node.ceremony import sha256_hex
from node.cli import main
from node.config import NodeConfig
from node.home import load_genesis
from tests.node.netsupport import (
    DEADLINE_S,
    FAST_TIMEOUTS,
    NAMES,
    ROOT,
    free_base_port,
    rpc,
    set_config_values,
)


def keygen(path: Path) -> dict:
    """`khazana keygen --json` in-process: {"address", "public_key"} of a new key file."""
    out = run_cli(["keygen", "--out", str(path), "--json"])
    return json.loads(out)


def run_cli(argv: list[str], expect: int = 0) -> str:
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    assert code == expect, (code, stdout.getvalue(), stderr.getvalue())
    return stdout.getvalue() if expect == 0 else stderr.getvalue()


@pytest.fixture
def institutions(tmp_path):
    """Each institution's own folder with its validator key and its officer's client key."""
    made = {}
    for name in NAMES:
        machine = tmp_path / name
        machine.mkdir()
        made[name] = {
            "machine": machine,
            "node": keygen(machine / "node_key.json"),
            "client": keygen(machine / "officer.key"),
        }
    return made


def genesis_args(institutions, out: Path, chain_id: str = "khazana-ceremony") -> list[str]:
    argv = ["genesis", "--out", str(out), "--chain-id", chain_id]
    for name, made in institutions.items():
        argv += ["--validator", f"{name}={made['node']['public_key']}"]
    for name, made in institutions.items():
        argv += ["--institution", f"{name}={made['client']['address']}"]
    return argv


def test_keyinfo_prints_the_public_key_and_address_and_never_the_private_key(tmp_path):
    made = keygen(tmp_path / "k.json")
    info = json.loads(run_cli(["keyinfo", str(tmp_path / "k.json")]))
    assert info == made and set(info) == {"address", "public_key"}
    key = read_key_file(tmp_path / "k.json")
    assert info["public_key"] == key.public_key.hex()
    assert key.seed.hex() not in json.dumps(info)  # the private key stays in the file
    assert "cannot" in run_cli(["keyinfo", str(tmp_path / "missing.json")], expect=1)


def test_the_genesis_names_exactly_the_keys_and_addresses_handed_over(tmp_path, institutions):
    out = tmp_path / "genesis.json"
    printed = run_cli(genesis_args(institutions, out))
    document = out.read_bytes()
    assert f"sha256 {sha256_hex(document)}" in printed
    genesis = load_genesis(out)  # the same checks `khazana start` makes
    assert genesis["chain_id"] == "khazana-ceremony"
    assert [(v["name"], v["public_key"]) for v in genesis["validators"]] == [
        (name, made["node"]["public_key"]) for name, made in institutions.items()
    ]
    assert {i["name"]: i["address"] for i in genesis["institutions"]} == {
        name: made["client"]["address"] for name, made in institutions.items()
    }
    assert {i["name"]: i["roles"] for i in genesis["institutions"]} == {
        name: sorted(DEFAULT_ROLES[name]) for name in institutions
    }
    # Deterministic: the same public material gives the same bytes (and the same hash).
    again = tmp_path / "again.json"
    run_cli(genesis_args(institutions, again))
    assert again.read_bytes() == document


def test_the_genesis_refuses_what_would_make_a_wrong_network(tmp_path, institutions):
    out = tmp_path / "genesis.json"
    good = genesis_args(institutions, out)
    ministry_key = institutions["ministry"]["node"]["public_key"]
    ministry_address = institutions["ministry"]["client"]["address"]
    typo = ministry_address[:-1] + ("q" if ministry_address[-1] != "q" else "p")
    cases = {
        "repeated validator": (
            good + ["--validator", f"ministry={ministry_key}"],
            "more than once",
        ),
        "short key": (
            [a.replace(ministry_key, ministry_key[:-2]) for a in good],
            "64 lowercase hex",
        ),
        "mistyped address": ([a.replace(ministry_address, typo) for a in good], "--institution"),
        "one client key for two": (
            [
                a.replace(institutions["auditor"]["client"]["address"], ministry_address)
                for a in good
            ],
            "share one address",
        ),
        "no name": (good + ["--validator", f"={ministry_key}"], "--validator"),
    }
    for label, (argv, message) in cases.items():
        assert message in run_cli(argv, expect=1), label
        assert not out.exists(), label
    # Institutions without the default role names cannot satisfy the default policy.
    renamed = [a.replace("regulator=kz1", "securities-board=kz1") for a in good]
    assert "policy" in run_cli(renamed, expect=1)
    run_cli(good)
    assert "exists" in run_cli(good, expect=1)  # a genesis is never overwritten


def test_init_node_makes_a_home_from_the_shared_genesis_and_its_own_key(tmp_path, institutions):
    genesis = tmp_path / "genesis.json"
    run_cli(genesis_args(institutions, genesis))
    central = institutions["central-bank"]
    home = tmp_path / "homes" / "central-bank"
    peer = f"ministry={institutions['ministry']['node']['public_key']}@10.1.0.1:26656"
    printed = run_cli(
        [
            "init-node", "--allow-plaintext-key", "--home", str(home), "--name", "central-bank",
            "--genesis", str(genesis), "--node-key", str(central["machine"] / "node_key.json"),
            "--external", "10.1.0.2:26656", "--peer", peer,
        ]
    )  # fmt: skip
    assert sha256_hex(genesis.read_bytes()) in printed
    assert (home / "genesis.json").read_bytes() == genesis.read_bytes()
    assert (home / "node_key.json").read_bytes() == (
        central["machine"] / "node_key.json"
    ).read_bytes()
    assert (home / "node_key.json").stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    config = NodeConfig.load(home)
    assert (config.name, config.role, config.chain_id) == (
        "central-bank",
        "validator",
        "khazana-ceremony",
    )
    assert str(config.p2p.external_address) == "10.1.0.2:26656"
    assert [(p.name, p.pub_key.hex(), str(p.address)) for p in config.p2p.peers] == [
        ("ministry", institutions["ministry"]["node"]["public_key"], "10.1.0.1:26656")
    ]


def test_init_node_refuses_a_key_the_genesis_does_not_name_and_other_mistakes(
    tmp_path, institutions
):
    genesis = tmp_path / "genesis.json"
    run_cli(genesis_args(institutions, genesis))
    stranger = tmp_path / "stranger.json"
    keygen(stranger)
    own = institutions["ministry"]["machine"] / "node_key.json"
    own_key = institutions["ministry"]["node"]["public_key"]

    def init(home: str, key: Path, *extra: str) -> list[str]:
        return [
            "init-node", "--allow-plaintext-key", "--home", str(tmp_path / home), "--name", "ministry",
            "--genesis", str(genesis), "--node-key", str(key),
            "--external", "10.1.0.1:26656", *extra,
        ]  # fmt: skip

    assert "not in the genesis validator set" in run_cli(init("a", stranger), expect=1)
    assert not (tmp_path / "a").exists()
    run_cli(init("b", stranger, "--role", "observer"))  # an observer may use any key
    peer = f"self={own_key}@10.1.0.9:26656"
    assert "own key" in run_cli(init("c", own, "--peer", peer), expect=1)
    assert "wildcard" in run_cli(init("d", own, "--external", "0.0.0.0:26656"), expect=1)
    run_cli(init("e", own))
    assert "not empty" in run_cli(init("e", own), expect=1)
    bad_genesis = tmp_path / "bad.json"
    bad_genesis.write_text("{}")
    argv = init("f", own)
    argv[argv.index(str(genesis))] = str(bad_genesis)
    assert "genesis" in run_cli(argv, expect=1)


def test_four_homes_made_apart_run_one_chain(tmp_path, institutions):
    genesis = tmp_path / "coordinator" / "genesis.json"
    genesis.parent.mkdir()
    run_cli(genesis_args(institutions, genesis))
    base = free_base_port(4)
    ports = {name: base + 3 * index for index, name in enumerate(NAMES)}
    homes = {}
    for name in NAMES:
        peers = [
            f"{other}={institutions[other]['node']['public_key']}@127.0.0.1:{ports[other]}"
            for other in NAMES
            if other != name
        ]
        home = tmp_path / "operators" / name
        argv = [
            "init-node", "--allow-plaintext-key", "--home", str(home), "--name", name, "--genesis", str(genesis),
            "--node-key", str(institutions[name]["machine"] / "node_key.json"),
            "--listen", f"127.0.0.1:{ports[name]}", "--external", f"127.0.0.1:{ports[name]}",
            "--rpc", f"127.0.0.1:{ports[name] + 1}",
        ]  # fmt: skip
        for peer in peers:
            argv += ["--peer", peer]
        run_cli(argv)
        set_config_values(home / "config.toml", FAST_TIMEOUTS)
        homes[name] = home
    procs = {}
    try:
        for name, home in homes.items():
            log = open(tmp_path / f"{name}.log", "ab")
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "node", "start", "--home", str(home)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            log.close()
        urls = {name: f"http://127.0.0.1:{ports[name] + 1}" for name in NAMES}
        deadline = time.monotonic() + 3 * DEADLINE_S
        heights = {}
        while time.monotonic() < deadline:
            try:
                heights = {
                    name: rpc(url, "status")["sync_info"]["latest_block_height"]
                    for name, url in urls.items()
                }
            except OSError:
                heights = {}
            if heights and min(heights.values()) >= 3:
                break
            time.sleep(0.3)
        logs = {name: (tmp_path / f"{name}.log").read_text()[-800:] for name in NAMES}
        assert heights and min(heights.values()) >= 3, (heights, logs)
        hashes = {
            name: rpc(url, "block", height=3)["block_id"]["hash"] for name, url in urls.items()
        }
        assert len(set(hashes.values())) == 1, hashes
        validators = rpc(urls["auditor"], "validators")["validators"]
        assert sorted(v["pub_key"] for v in validators) == sorted(
            made["node"]["public_key"] for made in institutions.values()
        )
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_a_peer_key_that_is_not_an_ed25519_key_is_refused_before_start_would(
    tmp_path, institutions
):
    genesis = tmp_path / "genesis.json"
    run_cli(genesis_args(institutions, genesis))
    argv = [
        "init-node", "--allow-plaintext-key", "--home", str(tmp_path / "home"), "--name", "ministry",
        "--genesis", str(genesis),
        "--node-key", str(institutions["ministry"]["machine"] / "node_key.json"),
        "--external", "10.1.0.1:26650", "--peer", f"auditor={'00' * 32}@10.1.0.4:26650",
    ]  # fmt: skip
    assert "not a valid Ed25519 public key" in run_cli(argv, expect=1)
    assert not (tmp_path / "home").exists()


def test_init_node_rpc_tls_makes_or_takes_the_certificate(tmp_path, institutions):
    genesis = tmp_path / "genesis.json"
    run_cli(genesis_args(institutions, genesis))
    homes = {}
    for name, extra in (
        ("ministry", ["--rpc-tls"]),  # made here: a CA of the home's own
        ("central-bank", None),  # your PKI's files, and client certificates required
    ):
        home = tmp_path / "homes" / name
        if extra is None:
            made = homes["ministry"]
            extra = [
                "--rpc-tls-cert", str(made / "rpc-cert.pem"),
                "--rpc-tls-key", str(made / "rpc-key.pem"),
                "--rpc-tls-client-ca", str(made / "tls" / "ca.pem"),
            ]  # fmt: skip
        run_cli(
            [
                "init-node", "--allow-plaintext-key", "--home", str(home), "--name", name, "--genesis", str(genesis),
                "--node-key", str(institutions[name]["machine"] / "node_key.json"),
                "--external", "10.1.0.2:26656", *extra,
            ]
        )  # fmt: skip
        homes[name] = home
        config = NodeConfig.load(home)  # the files it names exist
        assert config.rpc.url.startswith("https://")
        assert (home / "rpc-key.pem").stat().st_mode & 0o777 == 0o600
    assert (homes["ministry"] / "tls" / "ca.pem").is_file()
    assert NodeConfig.load(homes["central-bank"]).rpc.tls_client_ca == "rpc-client-ca.pem"
    # A key without its certificate is a mistake, said before anything is written.
    run_cli(
        [
            "init-node", "--allow-plaintext-key", "--home", str(tmp_path / "homes" / "regulator"), "--name", "regulator",
            "--genesis", str(genesis), "--external", "10.1.0.3:26656",
            "--node-key", str(institutions["regulator"]["machine"] / "node_key.json"),
            "--rpc-tls-key", str(homes["ministry"] / "rpc-key.pem"),
        ],
        expect=1,
    )  # fmt: skip
    assert not (tmp_path / "homes" / "regulator").exists()
