"""TLS files for the RPC listener, made with the `openssl` command line (no new dependency).

What it owns: a small certificate authority for a network's RPC (`make_ca`) and a server
certificate per node signed by it (`make_server_cert`), for `khazana init --rpc-tls` and
`khazana init-node --rpc-tls` (node/home.py, node/ceremony.py). Clients trust the CA
(`Client(url, ca_file=...)`, `khazana query --ca-file`); a production network uses its own
PKI's files instead and names them in `[rpc] tls_cert` / `tls_key` (docs/OPERATIONS.md).

Keys are EC P-256, written 0600; the CA is valid ten years, a server certificate two (825
days, what browsers accept), for the host names and IP addresses given (its listen host,
plus localhost and 127.0.0.1 so a client on the machine itself always verifies).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "rpc-cert.pem"
SERVER_KEY = "rpc-key.pem"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


class TlsError(Exception):
    """The TLS files could not be made (no `openssl`, or it failed: the message says)."""


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise TlsError("--rpc-tls needs the openssl command; or give your own files in config.toml")
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {done.stderr.strip()[-300:]}")


def make_ca(folder: Path, name: str = "khazana RPC CA") -> tuple[Path, Path]:
    """A new CA under `folder` (created 0700): (ca.pem, ca.key)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert, key = folder / CA_CERT, folder / CA_KEY
    _openssl(
        "req", "-x509", *_EC, "-keyout", str(key), "-out", str(cert), "-days", "3650",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    os.chmod(key, 0o600)
    return cert, key


def make_server_cert(
    ca: tuple[Path, Path], home: Path, name: str, hosts: list[str]
) -> tuple[Path, Path]:
    """A certificate for the node `name` signed by `ca`, valid for `hosts` (+ localhost and
    127.0.0.1), written into `home`: (rpc-cert.pem, rpc-key.pem)."""
    cert, key = home / SERVER_CERT, home / SERVER_KEY
    names = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
        try:
            ipaddress.ip_address(host)
            names.append(f"IP:{host}")
        except ValueError:
            names.append(f"DNS:{host}")
    with tempfile.TemporaryDirectory() as scratch:
        request, extensions = Path(scratch) / "req.csr", Path(scratch) / "ext.cnf"
        extensions.write_text(
            f"subjectAltName={','.join(names)}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        )
        _openssl(
            "req", *_EC, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}"
        )  # fmt: skip
        os.chmod(key, 0o600)
        _openssl(
            "x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "825",
            "-extfile", str(extensions), "-out", str(cert),
        )  # fmt: skip
    return cert, key
