"""Keys, signatures, hashes and addresses: every cryptographic primitive the ledger uses.

- `hash256`: BLAKE2b with a 32-byte digest (no key, no personalisation). Transaction ids and
  every other ledger hash use it.
- Ed25519 (RFC 8032) through pynacl/libsodium. Verification is strict, on top of
  libsodium's own checks, so that the accept/reject decision does not depend on the library
  version: wrong lengths, a non-canonical S (S >= L, the "S + L" malleability) and public
  keys of small order (or encoded non-canonically) are refused. Every honest signature
  passes; a signature accepted here is accepted by every strict verifier.
- Addresses: BLAKE2b-160 of `ADDRESS_DOMAIN_TAG + public_key`,
  written as bech32m (BIP-350) with human-readable part "kz", e.g. "kz1...". bech32m
  catches any mistyping of up to four characters, so a mistyped address is refused rather
  than paid.
- Key files: JSON, mode 0600, written atomically and never over an existing file; plain, or
  with the seed sealed under a passphrase (Argon2id + XChaCha20-Poly1305, ledger/keyseal.py).
  `read_key_file` opens either; an encrypted one's passphrase is the one given, else the
  contents of the file named by `KHAZANA_PASSPHRASE_FILE`, else asked for on the terminal.

Signing bytes always start with a domain tag (`TX_DOMAIN_TAG` here; consensus has its
own), so a signature made for one kind of message can never be replayed as another.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions

from ledger.codes import Code, LedgerError
from ledger.keyseal import (
    DEFAULT_MEMLIMIT,
    DEFAULT_OPSLIMIT,
    ENCRYPTED_KEY_FILE_TYPE,
    SealError,
    open_seed,
    seal_seed,
)

TX_DOMAIN_TAG = b"khazana/tx/v1\x00"
ADDRESS_DOMAIN_TAG = b"khazana/address/v1\x00"
ADDRESS_HRP = "kz"

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
ADDRESS_BYTES = 20
KEY_FILE_TYPE = "khazana-ed25519-v1"
PASSPHRASE_FILE_ENV = "KHAZANA_PASSPHRASE_FILE"

# Ed25519 group constants (RFC 8032 section 5.1).
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
# y coordinate of the points of order 8 (the others of order 8 have y = p - this). The
# small-order points are exactly those with y in {0, 1, p - 1, _Y8, p - _Y8}; the test
# suite re-derives this with independent curve arithmetic.
_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _Y8, _P - _Y8})
_Y_MASK = (1 << 255) - 1  # the top bit of an encoded point is the sign of x

__all__ = [
    "ADDRESS_BYTES",
    "ADDRESS_DOMAIN_TAG",
    "ADDRESS_HRP",
    "PUBLIC_KEY_BYTES",
    "SEED_BYTES",
    "SIGNATURE_BYTES",
    "TX_DOMAIN_TAG",
    "KeyFileError",
    "KeyPair",
    "address_from_public_key",
    "address_from_text",
    "address_to_text",
    "bech32m_decode",
    "bech32m_encode",
    "generate_key",
    "hash256",
    "read_key_file",
    "verify_signature",
    "write_key_file",
]


def hash256(data: bytes) -> bytes:
    """BLAKE2b-256 of `data`."""
    return hashlib.blake2b(data, digest_size=32).digest()


# --------------------------------------------------------------------------------------
# keys and signatures


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An Ed25519 key pair. `seed` is the secret (RFC 8032's 32-byte private key)."""

    seed: bytes = field(repr=False)
    public_key: bytes
    address: bytes
    # libsodium's 64-byte secret key (seed || public key), kept to avoid re-deriving it.
    _secret: bytes = field(repr=False, compare=False)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message` (deterministic)."""
        return nacl.bindings.crypto_sign(message, self._secret)[:SIGNATURE_BYTES]

    @property
    def address_text(self) -> str:
        return address_to_text(self.address)


def generate_key(seed: bytes | None = None) -> KeyPair:
    """A key pair from a 32-byte `seed` (deterministic, for tests) or from the OS's randomness."""
    if seed is None:
        seed = os.urandom(SEED_BYTES)
    if type(seed) is not bytes or len(seed) != SEED_BYTES:
        raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes")
    public_key, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    return KeyPair(seed, public_key, address_from_public_key(public_key), secret)


def is_strict_public_key(public_key: bytes) -> bool:
    """True for a canonically encoded public key that is not of small order."""
    if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    y = int.from_bytes(public_key, "little") & _Y_MASK
    # y >= p is a second encoding of y - p; a small-order key makes signatures that verify
    # for many messages (or for every key), so neither is ever a valid account key.
    return y < _P and y not in _SMALL_ORDER_Y


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True iff `signature` is a strict Ed25519 signature of `message` by `public_key`.

    Never raises: anything malformed is simply not a valid signature.
    """
    if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
        return False
    if not is_strict_public_key(public_key):
        return False
    if type(message) is not bytes:
        return False
    # S must be reduced mod L, otherwise (R, S + L) would be a second valid signature.
    if int.from_bytes(signature[32:], "little") >= _L:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    except Exception:  # verification is a predicate; a library error is "no"
        return False
    return True


# --------------------------------------------------------------------------------------
# addresses


def address_from_public_key(public_key: bytes) -> bytes:
    """The 20-byte account address: BLAKE2b-160(ADDRESS_DOMAIN_TAG || public_key)."""
    if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
    return hashlib.blake2b(ADDRESS_DOMAIN_TAG + public_key, digest_size=ADDRESS_BYTES).digest()


def address_to_text(address: bytes) -> str:
    """The bech32m text form of a 20-byte address: "kz1" + 32 data chars + 6 checksum chars."""
    if type(address) is not bytes or len(address) != ADDRESS_BYTES:
        raise ValueError(f"an address is {ADDRESS_BYTES} bytes")
    return bech32m_encode(ADDRESS_HRP, _convert_bits(address, 8, 5, pad=True))


def address_from_text(text: str) -> bytes:
    """The 20-byte address written as `text`; LedgerError(BAD_ADDRESS) if it is not one."""
    try:
        hrp, data = bech32m_decode(text)
    except ValueError as exc:
        raise LedgerError(Code.BAD_ADDRESS, f"{text!r:.100} is not an address: {exc}") from None
    if hrp != ADDRESS_HRP:
        raise LedgerError(
            Code.BAD_ADDRESS, f"{text!r:.100} has prefix {hrp!r}, expected {ADDRESS_HRP!r}"
        )
    try:
        address = _convert_bits(data, 5, 8, pad=False)
    except ValueError as exc:
        raise LedgerError(Code.BAD_ADDRESS, f"{text!r:.100}: {exc}") from None
    if len(address) != ADDRESS_BYTES:
        raise LedgerError(
            Code.BAD_ADDRESS, f"{text!r:.100} holds {len(address)} bytes, expected {ADDRESS_BYTES}"
        )
    return address


# bech32m, transcribed from the BIP-350 reference implementation (which extends BIP-173).

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(_CHARSET)}
_BECH32M_CONST = 0x2BC830A3
_BECH32_MAX_LENGTH = 90


def _polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32m_encode(hrp: str, data: list[int]) -> str:
    """Encode 5-bit `data` under the human-readable part `hrp` (lowercase) with a bech32m checksum."""
    values = _hrp_expand(hrp) + list(data)
    polymod = _polymod(values + [0] * 6) ^ _BECH32M_CONST
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    text = hrp + "1" + "".join(_CHARSET[d] for d in list(data) + checksum)
    if len(text) > _BECH32_MAX_LENGTH:
        raise ValueError(f"bech32m string longer than {_BECH32_MAX_LENGTH} characters")
    return text


def bech32m_decode(text: str) -> tuple[str, list[int]]:
    """Split a bech32m string into (hrp, 5-bit data); ValueError naming the first problem."""
    if type(text) is not str:
        raise ValueError(f"expected a str, got {type(text).__name__}")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise ValueError("character outside printable US-ASCII")
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed upper and lower case")
    if len(text) > _BECH32_MAX_LENGTH:
        raise ValueError(f"longer than {_BECH32_MAX_LENGTH} characters")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1:
        raise ValueError("missing separator '1' or empty human-readable part")
    if pos + 7 > len(text):
        raise ValueError("checksum too short")
    hrp = text[:pos]
    try:
        data = [_CHARSET_INDEX[c] for c in text[pos + 1 :]]
    except KeyError as exc:
        raise ValueError(f"invalid data character {exc.args[0]!r}") from None
    if _polymod(_hrp_expand(hrp) + data) != _BECH32M_CONST:
        raise ValueError("bad checksum (mistyped?)")
    return hrp, data[:-6]


def _convert_bits(data, from_bits: int, to_bits: int, *, pad: bool) -> list[int] | bytes:
    """Regroup a sequence of `from_bits`-bit values as `to_bits`-bit values (BIP-173)."""
    acc = 0
    bits = 0
    out = []
    max_value = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_value)
        return out
    if bits >= from_bits:
        raise ValueError("too much padding")
    if (acc << (to_bits - bits)) & max_value:
        raise ValueError("non-zero padding")
    return bytes(out)


# --------------------------------------------------------------------------------------
# key files


class KeyFileError(Exception):
    """A key file that is missing, malformed, inconsistent or readable by others."""


_MAX_KEY_FILE_BYTES = 4096


def write_key_file(
    path: str | os.PathLike,
    key: KeyPair,
    *,
    passphrase: bytes | None = None,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
    replace: bool = False,
) -> str:
    """Write `key` to a new file at `path` (mode 0600) and return its address text; with a
    `passphrase` the seed is sealed under it (ledger/keyseal.py, at the given KDF cost).

    Atomic: the JSON goes to a private temporary file in the same folder, is fsynced, then
    hard-linked to `path` (link fails if `path` exists), so a reader sees either no file or
    the whole file. `replace=True` (re-encrypting a key in place) renames over `path`
    instead, still atomically.
    """
    path = os.fspath(path)
    address_text = address_to_text(key.address)
    if passphrase is None:
        document = {
            "type": KEY_FILE_TYPE,
            "seed": key.seed.hex(),
            "public_key": key.public_key.hex(),
            "address": address_text,
        }
    else:
        try:
            document = seal_seed(
                key.seed,
                passphrase,
                public_key=key.public_key,
                address=address_text,
                opslimit=opslimit,
                memlimit=memlimit,
            )
        except SealError as exc:
            raise KeyFileError(f"key file {path}: {exc}") from None
    payload = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    if os.path.lexists(path) and not replace:
        raise FileExistsError(f"refusing to overwrite existing key file {path}")
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask could only remove bits, but be explicit
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # raises FileExistsError if someone created it meanwhile
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    _fsync_folder(folder)
    return address_text


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: str | os.PathLike, passphrase: bytes | None = None) -> KeyPair:
    """Load a key file written by `write_key_file`, plain or encrypted (the passphrase: see
    the module docstring); KeyFileError says what is wrong with it."""
    path = os.fspath(path)
    document = _read_key_document(path)
    if document.get("type") == ENCRYPTED_KEY_FILE_TYPE:
        if passphrase is None:
            passphrase = passphrase_for(path)
        try:
            seed = open_seed(document, passphrase)
        except SealError as exc:
            raise KeyFileError(f"key file {path}: {exc}") from None
    elif document.get("type") == KEY_FILE_TYPE:
        seed = _hex_field(document, "seed", SEED_BYTES, path)
    else:
        raise KeyFileError(
            f"key file {path} is not of type {KEY_FILE_TYPE!r} or {ENCRYPTED_KEY_FILE_TYPE!r}"
        )
    key = generate_key(seed)
    if _hex_field(document, "public_key", PUBLIC_KEY_BYTES, path) != key.public_key:
        raise KeyFileError(f"key file {path}: public_key does not match the seed")
    if document.get("address") != address_to_text(key.address):
        raise KeyFileError(f"key file {path}: address does not match the seed")
    return key


def is_encrypted_key_file(path: str | os.PathLike) -> bool:
    """Whether the key file at `path` holds its seed sealed under a passphrase."""
    return _read_key_document(os.fspath(path)).get("type") == ENCRYPTED_KEY_FILE_TYPE


def public_half_of_key_file(path: str | os.PathLike) -> dict:
    """{"address", "public_key"} as a key file states them, without opening its seed (for an
    encrypted file they are authenticated only when it is opened)."""
    path = os.fspath(path)
    document = _read_key_document(path)
    public_key = _hex_field(document, "public_key", PUBLIC_KEY_BYTES, path)
    if document.get("address") != address_to_text(address_from_public_key(public_key)):
        raise KeyFileError(f"key file {path}: address does not match the public key")
    return {"address": document["address"], "public_key": public_key.hex()}


def passphrase_for(path: str) -> bytes:
    """The passphrase of the encrypted key file `path`: the contents of the file named by
    KHAZANA_PASSPHRASE_FILE (one trailing newline dropped; the file must be private), else
    asked for on the terminal; KeyFileError when neither is possible (a service with no
    terminal and no passphrase file)."""
    named = os.environ.get(PASSPHRASE_FILE_ENV)
    if named:
        return read_passphrase_file(named)
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(f"passphrase for {path}: ").encode("utf-8")
    raise KeyFileError(
        f"key file {path} is encrypted: set {PASSPHRASE_FILE_ENV} to a file holding its "
        "passphrase, or run on a terminal"
    )


def read_passphrase_file(path: str) -> bytes:
    """A passphrase kept in a file (mode 0600 or stricter), without one trailing newline."""
    try:
        info = os.stat(path)
        with open(path, "rb") as src:
            data = src.read(4097)
    except OSError as exc:
        raise KeyFileError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    if info.st_mode & 0o077:
        raise KeyFileError(
            f"passphrase file {path} is accessible by other users; run: chmod 600 {path}"
        )
    if len(data) > 4096:
        raise KeyFileError(f"passphrase file {path} is larger than 4096 bytes")
    passphrase = data[:-1] if data.endswith(b"\n") else data
    if not passphrase:
        raise KeyFileError(f"passphrase file {path} is empty")
    return passphrase


def _read_key_document(path: str) -> dict:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"key file {path} is accessible by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        raw = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"key file {path} is larger than {_MAX_KEY_FILE_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(f"key file {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise KeyFileError(f"key file {path} is not a JSON object of a known key file type")
    return document


def _hex_field(document: dict, name: str, size: int, path: str) -> bytes:
    value = document.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        raw = bytes.fromhex(value)
    except ValueError:
        raise KeyFileError(f"key file {path}: {name} is not a hex string") from None
    if len(raw) != size:
        raise KeyFileError(f"key file {path}: {name} is {len(raw)} bytes, expected {size}")
    return raw
