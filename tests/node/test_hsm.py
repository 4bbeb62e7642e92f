"""Keys in a PKCS#11 hardware security module (node/hsm.py, node/keyload.py, `khazana key
hsm-generate`), against a fresh SoftHSM2 token per test.

What must hold: the key is made inside the token and its private value cannot be read out;
its signatures are pure Ed25519 that `ledger.crypto.verify_signature` accepts; a transaction
signed in the token through the CLI (offline, and as a co-signature) is accepted by the
ledger; every way a reference can be wrong or tampered with (another key's public key, a
file others may rewrite, a missing PIN, a wrong PIN) is a one-line refusal, never a
traceback and never a signature by the wrong key. The reference-file checks that need no
token run without SoftHSM2.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import types

import pytest

from ledger.codes import Code
from ledger.crypto import KeyFileError, address_to_text, generate_key, verify_signature
from ledger.execute import apply_transaction
from ledger.tx import TX_DOMAIN_TAG, decode_signed_tx
from node import cli, hsm
from node.keyload import load_key
from tests.ledger.test_ops_harness import CHAIN_ID, Chain

SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
USER_PIN = "4711-user-pin"
SO_PIN = "so-pin-0815"
FREEZE = ("--reason-code", "1", "--legal-reference", "court order 7/2026")


def softhsm_module() -> str | None:
    return next((path for path in SOFTHSM_MODULES if os.path.isfile(path)), None)


def _skip_reason() -> str | None:
    if softhsm_module() is None or shutil.which("softhsm2-util") is None:
        return "softhsm2 not installed: apt-get install softhsm2"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 not installed: pip install -e '.[test]' (or '.[hsm]')"
    return None


needs_softhsm = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def private_file(path, text: str) -> str:
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


def make_token(tmp_path, monkeypatch, label: str = "khazana-test"):
    """A new SoftHSM2 token in tmp_path (its own config and token folder), initialised
    with USER_PIN; the module re-reads its config so this process sees the token."""
    tokens = tmp_path / "tokens"
    tokens.mkdir(exist_ok=True)
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label]
        + ["--pin", USER_PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    hsm.reinitialize_modules()
    return types.SimpleNamespace(
        module=softhsm_module(),
        label=label,
        pin_file=private_file(tmp_path / "user.pin", USER_PIN + "\n"),
    )


@pytest.fixture
def token(tmp_path, monkeypatch):
    return make_token(tmp_path, monkeypatch)


def hsm_generate(token, out, label: str = "central-bank", *extra: str) -> int:
    argv = ["key", "hsm-generate", "--module", token.module, "--token", token.label]
    return cli.main(argv + ["--label", label, "--pin-file", token.pin_file, "--out", str(out)])


@pytest.fixture
def reference(token, tmp_path, capsys):
    out = tmp_path / "central-bank.ref.json"
    assert hsm_generate(token, out) == 0
    printed = json.loads(capsys.readouterr().out)
    return types.SimpleNamespace(path=str(out), printed=printed, token=token)


# --------------------------------------------------------------------------------------
# generating and signing


@needs_softhsm
def test_hsm_generate_writes_a_reference_without_secrets_and_the_key_signs_ed25519(reference):
    document = json.loads(open(reference.path).read())
    assert os.stat(reference.path).st_mode & 0o777 == 0o600
    assert document["kind"] == "pkcs11" and document["token"] == reference.token.label
    assert document["pin_file"] == reference.token.pin_file
    assert USER_PIN not in open(reference.path).read()  # the PIN is named, never written
    assert set(document) >= {"module", "key_label", "key_id", "public_key", "address"}

    key = load_key(reference.path)
    assert isinstance(key, hsm.HsmKey)
    assert key.public_key.hex() == reference.printed["public_key"] == document["public_key"]
    assert key.address_text == reference.printed["address"] == document["address"]
    message = TX_DOMAIN_TAG + b"any message"
    signature = key.sign(message)
    assert len(signature) == 64
    assert verify_signature(key.public_key, message, signature)  # pure Ed25519, strict
    assert key.sign(message) == signature  # RFC 8032 signatures are deterministic
    assert not verify_signature(key.public_key, message + b"!", signature)


@needs_softhsm
def test_a_session_the_token_dropped_is_opened_again(reference):
    key = load_key(reference.path)
    before = key.sign(b"before")
    key._login.session.close()  # as a device reset would: the handle and the login are gone
    assert key.sign(b"before") == before  # logged in again, same key
    assert load_key(reference.path).sign(b"before") == before


@needs_softhsm
def test_the_private_key_never_leaves_the_token(reference):
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    document = json.loads(open(reference.path).read())
    hsm.reinitialize_modules()  # log out, so this session logs in with the PIN itself
    library = hsm._library(reference.token.module)  # pkcs11.lib: once per process
    with library.get_token(token_label=reference.token.label).open(user_pin=USER_PIN) as session:
        private = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(document["key_id"])
        )
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True  # made in the token, never out
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.TOKEN] is True  # kept by the token, not a session object
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            private[Attribute.VALUE]


@needs_softhsm
def test_a_label_already_in_the_token_is_refused(reference, tmp_path, capsys):
    assert hsm_generate(reference.token, tmp_path / "again.json") == 1
    assert "already holds an object labelled 'central-bank'" in capsys.readouterr().err
    assert not (tmp_path / "again.json").exists()
    assert hsm_generate(reference.token, reference.path, "other") == 1  # never overwrites
    assert "refusing to overwrite" in capsys.readouterr().err


@needs_softhsm
def test_keyinfo_shows_the_key_and_key_encrypt_refuses_a_reference(reference, capsys):
    assert cli.main(["keyinfo", reference.path]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {k: reference.printed[k] for k in ("address", "public_key")}
    assert cli.main(["key", "encrypt", reference.path]) == 1
    assert "hardware security module: it has no seed" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# transactions signed in the token


@needs_softhsm
def test_a_transfer_signed_offline_in_the_token_is_accepted_by_the_ledger(reference, capsys):
    key = load_key(reference.path)
    chain = Chain()
    chain.cash()
    chain.investor("bob")
    chain.ok("regulator", "onboard_investor", {
        "investor": key.address, "country": "PK", "category": "retail", "kyc_expiry": "2030-01-01"
    })  # fmt: skip
    chain.ok("central-bank", "issue", {"instrument": "PKR", "to": key.address, "amount": 500})

    argv = ["tx", "transfer", "--instrument", "PKR", "--to", address_to_text(chain.addr("bob"))]
    argv += ["--amount", "120", "--key", reference.path, "--sign-only", "--nonce", "0"]
    assert cli.main(argv + ["--chain-id", CHAIN_ID]) == 0
    tx = decode_signed_tx(base64.b64decode(capsys.readouterr().out.strip()))
    assert [s.public_key for s in tx.signatures] == [key.public_key]
    assert tx.body.sender == key.address

    receipt = apply_transaction(chain.state, tx, chain.ctx)
    assert receipt.code == Code.OK, receipt.log
    assert chain.state.balance("PKR", key.address) == 380
    assert chain.balance("PKR", "bob") == 120
    # The same transaction altered after signing is refused: the token signed these bytes.
    replayed = apply_transaction(chain.state, tx, chain.ctx)
    assert replayed.code == Code.NONCE_USED


@needs_softhsm
def test_an_institution_in_the_token_co_signs_a_transaction_file_offline(
    reference, tmp_path, capsys
):
    file_key = tmp_path / "regulator.key"
    assert cli.main(["keygen", "--out", str(file_key)]) == 0
    capsys.readouterr()
    signed = tmp_path / "freeze.tx.json"
    argv = ["tx", "freeze", "--account", generate_key(b"\x07" * 32).address_text, *FREEZE]
    argv += ["--key", str(file_key), "--sign-only", "--nonce", "3", "--out", str(signed)]
    assert cli.main(argv + ["--chain-id", CHAIN_ID]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["tx", "sign", "--key", reference.path, "--in", str(signed)]) == 0
    capsys.readouterr()
    raw = base64.b64decode(json.loads(signed.read_text())["tx"])
    tx = decode_signed_tx(raw)
    hsm_key = bytes.fromhex(reference.printed["public_key"])
    assert hsm_key in [s.public_key for s in tx.signatures] and len(tx.signatures) == 2
    from ledger.tx import verify_tx_signatures

    verify_tx_signatures(tx)  # both signatures verify over the same body


# --------------------------------------------------------------------------------------
# refusals


def _rewrite(path: str, **changes) -> None:
    document = json.loads(open(path).read())
    document.update(changes)
    for name, value in changes.items():
        if value is None:
            del document[name]
    os.chmod(path, 0o600)
    with open(path, "w") as out:
        json.dump(document, out)


@needs_softhsm
def test_a_reference_naming_another_public_key_is_refused_before_any_use(reference):
    other = generate_key(b"\x09" * 32)
    _rewrite(
        reference.path, public_key=other.public_key.hex(), address=other.address_text
    )  # an attacker's address, with the token still signing: the probe catches it
    with pytest.raises(hsm.HsmError, match="does not sign for public key"):
        load_key(reference.path)


@needs_softhsm
def test_pin_problems_are_one_line_refusals(reference, tmp_path, monkeypatch, capsys):
    wrong = private_file(tmp_path / "wrong.pin", "not-the-pin")
    _rewrite(reference.path, pin_file=wrong)
    hsm.reinitialize_modules()  # as a new process: hsm-generate's login is gone
    with pytest.raises(hsm.HsmError, match="logging in to token .*PinIncorrect"):
        load_key(reference.path)
    # Through the CLI: exit 2 and one line, as for any unreadable key.
    argv = ["tx", "freeze", "--account", generate_key(b"\x08" * 32).address_text, *FREEZE]
    argv += ["--key", reference.path, "--sign-only", "--nonce", "0"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "PinIncorrect" in err and "Traceback" not in err and len(err.splitlines()) == 1

    _rewrite(reference.path, pin_file=None, pin_env="KHAZANA_TEST_HSM_PIN")
    monkeypatch.delenv("KHAZANA_TEST_HSM_PIN", raising=False)
    with pytest.raises(hsm.HsmError, match="KHAZANA_TEST_HSM_PIN is not set"):
        load_key(reference.path)
    monkeypatch.setenv("KHAZANA_TEST_HSM_PIN", USER_PIN)
    assert load_key(reference.path).address_text == reference.printed["address"]

    os.chmod(reference.token.pin_file, 0o644)
    _rewrite(reference.path, pin_env=None, pin_file=reference.token.pin_file)
    with pytest.raises(KeyFileError, match="accessible by other users"):
        load_key(reference.path)


@needs_softhsm
def test_a_key_whose_value_the_token_would_reveal_is_refused(reference):
    # Made with other tools as CKA_SENSITIVE false: its seed can be read in clear, so it is
    # no HSM key at all, and opening it is refused rather than trusted.
    from pkcs11 import Attribute, KeyType

    library = hsm._library(reference.token.module)
    # No PIN: the session shares this process's login (hsm-generate's, in the fixture).
    with library.get_token(token_label=reference.token.label).open(rw=True) as session:
        parameters = session.create_domain_parameters(
            KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: hsm.ED25519_EC_PARAMS}, local=True
        )
        parameters.generate_keypair(
            store=True,
            label="readable",
            private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    _rewrite(reference.path, key_label="readable", key_id=None, public_key=None, address=None)
    with pytest.raises(hsm.HsmError, match="is not sensitive"):
        load_key(reference.path)


@needs_softhsm
def test_missing_token_or_key_is_named(reference):
    _rewrite(reference.path, token="no-such-token")
    with pytest.raises(hsm.HsmError, match="NoSuchToken"):
        load_key(reference.path)
    _rewrite(reference.path, token=reference.token.label, key_label="nobody", key_id=None)
    with pytest.raises(hsm.HsmError, match="no Ed25519 private key: key 'nobody'"):
        load_key(reference.path)


# No token needed from here on: the reference file's own checks.


def _reference_file(tmp_path, **fields) -> str:
    document = {
        "type": hsm.REFERENCE_TYPE,
        "kind": "pkcs11",
        "module": "/nonexistent/libpkcs11.so",
        "token": "t",
        "key_label": "k",
        "pin_env": "SOME_PIN",
    }
    document.update(fields)
    document = {k: v for k, v in document.items() if v is not None}
    return private_file(tmp_path / "ref.json", json.dumps(document))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"module": "libsofthsm2.so"}, "absolute path"),
        ({"key_label": None}, "key_label or key_id"),
        ({"pin_file": "/x"}, "exactly one of pin_file"),
        ({"pin_env": None}, "exactly one of pin_file"),
        ({"pin_env": "X; rm -rf"}, "name of an environment variable"),
        ({"pin": "1234"}, "unknown fields ['pin']"),  # a PIN written in the file is refused
        ({"token": "t" * 33}, "token must be text of 1 to 32 bytes"),
        ({"key_id": "XYZ"}, "key_id must be lowercase hex"),
        ({"public_key": "00" * 32, "address": "kz1wrong"}, "address does not match"),
        ({"type": "khazana-ed25519-v1"}, "not of type"),
    ],
)
def test_malformed_references_are_refused_with_the_reason(tmp_path, fields, reason):
    path = _reference_file(tmp_path, **fields)
    with pytest.raises(hsm.HsmError) as raised:
        load_key(path)
    assert reason in str(raised.value)


def test_a_reference_others_may_rewrite_is_refused(tmp_path):
    # The module path is loaded as code: a reference is held to a key file's mode rules.
    path = _reference_file(tmp_path)
    os.chmod(path, 0o664)
    with pytest.raises(hsm.HsmError, match="accessible by other users"):
        load_key(path)


def test_a_missing_module_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_PIN", "1234")
    with pytest.raises(hsm.HsmError, match="PKCS#11 module /nonexistent/libpkcs11.so does not"):
        load_key(_reference_file(tmp_path))


def test_key_files_still_load_through_load_key(tmp_path):
    path = tmp_path / "plain.key"
    assert cli.main(["keygen", "--out", str(path)]) == 0
    assert load_key(path).seed  # a KeyPair, as read_key_file gives


# --------------------------------------------------------------------------------------
# online: a real node


@needs_softhsm
def test_a_transfer_signed_in_the_token_commits_on_a_node_and_the_token_signs_reads(
    reference, tmp_path, capsys
):
    """`khazana tx transfer --key REF --wait` against a one-validator network, and `khazana
    query account --key REF`, whose RPC credentials the token signs too (an investor may
    read its own account and nobody else's)."""
    from node.client import Client, TxBuilder
    from tests.node.test_client import Node, isin, today_plus

    node = Node(tmp_path / "net")
    try:
        node.start()
        ministry, regulator = node.keys["ministry"], node.keys["regulator"]
        client = Client(node.url, key=ministry)
        hsm_address = reference.printed["address"]
        bob, vasp = generate_key(b"\x31" * 32), generate_key(b"\x32" * 32)
        client.send(
            TxBuilder.register_instrument(
                id="HSM-TBILL",
                kind="tbill",
                name="91-day bill",
                currency="USD",
                face_value=100,
                decimals=0,
                cap=10_000,
                usd_face_value=1,
                isin=isin("US00000HSM0"),
                issue_date=today_plus(-1),
                maturity_date=today_plus(90),
            ),
            [ministry],
        )
        client.send(TxBuilder.license_vasp(vasp=vasp.address_text, name="Broker"), [regulator])
        for investor in (hsm_address, bob.address_text):
            onboard = TxBuilder.onboard_investor(
                investor=investor,
                country="DE",
                category="professional",
                kyc_expiry=today_plus(365),
                vasp=vasp.address_text,
            )
            client.send(onboard, [regulator])
        client.send(TxBuilder.issue(instrument="HSM-TBILL", to=hsm_address, amount=100), [ministry])
        capsys.readouterr()

        argv = ["tx", "transfer", "--instrument", "HSM-TBILL", "--to", bob.address_text]
        argv += ["--amount", "40", "--key", reference.path, "--rpc", node.url, "--wait", "--json"]
        assert cli.main(argv) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["status"] == "committed"

        argv = ["query", "account", hsm_address, "--key", reference.path, "--rpc", node.url]
        assert cli.main([*argv, "--json"]) == 0, capsys.readouterr().err
        balances = json.loads(capsys.readouterr().out)["balances"]
        assert [(b["instrument"], b["balance"]) for b in balances] == [("HSM-TBILL", 60)]
        # The same credentials may not read another investor's account.
        assert cli.main(["query", "account", bob.address_text, "--key", reference.path,
                         "--rpc", node.url]) == 1  # fmt: skip
        assert "forbidden" in capsys.readouterr().err  # the node knew who asked: the token
    finally:
        node.net.stop_all()


@needs_softhsm
def test_bench_hsm_runs_and_reports_both_signers(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "bench_hsm.py")
    done = subprocess.run(
        [sys.executable, script, "--count", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.splitlines()[-1])
    assert [row["count"] for row in figures["results"]] == [5, 5]
    assert all(row["median_us"] > 0 for row in figures["results"])
