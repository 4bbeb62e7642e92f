"""`khazana tx` / `khazana query` (node/client/cli.py via node/cli.py) against a real node.

One validator started with `python -m node start` on loopback (the `Node` helper of
tests/node/test_client.py), commands run in-process through `node.cli.main` with their
stdout/stderr captured. The two-institution story: the regulator signs a forced transfer
offline into a file, submitting it alone is refused with MISSING_APPROVALS, the ministry adds
its signature offline, and the file then commits. Balances are checked through the SDK.
"""

from __future__ import annotations

import base64
import json
import os

import pytest

from ledger.codes import Code
from ledger.crypto import address_to_text, generate_key, write_key_file
from ledger.ops import OPERATIONS
from ledger.tx import decode_signed_tx
from node.cli import build_parser, main
from node.client import Client, TxBuilder
from node.client.cli import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    KEY_ENV,
    MEANINGS,
    format_amount,
)
from tests.node.test_client import Node, closed_port, isin, today_plus

CHAIN_ID = "khazana-sdktest"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    node = Node(tmp_path_factory.mktemp("cli"))
    # The CLI reads as an institution here ($KHAZANA_KEY); who may read what is
    # tests/node/test_rpc_scopes.py's.
    previous = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = node.key_files["ministry"]
    try:
        node.start()
        yield node
    finally:
        node.net.stop_all()
        if previous is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = previous


@pytest.fixture(scope="module")
def market(node):
    """A T-bill with 2 display decimals held by alice (1000 units), bob onboarded too."""
    client = Client(node.url, key=node.reader)
    ministry, regulator = node.keys["ministry"], node.keys["regulator"]
    alice, bob, vasp = (generate_key(bytes([i]) * 32) for i in (21, 22, 23))
    tbill = TxBuilder.register_instrument(
        id="CLI-TBILL",
        kind="tbill",
        name="91-day bill",
        currency="USD",
        face_value=100,
        decimals=2,
        cap=10_000_000,
        usd_face_value=1,
        isin=isin("US00000CLI0"),
        issue_date=today_plus(-1),
        maturity_date=today_plus(90),
    )
    client.send(tbill, [ministry])
    client.send(TxBuilder.license_vasp(vasp=vasp.address_text, name="Broker"), [regulator])
    for investor in (alice, bob):
        onboard = TxBuilder.onboard_investor(
            investor=investor.address_text,
            country="DE",
            category="professional",
            kyc_expiry=today_plus(365),
            vasp=vasp.address_text,
        )
        client.send(onboard, [regulator])
    client.send(
        TxBuilder.issue(instrument="CLI-TBILL", to=alice.address_text, amount=1000), [ministry]
    )
    return {"alice": alice, "bob": bob}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def balances(client: Client, instrument: str) -> dict[str, int]:
    return {h["address"]: h["balance"] for h in client.holders(instrument)}


def test_one_sub_command_per_ledger_operation():
    parser = build_parser()
    tx_action = next(
        a for a in parser._subparsers._group_actions[0].choices["tx"]._actions if a.dest == "tx_op"
    )
    assert set(tx_action.choices) == set(OPERATIONS) | {"sign", "submit"}
    assert set(MEANINGS) == set(Code) - {Code.OK}


def test_two_institutions_sign_offline_and_submit(node, market, tmp_path, capsys):
    client = Client(node.url, key=node.reader)
    alice, bob = market["alice"].address_text, market["bob"].address_text
    regulator = node.keys["regulator"]
    nonce = client.next_nonce(regulator.address)
    path = tmp_path / "forced.json"
    offline = f"http://127.0.0.1:{closed_port()}"  # --sign-only must not need a node
    code, out, err = run(
        capsys,
        "tx", "forced_transfer", "--key", node.key_files["regulator"],
        "--instrument", "CLI-TBILL", "--from", alice, "--to", bob, "--amount", "300",
        "--reason-code", "9", "--legal-reference", "court order 42/2026",
        "--sign-only", "--nonce", str(nonce), "--chain-id", CHAIN_ID, "--rpc", offline,
        "--out", str(path),
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(path.read_text())
    assert document["signers"] == [regulator.address_text]
    assert document["policy"]["rule"] == "forced_transfer" and document["policy"]["min"] == 2
    assert document["signatures_still_needed"] == 1
    assert "signatures_still_needed: 1" in out
    # Submitted with one signature: refused, and the message says what is missing and how.
    code, out, err = run(capsys, "tx", "submit", "--in", str(path), "--wait", "--rpc", node.url)
    assert code == EXIT_REFUSED
    assert "MISSING_APPROVALS (204)" in err and "khazana tx sign" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert client.next_nonce(regulator.address) == nonce  # refused at admission: not consumed
    # The ministry (the issuer) co-signs offline; the id does not change; then it commits.
    code, out, err = run(
        capsys, "tx", "sign", "--key", node.key_files["ministry"], "--in", str(path)
    )
    assert code == 0, err
    cosigned = json.loads(path.read_text())
    assert cosigned["hash"] == document["hash"]
    assert sorted(cosigned["signers"]) == sorted(
        [regulator.address_text, node.keys["ministry"].address_text]
    )
    assert cosigned["signatures_still_needed"] == 0
    before = balances(client, "CLI-TBILL")
    code, out, err = run(capsys, "tx", "submit", "--in", str(path), "--wait", "--rpc", node.url)
    assert code == 0, err
    assert "committed" in out and document["hash"] in out
    after = balances(client, "CLI-TBILL")
    assert after[alice] == before[alice] - 300
    assert after[bob] == before.get(bob, 0) + 300
    # Readable holders: amounts with the instrument's 2 decimals.
    code, out, err = run(capsys, "query", "holders", "CLI-TBILL", "--rpc", node.url)
    assert code == 0, err
    assert format_amount(after[alice], 2) in out and format_amount(after[bob], 2) in out


def test_sign_only_prints_base64_and_submit_takes_it(node, capsys):
    client = Client(node.url, key=node.reader)
    bank = node.keys["central-bank"]
    nonce = client.next_nonce(bank.address)
    code, out, err = run(
        capsys,
        "tx", "register_instrument", "--key", node.key_files["central-bank"],
        "--id", "CLI-CASH", "--kind", "cash", "--name", "digital dollar", "--currency", "USD",
        "--face-value", "1", "--decimals", "2", "--cap", "1_000_000_000",
        "--allowed-countries", "DE,FR",
        "--sign-only", "--nonce", str(nonce), "--chain-id", CHAIN_ID,
        "--rpc", f"http://127.0.0.1:{closed_port()}",
    )  # fmt: skip
    assert code == 0, err
    tx = decode_signed_tx(base64.b64decode(out.strip()))
    assert (tx.body.op, tx.body.nonce, tx.body.sender) == (
        "register_instrument",
        nonce,
        bank.address,
    )
    assert tx.body.args["cap"] == 1_000_000_000 and tx.body.args["allowed_countries"] == [
        "DE",
        "FR",
    ]
    code, out, err = run(
        capsys, "tx", "submit", "--in", out.strip(), "--wait", "--json", "--rpc", node.url
    )
    assert code == 0, err
    assert json.loads(out)["hash"] == tx.tx_id.hex()
    assert client.instrument("CLI-CASH")["allowed_countries"] == ["DE", "FR"]


def test_online_tx_and_rejection_with_code_name_and_meaning(node, market, capsys):
    client = Client(node.url, key=node.reader)
    bob = market["bob"].address_text
    ministry_key = node.key_files["ministry"]
    code, out, err = run(
        capsys, "tx", "issue", "--key", ministry_key, "--instrument", "CLI-TBILL", "--to", bob,
        "--amount", "5", "--wait", "--rpc", node.url,
    )  # fmt: skip
    assert code == 0, err
    assert "committed" in out and "issue" in out
    code, out, err = run(
        capsys, "tx", "issue", "--key", ministry_key, "--instrument", "CLI-TBILL", "--to", bob,
        "--amount", str(10**9), "--wait", "--json", "--rpc", node.url,
    )  # fmt: skip
    assert code == EXIT_REFUSED
    assert "INSTRUMENT_CAP (313)" in err and MEANINGS[Code.INSTRUMENT_CAP] in err
    verdict = json.loads(out)
    assert (verdict["code"], verdict["name"]) == (313, "INSTRUMENT_CAP")
    assert client.instrument("CLI-TBILL")["supply"] < 10**9


def test_unreachable_node_exit_3_one_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    code, out, err = run(capsys, "query", "status", "--rpc", url)
    assert code == EXIT_UNREACHABLE
    assert err.count("\n") == 1 and "unreachable" in err and url in err and out == ""
    key = generate_key(b"u" * 32)
    key_file = tmp_path / "u.key"
    write_key_file(key_file, key)
    code, out, err = run(
        capsys, "tx", "transfer", "--key", str(key_file), "--instrument", "X",
        "--to", key.address_text, "--amount", "1", "--rpc", url,
    )  # fmt: skip
    assert code == EXIT_UNREACHABLE and err.count("\n") == 1


def test_usage_errors_exit_2(node, capsys):
    key_file = node.key_files["ministry"]
    to = node.keys["ministry"].address_text
    code, _, err = run(
        capsys, "tx", "transfer", "--key", key_file, "--instrument", "X", "--to", to,
        "--amount", "ten", "--rpc", node.url,
    )  # fmt: skip
    assert code == EXIT_USAGE and "--amount must be an integer" in err
    code, _, err = run(
        capsys, "tx", "transfer", "--key", key_file, "--instrument", "X", "--to", to,
        "--amount", "1", "--sign-only",
    )  # fmt: skip
    assert code == EXIT_USAGE and "--nonce" in err
    code, _, err = run(capsys, "tx", "submit", "--in", "not base64!", "--rpc", node.url)
    assert code == EXIT_USAGE and "base64" in err
    with pytest.raises(SystemExit) as caught:
        main(["tx", "transfer", "--key", key_file])
    assert caught.value.code == 2


def test_queries_readable_and_json(node, market, capsys):
    client = Client(node.url, key=node.reader)
    alice = market["alice"].address_text
    code, out, err = run(capsys, "query", "account", alice, "--rpc", node.url)
    assert code == 0, err
    held = {b["instrument"]: b["balance"] for b in client.account(alice)["balances"]}
    assert format_amount(held["CLI-TBILL"], 2) in out
    assert "kyc.country:" in out
    code, out, err = run(capsys, "query", "account", alice, "--json", "--rpc", node.url)
    assert json.loads(out) == client.account(alice)
    code, out, _ = run(capsys, "query", "genesis", "--json", "--rpc", node.url)
    assert json.loads(out) == node.genesis
    code, out, _ = run(capsys, "query", "status", "--rpc", node.url)
    assert code == 0 and "sync_info.latest_block_height:" in out
    for argv in (
        ["block"], ["block", "1"], ["commit", "1"], ["instrument", "CLI-TBILL"],
        ["instruments"], ["events", "--instrument", "CLI-TBILL"], ["validators"],
        ["net-info"], ["unconfirmed"],
    ):  # fmt: skip
        code, out, err = run(capsys, "query", *argv, "--rpc", node.url)
        assert code == 0 and out, (argv, err)
    code, out, err = run(capsys, "query", "instrument", "NOPE", "--rpc", node.url)
    assert code == EXIT_REFUSED and "Not found" in err
    committed = client.send(
        TxBuilder.transfer(instrument="CLI-TBILL", to=alice, amount=1), [market["bob"]]
    )
    code, out, err = run(capsys, "query", "tx", committed.hash, "--rpc", node.url)
    assert code == 0 and "height:" in out and str(committed.height) in out


def test_format_amount_is_exact():
    assert format_amount(123456789, 2) == "1,234,567.89"
    assert format_amount(5, 3) == "0.005"
    assert format_amount(-1050, 2) == "-10.50"
    assert format_amount(10**20 + 1, 18) == "100.000000000000000001"
    assert format_amount(42, 0) == "42"


def test_query_prove_verifies_against_a_trusted_genesis(node, market, tmp_path, capsys):
    alice = market["alice"].address_text
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(node.genesis))
    code, out, err = run(
        capsys, "query", "account", alice, "--prove", "--genesis", str(genesis), "--rpc", node.url
    )
    assert code == 0, err
    assert "verified:" in out and "app_hash" in out
    # A genesis naming other validators: the node's certificate cannot convince it.
    other = dict(node.genesis)
    other["validators"] = [
        dict(v, public_key=generate_key(b"x" * 32).public_key.hex())
        for v in node.genesis["validators"]
    ]
    genesis.write_text(json.dumps(other))
    code, out, err = run(
        capsys, "query", "account", alice, "--prove", "--genesis", str(genesis), "--rpc", node.url
    )
    assert code == EXIT_REFUSED and "proof refused" in err
    # ... nor of an account's absence.
    stranger = address_to_text(generate_key(b"s" * 32).address)
    code, _, err = run(
        capsys, "query", "account", stranger, "--prove", "--genesis", str(genesis), "--rpc",
        node.url,
    )  # fmt: skip
    assert code == EXIT_REFUSED and "absence proof refused" in err
    genesis.write_text(json.dumps(node.genesis))
    code, _, err = run(
        capsys, "query", "account", stranger, "--prove", "--genesis", str(genesis), "--rpc",
        node.url,
    )  # fmt: skip
    assert code == EXIT_REFUSED and "absence verified at height" in err
    code, _, err = run(capsys, "query", "account", alice, "--prove", "--rpc", node.url)
    assert code == EXIT_USAGE and "--genesis" in err
