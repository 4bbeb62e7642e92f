"""The user-facing docs stay honest: what README.md, docs/RPC.md and docs/OPERATIONS.md name
must exist in the code, and what the code offers must be documented.

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

Nothing here starts a node: the examples were captured from one (docs/RPC.md says how).
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
        name = re.fullmatch(r"\[`(\w+)`\]\(#\w+\)", row[0])
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
        assert copy.latest_height() == 0
    finally:
        copy.close()
    assert main(["backup", "--home", str(home), "--out", str(out)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
