"""The package stays readable: no module over 400 lines and no function over 40 (issue 13's rule).

A module that grows past the limit is split by concern (as mqtt/, api/ and simulator/ were), a function
by step; the test names each offender, so the message says where to look.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "semookii_bridge"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 40


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    """Every module of the package has at most 400 lines."""
    long = {
        str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_40_lines() -> None:
    """Every function and method (decorators excluded, docstring included) has at most 40 lines."""
    long = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = lines
    assert long == {}


def test_the_limits_are_kept_by_splitting_not_packing() -> None:
    """No line of the package opts out of the formatter (`make lint` runs `ruff format --check`), so a module
    or a function stays under its limit by being split, not by packing statements onto long lines."""
    packed = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in modules()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "fmt: skip" in line or "fmt: off" in line
    ]
    assert packed == []


def test_the_rule_sees_an_offender(tmp_path: Path) -> None:
    """The measure counts a function's lines from `def` to its last line (so the check can fail)."""
    source = "def f():\n" + "    x = 1\n" * 45
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.FunctionDef) and (node.end_lineno or 0) - node.lineno + 1 == 46


def test_every_planted_bug_still_applies() -> None:
    """Each edit of tests/planted_bugs.py finds its text exactly once in the module it names (a refactor that
    moved the code would otherwise leave the bug unplanted and the check silently weaker)."""
    from pathlib import Path

    from .planted_bugs import BUGS

    package = Path(__file__).resolve().parents[1] / "semookii_bridge"
    stale = [(bug.name, old[:50]) for bug in BUGS for old, _ in bug.edits
             if (package / bug.module).read_text().count(old) != 1]  # fmt: skip
    assert stale == []
