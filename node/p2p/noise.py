"""Noise_XX_25519_ChaChaPoly_BLAKE2b, sans-IO, from pynacl primitives.

This module is a direct transcription of the Noise Protocol Framework, revision 34
(Trevor Perrin, 2018-07-11, https://noiseprotocol.org/noise.html), restricted to the one
protocol Khazana speaks. Section numbers below refer to that document. It does no I/O: the
caller moves the bytes (`node/p2p/connection.py` over a trio stream, the tests from the
published test vectors).

Theory of operation:

* `CipherState` (section 5.1) holds a 32-byte key `k` and a 64-bit counter `n`; every
  encryption uses the next `n` as the ChaCha20-Poly1305 nonce (section 12.3: 32 zero bits
  then `n` little-endian), so a nonce is never reused under one key. A failed decryption
  does not advance `n`.
* `SymmetricState` (section 5.2) holds the chaining key `ck` and the transcript hash `h`:
  every byte of the handshake is hashed into `h`, and every DH output is mixed into `ck`
  with HKDF (section 4.3), so both parties end with the same keys only if they saw the same
  transcript.
* `HandshakeState` (section 5.3) runs the XX pattern (section 7.5):

      -> e
      <- e, ee, s, es
      -> s, se

  Each side learns the other's static key during the handshake (encrypted from message 2
  on); `split()` then yields one `CipherState` per direction.

Error kinds: bytes from the remote that do not authenticate or are too short are a
`PeerProtocolError`; calling the methods out of order is our bug and raises `RuntimeError`.
"""

from __future__ import annotations

import hashlib
import hmac

import nacl.exceptions
import nacl.utils
from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)

from node.p2p.errors import PeerCode, PeerProtocolError

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2b"
DHLEN = 32  # X25519 public keys and shared secrets (section 12.1)
HASHLEN = 64  # BLAKE2b-512 (section 12.8)
KEYLEN = 32  # cipher keys are truncated to 32 bytes when HASHLEN is 64 (section 5.2)
TAGLEN = 16  # Poly1305 authentication tag
MAX_MESSAGE_LEN = 65535  # section 3: no Noise message is longer
MAX_NONCE = 2**64 - 1  # section 5.1: reserved, never used to encrypt

# XX, section 7.5. The initiator writes messages 0 and 2, the responder message 1.
XX_PATTERN: tuple[tuple[str, ...], ...] = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


def blake2b(data: bytes) -> bytes:
    """HASH(data): BLAKE2b with a 64-byte digest (section 12.8)."""
    return hashlib.blake2b(data).digest()


def hmac_hash(key: bytes, data: bytes) -> bytes:
    """HMAC-HASH(key, data): RFC 2104 HMAC over BLAKE2b, BLOCKLEN 128 (section 4.3)."""
    return hmac.new(key, data, hashlib.blake2b).digest()


def hkdf(chaining_key: bytes, input_key_material: bytes, num_outputs: int) -> tuple[bytes, ...]:
    """HKDF(chaining_key, input_key_material, num_outputs), section 4.3 (2 or 3 outputs)."""
    if num_outputs not in (2, 3):
        raise ValueError(f"HKDF gives 2 or 3 outputs, not {num_outputs}")
    temp_key = hmac_hash(chaining_key, input_key_material)
    output1 = hmac_hash(temp_key, b"\x01")
    output2 = hmac_hash(temp_key, output1 + b"\x02")
    if num_outputs == 2:
        return output1, output2
    return output1, output2, hmac_hash(temp_key, output2 + b"\x03")


def x25519_public_key(private_key: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (clamping is done by libsodium)."""
    return crypto_scalarmult_base(private_key)


def generate_x25519_private_key() -> bytes:
    """GENERATE_KEYPAIR (section 4.1): 32 bytes from the OS CSPRNG."""
    return nacl.utils.random(DHLEN)


def dh(private_key: bytes, public_key: bytes) -> bytes:
    """DH(key_pair, public_key) with X25519 (section 12.1).

    libsodium refuses a public key of small order (the shared secret would be all zeros
    and known to anyone); the spec allows an implementation to reject such keys, and we do:
    only the remote can have sent one.
    """
    try:
        return crypto_scalarmult(private_key, public_key)
    except nacl.exceptions.RuntimeError:
        raise PeerProtocolError(PeerCode.BAD_KEY, "X25519 public key of small order") from None


class CipherState:
    """A key and a nonce counter for one direction of traffic (section 5.1)."""

    __slots__ = ("_key", "_nonce")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != KEYLEN:
            raise ValueError(f"cipher key must be {KEYLEN} bytes, got {len(key)}")
        self._key = key
        self._nonce = 0

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def nonce(self) -> int:
        return self._nonce

    def _nonce_bytes(self) -> bytes:
        if self._nonce >= MAX_NONCE:
            raise PeerProtocolError(
                PeerCode.NONCE_EXHAUSTED, f"nonce {self._nonce} reached the reserved maximum"
            )
        # ChaChaPoly nonce, section 12.3: 32 bits of zeros, then n as 64-bit little-endian.
        return b"\x00\x00\x00\x00" + self._nonce.to_bytes(8, "little")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._key is None:
            return plaintext
        ciphertext = crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, ad, self._nonce_bytes(), self._key
        )
        self._nonce += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._key is None:
            return ciphertext
        if len(ciphertext) < TAGLEN:
            raise PeerProtocolError(
                PeerCode.BAD_MAC, f"{len(ciphertext)} bytes cannot hold a {TAGLEN}-byte tag"
            )
        try:
            plaintext = crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, ad, self._nonce_bytes(), self._key
            )
        except nacl.exceptions.CryptoError:
            raise PeerProtocolError(
                PeerCode.BAD_MAC, f"message {self._nonce} failed authentication"
            ) from None
        self._nonce += 1
        return plaintext


class SymmetricState:
    """The chaining key, the transcript hash and the current handshake cipher (section 5.2)."""

    __slots__ = ("_cipher", "chaining_key", "handshake_hash")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            self.handshake_hash = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.handshake_hash = blake2b(protocol_name)
        self.chaining_key = self.handshake_hash
        self._cipher = CipherState()

    @property
    def has_key(self) -> bool:
        return self._cipher.has_key

    def mix_key(self, input_key_material: bytes) -> None:
        self.chaining_key, temp_key = hkdf(self.chaining_key, input_key_material, 2)
        self._cipher = CipherState(temp_key[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self.handshake_hash = blake2b(self.handshake_hash + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cipher.encrypt_with_ad(self.handshake_hash, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cipher.decrypt_with_ad(self.handshake_hash, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_key1, temp_key2 = hkdf(self.chaining_key, b"", 2)
        return CipherState(temp_key1[:KEYLEN]), CipherState(temp_key2[:KEYLEN])


class HandshakeState:
    """One side of a Noise_XX_25519_ChaChaPoly_BLAKE2b handshake (section 5.3).

    `ephemeral_private_key` is only for the published test vectors; in production each
    handshake draws a fresh ephemeral key.
    """

    __slots__ = (
        "_ephemeral",
        "_ephemeral_public",
        "_message_index",
        "_static",
        "_static_public",
        "_symmetric",
        "initiator",
        "remote_ephemeral",
        "remote_static",
    )

    def __init__(
        self,
        *,
        initiator: bool,
        static_private_key: bytes,
        prologue: bytes = b"",
        ephemeral_private_key: bytes | None = None,
    ) -> None:
        self.initiator = initiator
        self._symmetric = SymmetricState(PROTOCOL_NAME)
        self._symmetric.mix_hash(prologue)
        self._static = static_private_key
        self._static_public = x25519_public_key(static_private_key)
        self._ephemeral = ephemeral_private_key
        self._ephemeral_public: bytes | None = None
        self.remote_static: bytes | None = None
        self.remote_ephemeral: bytes | None = None
        self._message_index = 0

    @property
    def static_public_key(self) -> bytes:
        return self._static_public

    @property
    def finished(self) -> bool:
        return self._message_index == len(XX_PATTERN)

    @property
    def handshake_hash(self) -> bytes:
        """`h`: a transcript digest both sides share; unique to this session once finished."""
        return self._symmetric.handshake_hash

    def _my_turn(self) -> bool:
        return (self._message_index % 2 == 0) == self.initiator

    def _mix_dh(self, token: str) -> None:
        if self.remote_ephemeral is None or self._ephemeral is None:
            raise RuntimeError(f"token {token} before both ephemeral keys are known")
        if token == "ee":
            secret = dh(self._ephemeral, self.remote_ephemeral)
        elif token == "es":  # initiator's ephemeral with responder's static
            if self.initiator:
                secret = dh(self._ephemeral, self._need_remote_static())
            else:
                secret = dh(self._static, self.remote_ephemeral)
        elif token == "se":  # initiator's static with responder's ephemeral
            if self.initiator:
                secret = dh(self._static, self.remote_ephemeral)
            else:
                secret = dh(self._ephemeral, self._need_remote_static())
        else:
            raise RuntimeError(f"unknown token {token!r}")
        self._symmetric.mix_key(secret)

    def _need_remote_static(self) -> bytes:
        if self.remote_static is None:
            raise RuntimeError("remote static key used before it was received")
        return self.remote_static

    def write_message(self, payload: bytes) -> bytes:
        """WriteMessage (section 5.3): the next handshake message carrying `payload`."""
        if self.finished or not self._my_turn():
            raise RuntimeError(f"not our turn to write (message {self._message_index})")
        out = bytearray()
        for token in XX_PATTERN[self._message_index]:
            if token == "e":
                if self._ephemeral is None:
                    self._ephemeral = generate_x25519_private_key()
                self._ephemeral_public = x25519_public_key(self._ephemeral)
                out += self._ephemeral_public
                self._symmetric.mix_hash(self._ephemeral_public)
            elif token == "s":
                out += self._symmetric.encrypt_and_hash(self._static_public)
            else:
                self._mix_dh(token)
        out += self._symmetric.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE_LEN:
            raise ValueError(f"handshake message of {len(out)} bytes exceeds {MAX_MESSAGE_LEN}")
        self._message_index += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """ReadMessage (section 5.3): the payload of the remote's next handshake message."""
        if self.finished or self._my_turn():
            raise RuntimeError(f"not our turn to read (message {self._message_index})")
        if len(message) > MAX_MESSAGE_LEN:
            raise PeerProtocolError(
                PeerCode.FRAME_TOO_LARGE, f"handshake message of {len(message)} bytes"
            )
        rest = memoryview(message)
        for token in XX_PATTERN[self._message_index]:
            if token in ("e", "s"):
                size = DHLEN + (TAGLEN if token == "s" and self._symmetric.has_key else 0)
                if len(rest) < size:
                    raise PeerProtocolError(
                        PeerCode.BAD_HANDSHAKE,
                        f"handshake message {self._message_index} too short for token {token}",
                    )
                field, rest = bytes(rest[:size]), rest[size:]
                if token == "e":
                    self.remote_ephemeral = field
                    self._symmetric.mix_hash(field)
                else:
                    self.remote_static = self._symmetric.decrypt_and_hash(field)
            else:
                self._mix_dh(token)
        payload = self._symmetric.decrypt_and_hash(bytes(rest))
        self._message_index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """Split (section 5.2) into (send, receive) ciphers for this side."""
        if not self.finished:
            raise RuntimeError("split before the handshake finished")
        initiator_to_responder, responder_to_initiator = self._symmetric.split()
        if self.initiator:
            return initiator_to_responder, responder_to_initiator
        return responder_to_initiator, initiator_to_responder
