"""Ed25519 keys held in a PKCS#11 hardware security module (docs/OPERATIONS.md, "Hardware
security modules (PKCS#11)").

What this module owns:

- the **key reference file**: JSON, mode 0600, naming where a key lives and how to log in,
  never the key and never the PIN:

      {"type": "khazana-pkcs11-key-v1", "kind": "pkcs11",
       "module": "/usr/lib/softhsm/libsofthsm2.so", "token": "khazana",
       "key_label": "central-bank", "key_id": "hex" (optional),
       "pin_file": "/etc/khazana/hsm.pin"  | "pin_env": "KHAZANA_HSM_PIN",
       "public_key": "hex", "address": "kz1..."}

  The module path is loaded into the process as a shared library, so the reference file is
  held to a key file's rules (a regular file, 0600, at most 4 KiB): whoever can rewrite it
  can make the process load their code. `public_key` and `address` are optional (what a
  hand-written reference for an existing key may leave out); when present the token's key
  must match them.
- `HsmKey`: a key in a token with the interface of `ledger.crypto.KeyPair` that signers use
  (`public_key`, `address`, `address_text`, `sign`). Signing is CKM_EDDSA without
  parameters, i.e. pure Ed25519 (RFC 8032), so signatures verify with
  `ledger.crypto.verify_signature`. Opening a key proves it: the token signs a probe under
  its own domain tag and the signature must verify under the stated public key.
- `generate_in_token`: an Ed25519 key pair made **inside** the token (CKA_TOKEN,
  CKA_SENSITIVE, CKA_EXTRACTABLE false): the private key never exists outside it.

python-pkcs11 is an optional dependency (`pip install khazana[hsm]`): it is imported only when
a reference is opened, so a node without it runs as before and says what to install when
asked to use an HSM. Every PKCS#11 failure becomes `HsmError` (a `KeyFileError`, so every
command that reports a bad key file reports it the same way), never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ledger.crypto import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    KeyFileError,
    address_from_public_key,
    address_to_text,
    read_passphrase_file,
    verify_signature,
)

REFERENCE_TYPE = "khazana-pkcs11-key-v1"
REFERENCE_KIND = "pkcs11"
# CKA_EC_PARAMS of Ed25519: the DER of the OID id-Ed25519, 1.3.101.112 (RFC 8410), the form
# PKCS#11 3.0 prescribes and SoftHSM2 (>= 2.6) accepts.
ED25519_EC_PARAMS = bytes.fromhex("06032b6570")
# A signature the token makes when a key is opened, to prove the key is the one the reference
# names. Its own domain tag: it can never be a transaction's or a vote's signing bytes.
PROBE_DOMAIN_TAG = b"khazana/hsm-probe/v1\x00"
KEY_ID_BYTES = 16
MAX_REFERENCE_BYTES = 4096
MAX_LABEL_CHARS = 32  # CK_TOKEN_INFO's label is 32 bytes; key labels kept as short

__all__ = [
    "REFERENCE_KIND",
    "REFERENCE_TYPE",
    "HsmError",
    "HsmKey",
    "KeyReference",
    "generate_in_token",
    "is_reference_file",
    "open_key",
    "read_reference",
    "write_reference",
]


class HsmError(KeyFileError):
    """An HSM key that cannot be used: a bad reference file, a missing module, token or key,
    a wrong PIN, a failing device."""


# --------------------------------------------------------------------------------------
# the reference file


@dataclass(frozen=True, slots=True)
class KeyReference:
    """Where a key lives and how to log in to its token (the reference file's contents)."""

    module: str
    token: str
    key_label: str | None = None
    key_id: bytes | None = None
    pin_file: str | None = None
    pin_env: str | None = None
    public_key: bytes | None = None

    def to_document(self) -> dict:
        document: dict[str, Any] = {
            "type": REFERENCE_TYPE,
            "kind": REFERENCE_KIND,
            "module": self.module,
            "token": self.token,
        }
        if self.key_label is not None:
            document["key_label"] = self.key_label
        if self.key_id is not None:
            document["key_id"] = self.key_id.hex()
        if self.pin_file is not None:
            document["pin_file"] = self.pin_file
        if self.pin_env is not None:
            document["pin_env"] = self.pin_env
        if self.public_key is not None:
            document["public_key"] = self.public_key.hex()
            document["address"] = address_to_text(address_from_public_key(self.public_key))
        return document

    @classmethod
    def from_document(cls, document: dict, path: str) -> KeyReference:
        """The reference in `document` (read from `path`), checked field by field."""

        def fail(reason: str) -> HsmError:
            return HsmError(f"key reference {path}: {reason}")

        if document.get("type") != REFERENCE_TYPE or document.get("kind") != REFERENCE_KIND:
            raise fail(f"not of type {REFERENCE_TYPE!r} with kind {REFERENCE_KIND!r}")
        unknown = sorted(set(document) - _REFERENCE_FIELDS)
        if unknown:
            raise fail(f"unknown fields {unknown}")
        module = document.get("module")
        if not isinstance(module, str) or not os.path.isabs(module):
            raise fail("module must be the absolute path of the PKCS#11 library")
        token = _label(document, "token", fail, required=True)
        key_label = _label(document, "key_label", fail, required=False)
        key_id = _optional_hex(document, "key_id", fail)
        if key_label is None and key_id is None:
            raise fail("name the key with key_label or key_id (or both)")
        pin_file, pin_env = document.get("pin_file"), document.get("pin_env")
        if (pin_file is None) == (pin_env is None):
            raise fail("give exactly one of pin_file (a path) and pin_env (a variable's name)")
        if pin_file is not None and (not isinstance(pin_file, str) or not pin_file):
            raise fail("pin_file must be a path")
        if pin_env is not None and (not isinstance(pin_env, str) or not pin_env.isidentifier()):
            raise fail("pin_env must be the name of an environment variable")
        public_key = _optional_hex(document, "public_key", fail)
        if public_key is not None:
            if len(public_key) != PUBLIC_KEY_BYTES:
                raise fail(f"public_key must be {PUBLIC_KEY_BYTES} bytes")
            if document.get("address") != address_to_text(address_from_public_key(public_key)):
                raise fail("address does not match public_key")
        elif "address" in document:
            raise fail("address without public_key")
        return cls(module, token, key_label, key_id, pin_file, pin_env, public_key)

    def pin(self) -> str:
        """The token's user PIN, from the file (0600, as a passphrase file) or the variable."""
        if self.pin_file is not None:
            raw = read_passphrase_file(self.pin_file)
        else:
            value = os.environ.get(self.pin_env or "")
            if not value:
                raise HsmError(f"the HSM PIN variable {self.pin_env} is not set")
            raw = value.encode("utf-8")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HsmError("the HSM PIN is not UTF-8 text") from None

    def describe(self) -> str:
        name = self.key_label if self.key_label is not None else f"id {(self.key_id or b'').hex()}"
        return f"key {name!r} in token {self.token!r} ({self.module})"


_REFERENCE_FIELDS = frozenset(
    {"type", "kind", "module", "token", "key_label", "key_id", "pin_file", "pin_env"}
    | {"public_key", "address"}
)


def _label(document: dict, name: str, fail, *, required: bool) -> str | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value.encode("utf-8")) <= MAX_LABEL_CHARS:
        raise fail(f"{name} must be text of 1 to {MAX_LABEL_CHARS} bytes")
    return value


def _optional_hex(document: dict, name: str, fail) -> bytes | None:
    value = document.get(name)
    if value is None:
        return None
    try:
        if not isinstance(value, str) or value != value.lower():
            raise ValueError
        raw = bytes.fromhex(value)
    except ValueError:
        raise fail(f"{name} must be lowercase hex") from None
    if not raw:
        raise fail(f"{name} is empty")
    return raw


def _read_private_json(path: str) -> dict | None:
    """The JSON object in `path`, held to a key file's rules; None if it is not a JSON object
    (then it is not a reference; the key-file reader says what it is instead)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise HsmError(f"cannot open key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise HsmError(f"key file {path} is not a regular file")
        raw = os.read(fd, MAX_REFERENCE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    if document.get("kind") == REFERENCE_KIND:
        if info.st_mode & 0o077:
            raise HsmError(
                f"key reference {path} is accessible by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); it names a library the process loads: "
                f"run chmod 600 {path}"
            )
        if len(raw) > MAX_REFERENCE_BYTES:
            raise HsmError(f"key reference {path} is larger than {MAX_REFERENCE_BYTES} bytes")
    return document


def is_reference_file(path: str | os.PathLike) -> bool:
    """Whether `path` holds a key reference (kind "pkcs11") rather than a key file."""
    document = _read_private_json(os.fspath(path))
    return document is not None and document.get("kind") == REFERENCE_KIND


def read_reference(path: str | os.PathLike) -> KeyReference:
    """The key reference in `path`; HsmError says what is wrong with it."""
    path = os.fspath(path)
    document = _read_private_json(path)
    if document is None:
        raise HsmError(f"key reference {path} is not a JSON object")
    return KeyReference.from_document(document, path)


def write_reference(path: str | os.PathLike, reference: KeyReference) -> None:
    """Write `reference` to a new file at `path` (mode 0600; never over an existing file)."""
    payload = (json.dumps(reference.to_document(), indent=2) + "\n").encode("utf-8")
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------
# PKCS#11


def _pkcs11():
    try:
        import pkcs11
    except ImportError:
        raise HsmError(
            "python-pkcs11 is not installed: pip install 'khazana[hsm]' (or python-pkcs11)"
        ) from None
    return pkcs11


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """PKCS#11 failures as HsmError naming what was being done."""
    pkcs11 = _pkcs11()
    try:
        yield
    except HsmError:
        raise
    except pkcs11.exceptions.PKCS11Error as exc:
        detail = str(exc).strip()
        name = type(exc).__name__
        raise HsmError(f"{what}: {name}" + (f" ({detail})" if detail else "")) from None


# One library object per module path and process: C_Initialize may run once per process.
# One logged-in session per token and process: PKCS#11 login state belongs to the process,
# not to a session (a second C_Login fails with USER_ALREADY_LOGGED_IN, and C_Logout on any
# session logs every session out), so every key of a token shares it.
_LIBRARIES: dict[str, Any] = {}
_LOGINS: dict[tuple[str, str], _Login] = {}
_REGISTRY_LOCK = threading.Lock()


def _check_module(module: str) -> None:
    if not os.path.isfile(module):
        raise HsmError(f"PKCS#11 module {module} does not exist")


def _library(module: str):
    library = _LIBRARIES.get(module)
    if library is None:
        _check_module(module)
        with _mapped(f"loading PKCS#11 module {module}"):
            library = _pkcs11().lib(module)
        _LIBRARIES[module] = library
    return library


def _token(reference: KeyReference):
    with _REGISTRY_LOCK:
        library = _library(reference.module)
    with _mapped(f"token {reference.token!r} in {reference.module}"):
        return library.get_token(token_label=reference.token)


def reinitialize_modules() -> None:
    """Forget every login, finalize and re-initialize every loaded module, so a token made
    since (by softhsm2-util, in another process) is seen. Keys opened before log in again
    on their next signature. For tests and tools; a node never needs it."""
    with _REGISTRY_LOCK:
        _LOGINS.clear()
        for module, library in _LIBRARIES.items():
            with _mapped(f"re-initializing PKCS#11 module {module}"):
                library.reinitialize()


class _Login:
    """The process's logged-in (read-only) session with one token, opened on first use and
    re-opened after the token dropped it; `lock` serialises its use (a PKCS#11 session may
    not be used by two threads at once)."""

    def __init__(self, reference: KeyReference, pin: str) -> None:
        self.reference = reference
        self.pin = pin
        self.lock = threading.Lock()
        self.session: Any = None

    def current(self):
        if self.session is None:
            token = _token(self.reference)
            with _mapped(f"logging in to token {self.reference.token!r}"):
                self.session = token.open(user_pin=self.pin)
        return self.session

    def reset(self) -> None:
        """Forget a session the token no longer knows (its handle is invalid already)."""
        self.session = None


def _login(reference: KeyReference, pin: str) -> _Login:
    with _REGISTRY_LOCK:
        login = _LOGINS.get((reference.module, reference.token))
        if login is None:
            login = _LOGINS[(reference.module, reference.token)] = _Login(reference, pin)
    with login.lock:
        if login.session is None:
            login.pin = pin  # not logged in yet (or a wrong PIN failed): this one is tried next
        elif login.pin != pin:
            raise HsmError(
                f"token {reference.token!r} is logged in already in this process with another PIN"
            )
    return login


def _find(session, reference: KeyReference, object_class):
    pkcs11 = _pkcs11()
    search: dict[str, Any] = {"object_class": object_class, "key_type": pkcs11.KeyType.EC_EDWARDS}
    if reference.key_label is not None:
        search["label"] = reference.key_label
    if reference.key_id is not None:
        search["id"] = reference.key_id
    kind = "private key" if object_class == pkcs11.ObjectClass.PRIVATE_KEY else "public key"
    try:
        return session.get_key(**search)
    except pkcs11.exceptions.NoSuchKey:
        raise HsmError(f"no Ed25519 {kind}: {reference.describe()}") from None
    except pkcs11.exceptions.MultipleObjectsReturned:
        raise HsmError(
            f"several Ed25519 keys match {reference.describe()}: name it by key_id too"
        ) from None
    except pkcs11.exceptions.PKCS11Error as exc:
        raise HsmError(f"finding {reference.describe()}: {type(exc).__name__}") from None


def _public_key_of(session, reference: KeyReference) -> bytes:
    """The 32-byte Ed25519 public key of the token's public-key object."""
    pkcs11 = _pkcs11()
    public = _find(session, reference, pkcs11.ObjectClass.PUBLIC_KEY)
    with _mapped(f"reading the public key of {reference.describe()}"):
        point = bytes(public[pkcs11.Attribute.EC_POINT])
    # PKCS#11 3.0: CKA_EC_POINT is the DER OCTET STRING of the 32-byte encoding; some tokens
    # store the raw 32 bytes.
    if len(point) == PUBLIC_KEY_BYTES + 2 and point[:2] == b"\x04\x20":
        return point[2:]
    if len(point) == PUBLIC_KEY_BYTES:
        return point
    raise HsmError(f"{reference.describe()}: CKA_EC_POINT is not an Ed25519 public key")


class HsmKey:
    """An Ed25519 private key that stays in its token; signs like `ledger.crypto.KeyPair`.

    Signs through the process's logged-in session with the token (shared by every key of
    that token). A session the token dropped (device reset, removed and re-inserted) is
    re-opened once, then the error is the caller's.
    """

    __slots__ = ("_handle", "_handle_session", "_login", "address", "public_key", "reference")

    def __init__(self, reference: KeyReference, login: _Login, public_key: bytes) -> None:
        self.reference = reference
        self.public_key = public_key
        self.address = address_from_public_key(public_key)
        self._login = login
        self._handle: Any = None  # the private key object, found in `_handle_session`
        self._handle_session: Any = None

    @property
    def address_text(self) -> str:
        return address_to_text(self.address)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `message` (deterministic), made in the token."""
        pkcs11 = _pkcs11()
        dropped = (
            pkcs11.exceptions.SessionHandleInvalid,
            pkcs11.exceptions.SessionClosed,
            pkcs11.exceptions.DeviceRemoved,
            pkcs11.exceptions.TokenNotPresent,
            pkcs11.exceptions.UserNotLoggedIn,
        )
        with self._login.lock, _mapped(f"signing with {self.reference.describe()}"):
            try:
                signature = self._sign_once(message)
            except dropped:
                self._login.reset()
                signature = self._sign_once(message)  # a second failure is the caller's
        if len(signature) != SIGNATURE_BYTES:
            raise HsmError(f"{self.reference.describe()} made a {len(signature)}-byte signature")
        return signature

    def _sign_once(self, message: bytes) -> bytes:
        pkcs11 = _pkcs11()
        session = self._login.current()
        if self._handle is None or self._handle_session is not session:
            self._handle = _find(session, self.reference, pkcs11.ObjectClass.PRIVATE_KEY)
            self._handle_session = session
        return bytes(self._handle.sign(message, mechanism=pkcs11.Mechanism.EDDSA))

    def __repr__(self) -> str:
        return f"HsmKey({self.reference.describe()}, address={self.address_text})"


def open_key(reference: KeyReference) -> HsmKey:
    """Log in to the reference's token and find its key; HsmError if anything is missing, if
    the key is not sensitive (its value readable in clear), or if the key in the token is not
    the one the reference states."""
    _check_module(reference.module)
    pkcs11 = _pkcs11()
    login = _login(reference, reference.pin())
    public_key = reference.public_key
    with login.lock:
        session = login.current()
        private = _find(session, reference, pkcs11.ObjectClass.PRIVATE_KEY)
        with _mapped(f"reading the attributes of {reference.describe()}"):
            sensitive = private[pkcs11.Attribute.SENSITIVE]
        if public_key is None:
            public_key = _public_key_of(session, reference)
    if sensitive is not True:
        # Its value can be read out of the token in clear: no safer than a plain key file.
        raise HsmError(
            f"{reference.describe()} is not sensitive (CKA_SENSITIVE false): its private "
            "value can be read out in clear; make the key with `khazana key hsm-generate`"
        )
    key = HsmKey(reference, login, public_key)
    probe = PROBE_DOMAIN_TAG + os.urandom(32)
    if not verify_signature(public_key, probe, key.sign(probe)):
        raise HsmError(
            f"{reference.describe()} does not sign for public key {public_key.hex()}: "
            "the reference names another key"
        )
    return key


def generate_in_token(
    module: str,
    token: str,
    key_label: str,
    *,
    pin_file: str | None = None,
    pin_env: str | None = None,
) -> KeyReference:
    """Make an Ed25519 key pair inside the token (private half sensitive, never extractable)
    and return the reference to it. Refuses a label that an object in the token already has."""
    _check_module(module)
    pkcs11 = _pkcs11()
    Attribute = pkcs11.Attribute
    reference = KeyReference(
        module=os.path.abspath(module),
        token=token,
        key_label=key_label,
        key_id=os.urandom(KEY_ID_BYTES),
        pin_file=os.path.abspath(pin_file) if pin_file is not None else None,
        pin_env=pin_env,
    )
    # The same checks a reference read from a file gets (labels, PIN source).
    KeyReference.from_document(reference.to_document(), "(new)")
    login = _login(reference, reference.pin())
    with login.lock:
        # Generating needs a read-write session; it shares the process's login, so it is
        # opened without a PIN (and closing it logs nobody out).
        login.current()
        with _mapped(f"opening a read-write session with token {token!r}"):
            session = _token(reference).open(rw=True)
        try:
            with _mapped(f"generating an Ed25519 key in token {token!r}"):
                if list(session.get_objects({Attribute.LABEL: key_label})):
                    raise HsmError(
                        f"token {token!r} already holds an object labelled {key_label!r}"
                    )
                parameters = session.create_domain_parameters(
                    pkcs11.KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: ED25519_EC_PARAMS}, local=True
                )
                parameters.generate_keypair(
                    store=True,
                    label=key_label,
                    id=reference.key_id,
                    public_template={Attribute.TOKEN: True, Attribute.VERIFY: True},
                    private_template={
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.SIGN: True,
                    },
                )
            public_key = _public_key_of(session, reference)
        finally:
            with contextlib.suppress(Exception):  # the key is made; closing is best effort
                session.close()
    return dataclasses.replace(reference, public_key=public_key)
