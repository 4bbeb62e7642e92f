"""`load_key`: the one way a command opens the key it signs with, wherever the key lives.

- a plain or passphrase-sealed key file (`ledger.crypto.read_key_file`): a `KeyPair`;
- a PKCS#11 key reference file (`node/hsm.py`): an `HsmKey`, whose private key never leaves
  its hardware security module.

Both offer what signers use: `public_key` (32 bytes), `address` (20 bytes), `address_text`
and `sign(message) -> 64-byte Ed25519 signature`. Only a `KeyPair` has a `seed`: re-encrypting
or exporting a key (`khazana key ...`) needs a key file.
"""

from __future__ import annotations

import os

from ledger.crypto import KeyPair, read_key_file
from node.hsm import HsmKey, is_reference_file, open_key, read_reference

SigningKey = KeyPair | HsmKey

__all__ = ["SigningKey", "load_key"]


def load_key(path: str | os.PathLike, passphrase: bytes | None = None) -> SigningKey:
    """The signing key that the file at `path` holds or names; KeyFileError (HsmError for a
    reference) says what is wrong. `passphrase` opens an encrypted key file (default: the
    file named by KHAZANA_PASSPHRASE_FILE, else the terminal)."""
    if is_reference_file(path):
        return open_key(read_reference(path))
    return read_key_file(path, passphrase)
