"""Signature schemes the simulator injects into the core (`Hooks.sign` / `Hooks.verify`).

The core never signs by itself: it is handed `sign(bytes) -> bytes` and
`verify(pub_key, message, signature) -> bool`. Two schemes are provided:

- `FakeScheme` (the default): a keyed BLAKE2b MAC. Each replica has a 32-byte secret derived
  from the run's seed and its index; its "public key" is BLAKE2b of the secret under another
  personalisation. `verify` looks the secret up by public key and recomputes the MAC. Within
  the simulation this is as unforgeable as a signature -- a byzantine replica only ever gets
  its own signer -- and it is about 50 times faster than Ed25519 in pure Python calls, which
  is what lets the suite run hundreds of seeds. It is *not* a signature scheme outside the
  simulator (the verifier knows every secret).
- `Ed25519Scheme`: real pynacl keys, used by one test on a few seeds to show the core works
  unchanged with the production scheme.

Addresses are the first 20 bytes of BLAKE2b-256 of the public key (the simulator's choice;
the core treats addresses as opaque bytes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey


def address_of(pub_key: bytes) -> bytes:
    return hashlib.blake2b(pub_key, digest_size=32, person=b"khz-sim-addr").digest()[:20]


@dataclass(frozen=True, slots=True)
class KeyPair:
    """One replica's identity: what goes into the validator set, and how it signs."""

    address: bytes
    pub_key: bytes
    sign: Callable[[bytes], bytes]


def _derive_secret(seed: int, index: int) -> bytes:
    material = b"%d/%d" % (seed, index)
    return hashlib.blake2b(material, digest_size=32, person=b"khz-sim-secret").digest()


class FakeScheme:
    """Keyed-BLAKE2b "signatures": fast, deterministic, verifiable only inside the simulator."""

    name = "fake"

    def __init__(self) -> None:
        self._secrets: dict[bytes, bytes] = {}

    def keypair(self, seed: int, index: int) -> KeyPair:
        secret = _derive_secret(seed, index)
        pub_key = hashlib.blake2b(secret, digest_size=32, person=b"khz-sim-pub").digest()
        self._secrets[pub_key] = secret

        def sign(message: bytes) -> bytes:
            return hashlib.blake2b(message, digest_size=64, key=secret).digest()

        return KeyPair(address_of(pub_key), pub_key, sign)

    def verify(self, pub_key: bytes, message: bytes, signature: bytes) -> bool:
        secret = self._secrets.get(pub_key)
        if secret is None or len(signature) != 64:
            return False
        expected = hashlib.blake2b(message, digest_size=64, key=secret).digest()
        return expected == signature


class Ed25519Scheme:
    """Real Ed25519 (pynacl): the production scheme, slow in bulk but exact."""

    name = "ed25519"

    def keypair(self, seed: int, index: int) -> KeyPair:
        key = SigningKey(_derive_secret(seed, index))
        pub_key = bytes(key.verify_key)

        def sign(message: bytes) -> bytes:
            return key.sign(message).signature

        return KeyPair(address_of(pub_key), pub_key, sign)

    def verify(self, pub_key: bytes, message: bytes, signature: bytes) -> bool:
        try:
            VerifyKey(pub_key).verify(message, signature)
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True


SCHEMES = {"fake": FakeScheme, "ed25519": Ed25519Scheme}
