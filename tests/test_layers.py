"""The layering holds: transports and database drivers stay at the edges, the journal's protocol names no
database, and no module imports another that imports it back (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "semookii_bridge"
EDGES = {"paho": ("mqtt/",), "aiohttp": ("api/", "simulator/", "ops/http_server.py"), "google": ("sparkplug/",),
         "asyncpg": ("journal/postgres.py",), "sqlite3": ("journal/sqlite.py",)}  # fmt: skip


def imported_roots(path: Path) -> set[str]:
    """Top-level package names a module imports."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_transports_are_imported_only_at_the_edges() -> None:
    """paho only in mqtt/, aiohttp only in api/, simulator/ and ops/http_server.py, protobuf only in sparkplug/,
    asyncpg only in journal/postgres.py, sqlite3 only in journal/sqlite.py (the core catches `JournalError`)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for library, allowed in EDGES.items():
            if library in imported_roots(path):
                assert relative.startswith(allowed), f"{relative} imports {library}"


CORE = ("control/", "budget/", "management/", "interface/", "common/", "journal/protocol.py", "journal/shared.py",
        "journal/history.py", "journal/timeline.py", "journal/lease.py", "ha/fleet.py", "ha/holdback.py", "bridge.py")
"""The plain-code layer of docs/architecture.md, and the intake."""


def test_the_core_loads_without_the_http_client() -> None:
    """Importing every module of the core (the command path, the budget, management, the interface, the
    journal's protocol and its PostgreSQL-side logic, the intake) loads neither aiohttp, paho, Sparkplug's
    protobuf nor a database driver."""
    import subprocess
    import sys

    names = [
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).as_posix().startswith(CORE)
    ]
    assert len(names) > 40 and "semookii_bridge.control.dispatcher" in names
    drivers = ("aiohttp", "paho", "semookii_bridge.sparkplug", "google.protobuf", "asyncpg", "sqlite3")
    code = f"import sys, {', '.join(names)}; print(sorted(m for m in {drivers!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_the_command_core_does_not_know_sparkplug() -> None:
    """No module imports sparkplug/ but sparkplug/ itself and the wiring that starts it when enabled."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("sparkplug/") or relative == "service.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(alias.name for alias in node.names)]
                assert not any("sparkplug" in name for name in names), relative


def test_the_journal_protocol_names_no_database() -> None:
    """journal/protocol.py, what the core sees of the journal, imports neither a driver nor a backend."""
    tree = ast.parse((PACKAGE / "journal" / "protocol.py").read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported_roots(PACKAGE / "journal" / "protocol.py") & {"sqlite3", "asyncpg"}
    assert not (names | modules) & {"sqlite", "shared", "postgres"}


def module_imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules (`known`) `path` imports, at any depth, those for type checking too (a module that
    needs another's types to reach into it is as tied to it); `from package import submodule` counts the
    submodule, not the package."""
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            submodules = {f"{module}.{alias.name}" for alias in node.names} & known
            found |= submodules if len(submodules) == len(node.names) else {*submodules, module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    """The package's imports form no circle."""
    paths = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    graph = {name: module_imports(path, set(paths)) & set(paths) - {name} for name, path in paths.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        assert name not in trail, " -> ".join([*trail[trail.index(name):], name])
        if name not in done:
            for other in sorted(graph[name]):
                visit(other, [*trail, name])
            done.add(name)

    for name in sorted(graph):
        visit(name, [])
