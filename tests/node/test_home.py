"""`khazana init` layout and the checks `khazana start` makes before the node runtime runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from ledger.chain import Chain
from ledger.crypto import KeyFileError, generate_key, read_key_file, write_key_file
from ledger.genesis import DEFAULT_ROLES, validate_genesis
from ledger.store import ForeignDatabaseError
from node.config import ConfigError, NodeConfig
from node.home import (
    HomeError,
    HomeExistsError,
    HomeLockedError,
    acquire_home_lock,
    init_network,
    load_genesis,
    prepare_start,
    read_network,
)

FOUR = ["ministry", "central-bank", "regulator", "auditor"]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_writes_one_home_per_node_with_private_keys(tmp_path):
    network = init_network(tmp_path, validators=5, observers=2, chain_id="kz-1", base_port=30000)
    names = [node.name for node in network.nodes]
    assert names == [*FOUR, "validator-5", "observer-1", "observer-2"]
    for node in network.nodes:
        assert sorted(os.listdir(node.home)) == ["config.toml", "genesis.json", "node_key.json"]
        assert mode(node.home / "node_key.json") == 0o600
        config = NodeConfig.load(node.home)
        assert (config.name, config.role, config.chain_id) == (node.name, node.role, "kz-1")
    assert sorted(os.listdir(tmp_path / "clients")) == sorted(
        f"{name}.key" for name in [*FOUR, "validator-5"]
    )
    for _name, path in network.clients:
        assert mode(path) == 0o600
        read_key_file(path)  # refuses a key file others can read


def test_every_home_holds_the_same_genesis_naming_the_node_keys(tmp_path):
    network = init_network(tmp_path, validators=5, observers=1)
    contents = {(node.home / "genesis.json").read_bytes() for node in network.nodes}
    assert len(contents) == 1
    genesis = json.loads(contents.pop())
    validate_genesis(genesis)
    by_name = {v["name"]: v["public_key"] for v in genesis["validators"]}
    assert list(by_name) == [*FOUR, "validator-5"]  # observers are not validators
    for node in network.nodes[:5]:
        assert by_name[node.name] == read_key_file(node.home / "node_key.json").public_key.hex()
    institutions = {i["name"]: i for i in genesis["institutions"]}
    assert list(institutions) == [*FOUR, "validator-5"]
    for name, path in network.clients:
        assert institutions[name]["address"] == read_key_file(path).address_text
    assert set(institutions["central-bank"]["roles"]) == set(DEFAULT_ROLES["central-bank"])
    assert institutions["validator-5"]["roles"] == ["validator_operator"]
    # client keys are not node keys
    node_keys = {read_key_file(n.home / "node_key.json").public_key for n in network.nodes}
    client_keys = {read_key_file(path).public_key for _, path in network.clients}
    assert not node_keys & client_keys


def test_one_validator_still_gets_the_four_institutions(tmp_path):
    network = init_network(tmp_path, validators=1)
    assert [node.name for node in network.nodes] == ["ministry"]
    assert [name for name, _ in network.clients] == FOUR
    assert NodeConfig.load(network.nodes[0].home).p2p.peers == ()


def test_peers_and_ports(tmp_path):
    network = init_network(tmp_path, validators=4, observers=2, base_port=31000, host="10.1.2.3")
    configs = {node.name: NodeConfig.load(node.home) for node in network.nodes}
    keys = {name: read_key_file(c.node_key_path).public_key for name, c in configs.items()}
    observers = {keys["observer-1"], keys["observer-2"]}
    for name, config in configs.items():
        peers = {peer.name: peer for peer in config.p2p.peers}
        expected = [v for v in FOUR if v != name]
        assert sorted(peers) == sorted(expected)
        for peer in peers.values():
            assert peer.pub_key == keys[peer.name]
            assert peer.address == configs[peer.name].p2p.external_address
        if config.role == "validator":
            assert set(config.p2p.observers) == observers
        else:
            assert config.p2p.observers == ()
    ports = [
        address.port
        for config in configs.values()
        for address in (config.p2p.listen, config.rpc.listen, config.metrics.listen)
    ]
    assert len(set(ports)) == len(ports) == 18
    assert min(ports) == 31000 and max(ports) == 31017
    assert {c.p2p.listen.host for c in configs.values()} == {"10.1.2.3"}


def test_init_refuses_to_overwrite_unless_forced(tmp_path):
    first = init_network(tmp_path, validators=4)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HomeExistsError, match="--force"):
        init_network(tmp_path, validators=4)
    assert read_network(tmp_path) == first  # nothing was touched
    second = init_network(tmp_path, validators=2, force=True)
    assert [node.name for node in read_network(tmp_path).nodes] == ["ministry", "central-bank"]
    new_genesis = load_genesis(second.nodes[0].home / "genesis.json")
    assert len(new_genesis["validators"]) == 2
    assert not (tmp_path / "regulator").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # --force removes only the network


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"validators": 0}, "--validators"),
        ({"validators": 4, "observers": -1}, "--observers"),
        ({"validators": 4, "base_port": 65530}, "--base-port"),
        ({"validators": 4, "host": "0.0.0.0"}, "wildcard"),
        ({"validators": 4, "host": "bad host"}, "--host"),
    ],
)
def test_init_refuses_bad_arguments(tmp_path, kwargs, words):
    with pytest.raises(HomeError, match=words):
        init_network(tmp_path, **kwargs)
    assert not (tmp_path / "clients").exists()


def test_ipv6_host(tmp_path):
    network = init_network(tmp_path, validators=2, host="::1", base_port=32000)
    assert str(network.nodes[1].p2p) == "[::1]:32003"
    assert network.nodes[0].rpc_url == "http://[::1]:32001"


# ---------------------------------------------------------------------- start checks


@pytest.fixture
def net(tmp_path):
    return init_network(tmp_path / "net", validators=4, observers=1, base_port=33000)


def test_prepare_start_accepts_a_fresh_home_and_locks_it(net):
    plan = prepare_start(net.nodes[0].home)
    try:
        assert plan.config.name == "ministry"
        assert plan.key.public_key.hex() == plan.genesis["validators"][0]["public_key"]
        assert (net.nodes[0].home / "node.pid").read_text() == f"{os.getpid()}\n"
    finally:
        plan.lock.release()
    assert (net.nodes[0].home / "node.pid").read_text() == ""
    prepare_start(net.nodes[0].home).lock.release()  # released: can start again


def test_start_refuses_a_bad_config(net):
    path = net.nodes[0].home / "config.toml"
    path.write_text(path.read_text().replace("max_batch", "max_bacth"))
    with pytest.raises(ConfigError, match="rpc.max_bacth: unknown key"):
        prepare_start(net.nodes[0].home)


def test_start_refuses_a_foreign_validator_key(net):
    home = net.nodes[1].home
    (home / "node_key.json").unlink()
    stranger = generate_key()
    write_key_file(home / "node_key.json", stranger)
    with pytest.raises(HomeError, match="not in the genesis validator set") as info:
        prepare_start(home)
    assert stranger.public_key.hex() in str(info.value)
    # the same key is fine for an observer, which never votes
    observer = net.nodes[4].home
    (observer / "node_key.json").unlink()
    write_key_file(observer / "node_key.json", stranger)
    prepare_start(observer).lock.release()


def test_start_refuses_an_unreadable_key(net):
    os.chmod(net.nodes[0].home / "node_key.json", 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        prepare_start(net.nodes[0].home)


def test_start_refuses_a_genesis_of_another_chain_id(net):
    home = net.nodes[0].home
    path = home / "genesis.json"
    path.write_text(path.read_text().replace('"khazana-local"', '"other-chain"'))
    with pytest.raises(ConfigError, match="is for 'other-chain'"):
        prepare_start(home)


def test_start_refuses_a_broken_genesis(net):
    home = net.nodes[0].home
    (home / "genesis.json").write_text('{"chain_id": "khazana-local", "chain_id": "x"}')
    with pytest.raises(ConfigError, match="duplicate key"):
        prepare_start(home)
    (home / "genesis.json").write_text('{"chain_id": "khazana-local"}')
    with pytest.raises(ConfigError, match="not a usable genesis"):
        prepare_start(home)


def test_start_refuses_a_database_of_another_genesis(net, tmp_path):
    home = net.nodes[0].home
    config = NodeConfig.load(home)
    config.data_path.mkdir()
    Chain.open(config.db_path, load_genesis(config.genesis_path)).close()
    prepare_start(home).lock.release()  # its own database is fine
    # Same chain id, other genesis (another init): the database is not this chain's.
    other = init_network(tmp_path / "other", validators=4)
    (home / "genesis.json").write_bytes((other.nodes[0].home / "genesis.json").read_bytes())
    (home / "node_key.json").unlink()
    (home / "node_key.json").write_bytes((other.nodes[0].home / "node_key.json").read_bytes())
    os.chmod(home / "node_key.json", 0o600)
    with pytest.raises(ForeignDatabaseError):
        prepare_start(home)
    # and the lock was released on the way out
    acquire_home_lock(home).release()


def test_second_start_on_one_home_is_refused(net):
    home = net.nodes[0].home
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from node.home import prepare_start
                plan = prepare_start({str(home)!r})
                print("locked", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(HomeLockedError, match=f"already running.*pid {holder.pid}"):
            prepare_start(home)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    prepare_start(home).lock.release()  # the kernel dropped the dead process's lock


def test_lock_is_shared_within_one_process(net):
    home = net.nodes[0].home
    first = acquire_home_lock(home)
    second = acquire_home_lock(home)  # the runtime taking the lock `start` already holds
    assert second is first
    second.release()
    assert first.held
    first.release()
    assert not first.held
