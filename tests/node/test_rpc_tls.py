"""The RPC over TLS, for real: `khazana init --rpc-tls` makes the homes, `khazana start` runs
the node as its own process, and the SDK and the CLI talk to it over https:// and wss://
with credentials, verifying the node against the CA init wrote (and refusing it without)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from ledger.crypto import read_key_file
from node.cli import main
from node.client import AsyncClient, Client, NodeUnreachable, RpcError, TxBuilder
from node.client.cli import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE
from tests.node.netsupport import FAST_TIMEOUTS, free_base_port, set_config_values

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 30


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    base = free_base_port(1)
    args = ["init", "--home", str(root), "--validators", "1", "--base-port", str(base)]
    assert main([*args, "--rpc-tls"]) == 0
    set_config_values(root / "ministry" / "config.toml", FAST_TIMEOUTS)
    log = open(root / "node.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "start", "--home", str(root / "ministry")],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    log.close()
    url = f"https://127.0.0.1:{base + 1}"
    ca = str(root / "tls" / "ca.pem")
    try:
        probe = Client(url, ca_file=ca, timeout_s=2)
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                if probe.status().height >= 1:
                    break
            except NodeUnreachable:
                pass
            assert time.monotonic() < deadline, (root / "node.log").read_text()[-1500:]
            time.sleep(0.1)
        yield url, ca, root / "clients"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_sdk_over_tls_verifies_the_node_and_signs_its_requests(tls_node):
    url, ca, clients = tls_node
    regulator = read_key_file(clients / "regulator.key")
    client = Client(url, key=regulator, ca_file=ca)
    assert client.account(regulator.address_text)["name"] == "regulator"
    vasp = read_key_file(clients / "auditor.key")  # any key: licensed below
    committed = client.send(
        TxBuilder.license_vasp(vasp=vasp.address_text, name="A VASP"), [regulator]
    )
    assert committed.ok
    # Anonymous over the same TLS: the public row only.
    anonymous = Client(url, ca_file=ca)
    assert anonymous.status().height >= 1
    with pytest.raises(RpcError) as refused:
        anonymous.account(regulator.address_text)
    assert (refused.value.code, refused.value.message) == (-32004, "unauthorized")
    # A client that does not trust the node's CA does not talk to it.
    with pytest.raises(NodeUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        Client(url).status()

    async def over_trio():
        aclient = AsyncClient(url, key=regulator, ca_file=ca)
        account = await aclient.account(regulator.address_text)
        assert account["name"] == "regulator"
        async with aclient.subscribe("tm.event='NewBlock'") as blocks:
            async for event in blocks:
                assert event.value["block"]["txs"] is not None  # an institution's view
                break

    trio.run(over_trio)
    with anonymous.subscribe("tm.event='NewBlock'", timeout=20) as blocks:  # wss://, anonymous
        assert next(iter(blocks)).value["block"]["txs"] is None


def test_cli_over_tls_with_key(tls_node, capsys, monkeypatch):
    url, ca, clients = tls_node
    monkeypatch.delenv("KHAZANA_KEY", raising=False)
    auditor = read_key_file(clients / "auditor.key").address_text
    common = ["--rpc", url, "--ca-file", ca]
    assert (
        main(["query", "account", auditor, *common, "--key", str(clients / "auditor.key")])
        == EXIT_OK
    )
    assert "auditor" in capsys.readouterr().out
    # Without credentials the holders list is refused with the rule named.
    assert main(["query", "holders", "PKR", *common]) == EXIT_REFUSED
    assert "unauthorized" in capsys.readouterr().err
    monkeypatch.setenv("KHAZANA_KEY", str(clients / "central-bank.key"))
    assert main(["query", "events", "--per-page", "5", *common]) == EXIT_OK
    capsys.readouterr()
    # tx: the signing key is the credential too.
    args = ["tx", "register_instrument", "--id", "PKR", "--kind", "cash", "--name", "Rupee"]
    args += ["--currency", "PKR", "--face-value", "1", "--decimals", "2", "--cap", "1000"]
    args += ["--key", str(clients / "central-bank.key"), "--wait", *common]
    assert main(args) == EXIT_OK, capsys.readouterr()
    capsys.readouterr()
    assert main(["query", "status", "--rpc", url]) == EXIT_UNREACHABLE  # no CA: not trusted
