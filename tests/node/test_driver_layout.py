"""The driver's layout (issue 19, "small owners"): node/driver.py keeps the `Ready` loop and
each of its other concerns is a module of its own; every one of them says what it owns, stays
under 800 lines, has no class over 25 methods and no constructor over 6 parameters."""

from __future__ import annotations

import ast
from pathlib import Path

NODE = Path(__file__).resolve().parents[2] / "node"
DRIVER_MODULES = (
    "driver",
    "driver_parts",
    "validator_set",
    "evidence_pool",
    "signing_hold",
    "admission_batch",
    "proposal_timer",
    "proposal_check",
    "timeouts",
    "state_proofs",
    "api",
)


def _classes(tree: ast.Module) -> list[ast.ClassDef]:
    return [c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)]


def _methods(cls: ast.ClassDef) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [f for f in cls.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]


def _init_parameters(cls: ast.ClassDef) -> int:
    for f in _methods(cls):
        if f.name == "__init__":
            a = f.args
            return len(a.posonlyargs) + len(a.args) - 1 + len(a.kwonlyargs)  # without self
    return 0


def test_each_driver_module_is_small_and_says_what_it_owns():
    for name in DRIVER_MODULES:
        path = NODE / f"{name}.py"
        text = path.read_text()
        tree = ast.parse(text)
        assert ast.get_docstring(tree), f"{path} has no docstring"
        assert len(text.splitlines()) < 800, path
        for cls in _classes(tree):
            assert len(_methods(cls)) <= 25, f"{path}: {cls.name}"
            assert _init_parameters(cls) <= 6, f"{path}: {cls.name}.__init__"


def test_the_checks_see_a_big_class():
    # Negative control: a 26-method class with a 7-parameter constructor is caught.
    body = "    def __init__(self, a, b, c, *, d, e, f, g): pass\n" + "".join(
        f"    def m{i}(self): pass\n" for i in range(25)
    )
    (cls,) = _classes(ast.parse("class Big:\n" + body))
    assert len(_methods(cls)) == 26 and _init_parameters(cls) == 7
