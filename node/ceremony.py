"""A network assembled from keys made on separate machines (the genesis ceremony).

`khazana init` writes a whole network in one place, every private key included: right for a
test network, wrong for four institutions that must never hold each other's keys. This module
owns the other way, in which only public material travels:

1. each institution makes its own keys where they will be used (`khazana keygen`): a validator
   key on its validator machine, a client key with its signing officer; `khazana keyinfo FILE`
   prints the public key and address to hand over (never the private key);
2. one coordinator assembles the genesis from those public keys and addresses
   (`khazana genesis`, `build_genesis`) and sends the file to every operator, who compares its
   SHA-256 over a second channel before using it;
3. each operator makes the node's home from that genesis, its own key file and its peers'
   public keys and addresses (`khazana init-node`, `init_node_home`).

Nothing here reads a clock or a random source: the same inputs give the same genesis bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.codes import LedgerError
from ledger.crypto import (
    address_from_public_key,
    address_from_text,
    address_to_text,
    is_strict_public_key,
    read_key_file,
)
from ledger.genesis import DEFAULT_PROGRAMME_CAP_USD_CENTS, default_genesis
from node.config import (
    GENESIS_FILE,
    NODE_KEY_FILE,
    ConfigError,
    HostPort,
    MetricsConfig,
    NodeConfig,
    P2PConfig,
    PeerConfig,
    RpcConfig,
)
from node.home import (
    HomeError,
    genesis_document_bytes,
    load_genesis,
    refuse_plaintext_validator_key,
)
from node.rpc.tls import SERVER_CERT, SERVER_KEY, make_ca, make_server_cert
from node.signer_client import SignerLink

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_PUBLIC_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """A peer as an operator types it: `NAME=PUBLIC_KEY_HEX@HOST:PORT`."""

    name: str
    pub_key: bytes
    address: HostPort

    @classmethod
    def parse(cls, text: str) -> PeerSpec:
        name, value = _split_assignment(text, "--peer", "NAME=PUBLIC_KEY@HOST:PORT")
        key_hex, at, host_port = value.partition("@")
        if not at:
            raise HomeError(f"--peer {text!r}: expected NAME=PUBLIC_KEY@HOST:PORT")
        try:
            parsed = HostPort.parse(host_port)
        except ValueError as exc:
            raise HomeError(f"--peer {text!r}: {exc}") from None
        if parsed.is_wildcard:
            raise HomeError(f"--peer {text!r}: {parsed} is a wildcard, not an address to dial")
        return cls(name, parse_public_key(key_hex, f"--peer {name}"), parsed)


def parse_validator(text: str) -> tuple[str, bytes]:
    """`NAME=PUBLIC_KEY_HEX` (the 64 hex digits `khazana keyinfo` prints)."""
    name, key_hex = _split_assignment(text, "--validator", "NAME=PUBLIC_KEY")
    return name, parse_public_key(key_hex, f"--validator {name}")


def parse_institution(text: str) -> tuple[str, bytes]:
    """`NAME=ADDRESS` (the kz1 address of the institution's client key)."""
    name, address_text = _split_assignment(text, "--institution", "NAME=ADDRESS")
    try:
        return name, address_from_text(address_text)
    except (LedgerError, ValueError) as exc:
        raise HomeError(f"--institution {name}: {exc}") from None


def build_genesis(
    *,
    chain_id: str,
    validators: Sequence[tuple[str, bytes]],
    institutions: Sequence[tuple[str, bytes]],
    genesis_time_ms: int = 0,
    programme_cap_usd_cents: int = DEFAULT_PROGRAMME_CAP_USD_CENTS,
) -> bytes:
    """The genesis document's bytes for these public keys and addresses, with the default
    roles and policy (`ledger.genesis.default_genesis`): what `khazana init` would write for
    the same keys. Raises HomeError for repeated names, GenesisError for anything the genesis
    rules refuse (a policy no set of these institutions can satisfy, say)."""
    for kind, entries in (("--validator", validators), ("--institution", institutions)):
        names = [name for name, _ in entries]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise HomeError(f"{kind}: the names {repeated} are given more than once")
    addresses = [address for _, address in institutions]
    if len(set(addresses)) != len(addresses):
        raise HomeError("--institution: two institutions share one address (one client key)")
    genesis = default_genesis(
        validators=list(validators),
        institutions=dict(institutions),
        chain_id=chain_id,
        genesis_time_ms=genesis_time_ms,
        programme_cap_usd_cents=programme_cap_usd_cents,
    )
    return genesis_document_bytes(genesis)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def init_node_home(
    home: str | os.PathLike[str],
    *,
    name: str,
    genesis_file: str | os.PathLike[str],
    node_key_file: str | os.PathLike[str],
    role: str,
    listen: HostPort,
    external: HostPort,
    rpc: HostPort,
    metrics: HostPort | None,
    peers: Sequence[PeerSpec] = (),
    observers: Sequence[bytes] = (),
    rpc_tls: RpcTls | None = None,
    allow_plaintext_key: bool = False,
    signer: Mapping[str, str] | None = None,
) -> NodeConfig:
    """Make one node's home from a genesis made elsewhere and the node's own key file.

    The key file is copied (mode 0600) and the genesis bytes are copied unchanged, so every
    home of the network holds the same file. Refuses (HomeError) an existing home, a genesis
    the rules refuse, a validator whose key is not in the genesis validator set, a peer with
    this node's own key or a repeated one, and a wildcard external address.

    `rpc_tls`: the RPC serves TLS, with the given certificate and key (copied into the home;
    a client CA makes clients present a certificate), or with a new CA of the home's own
    (HOME/tls/ca.pem, for its clients) signing a certificate for the RPC and external hosts.

    A validator's key file must be encrypted (PlaintextKeyError), unless
    `allow_plaintext_key` (test networks), which the config then records for `khazana start`.
    With `signer` (the `[signer]` table: address, public_key, validator_key) the validator
    key is a remote signer's: the key file is then the node's own P2P key (plain is fine), and
    `validator_key` is the one the genesis must name.
    """
    home = Path(home)
    if role not in ("validator", "observer"):
        raise HomeError(f"--role must be validator or observer, got {role!r}")
    if not _NAME.fullmatch(name):
        raise HomeError(f"--name {name!r}: lowercase letters, digits and '-', 1-64 characters")
    if external.is_wildcard:
        raise HomeError(
            f"--external {external} is a wildcard: give the address the other nodes dial"
        )
    if home.exists() and any(home.iterdir()):
        raise HomeError(f"{home} exists and is not empty: refusing to overwrite a node's home")
    if rpc_tls is not None and (rpc_tls.cert is None) != (rpc_tls.key is None):
        raise HomeError("--rpc-tls-cert and --rpc-tls-key go together")
    link = None
    if signer is not None:
        if role != "validator":
            raise HomeError("--signer is for a validator (an observer signs nothing)")
        try:
            link = SignerLink.from_table(signer, "--signer")
        except ConfigError as exc:
            raise HomeError(str(exc)) from None
    elif role == "validator" and not allow_plaintext_key:
        refuse_plaintext_validator_key(Path(node_key_file), where="give --allow-plaintext-key")
    genesis = load_genesis(genesis_file)
    genesis_bytes = Path(genesis_file).read_bytes()
    key = read_key_file(node_key_file)
    validator_keys = {bytes.fromhex(v["public_key"]): v["name"] for v in genesis["validators"]}
    validator_key = key.public_key if link is None else link.validator_key
    if link is not None and key.public_key in validator_keys:
        raise HomeError(
            f"{node_key_file} is a validator key: with --signer the node holds its own node "
            "key (khazana keygen) and the validator key stays on the signer"
        )
    if role == "validator" and validator_key not in validator_keys:
        raise HomeError(
            f"{'--validator-public-key' if link else node_key_file} (public key "
            f"{validator_key.hex()}, address "
            f"{address_to_text(address_from_public_key(validator_key))}) is not in the genesis "
            f"validator set {sorted(validator_keys.values())}: use the key whose public key "
            "the genesis names, or --role observer"
        )
    seen: set[bytes] = set()
    for peer in peers:
        if peer.pub_key == key.public_key:
            raise HomeError(f"--peer {peer.name}: that is this node's own key")
        if peer.pub_key in seen:
            raise HomeError(f"--peer {peer.name}: that key is given twice")
        seen.add(peer.pub_key)
    config = NodeConfig(
        home=home,
        name=name,
        role=role,
        chain_id=genesis["chain_id"],
        p2p=P2PConfig(
            listen=listen,
            external_address=external,
            peers=tuple(PeerConfig(p.name, p.pub_key, p.address) for p in peers),
            observers=tuple(observers),
        ),
        rpc=RpcConfig(listen=rpc, **_rpc_tls_names(rpc_tls)),
        metrics=MetricsConfig(listen=metrics),
        allow_plaintext_key=allow_plaintext_key,
        signer=None if signer is None else dict(signer),
    )
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    if rpc_tls is not None:
        _install_rpc_tls(rpc_tls, home, name, [rpc.host, external.host])
    config.write()
    _write_new(home / GENESIS_FILE, genesis_bytes, 0o644)
    _write_new(home / NODE_KEY_FILE, Path(node_key_file).read_bytes(), 0o600)
    return config


@dataclass(frozen=True, slots=True)
class RpcTls:
    """TLS for a node's RPC: `cert` and `key` files to use, or None for both to have them
    made (a CA of the home's own); `client_ca` to require client certificates."""

    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None


CLIENT_CA = "rpc-client-ca.pem"


def _rpc_tls_names(tls: RpcTls | None) -> dict[str, str]:
    """The `[rpc]` TLS keys of the config (file names relative to the home)."""
    if tls is None:
        return {}
    names = {"tls_cert": SERVER_CERT, "tls_key": SERVER_KEY}
    if tls.client_ca:
        names["tls_client_ca"] = CLIENT_CA
    return names


def _install_rpc_tls(tls: RpcTls, home: Path, name: str, hosts: list[str]) -> None:
    if tls.cert is None or tls.key is None:
        make_server_cert(make_ca(home / "tls", f"{name} RPC CA"), home, name, hosts)
    else:
        _write_new(home / SERVER_CERT, Path(tls.cert).read_bytes(), 0o644)
        _write_new(home / SERVER_KEY, Path(tls.key).read_bytes(), 0o600)
    if tls.client_ca:
        _write_new(home / CLIENT_CA, Path(tls.client_ca).read_bytes(), 0o644)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _split_assignment(text: str, option: str, form: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not value:
        raise HomeError(f"{option} {text!r}: expected {form}")
    if not _NAME.fullmatch(name):
        raise HomeError(
            f"{option} {text!r}: the name must be lowercase letters, digits and '-' "
            "(1-64 characters), like central-bank"
        )
    return name, value


def parse_public_key(key_hex: str, where: str) -> bytes:
    """64 lowercase hex digits of a valid Ed25519 key: the rule config.toml's keys and the
    genesis' keys follow (`is_strict_public_key`), so `khazana start` cannot refuse later
    what `init-node` wrote."""
    if not _PUBLIC_KEY.fullmatch(key_hex):
        raise HomeError(
            f"{where}: a public key is 64 lowercase hex digits (from `khazana keyinfo`), "
            f"got {key_hex!r}"
        )
    public_key = bytes.fromhex(key_hex)
    if not is_strict_public_key(public_key):
        raise HomeError(f"{where}: {key_hex} is not a valid Ed25519 public key")
    return public_key
