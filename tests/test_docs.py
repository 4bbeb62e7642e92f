"""The user-facing docs stay honest: what README.md, docs/RPC.md and docs/OPERATIONS.md name
must exist in the code, what the code offers must be documented, and the snippets run.

- every JSON-RPC method of node/rpc/ (and each WebSocket method) has a section in RPC.md
  with a request for that method and a response with a `result` and the same `id`;
- every JSON-RPC error code of node/rpc/ and every compliance code of ledger/codes.py is in
  RPC.md's tables, with its name;
- every `khazana ...` command line in README.md and OPERATIONS.md names a sub-command (and a
  `tx` operation or a `query` read) the argparse parser has, and only flags it accepts;
- every key of node/config.py is in OPERATIONS.md's config reference with the default the
  code uses, and every key that reference names exists;
- every Prometheus metric OPERATIONS.md names is exported by node/metrics.py;
- `khazana backup` behaves as OPERATIONS.md's backup section says.

- README.md's first steps run as written on a fresh `khazana init` network at the default
  ports (its lone node, the SDK lines, the command-line and offline-signing blocks, the first
  errors), then docs/RPC.md's Python blocks on that network; every other shell or Python
  snippet of README.md and docs/ is listed with the reason it is not run (`NOT_RUN`).

The JSON examples of docs/RPC.md were captured from a node (docs/RPC.md says how); the
method schemas are checked against real answers by tests/node/test_rpc_openrpc.py.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from ledger.codes import Code
from node.cli import build_parser
from node.config import from_dict
from node.metrics import Metrics
from node.rpc import errors as rpc_errors
from node.rpc.methods import RpcMethods
from node.rpc.websocket import SUBSCRIPTION_METHODS
from node.signer_client import SignerLink

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
RPC_MD = (ROOT / "docs" / "RPC.md").read_text(encoding="utf-8")
OPERATIONS = (ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- helpers


def sections(text: str, level: str = "###") -> dict[str, str]:
    """Markdown sections by heading text (without the #s), each up to the next heading."""
    pattern = re.compile(rf"^{level} (.+)$", re.MULTILINE)
    heads = list(pattern.finditer(text))
    out = {}
    for index, head in enumerate(heads):
        end = heads[index + 1].start() if index + 1 < len(heads) else len(text)
        out[head.group(1).strip()] = text[head.end() : end]
    return out


def json_blocks(text: str) -> list:
    """The parsed ```json blocks of `text`; a block of one object per line gives each."""
    parsed = []
    for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL):
        try:
            parsed.append(json.loads(block))
        except json.JSONDecodeError:
            parsed.extend(json.loads(line) for line in block.splitlines() if line.strip())
    return parsed


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in `text` (header and rule rows included)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.lstrip().startswith("|")
    ]


def khazana_commands(text: str) -> list[str]:
    """Every `khazana ...` command line in the code of `text` (fenced, indented or inline),
    with backslash continuations joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        for match in re.finditer(r"(?:^|[`$]\s?|^\s+)(khazana [a-z][^`#\n]*)", line):
            found.append(match.group(1).strip())
    return found


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


# --------------------------------------------------------------------------- RPC.md


METHODS = sorted(RpcMethods(node=None).table)
RPC_SECTIONS = sections(RPC_MD)


@pytest.mark.parametrize("method", METHODS + list(SUBSCRIPTION_METHODS))
def test_every_method_has_a_request_and_a_response(method):
    section = RPC_SECTIONS.get(f"`{method}`")
    assert section is not None, f"docs/RPC.md has no '### `{method}`' section"
    blocks = json_blocks(section)
    requests = [b for b in blocks if isinstance(b, dict) and b.get("method") == method]
    assert requests, f"{method}: no request example"
    for request in requests:
        assert request["jsonrpc"] == "2.0" and "id" in request, request
    ids = {r["id"] for r in requests}
    responses = [b for b in blocks if isinstance(b, dict) and "result" in b and b.get("id") in ids]
    assert responses, f"{method}: no response with a result answering {ids}"
    assert all(r["jsonrpc"] == "2.0" for r in responses)


def test_method_table_lists_exactly_the_methods_and_their_params():
    table = {}
    for row in table_rows(sections(RPC_MD, "##")["Methods"]):
        name = re.fullmatch(r"\[`([\w.]+)`\]\(#\w+\)", row[0])
        if name:
            table[name.group(1)] = row[1]
    assert sorted(table) == METHODS
    for name, params_cell in table.items():
        documented = re.findall(r"`(\w+)`", params_cell)
        assert documented == list(RpcMethods(node=None).table[name].params), name


def test_every_jsonrpc_error_code_is_documented():
    errors = {row[0]: row[1] for row in table_rows(sections(RPC_MD, "##")["Errors"])}
    codes = {
        value
        for name, value in vars(rpc_errors).items()
        if name.isupper() and isinstance(value, int) and -32768 <= value <= -32000
    }
    assert len(codes) >= 9  # the five of the specification and the node's own
    for code in codes:
        assert str(code) in errors, f"error {code} is not in RPC.md's error table"


def test_every_compliance_code_is_documented_with_its_name():
    rows = table_rows(sections(RPC_MD, "##")["Compliance codes"])
    documented = {row[0]: row[1] for row in rows if row[0].isdigit()}
    assert documented == {str(int(code)): code.name for code in Code}


def test_example_json_in_rpc_md_parses():
    # Every ```json block is JSON (a trimmed value is the string "...", never bare dots).
    assert len(json_blocks(RPC_MD)) > 40


# --------------------------------------------------------------------------- commands


PARSER = build_parser()
COMMANDS = subparsers(PARSER)


@pytest.mark.parametrize("where,text", [("README.md", README), ("docs/OPERATIONS.md", OPERATIONS)])
def test_every_khazana_command_line_exists(where, text):
    lines = khazana_commands(text)
    assert len(lines) >= 5, f"{where}: expected several khazana commands"
    for line in lines:
        words = line.split()
        if words[1].endswith(":"):
            continue  # "khazana start: refusing to start: ..." quotes an error message
        assert words[1] in COMMANDS, f"{where}: `{line}`: no sub-command {words[1]!r}"
        parser = COMMANDS[words[1]]
        nested = subparsers(parser)
        if nested and len(words) > 2 and not words[2].startswith("-"):
            assert words[2] in nested, f"{where}: `{line}`: no {words[1]} {words[2]!r}"
            parser = nested[words[2]]
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line):
            assert flag in flags(parser), f"{where}: `{line}`: {flag} is not an option"


def test_the_parser_check_catches_a_made_up_command():
    # The check above must be able to fail: an invented sub-command and flag are not found.
    assert "restore" not in COMMANDS
    assert "--no-such-flag" not in flags(COMMANDS["backup"])
    assert khazana_commands("run `khazana backup --home H --out F` now") == [
        "khazana backup --home H --out F"
    ]


def test_readme_starts_with_the_two_commands():
    first, second = README.splitlines()[:2]
    assert first.startswith("    ./scripts/localnet ")
    assert second.startswith("    ./scripts/test ")
    for link in re.findall(r"\]\((docs/[A-Z]+\.md)\)", README):
        assert (ROOT / link).is_file(), link


# --------------------------------------------------------------------------- config


def default_config() -> dict[str, object]:
    """Every key of a minimal config with the code's defaults, flattened to `section.key`."""
    minimal = {
        "name": "n",
        "role": "validator",
        "chain_id": "c",
        "p2p": {"listen": "127.0.0.1:1"},
        "rpc": {"listen": "127.0.0.1:2"},
    }
    document = from_dict(minimal, home=Path("/nonexistent")).to_toml_dict()
    flat: dict[str, object] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    flat.setdefault("metrics.listen", None)  # absent when there is no metrics endpoint
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        flat.setdefault(f"rpc.{name}", None)  # absent: no TLS
    # [signer] is absent by default; with it, these three are required, the rest defaulted.
    link = SignerLink.__dataclass_fields__
    for name in ("address", "public_key", "validator_key"):
        flat[f"signer.{name}"] = None
    for name in ("timeout_ms", "retry_ms"):
        flat[f"signer.{name}"] = link[name].default
    return flat


def documented_config() -> dict[str, str]:
    """`section.key` -> the default cell of OPERATIONS.md's config reference tables."""
    reference = OPERATIONS[OPERATIONS.index("## Config reference") :]
    reference = reference[: reference.index("\n## ", 5)]
    out = {}
    for title, body in sections(reference).items():
        section = "" if title == "top level" else re.fullmatch(r"`\[(\w+)\]`", title).group(1)
        for row in table_rows(body):
            key = re.fullmatch(r"`(\w+)`", row[0])
            if key:
                out[f"{section}.{key.group(1)}" if section else key.group(1)] = row[1]
    return out


def test_every_config_key_is_documented_with_its_default():
    defaults = default_config()
    documented = documented_config()
    assert sorted(documented) == sorted(defaults)
    for key, cell in documented.items():
        value = defaults[key]
        if cell == "required" or key == "p2p.external_address":
            continue  # required keys have no default; external_address defaults to listen
        if value is None:
            assert cell.startswith("absent"), key
        elif isinstance(value, bool):
            assert cell == f"`{str(value).lower()}`", f"{key}: documented {cell}, code {value}"
        elif isinstance(value, list):
            assert cell == "`[]`" and value == [], key
        elif isinstance(value, int):
            assert cell == str(value), f"{key}: documented {cell}, code says {value}"
        else:
            assert cell == f"`{value}`", f"{key}: documented {cell}, code says {value}"


def test_required_config_keys_are_the_ones_documented_as_required():
    documented = documented_config()
    required = {key for key, cell in documented.items() if cell == "required"}
    assert required == {"name", "role", "chain_id", "p2p.listen", "rpc.listen"}


# --------------------------------------------------------------------------- metrics


def test_documented_metrics_are_exported():
    exported = set()
    for family in Metrics().registry.collect():
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    named = set(re.findall(r"`(khazana_[a-z_]+)`", OPERATIONS))
    assert len(named) >= 10
    assert named <= exported, named - exported
    ours = {f.name for f in Metrics().registry.collect() if f.name.startswith("khazana_")}
    assert {n.removesuffix("_total") for n in named} >= ours
    # The standard series OPERATIONS.md promises beside ours (prometheus-client's collectors).
    standard = {f.name for f in Metrics().registry.collect()} - ours
    assert "The process also exports the standard `process_*` and `python_*`" in OPERATIONS
    assert standard and all(n.startswith(("process_", "python_")) for n in standard), standard


# --------------------------------------------------------------------------- backups


def test_backup_works_as_operations_md_says(tmp_path, capsys):
    """`khazana backup`: a consistent copy that opens as this chain's store; it refuses to
    overwrite, refuses a database another opener holds, and refuses a home with no database."""
    from ledger.chain import Chain
    from ledger.genesis import genesis_hash
    from ledger.store import Store
    from node.cli import main
    from node.config import NodeConfig
    from node.home import init_network, load_genesis

    network = init_network(tmp_path / "net", validators=1)
    home = network.nodes[0].home
    out = tmp_path / "backup.db"
    assert main(["backup", "--home", str(home), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()

    config = NodeConfig.load(home)
    genesis = load_genesis(config.genesis_path)
    config.data_path.mkdir(parents=True, exist_ok=True)
    chain = Chain.open(config.db_path, genesis)  # holds the store's lock, as a running node does
    try:
        assert main(["backup", "--home", str(home), "--out", str(out)]) == 1
        assert "stop the node first" in capsys.readouterr().err
    finally:
        chain.close()

    assert main(["backup", "--home", str(home), "--out", str(out)]) == 0
    assert "at height 0" in capsys.readouterr().out
    copy = Store.open(out, chain_id=genesis["chain_id"], genesis_hash=genesis_hash(genesis))
    try:
        assert copy.blocks.latest_height() == 0
    finally:
        copy.close()
    assert main(["backup", "--home", str(home), "--out", str(out)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


# --------------------------------------------------------------------------- README that runs
#
# README.md's first steps, executed as written on the network the text says (a fresh
# `khazana init` network at the default ports, in an empty folder): the "Run a validator"
# lines (the lone node first: its log and `catching_up`, then the other three as the text
# says), the SDK lines, the command-line and offline-signing blocks (one bash script, so their
# shell variables carry over), and the table of a newcomer's first errors.

README_PORTS = range(26650, 26662)  # 4 nodes x (p2p, rpc, metrics) from 26650, as init gives
START_S = 30


def section_text(text: str, heading: str) -> str:
    return sections(text, "##")[heading]


def indented_blocks(text: str) -> list[str]:
    """The 4-space indented code blocks of `text`, de-indented, one string each."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif current and line.strip():
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def ports_in_use(ports) -> list[int]:
    import socket

    busy = []
    for port in ports:
        probe = socket.socket()
        # As the node binds (a port in TIME_WAIT from a previous run is free to listen on).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            busy.append(port)
        finally:
            probe.close()
    return busy


class Walkthrough:
    """An empty folder, `khazana` on the PATH, and the nodes the README's text starts."""

    def __init__(self, folder: Path) -> None:
        import os
        import sys

        self.folder = folder
        self.bin = Path(sys.executable).parent
        self.python = sys.executable
        self.env = {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '')}"}
        for name in ("KHAZANA_RPC", "KHAZANA_KEY"):
            self.env.pop(name, None)
        self.procs: dict[str, object] = {}

    def bash(self, script: str, timeout: float = 120):
        import subprocess

        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, command: str) -> None:
        """A foreground `khazana start` line, run as a process of its own (a terminal)."""
        import shlex
        import subprocess

        home = command.split("--home", 1)[1].split()[0]
        name = Path(home).name
        log = open(self.folder / f"{name}.log", "wb")  # the child holds its own descriptor
        argv = [str(self.bin / "khazana"), *shlex.split(command)[1:]]
        self.procs[name] = subprocess.Popen(
            argv, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def status(self, url: str = "http://127.0.0.1:26651") -> dict | None:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{url}/status", timeout=2) as answer:
                return json.loads(answer.read())["result"]
        except OSError:
            return None

    def wait(self, predicate, what: str, deadline_s: float = START_S):
        import time

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        logs = {name: self.log(name)[-800:] for name in self.procs}
        raise AssertionError(f"timed out waiting for {what}: {logs}")

    def stop_all(self) -> None:
        import subprocess

        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture(scope="module")
def readme_network(tmp_path_factory):
    """README's "Run a validator", as written: init, the lone node (what it says), its status,
    then the other three nodes the text tells the reader to start."""
    busy = ports_in_use(README_PORTS)
    if busy:
        pytest.skip(f"README's default ports are in use ({busy[:3]}...): a localnet is running?")
    walk = Walkthrough(tmp_path_factory.mktemp("readme"))
    init, start, query = indented_blocks(section_text(README, "Run a validator"))[0].splitlines()
    try:
        done = walk.bash(init.split("#")[0])
        assert done.returncode == 0, done.stderr
        walk.start(start.split("#")[0])
        walk.lone = walk.wait(walk.status, "the lone node's RPC")
        walk.wait(lambda: "waiting for peers" in walk.log("ministry"), "the waiting-for-peers line")
        walk.query = walk.bash(query)
        for name in ("central-bank", "regulator", "auditor"):
            assert f"khazana start --home net/{name}" in README or f"`net/{name}`" in README
            walk.start(f"khazana start --home net/{name}")
        walk.wait(
            lambda: (walk.status() or {}).get("sync_info", {}).get("latest_block_height", 0) >= 1,
            "the first block of four nodes",
        )
        yield walk
    finally:
        walk.stop_all()


def test_readme_a_lone_node_says_it_waits_for_peers(readme_network):
    walk = readme_network
    assert walk.query.returncode == 0, walk.query.stderr
    assert walk.lone["sync_info"]["latest_block_height"] == 0
    assert walk.lone["sync_info"]["catching_up"] is True  # it cannot know it is current
    line = next(line for line in walk.log("ministry").splitlines() if "waiting for peers" in line)
    assert "2/3" in line and "central-bank" in line  # why, and where it looks for them
    # Once the others run, the node is current and says so.
    walk.wait(lambda: walk.status()["sync_info"]["catching_up"] is False, "catching_up false")


def test_readme_sdk_lines_run_on_a_fresh_network(readme_network):
    import subprocess

    (snippet,) = python_blocks(section_text(README, "The SDK in a few lines"))
    done = subprocess.run(
        [readme_network.python, "-c", snippet],
        cwd=readme_network.folder,
        env=readme_network.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Committed(" in done.stdout and "code=0" in done.stdout, done.stdout


def test_readme_command_line_blocks_run_as_written(readme_network):
    walk = readme_network
    blocks = indented_blocks(section_text(README, "The command line"))
    assert len(blocks) == 2  # the walk-through, then offline signing
    done = walk.bash("\n".join(blocks) + "\n")
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "signatures_still_needed: 1" in done.stdout
    assert "committed" in done.stdout.splitlines()[-1] or "committed" in done.stdout[-400:]
    # bob received 50 and gave 10 back by legal order: 40 minor units, as the text says.
    bob = (walk.folder / "bob.key").read_text()
    address = json.loads(bob)["address"]
    shown = walk.bash(
        f"khazana query account {address} --json --key net/clients/regulator.key "
        "--rpc http://127.0.0.1:26651"
    )
    balances = json.loads(shown.stdout)["balances"]
    assert [(b["instrument"], b["balance"]) for b in balances] == [("USD-CASH", 40)]


def test_readme_first_errors_say_what_to_do(readme_network):
    walk = readme_network
    rows = {
        row[0]: row[1]
        for row in table_rows(section_text(README, "The command line"))
        if row[0].startswith("`")
    }
    walk.bash("khazana keygen --out carol.key > /dev/null")
    target = json.loads((walk.folder / "alice.key").read_text())["address"]
    transfer = (
        f"khazana tx transfer --key carol.key --instrument USD-CASH --to {target} "
        "--rpc http://127.0.0.1:26651 --amount "
    )
    not_onboarded = walk.bash(transfer + "1")
    assert not_onboarded.returncode == 1
    assert "ACCOUNT_NOT_FOUND (208)" in not_onboarded.stderr
    assert "onboard_investor" in not_onboarded.stderr  # the hint: onboarding comes first
    assert any(k.startswith("`ACCOUNT_NOT_FOUND (208)`") for k in rows)
    decimal = walk.bash(transfer + "0.50")
    assert decimal.returncode == 2
    said = next(k for k in rows if k.startswith("`--amount must be an integer"))
    assert said.strip("`") in decimal.stderr, decimal.stderr
    helped = walk.bash("khazana tx transfer --help")
    assert "integers in the instrument's minor units" in " ".join(helped.stdout.split())


def test_rpc_md_sdk_snippets_run_on_the_readme_network(readme_network):
    """docs/RPC.md's Python blocks (subscriptions, proofs) after the README's steps, in its
    folder, as the text says (they use its bob.key and ft.json)."""
    import subprocess

    snippets = python_blocks(RPC_MD)
    assert len(snippets) == 2
    for snippet in snippets:
        done = subprocess.run(
            [readme_network.python, "-c", snippet],
            cwd=readme_network.folder,
            env=readme_network.env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, (snippet[:200], done.stderr[-2000:])
    # The proof block prints bob's proven balance: 50 received, 10 forced back.
    assert done.stdout.split()[0] == "40", done.stdout


# Every shell and Python snippet of README.md and docs/*.md is run by a test above, or is here
# with the reason it is not: a new snippet fails this test until it is one or the other.
RUN = {
    ("README.md", "khazana init --home net --validators 4"),
    ("README.md", "from ledger.crypto import read_key_file"),
    ("README.md", "export KHAZANA_RPC=http://127.0.0.1:26651"),
    ("README.md", "khazana tx forced_transfer --key net/clients/regulator.key --instrument"),
    ("docs/RPC.md", "from ledger.crypto import read_key_file"),
    ("docs/RPC.md", "from ledger.crypto import generate_key, read_key_file"),
}
NOT_RUN = {
    ("README.md", "./scripts/localnet"): "runs until Ctrl-C; tests/test_demo.py runs the demo",
    ("docs/RPC.md", "khazana query subscribe"): "waits for 10 events; tests/node/test_client_ws.py",
    ("docs/CONSENSUS.md", "Hooks(sign, verify"): "an interface outline, not a program",
    ("docs/NODE.md", "class NodeApi:"): "an interface outline, not a program",
    ("docs/OPERATIONS.md", "khazana keygen --out /secure/path"): "paths of a production host",
    ("docs/OPERATIONS.md", "khazana keygen --out officer.key --encrypt"): "asks a passphrase",
    ("docs/OPERATIONS.md", "# regulator, offline"): "the README's offline block, run, is its twin",
    ("docs/OPERATIONS.md", "khazana tx grant_role"): "placeholder key; tests/node/test_cli_tx.py",
    ("docs/OPERATIONS.md", "khazana keygen --out /var/lib"): "a ceremony across machines",
    ("docs/OPERATIONS.md", "# on the ministry's validator machine"): "the same ceremony",
    ("docs/OPERATIONS.md", "khazana genesis --out"): "the ceremony; tests/node/test_ceremony.py",
    ("docs/OPERATIONS.md", "khazana init-node --home /var/lib"): "the ceremony, on its host",
    ("docs/OPERATIONS.md", "khazana init-signer --home /var/lib"): (
        "a signer's host; tests/node/test_signer_network.py runs init-signer and signer"
    ),
    ("docs/OPERATIONS.md", "khazana key hsm-generate --module"): (
        "needs an HSM token; tests/node/test_hsm.py runs it on a fresh SoftHSM2 token"
    ),
    ("docs/RPC.md", "khazana report holdings --by vasp [--instrument"): (
        "a usage line with placeholders; tests/node/test_rpc_supervision.py runs the reports"
    ),
    ("docs/OPERATIONS.md", "python3.11 -m venv /opt/khazana"): "installs into /opt",
    ("docs/OPERATIONS.md", "khazana query status --rpc"): "a production node's systemd unit",
    ("docs/OPERATIONS.md", "khazana backup --home /var/lib"): "tests: test_backup_works_as_...",
    ("docs/BENCHMARKS.md", ""): "measurements of minutes to hours; tests/test_bench*.py",
    ("docs/RELIABILITY.md", ""): "attacks and simulations of minutes; tests/test_attack.py",
}
COMMAND = re.compile(r"^(khazana |\./scripts/|\.venv/bin/|python|export |\w+=\$\(|# \w)")


def shell_snippets(text: str) -> list[str]:
    """The first lines of the indented blocks of `text` that are commands to run."""
    firsts = []
    for block in indented_blocks(text):
        first = block.strip().splitlines()[0]
        if COMMAND.match(first):
            firsts.append(first)
    return firsts


def test_every_snippet_is_run_or_says_why_not():
    documents = {"README.md": README}
    for path in sorted((ROOT / "docs").glob("*.md")):
        documents[f"docs/{path.name}"] = path.read_text(encoding="utf-8")
    unaccounted = []
    for name, text in documents.items():
        firsts = shell_snippets(text) + [b.splitlines()[0] for b in python_blocks(text)]
        for first in firsts:
            known = (name, first) in RUN or any(
                name == where and first.startswith(prefix) for where, prefix in NOT_RUN
            )
            starts = any(name == w and first.startswith(p) for w, p in RUN)
            if not (known or starts):
                unaccounted.append((name, first))
    assert not unaccounted, (
        f"run these snippets in tests/test_docs.py or say why not: {unaccounted}"
    )
