"""NodeConfig: round trip through config.toml, and a clear ConfigError for every bad field."""

from __future__ import annotations

import copy
import io
import json
import logging

import pytest
import tomli_w

from consensus.core import CoreConfig
from ledger.crypto import generate_key
from node.config import ConfigError, HostPort, NodeConfig, from_dict
from node.logs import configure_logging, log_event

KEY_A = generate_key(b"\x01" * 32).public_key
KEY_B = generate_key(b"\x02" * 32).public_key


def minimal() -> dict:
    return {
        "name": "ministry",
        "role": "validator",
        "chain_id": "khazana-test",
        "p2p": {"listen": "10.0.0.5:26656"},
        "rpc": {"listen": "10.0.0.5:26657"},
    }


def full() -> dict:
    document = minimal()
    document["p2p"] = {
        "listen": "0.0.0.0:26656",
        "external_address": "[2001:db8::7]:26656",
        "observers": [KEY_B.hex()],
        "handshake_timeout_ms": 2000,
        "peers": [
            {"name": "central-bank", "pub_key": KEY_A.hex(), "address": "node-2.example.org:26656"}
        ],
    }
    document["consensus"] = {"timeout_propose_ms": 1234, "heartbeat_ms": 700, "block_max_txs": 50}
    document["mempool"] = {"max_txs": 99, "nonce_window": 8}
    document["rpc"] = {
        "listen": "[::]:26657",
        "max_batch": 7,
        "cors_origins": ["*", "https://explorer.example.org:8443"],
    }
    document["metrics"] = {"listen": "127.0.0.1:26660"}
    document["log_level"] = "debug"
    document["log_format"] = "json"
    return document


def write(tmp_path, document: dict) -> None:
    (tmp_path / "config.toml").write_bytes(tomli_w.dumps(document).encode())


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    write(tmp_path, minimal())
    config = NodeConfig.load(tmp_path)
    assert config.p2p.external_address == HostPort("10.0.0.5", 26656)
    assert config.consensus.core == CoreConfig()
    assert config.rpc.max_body_bytes == 1 << 20
    assert config.metrics.listen is None
    assert config.db_path == tmp_path / "data" / "node.db"
    assert config.rpc.url == "http://10.0.0.5:26657"


def test_full_config_is_read_as_written(tmp_path):
    write(tmp_path, full())
    config = NodeConfig.load(tmp_path)
    assert config.p2p.listen.is_wildcard
    assert str(config.p2p.external_address) == "[2001:db8::7]:26656"
    assert config.p2p.peers[0].pub_key == KEY_A
    assert config.p2p.peers[0].address == HostPort("node-2.example.org", 26656)
    assert config.p2p.observers == (KEY_B,)
    assert config.consensus.core.timeout_propose_ms == 1234
    assert config.consensus.core.timeout_prevote_ms == CoreConfig().timeout_prevote_ms
    assert config.consensus.heartbeat_ms == 700
    assert config.mempool.nonce_window == 8
    assert config.rpc.url == "http://[::1]:26657"  # a wildcard is reached through loopback
    assert config.rpc.cors_origins == ("*", "https://explorer.example.org:8443")


@pytest.mark.parametrize("make", [minimal, full])
def test_round_trip_through_the_file(tmp_path, make):
    write(tmp_path, make())
    config = NodeConfig.load(tmp_path)
    (tmp_path / "config.toml").unlink()
    config.write()
    again = NodeConfig.load(tmp_path)
    assert again == config
    assert again.to_toml_dict() == config.to_toml_dict()


def refusal(tmp_path, document: dict) -> ConfigError:
    write(tmp_path, document)
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(tmp_path)
    assert str(tmp_path / "config.toml") in str(info.value)
    return info.value


def changed(path: str, value: object, base=full) -> dict:
    document = copy.deepcopy(base())
    *parents, last = path.split(".")
    table = document
    for part in parents:
        table = table[part] if not part.isdigit() else table[int(part)]
    if value is DELETE:
        del table[last]
    else:
        table[last] = value
    return document


DELETE = object()

REFUSALS = [
    # (dotted path into full(), new value, key named in the error, words in the problem)
    ("p2p.listen", "10.0.0.5:0", "p2p.listen", "port"),
    ("p2p.listen", "10.0.0.5:65536", "p2p.listen", "port"),
    ("p2p.listen", "10.0.0.5", "p2p.listen", "host:port"),
    ("p2p.listen", "::1:26656", "p2p.listen", "brackets"),
    ("p2p.listen", "[not-v6]:26656", "p2p.listen", "IPv6"),
    ("p2p.listen", "bad_host!:26656", "p2p.listen", "host name"),
    ("p2p.listen", 26656, "p2p.listen", "string"),
    ("p2p.external_address", "0.0.0.0:1", "p2p.external_address", "dialled"),
    ("p2p.external_address", DELETE, "p2p.external_address", "wildcard"),
    ("p2p.handshake_timeout_ms", True, "p2p.handshake_timeout_ms", "integer"),
    ("p2p.handshake_timeout_ms", 0, "p2p.handshake_timeout_ms", "from 100"),
    ("p2p.peers.0.pub_key", "00" * 31, "p2p.peers[0].pub_key", "64 lowercase hex"),
    ("p2p.peers.0.pub_key", KEY_A.hex().upper(), "p2p.peers[0].pub_key", "64 lowercase hex"),
    # 32 bytes, but the neutral point (y = 1, small order) and a non-canonical y >= p
    ("p2p.peers.0.pub_key", "01" + "00" * 31, "p2p.peers[0].pub_key", "not a valid Ed25519"),
    ("p2p.peers.0.pub_key", "ff" * 32, "p2p.peers[0].pub_key", "not a valid Ed25519"),
    ("p2p.peers.0.address", "node:99999", "p2p.peers[0].address", "port"),
    ("p2p.peers.0.nmae", "typo", "p2p.peers[0].nmae", "unknown key"),
    ("p2p.peers.0.name", DELETE, "p2p.peers[0].name", "missing"),
    ("p2p.observers", [KEY_B.hex(), KEY_B.hex()], "p2p.observers[1]", "twice"),
    ("p2p.peers", {"name": "x"}, "p2p.peers", "array of tables"),
    ("p2p.allow_ips", ["10.0.0.1/8"], "p2p.allow_ips[0]", "CIDR"),
    ("p2p.allow_ips", ["10.0.0.0/8", "nowhere"], "p2p.allow_ips[1]", "CIDR"),
    ("p2p.allow_ips", "10.0.0.0/8", "p2p.allow_ips", "list of strings"),
    ("p2p.first_message_timeout_ms", 3000, "p2p.first_message_timeout_ms", "handshake_timeout"),
    ("p2p.max_pending_handshakes", 0, "p2p.max_pending_handshakes", "from 1"),
    ("p2p.max_pending_per_ip", 0, "p2p.max_pending_per_ip", "from 1"),
    ("p2p.max_inbound_per_ip", True, "p2p.max_inbound_per_ip", "integer"),
    ("name", DELETE, "name", "missing"),
    ("name", "has space", "name", "A-Z"),
    ("role", "leader", "role", "validator"),
    ("chain_id", "", "chain_id", "printable"),
    ("log_level", "verbose", "log_level", "one of"),
    ("timeout_propose_ms", 5, "timeout_propose_ms", "unknown key"),
    ("consensus.timeout_propse_ms", 5, "consensus.timeout_propse_ms", "unknown key"),
    ("consensus.timeout_propose_ms", 0, "consensus.timeout_propose_ms", "from 1"),
    ("consensus.timeout_propose_ms", 1.5, "consensus.timeout_propose_ms", "integer"),
    ("consensus.block_max_bytes", 8 << 20, "consensus.block_max_bytes", "peer message"),
    ("mempool.max_tx_bytes", 1 << 20, "mempool.max_tx_bytes", "from 64"),
    ("mempool.max_txs", -1, "mempool.max_txs", "from 1"),
    ("mempool.reserved_percent", 95, "mempool.reserved_percent", "from 0"),
    ("mempool.vasp_share_percent", 0, "mempool.vasp_share_percent", "from 1"),
    ("mempool.ttl_blocks", 0, "mempool.ttl_blocks", "from 1"),
    ("mempool.max_tx_decoded_bytes", 65536, "mempool.max_tx_decoded_bytes", "3 x"),
    ("mempool.max_tx_decoded_bytes", 1 << 29, "mempool.max_tx_decoded_bytes", "max_bytes"),
    ("rpc", DELETE, "rpc", "missing"),
    ("rpc.listen", DELETE, "rpc.listen", "missing"),
    ("rpc.listen", "0.0.0.0:26656", "rpc.listen", "p2p.listen"),
    ("rpc.cors_origins", ["explorer.example.org"], "rpc.cors_origins[0]", "http"),
    ("rpc.cors_origins", "*", "rpc.cors_origins", "list of strings"),
    ("metrics.port", 1, "metrics.port", "unknown key"),
    ("metrics", "127.0.0.1:1", "metrics", "table"),
]


@pytest.mark.parametrize(("path", "value", "key", "words"), REFUSALS)
def test_every_bad_field_is_refused_naming_the_key(tmp_path, path, value, key, words):
    error = refusal(tmp_path, changed(path, value))
    assert error.key == key
    assert words in error.problem


def test_unknown_key_error_lists_the_known_keys(tmp_path):
    error = refusal(tmp_path, changed("mempool.max_tx", 5))
    assert "max_tx_bytes" in error.problem and "nonce_window" in error.problem


def test_cross_section_limits(tmp_path):
    document = changed("consensus.block_max_bytes", 4096)
    error = refusal(tmp_path, document)  # default max_tx_bytes 65536 > a 4 KiB block
    assert error.key == "mempool.max_tx_bytes"
    document["mempool"]["max_tx_bytes"] = 4096
    write(tmp_path, document)
    assert NodeConfig.load(tmp_path).consensus.block_max_bytes == 4096


def test_not_toml_and_missing_file(tmp_path):
    (tmp_path / "config.toml").write_text('name = "unterminated\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        NodeConfig.load(tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        NodeConfig.load(tmp_path / "absent")


def test_from_dict_accepts_what_to_toml_dict_writes():
    config = from_dict(full(), home=__import__("pathlib").Path("/nowhere"))
    assert from_dict(config.to_toml_dict(), home=config.home) == config


def test_host_port_text_forms():
    assert str(HostPort.parse("[::1]:80")) == "[::1]:80"
    assert HostPort.parse("[::1]:80").host == "::1"
    assert HostPort.parse("192.168.1.20:26656").dialable() == HostPort("192.168.1.20", 26656)
    assert HostPort.parse("0.0.0.0:1").dialable() == HostPort("127.0.0.1", 1)
    for bad in ("300.1.1.1:80", "host:", ":80", "a..b:80", "-a:80"):
        with pytest.raises(ValueError):
            HostPort.parse(bad)


# ---------------------------------------------------------------------- logs


@pytest.fixture(autouse=True)
def restore_logging():
    """configure_logging changes the root logger: put it back for the rest of the suite."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_log_lines_carry_node_event_and_fields():
    stream = io.StringIO()
    configure_logging("ministry", "info", stream=stream)
    log = logging.getLogger("node.test")
    log_event(log, "block.committed", height=12, hash=b"\xab\xcd", note="two words")
    log_event(log, "noise", level=logging.DEBUG, skipped=True)
    log.warning("plain %s", "message")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    words = lines[0].split(" ")
    assert words[1:4] == ["INFO", "ministry", "block.committed"]
    assert words[4:7] == ["height=12", "hash=abcd", 'note="two']
    assert lines[1].split(" ")[1:5] == ["WARNING", "ministry", '"plain', 'message"']


def test_json_log_lines_and_reconfiguring_does_not_duplicate():
    first, stream = io.StringIO(), io.StringIO()
    configure_logging("auditor", "debug", stream=first)
    configure_logging("auditor", "debug", json_lines=True, stream=stream)
    log_event(logging.getLogger("node.test"), "peer.lost", peer=b"\x01", reason="line\nbreak")
    assert first.getvalue() == ""
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["node"] == "auditor" and record["event"] == "peer.lost"
    assert record["level"] == "info" and record["peer"] == "01"
    assert record["reason"] == "line\nbreak"


def test_unknown_log_level_is_refused():
    with pytest.raises(ValueError, match="log level"):
        configure_logging("x", "loud")


# ---------------------------------------------------------------------- rpc limits


RPC_LIMIT_KEYS = (
    "commit_timeout_ms",
    "ws_max_connections",
    "ws_max_subscriptions",
    "ws_queue_size",
    "ws_max_message_bytes",
)


def test_rpc_limits_default_to_what_the_rpc_server_uses(tmp_path):
    from node.rpc.limits import RpcLimits

    write(tmp_path, minimal())
    config = NodeConfig.load(tmp_path)
    server_defaults = RpcLimits()
    for name in RPC_LIMIT_KEYS:
        assert getattr(config.rpc, name) == getattr(server_defaults, name), name


def test_rpc_limits_round_trip_and_reach_the_server(tmp_path):
    from node.rpc.limits import RpcLimits

    document = minimal()
    chosen = {
        "commit_timeout_ms": 2500,
        "ws_max_connections": 3,
        "ws_max_subscriptions": 2,
        "ws_queue_size": 5,
        "ws_max_message_bytes": 4096,
    }
    document["rpc"].update(chosen)
    write(tmp_path, document)
    config = NodeConfig.load(tmp_path)
    written = config.to_toml_dict()["rpc"]
    assert {name: written[name] for name in RPC_LIMIT_KEYS} == chosen
    config.write()
    assert NodeConfig.load(tmp_path) == config
    limits = RpcLimits.from_config(config)
    assert {name: getattr(limits, name) for name in RPC_LIMIT_KEYS} == chosen


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("rpc.commit_timeout_ms", 0, "from 100"),
        ("rpc.commit_timeout_ms", 2.5, "integer"),
        ("rpc.ws_max_connections", 0, "from 1"),
        ("rpc.ws_max_subscriptions", True, "integer"),
        ("rpc.ws_queue_size", -1, "from 1"),
        ("rpc.ws_queue_size", "256", "integer"),
        ("rpc.ws_max_message_bytes", 100, "from 1024"),
        ("rpc.ws_max_message_bytes", 1 << 30, "to 67108864"),
    ],
)
def test_rpc_limits_refusals_name_the_key(tmp_path, path, value, words):
    error = refusal(tmp_path, changed(path, value))
    assert error.key == path
    assert words in error.problem


# ---------------------------------------------------------------------- rpc guard limits


def test_every_rpc_key_defaults_to_what_the_server_uses_and_reaches_it(tmp_path):
    """The hostile-client limits (issue 13): RpcConfig and RpcLimits name the same keys with
    the same defaults, and every chosen value reaches the server."""
    import dataclasses

    from node.config import RpcConfig
    from node.rpc.limits import GUARD_INTS, RpcLimits

    config_keys = {f.name for f in dataclasses.fields(RpcConfig)} - {"listen"}
    assert config_keys == {f.name for f in dataclasses.fields(RpcLimits)} - {"listen"}
    write(tmp_path, minimal())
    defaults = NodeConfig.load(tmp_path).rpc
    server = RpcLimits()
    for name in config_keys:
        assert getattr(defaults, name) == getattr(server, name), name
    document = minimal()
    chosen = {name: getattr(server, name) + 1000 for name in GUARD_INTS}
    chosen["max_events_page"] = chosen["max_page"] = 7
    document["rpc"].update(chosen, allowed_hosts=["node.example.org", "[::1]:8443", "*"])
    write(tmp_path, document)
    config = NodeConfig.load(tmp_path)
    config.write()
    assert NodeConfig.load(tmp_path) == config
    limits = RpcLimits.from_config(config)
    assert {name: getattr(limits, name) for name in GUARD_INTS} == chosen
    assert limits.allowed_hosts == ("node.example.org", "[::1]:8443", "*")


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("rpc.max_answer_bytes", 1000, "from 65536"),
        ("rpc.max_batch_answer_bytes", "8M", "integer"),
        ("rpc.max_events_page", 1001, "to 1000"),
        ("rpc.max_page", 0, "from 1"),
        ("rpc.max_heavy_reads", 0, "from 1"),
        ("rpc.max_requests_per_ip", 0, "from 1"),
        ("rpc.ws_max_connections_per_ip", 0, "from 1"),
        ("rpc.keep_alive_timeout_ms", 10, "from 100"),
        ("rpc.send_timeout_ms", 10, "from 100"),
        ("rpc.ws_idle_timeout_ms", 10, "from 1000"),
        ("rpc.allowed_hosts", "localhost", "list of strings"),
        ("rpc.allowed_hosts", ["http://evil.example"], "host[:port]"),
        ("rpc.allowed_hosts", ["a b"], "host[:port]"),
    ],
)
def test_rpc_guard_limit_refusals_name_the_key(tmp_path, path, value, words):
    error = refusal(tmp_path, changed(path, value))
    assert error.key == path or error.key.startswith(path)
    assert words in error.problem
