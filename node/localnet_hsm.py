"""`khazana localnet --hsm-signer NAME`: one validator of a new localnet signs through a
remote signer (`khazana signer`, node/signer.py) whose key lives in a SoftHSM2 token.

What it owns: making that arrangement when the network is created, and the signer process's
command and environment each time the localnet starts.

At creation (`setup_hsm_signer`), under ROOT:

- `hsm/`: a SoftHSM2 configuration and token folder, a token initialised with a random user
  PIN (`hsm/user.pin`, 0600), and an Ed25519 key pair generated inside the token, private
  half sensitive and not extractable (`node.hsm.generate_in_token`); its reference file is
  `hsm/NAME.key.json`.
- Every home's `genesis.json` names that key as NAME's validator key (the network is new:
  nothing has used the genesis yet). NAME's `node_key.json`, which `init` made, stays as its
  P2P key only, so the other nodes' peer lists, which already name it, stay right.
- `hsm-signer/`: the signer's home (`khazana init-signer`, bound to NAME's P2P key, listening
  on a Unix socket in that folder), and a `[signer]` table in NAME's `config.toml`.

The signer runs as the localnet's first child, with `SOFTHSM2_CONF` pointing at the token
folder; its log is `hsm-signer/signer.log`. This is for tests and demonstrations: a real
deployment keeps the token (or a real HSM) and the signer on their own machine
(docs/OPERATIONS.md, "Keys").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from node.home import GENESIS_FILE, Network, genesis_document_bytes

HSM_DIR = "hsm"
SIGNER_DIR = "hsm-signer"
SIGNER_LOG = "signer.log"
TOKEN_LABEL = "khazana-localnet"
SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


class HsmSetupError(Exception):
    """The HSM arrangement cannot be made (no SoftHSM2, no python-pkcs11, a bad name)."""


def softhsm_module() -> str | None:
    return next((path for path in SOFTHSM_MODULES if os.path.isfile(path)), None)


def softhsm_conf(root: Path) -> Path:
    return root / HSM_DIR / "softhsm2.conf"


def signer_home(root: Path) -> Path:
    return root / SIGNER_DIR


def has_hsm_signer(root: Path) -> bool:
    return (signer_home(root) / "signer.toml").is_file()


def signer_command(root: Path) -> tuple[list[str], dict[str, str]]:
    """How the localnet starts the signer: its argv and environment."""
    env = {**os.environ, "SOFTHSM2_CONF": str(softhsm_conf(root))}
    return [sys.executable, "-m", "node", "signer", "--home", str(signer_home(root))], env


def _private_file(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


def setup_hsm_signer(network: Network, name: str) -> str:
    """Make the arrangement of the module docstring for validator `name` of a network just
    made by `init_network`; the key's public key (hex)."""
    from node.hsm import generate_in_token, reinitialize_modules, write_reference
    from node.signercli import cmd_init_signer

    validators = [node for node in network.nodes if node.role == "validator"]
    if name not in {node.name for node in validators}:
        raise HsmSetupError(f"--hsm-signer {name}: no validator of that name")
    module = softhsm_module()
    if module is None or shutil.which("softhsm2-util") is None:
        raise HsmSetupError("--hsm-signer needs SoftHSM2: apt-get install softhsm2")
    root = network.root
    folder = root / HSM_DIR
    tokens = folder / "tokens"
    tokens.mkdir(parents=True, mode=0o700)
    conf = softhsm_conf(root)
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    pin_file = folder / "user.pin"
    _private_file(pin_file, pin + "\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    made = subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL,
         "--pin", pin, "--so-pin", so_pin],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise HsmSetupError(f"softhsm2-util --init-token failed: {made.stderr.strip()}")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # this process opens the token below
    reinitialize_modules()
    reference = generate_in_token(module, TOKEN_LABEL, name, pin_file=str(pin_file))
    assert reference.public_key is not None
    reference_file = folder / f"{name}.key.json"
    write_reference(reference_file, reference)

    # The genesis names the key in the token; nothing has used the genesis yet.
    for node in network.nodes:
        path = node.home / GENESIS_FILE
        genesis = json.loads(path.read_text())
        for validator in genesis["validators"]:
            if validator["name"] == name:
                validator["public_key"] = reference.public_key.hex()
        path.write_bytes(genesis_document_bytes(genesis))

    home = next(node.home for node in validators if node.name == name)
    p2p_key = json.loads((home / "node_key.json").read_text())["public_key"]
    chain_id = json.loads((home / GENESIS_FILE).read_text())["chain_id"]
    arguments = argparse.Namespace(
        home=str(signer_home(root)),
        chain_id=chain_id,
        validator_key=str(reference_file),
        node=[p2p_key],
        listen=f"unix:{signer_home(root).resolve() / 'signer.sock'}",
        from_node_home=None,
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = cmd_init_signer(arguments)  # `khazana init-signer`, as an operator would
    if code != 0:
        raise HsmSetupError(f"khazana init-signer failed: {printed.getvalue().strip()}")
    table = printed.getvalue().split("[signer]\n", 1)[1]
    config = home / "config.toml"
    config.write_text(config.read_text() + "\n[signer]\n" + table)
    return reference.public_key.hex()
