"""Encrypted key files from the command line (`khazana keygen --encrypt`, `khazana key ...`):
the seed is never on disk in clear, every command that reads a key opens an encrypted one,
and passphrases come from files or the terminal, never from the command line."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest

from ledger.crypto import KeyFileError, is_encrypted_key_file, read_key_file
from node import cli


def secret_file(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture
def passphrases(tmp_path, monkeypatch):
    first = secret_file(tmp_path, "first", "first passphrase")
    second = secret_file(tmp_path, "second", "second passphrase")
    monkeypatch.setenv("KHAZANA_PASSPHRASE_FILE", first)
    return first, second


def test_keygen_encrypt_writes_no_seed_and_keyinfo_needs_no_passphrase(
    tmp_path, passphrases, monkeypatch, capsys
):
    out = tmp_path / "institution.key"
    assert cli.main(["keygen", "--out", str(out), "--encrypt", "--kdf-cost", "interactive"]) == 0
    address = capsys.readouterr().out.strip()
    assert is_encrypted_key_file(out) and "seed" not in json.loads(out.read_text())
    assert os.stat(out).st_mode & 0o777 == 0o600
    monkeypatch.delenv("KHAZANA_PASSPHRASE_FILE")
    assert cli.main(["keyinfo", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["address"] == address


def test_encrypt_change_and_decrypt_keep_the_same_key(tmp_path, passphrases, monkeypatch, capsys):
    first, second = passphrases
    plain = tmp_path / "plain.key"
    assert cli.main(["keygen", "--out", str(plain)]) == 0
    original = read_key_file(plain)
    assert cli.main(["key", "encrypt", str(plain), "--kdf-cost", "interactive"]) == 0
    assert is_encrypted_key_file(plain)
    assert read_key_file(plain).seed == original.seed  # opened with the first passphrase

    monkeypatch.setenv("KHAZANA_NEW_PASSPHRASE_FILE", second)
    assert cli.main(["key", "change-passphrase", str(plain), "--kdf-cost", "interactive"]) == 0
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        read_key_file(plain)  # the first passphrase no longer opens it
    monkeypatch.setenv("KHAZANA_PASSPHRASE_FILE", second)
    assert read_key_file(plain).seed == original.seed

    out = tmp_path / "again-plain.key"
    assert cli.main(["key", "decrypt", str(plain), "--out", str(out)]) == 0
    assert not is_encrypted_key_file(out) and read_key_file(out).seed == original.seed
    capsys.readouterr()
    # Refusals: encrypting twice, a wrong passphrase, decrypting over an existing file.
    assert cli.main(["key", "encrypt", str(plain)]) == 1
    monkeypatch.setenv("KHAZANA_PASSPHRASE_FILE", first)
    assert cli.main(["key", "decrypt", str(plain), "--out", str(tmp_path / "x.key")]) == 1
    assert "wrong passphrase" in capsys.readouterr().err
    assert not (tmp_path / "x.key").exists()


def test_a_node_starts_with_an_encrypted_validator_key(tmp_path, passphrases, monkeypatch):
    assert cli.main(["init", "--home", str(tmp_path / "net"), "--validators", "4"]) == 0
    home = tmp_path / "net" / "ministry"
    node_key = home / "node_key.json"
    expected = read_key_file(node_key)
    assert cli.main(["key", "encrypt", str(node_key), "--kdf-cost", "interactive"]) == 0
    seen = []

    async def run_node(config) -> int:
        seen.append(read_key_file(config.node_key_path))  # as node/app.py reads it
        return 0

    module = types.ModuleType("node.app")
    module.run_node = run_node
    monkeypatch.setitem(sys.modules, "node.app", module)
    assert cli.main(["start", "--home", str(home)]) == 0
    assert seen[0].seed == expected.seed
