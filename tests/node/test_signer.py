"""The remote signer's rules (node/signer.py) and the node's link to it (node/signer_client.py),
and the refusal of a plain validator key in a production home (node/home.py).

The rules are checked against independently built signing bytes (consensus/types.py): the
signer signs only a proposal or vote of its chain, once per (height, round, step), the same
bytes again with the same signature, nothing at or below its record -- whichever node asks --
and its record survives a restart.
"""

from __future__ import annotations

import sys
import time
import types

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import VoteType, proposal_signing_bytes, vote_signing_bytes
from ledger.crypto import generate_key, verify_signature, write_key_file
from node import cli
from node.config import ConfigError, NodeConfig
from node.signer import (
    STEP_PRECOMMIT,
    STEP_PREVOTE,
    STEP_PROPOSAL,
    SignCode,
    SignerService,
    SignRecord,
    SignRefused,
    Slot,
    open_listener,
    parse_sign_bytes,
    serve_signer,
)
from node.signer_client import (
    RemoteValidatorKey,
    SignerConnection,
    SignerLink,
    SignerRefused,
    SignerUnavailable,
)

CHAIN = "khazana-signer-test"
VALIDATOR = generate_key(b"v" * 32)
NODE = generate_key(b"n" * 32)
SIGNER = generate_key(b"s" * 32)


def prevote(height, round_, value=b"\x11" * 32, chain=CHAIN):
    return vote_signing_bytes(chain, VoteType.PREVOTE, height, round_, value)


def precommit(height, round_, value=b"\x11" * 32):
    return vote_signing_bytes(CHAIN, VoteType.PRECOMMIT, height, round_, value)


def proposal(height, round_, value=b"\x22" * 32, pol_round=-1):
    return proposal_signing_bytes(CHAIN, height, round_, value, pol_round)


def service(tmp_path, failpoint=None) -> SignerService:
    return SignerService(VALIDATOR, CHAIN, SignRecord(tmp_path / "signer.db"), failpoint=failpoint)


def request(data: bytes) -> bytes:
    return msgpack.packb({"op": "sign", "data": data}, use_bin_type=True)


# ---- what the signer signs -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 2**64 - 1),
    round_=st.integers(0, 2**31 - 1),
    value=st.one_of(st.none(), st.binary(min_size=1, max_size=64)),
    kind=st.sampled_from([VoteType.PREVOTE, VoteType.PRECOMMIT, "proposal"]),
    pol_round=st.integers(-1, 1000),
)
def test_signing_bytes_parse_to_their_slot_and_nothing_else_parses(
    height, round_, value, kind, pol_round
):
    if kind == "proposal":
        data = proposal_signing_bytes(CHAIN, height, round_, value or b"\x01", pol_round)
        step = STEP_PROPOSAL
    else:
        data = vote_signing_bytes(CHAIN, kind, height, round_, value)
        step = STEP_PREVOTE if kind == VoteType.PREVOTE else STEP_PRECOMMIT
    assert parse_sign_bytes(data, CHAIN) == Slot(height, round_, step)
    for bad in (data + b"\x00", data[:-1]):
        with pytest.raises(SignRefused) as refused:
            parse_sign_bytes(bad, CHAIN)
        assert refused.value.code == SignCode.MALFORMED
    with pytest.raises(SignRefused) as refused:
        parse_sign_bytes(data, CHAIN + "-other")
    assert refused.value.code == SignCode.WRONG_CHAIN


def test_the_signer_never_signs_arbitrary_bytes(tmp_path):
    signer = service(tmp_path)
    from ledger.crypto import TX_DOMAIN_TAG
    from node.p2p.connection import IDENTITY_TAG

    for data in (b"", b"hello", TX_DOMAIN_TAG + b"x" * 40, IDENTITY_TAG + b"x" * 40):
        with pytest.raises(SignRefused) as refused:
            signer.sign(data)
        assert refused.value.code == SignCode.MALFORMED
    for raw in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"op": "format"}), b"x" * 9000):
        answer = msgpack.unpackb(signer.handle(raw))
        assert answer["ok"] is False and answer["code"] == "malformed"
    assert signer.record.last() is None


# ---- the double-sign guard -------------------------------------------------------------


def test_one_signature_per_slot_the_same_one_again_and_nothing_below_the_record(tmp_path):
    signer = service(tmp_path)
    first = signer.sign(prevote(5, 0))
    assert verify_signature(VALIDATOR.public_key, prevote(5, 0), first)
    assert signer.sign(prevote(5, 0)) == first  # identical request, identical signature
    for conflicting in (prevote(5, 0, value=None), prevote(5, 0, value=b"\x99" * 32)):
        with pytest.raises(SignRefused) as refused:
            signer.sign(conflicting)
        assert refused.value.code == SignCode.DOUBLE_SIGN
    with pytest.raises(SignRefused):
        signer.sign(proposal(5, 0))  # the proposal step comes before the prevote
    with pytest.raises(SignRefused):
        signer.sign(precommit(4, 9))  # a lower height, whatever the round
    signer.sign(precommit(5, 0))
    signer.sign(proposal(5, 1))
    signer.sign(prevote(6, 0))
    assert signer.record.last() == Slot(6, 0, STEP_PREVOTE)
    signer.record.close()
    # A restarted signer (the same record file) keeps every refusal and every re-answer.
    again = service(tmp_path)
    assert again.sign(prevote(5, 0)) == first
    with pytest.raises(SignRefused):
        again.sign(prevote(6, 0, value=None))
    again.record.close()


def test_a_failover_pair_asking_for_conflicting_votes_gets_one_signature(tmp_path):
    signer = service(tmp_path)
    answers = [
        msgpack.unpackb(signer.handle(request(prevote(3, 2, value=value))))
        for value in (b"\x01" * 32, b"\x02" * 32)  # node A, then its failover twin B
    ]
    assert answers[0]["ok"] is True
    assert answers[1] == {"ok": False, "code": "double_sign", "error": answers[1]["error"]}
    signer.record.close()


class Died(BaseException):
    pass


@pytest.mark.parametrize("point", ["before_record", "after_record"])
def test_a_signer_killed_while_signing_releases_nothing_it_did_not_record(tmp_path, point):
    def die(name):
        if name == point:
            raise Died()

    signer = service(tmp_path, failpoint=die)
    with pytest.raises(Died):
        signer.sign(prevote(7, 0))
    signer.record.close()
    restarted = service(tmp_path)
    if point == "before_record":
        # Nothing left the signer: the slot is free, whatever the node asks for it now.
        assert restarted.record.last() is None
        restarted.sign(prevote(7, 0, value=None))
    else:
        # Recorded, the answer lost: the same vote is answered, a different one refused.
        assert restarted.record.last() == Slot(7, 0, STEP_PREVOTE)
        assert verify_signature(VALIDATOR.public_key, prevote(7, 0), restarted.sign(prevote(7, 0)))
        with pytest.raises(SignRefused):
            restarted.sign(prevote(7, 0, value=None))
    restarted.record.close()


def test_importing_a_nodes_last_slot_refuses_everything_at_or_below_it(tmp_path):
    record = SignRecord(tmp_path / "signer.db")
    record.set_last(Slot(10, 1, STEP_PREVOTE))
    record.set_last(Slot(9, 0, STEP_PRECOMMIT))  # never lowered
    signer = SignerService(VALIDATOR, CHAIN, record)
    for data in (prevote(10, 1), proposal(10, 1), precommit(9, 5)):
        with pytest.raises(SignRefused):
            signer.sign(data)
    signer.sign(precommit(10, 1))
    record.close()


# ---- the node's side -------------------------------------------------------------------


def test_remote_key_turns_every_failure_into_signing_unavailable(tmp_path):
    from node.metrics import Metrics

    signer = service(tmp_path)
    metrics = Metrics()
    state = {"up": True}

    def call(raw: bytes) -> bytes:
        if not state["up"]:
            raise SignerUnavailable("down")
        return signer.handle(raw)

    key = RemoteValidatorKey(VALIDATOR.public_key, call, metrics=metrics)
    assert key.address == VALIDATOR.address
    assert verify_signature(VALIDATOR.public_key, prevote(1, 0), key.sign(prevote(1, 0)))
    with pytest.raises(SignerRefused) as refused:
        key.sign(prevote(1, 0, value=None))
    assert refused.value.code == "double_sign"
    state["up"] = False
    with pytest.raises(SignerUnavailable):
        key.sign(precommit(1, 0))
    text = metrics.exposition().decode()
    assert 'khazana_signer_failures_total{reason="double_sign"} 1.0' in text
    assert 'khazana_signer_failures_total{reason="unavailable"} 1.0' in text
    assert "khazana_signer_up 0.0" in text
    # A signer holding another key: its signatures do not verify, the node refuses them.
    other = SignerService(generate_key(b"o" * 32), CHAIN, SignRecord(tmp_path / "other.db"))
    with pytest.raises(SignerRefused):
        RemoteValidatorKey(VALIDATOR.public_key, other.handle).sign(prevote(2, 0))
    signer.record.close()
    other.record.close()


def test_signer_link_over_a_unix_socket_admits_only_its_node(tmp_path):
    """Real sockets and threads (no virtual time here): the node's link thread dials, runs the
    Noise handshake, signs; a stranger's key is refused in the handshake."""
    socket_path = tmp_path / "signer.sock"
    signer = service(tmp_path)
    link = SignerLink(str(socket_path), SIGNER.public_key, VALIDATOR.public_key, 2000, 50)
    results = {}

    def sign_through(identity, wait_s: float) -> None:
        connection = SignerConnection(link, identity, CHAIN)
        connection.start()
        try:
            deadline = time.monotonic() + wait_s  # for the dial and the handshake
            while not connection.connected and time.monotonic() < deadline:
                time.sleep(0.01)
            key = RemoteValidatorKey(VALIDATOR.public_key, connection.call)
            try:
                results[identity.public_key] = key.sign(prevote(1, 0))
            except SignerUnavailable as exc:
                results[identity.public_key] = exc
        finally:
            connection.close()

    async def main():
        listener = await open_listener(str(socket_path))
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve_signer(
                    signer,
                    listener,
                    identity=SIGNER,
                    nodes=frozenset({NODE.public_key}),
                    task_status=task_status,
                )
            )
            assert socket_path.stat().st_mode & 0o777 == 0o600
            with trio.fail_after(20):
                await trio.to_thread.run_sync(sign_through, NODE, 10)
                await trio.to_thread.run_sync(sign_through, generate_key(b"x" * 32), 0.3)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert verify_signature(VALIDATOR.public_key, prevote(1, 0), results[NODE.public_key])
    stranger = results[generate_key(b"x" * 32).public_key]
    assert isinstance(stranger, SignerUnavailable)
    assert signer.record.last() == Slot(1, 0, STEP_PREVOTE)
    signer.record.close()


def test_signer_table_is_checked():
    good = {
        "address": "unix:/run/khazana/signer.sock",
        "public_key": SIGNER.public_key.hex(),
        "validator_key": VALIDATOR.public_key.hex(),
    }
    link = SignerLink.from_table(good, "config.toml")
    assert (link.address, link.timeout_ms) == ("/run/khazana/signer.sock", 1000)
    assert SignerLink.from_table({**good, "address": "10.0.0.5:26659"}, "c").address.port == 26659
    for bad in (
        {**good, "address": "nowhere"},
        {**good, "public_key": "00" * 32},
        {**good, "validator_key": "xyz"},
        {**good, "timeout_ms": 0},
        {**good, "timeout_ms": True},
        {**good, "colour": "red"},
    ):
        with pytest.raises(ConfigError):
            SignerLink.from_table(bad, "config.toml")


# ---- a production home holds no plain validator key ------------------------------------


def fake_runtime(monkeypatch) -> list:
    started = []

    async def run_node(config) -> int:
        started.append(config)
        return 0

    module = types.ModuleType("node.app")
    module.run_node = run_node
    monkeypatch.setitem(sys.modules, "node.app", module)
    return started


def test_start_refuses_a_plain_validator_key_unless_the_config_allows_it(
    tmp_path, monkeypatch, capsys
):
    started = fake_runtime(monkeypatch)
    assert cli.main(["init", "--home", str(tmp_path / "net"), "--validators", "4"]) == 0
    home = tmp_path / "net" / "ministry"
    config = NodeConfig.load(home)
    assert config.allow_plaintext_key  # `khazana init` makes test networks
    assert cli.main(["start", "--home", str(home)]) == 0
    text = (home / "config.toml").read_text().replace("allow_plaintext_key = true\n", "")
    (home / "config.toml").write_text(text)
    capsys.readouterr()
    assert cli.main(["start", "--home", str(home)]) == cli.EXIT_PLAINTEXT_KEY == 78
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "plain (unencrypted) validator key" in error
    assert len(started) == 1
    # With a remote signer the node key is only the P2P identity: a plain one is fine, and
    # the validator key the genesis must name is the signer's.
    node_key = generate_key()
    (home / "node_key.json").unlink()
    write_key_file(home / "node_key.json", node_key)
    validator = config.p2p.peers[0].pub_key  # another validator's key: in the genesis
    signer_table = (
        f'\n[signer]\naddress = "unix:{tmp_path}/s.sock"\npublic_key = "{SIGNER.public_key.hex()}"'
        f'\nvalidator_key = "{validator.hex()}"\n'
    )
    (home / "config.toml").write_text(text + signer_table)
    assert cli.main(["start", "--home", str(home)]) == 0
    # ... but not the validator key itself: with a signer it must not be on the node at all.
    (home / "node_key.json").unlink()
    peer_home = tmp_path / "net" / config.p2p.peers[0].name
    (home / "node_key.json").write_bytes((peer_home / "node_key.json").read_bytes())
    (home / "node_key.json").chmod(0o600)
    capsys.readouterr()
    assert cli.main(["start", "--home", str(home)]) == 1
    assert "is the validator key that [signer] names" in capsys.readouterr().err
    (home / "node_key.json").unlink()
    write_key_file(home / "node_key.json", node_key)
    stranger = text + signer_table.replace(validator.hex(), VALIDATOR.public_key.hex())
    (home / "config.toml").write_text(stranger)
    assert cli.main(["start", "--home", str(home)]) == 1
    assert "not in the genesis validator set" in capsys.readouterr().err


def test_init_node_refuses_a_plain_validator_key_and_takes_an_encrypted_one(
    tmp_path, monkeypatch, capsys
):
    assert cli.main(["init", "--home", str(tmp_path / "net"), "--validators", "4"]) == 0
    network = tmp_path / "net"
    key_file = network / "ministry" / "node_key.json"
    argv = [
        "init-node", "--home", str(tmp_path / "prod"), "--name", "ministry",
        "--genesis", str(network / "ministry" / "genesis.json"), "--node-key", str(key_file),
        "--external", "10.1.0.1:26656",
    ]  # fmt: skip
    capsys.readouterr()
    assert cli.main(argv) == 1
    assert "--allow-plaintext-key" in capsys.readouterr().err
    assert not (tmp_path / "prod").exists()
    passphrase = tmp_path / "pass"
    passphrase.write_text("correct horse battery staple\n")
    passphrase.chmod(0o600)
    monkeypatch.setenv("KHAZANA_PASSPHRASE_FILE", str(passphrase))
    assert cli.main(["key", "encrypt", str(key_file), "--kdf-cost", "interactive"]) == 0
    assert cli.main(argv) == 0
    from ledger.crypto import is_encrypted_key_file

    assert is_encrypted_key_file(tmp_path / "prod" / "node_key.json")
    assert not NodeConfig.load(tmp_path / "prod").allow_plaintext_key


def test_init_node_with_a_signer_takes_a_plain_node_key_and_no_validator_key(tmp_path, capsys):
    assert cli.main(["init", "--home", str(tmp_path / "net"), "--validators", "4"]) == 0
    network = tmp_path / "net"
    validator_key = network / "ministry" / "node_key.json"
    from ledger.crypto import read_key_file

    validator = read_key_file(validator_key).public_key.hex()
    node_key = tmp_path / "p2p.key"
    write_key_file(node_key, NODE)

    def argv(home: str, key_file, validator_hex: str = validator) -> list[str]:
        return [
            "init-node", "--home", str(tmp_path / home), "--name", "ministry",
            "--genesis", str(network / "ministry" / "genesis.json"), "--node-key", str(key_file),
            "--external", "10.1.0.1:26656",
            "--signer", "unix:/run/khazana/signer.sock", SIGNER.public_key.hex(), validator_hex,
        ]  # fmt: skip

    assert cli.main(argv("prod", node_key)) == 0
    config = NodeConfig.load(tmp_path / "prod")
    link = SignerLink.from_config(config)
    assert (link.address, link.validator_key.hex()) == ("/run/khazana/signer.sock", validator)
    assert not config.allow_plaintext_key
    capsys.readouterr()
    # The validator key itself as the node key, or a validator key the genesis does not name.
    assert cli.main(argv("a", validator_key)) == 1
    assert "the validator key stays on the signer" in capsys.readouterr().err
    assert cli.main(argv("b", node_key, VALIDATOR.public_key.hex())) == 1
    assert "not in the genesis validator set" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
