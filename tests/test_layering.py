"""The layering rules of DESIGN.md, checked on the source: consensus is sans-IO, ledger is pure."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "consensus": {
        "trio",
        "asyncio",
        "socket",
        "sqlite3",
        "time",
        "random",
        "secrets",
        "threading",
        "selectors",
        "subprocess",
        "os",
        "datetime",
        "ledger",
        "node",
        "multiprocessing",
    },
    "ledger": {"trio", "asyncio", "socket", "consensus", "node", "random", "selectors", "time"},
}
# ledger/store.py is the store adapter: it alone may use sqlite3 and threads (via trio in node/).


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_layers_import_only_what_they_may():
    violations = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = imported_modules(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert violations == []


def test_scanner_sees_a_forbidden_import(tmp_path):
    # Negative control: the scanner must notice an import hidden in a function body.
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import time\n    from random import choice\n")
    assert {"time", "random"} <= imported_modules(sample)
