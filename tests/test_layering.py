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
# The store adapter (ledger/store.py and its parts: store_records, store_schema, block_log,
# state_table, store_indexes; and supervision_store's SQL) alone may use sqlite3 and its
# lock's threading (its worker thread is node/'s, through trio).


def imported_modules(path: Path, allowed: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """The top-level packages `path` imports (inside functions too), leaving out imports of
    the modules named in `allowed`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names if a.name not in allowed)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module not in allowed:
                names.add(node.module.split(".")[0])
    return names


def test_the_shared_leaf_imports_nothing():
    for module in SHARED_LEAVES:
        path = ROOT / (module.replace(".", "/") + ".py")
        assert imported_modules(path) <= {"__future__"}, path


# The one module a layer may import from a layer it otherwise may not: consensus/errors.py,
# the two root exceptions, which imports nothing (checked below), so ledger may use them
# without depending on consensus (docs/ARCHITECTURE.md, "Errors").
SHARED_LEAVES = {"consensus.errors"}


def test_layers_import_only_what_they_may():
    violations = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = imported_modules(path, allowed=SHARED_LEAVES) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert violations == []


def test_scanner_sees_a_forbidden_import(tmp_path):
    # Negative control: the scanner must notice an import hidden in a function body.
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import time\n    from random import choice\n")
    assert {"time", "random"} <= imported_modules(sample)


def _project_imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, anywhere in it (inside functions too), resolved to
    module names: `from a.b import c` counts `a.b.c` when that is a module, else `a.b`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            # `from a.b import c` imports the module a.b.c when there is one (and a.b only to
            # reach it: a package's __init__ is not an edge, see the test's docstring),
            # else the name c from the module a.b.
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return found


def _modules_under(base: Path, tops: tuple[str, ...]) -> dict[str, Path]:
    """The modules of the packages `tops` under `base`, by the name they are imported by
    (`__init__.py` by its package's)."""
    modules: dict[str, Path] = {}
    for top in tops:
        for path in (base / top).rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Every cycle of imports among `modules` (imports inside functions too), each as the
    modules around it, the first repeated at the end."""
    graph = {
        name: sorted(m for m in _project_imports(path, name, modules) if m in modules and m != name)
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for target in graph[name]:
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    return cycles


def test_no_import_cycle_anywhere():
    """No module of the project imports itself back, not even through an import inside a
    function (issue 19: a cycle hides who owns what). A package's `__init__` that re-exports
    its own submodules is a facade, not a cycle: the implicit import of a parent package is
    not an edge here. The scripts count too, by the names they import each other by
    (`benchlib.rpc`, with scripts/ on their path)."""
    modules = _modules_under(ROOT, ("node", "consensus", "ledger"))
    scripts = ROOT / "scripts"
    modules |= {path.stem: path for path in scripts.glob("*.py")}
    modules |= _modules_under(scripts, ("benchlib",))
    cycles = import_cycles(modules)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_cycle_check_sees_a_cycle_through_a_function_body(tmp_path):
    # Negative control: a imports b at the top, b imports a only inside a function.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import thing\n")
    (package / "c.py").write_text("import pkg.a\n")  # imports into the cycle: not in it
    assert import_cycles(_modules_under(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.a"]]
