"""Encrypted key files: a seed sealed under a passphrase (docs/OPERATIONS.md, "Keys").

The passphrase goes through Argon2id (libsodium's `crypto_pwhash`, memory-hard: guessing
costs the attacker the same memory and time per guess as it costs the owner to open the file),
giving a 32-byte key; the seed is sealed with XChaCha20-Poly1305 under it, with a random
24-byte nonce. Everything else in the file (type, public key, address, the KDF's name, salt
and cost) is the associated data: a file whose cost was lowered, or whose public key was
swapped for another, does not open.

    {"type": "khazana-ed25519-encrypted-v1", "public_key": hex, "address": "kz1...",
     "kdf": {"name": "argon2id13", "opslimit": int, "memlimit": int, "salt": hex(16)},
     "cipher": {"name": "xchacha20poly1305-ietf", "nonce": hex(24), "ciphertext": hex(48)}}

Reading a file refuses a KDF cost outside [the library's minimum, `MAX_MEMLIMIT`] so a file
from a stranger cannot make the reader allocate gigabytes.
"""

from __future__ import annotations

import json
import os

import nacl.bindings
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

ENCRYPTED_KEY_FILE_TYPE = "khazana-ed25519-encrypted-v1"
KDF_NAME = "argon2id13"
CIPHER_NAME = "xchacha20poly1305-ietf"

# The default cost: libsodium's "moderate" (256 MiB, 3 passes): a second or two to open.
DEFAULT_OPSLIMIT = argon2id.OPSLIMIT_MODERATE
DEFAULT_MEMLIMIT = argon2id.MEMLIMIT_MODERATE
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 1 << 30  # 1 GiB


class SealError(Exception):
    """A sealed seed that cannot be opened: wrong passphrase, or a damaged or altered file."""


def seal_seed(
    seed: bytes,
    passphrase: bytes,
    *,
    public_key: bytes,
    address: str,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> dict:
    """The encrypted key file document for `seed` (see the module docstring)."""
    _check_cost(opslimit, memlimit)
    if not passphrase:
        raise SealError("the passphrase is empty")
    document = {
        "type": ENCRYPTED_KEY_FILE_TYPE,
        "public_key": public_key.hex(),
        "address": address,
        "kdf": {
            "name": KDF_NAME,
            "opslimit": opslimit,
            "memlimit": memlimit,
            "salt": os.urandom(argon2id.SALTBYTES).hex(),
        },
    }
    key = _derive(passphrase, document["kdf"])
    nonce = os.urandom(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        seed, _associated_data(document), nonce, key
    )
    document["cipher"] = {"name": CIPHER_NAME, "nonce": nonce.hex(), "ciphertext": ciphertext.hex()}
    return document


def open_seed(document: dict, passphrase: bytes) -> bytes:
    """The seed sealed in `document`; SealError if the passphrase is wrong or anything in
    the document was altered."""
    kdf, cipher = document.get("kdf"), document.get("cipher")
    if not isinstance(kdf, dict) or set(kdf) != {"name", "opslimit", "memlimit", "salt"}:
        raise SealError("kdf must be {name, opslimit, memlimit, salt}")
    if not isinstance(cipher, dict) or set(cipher) != {"name", "nonce", "ciphertext"}:
        raise SealError("cipher must be {name, nonce, ciphertext}")
    if kdf["name"] != KDF_NAME or cipher["name"] != CIPHER_NAME:
        raise SealError(f"unknown kdf or cipher (this node knows {KDF_NAME}, {CIPHER_NAME})")
    _check_cost(kdf["opslimit"], kdf["memlimit"])
    try:
        nonce = bytes.fromhex(cipher["nonce"])
        ciphertext = bytes.fromhex(cipher["ciphertext"])
        salt = bytes.fromhex(kdf["salt"])
    except (TypeError, ValueError):
        raise SealError("salt, nonce and ciphertext must be hex strings") from None
    if len(salt) != argon2id.SALTBYTES or len(nonce) != 24 or len(ciphertext) != 32 + 16:
        raise SealError("salt, nonce or ciphertext has the wrong length")
    key = _derive(passphrase, kdf)
    unsealed = {k: v for k, v in document.items() if k != "cipher"}
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, _associated_data(unsealed), nonce, key
        )
    except nacl.exceptions.CryptoError:
        raise SealError("wrong passphrase, or the file was altered") from None


def _derive(passphrase: bytes, kdf: dict) -> bytes:
    return argon2id.kdf(
        32,
        passphrase,
        bytes.fromhex(kdf["salt"]),
        opslimit=kdf["opslimit"],
        memlimit=kdf["memlimit"],
    )


def _associated_data(document: dict) -> bytes:
    """Every field but the cipher, canonically (sorted keys, no spaces)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _check_cost(opslimit: object, memlimit: object) -> None:
    if (
        type(opslimit) is not int
        or type(memlimit) is not int
        or not argon2id.OPSLIMIT_MIN <= opslimit <= MAX_OPSLIMIT
        or not argon2id.MEMLIMIT_MIN <= memlimit <= MAX_MEMLIMIT
    ):
        raise SealError(
            f"kdf cost out of range: opslimit in [{argon2id.OPSLIMIT_MIN}, {MAX_OPSLIMIT}], "
            f"memlimit in [{argon2id.MEMLIMIT_MIN}, {MAX_MEMLIMIT}]"
        )
