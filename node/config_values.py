"""What every section of config.toml is checked with: `ConfigError` (it names the file, the key
and what is wrong), `HostPort` (a `host:port` address), and `Reader`, which takes the keys of
one TOML table, checks each and refuses any left over. The sections are node/config.py's
(`[p2p]` in node/config_p2p.py, `[rpc]` in node/config_rpc.py).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.crypto import is_strict_public_key

# A moniker is used in file names, log lines and metrics labels: keep it plain.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MIB = 1 << 20


class ConfigError(Exception):
    """A config file that cannot run a node; the message names the file, the key and why."""

    def __init__(self, path: str | os.PathLike[str], key: str, problem: str) -> None:
        self.path = os.fspath(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


# ---------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True, order=True)
class HostPort:
    """`host:port`; `host` is kept without brackets, `str()` adds them back for IPv6."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """Parse `host:port` or `[ipv6]:port`; ValueError says what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"must be a string host:port, got {text!r}")
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"must be host:port, got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
        elif ":" in host:
            raise ValueError(f"an IPv6 host must be in brackets, like [::1]:26656, got {text!r}")
        elif not _is_host(host):
            raise ValueError(f"{host!r} is not an IPv4 address or a host name")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_wildcard(self) -> bool:
        """True for 0.0.0.0 and ::, which a node may listen on but nobody can dial."""
        try:
            return ipaddress.ip_address(self.host).is_unspecified
        except ValueError:
            return False

    def dialable(self) -> HostPort:
        """The address a local client uses for this listen address (a wildcard -> loopback)."""
        if not self.is_wildcard:
            return self
        return HostPort("::1" if ":" in self.host else "127.0.0.1", self.port)


def _is_host(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        pass
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        return False  # looks like a (bad) IPv4 address, not a name
    return all(_HOST_LABEL.fullmatch(label) for label in labels)


# ---------------------------------------------------------------------- tables


class Reader:
    """Takes the keys of one TOML table, checks each, and refuses what is left over."""

    def __init__(self, path: Path, prefix: str, table: object, known: list[str]) -> None:
        self.path = path
        self.prefix = prefix
        self.known = tuple(known)
        if not isinstance(table, Mapping):
            raise ConfigError(path, prefix, f"must be a table, got {type(table).__name__}")
        self.rest = dict(table)

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), problem)

    def take(self, name: str, default: object = dataclasses.MISSING) -> Any:
        if name in self.rest:
            return self.rest.pop(name)
        if default is dataclasses.MISSING:
            raise self.error(name, "missing (required)")
        return default

    def text(self, name: str, default: object = dataclasses.MISSING) -> str:
        value = self.take(name, default)
        if type(value) is not str:
            raise self.error(name, f"must be a string, got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: object) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise self.error(name, f"must be one of {list(choices)}, got {value!r}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.take(name, default)
        if type(value) is not int:  # bool is a subclass of int: refuse it too
            raise self.error(name, f"must be an integer, got {value!r}")
        if not low <= value <= high:
            raise self.error(name, f"must be from {low} to {high}, got {value}")
        return value

    def address(self, name: str, default: object = dataclasses.MISSING) -> HostPort | None:
        value = self.take(name, default)
        if value is None:
            return None
        try:
            return HostPort.parse(value)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def string_list(self, name: str) -> list[str]:
        value = self.take(name, [])
        if not isinstance(value, list) or not all(type(item) is str for item in value):
            raise self.error(name, f"must be a list of strings, got {value!r}")
        return value

    def finish(self) -> None:
        if self.rest:
            unknown = sorted(self.rest)
            raise ConfigError(
                self.path,
                self.key(unknown[0]),
                f"unknown key (known keys here: {', '.join(sorted(self.known))})",
            )


def public_key_value(reader: Reader, key: str, text: object) -> bytes:
    if type(text) is not str or not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ConfigError(
            reader.path, key, f"must be 64 lowercase hex digits (an Ed25519 key), got {text!r}"
        )
    public_key = bytes.fromhex(text)
    if not is_strict_public_key(public_key):
        raise ConfigError(reader.path, key, f"{text} is not a valid Ed25519 public key")
    return public_key
