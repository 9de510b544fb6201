"""The layering holds: transports stay at the edges (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "semookii_bridge"
EDGES = {"paho": ("mqtt/",), "aiohttp": ("api/", "simulator/", "http_server.py"), "google": ("sparkplug/",),
         "asyncpg": ("postgres.py",)}  # fmt: skip


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
    """paho only in mqtt/, aiohttp only in api/, simulator/ and http_server.py, protobuf only in sparkplug/,
    asyncpg only in postgres.py."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for library, allowed in EDGES.items():
            if library in imported_roots(path):
                assert relative.startswith(allowed), f"{relative} imports {library}"


def test_the_core_loads_without_the_http_client() -> None:
    """Importing the core (bridge, lifecycle, management, dispatcher, ...) loads neither aiohttp, paho nor
    Sparkplug's protobuf."""
    import subprocess
    import sys

    code = ("import sys, semookii_bridge.bridge, semookii_bridge.lifecycle, semookii_bridge.management, "
            "semookii_bridge.dispatcher, semookii_bridge.inventory, semookii_bridge.merging; "
            "print(sorted(m for m in ('aiohttp', 'paho', 'semookii_bridge.sparkplug', 'google.protobuf', 'asyncpg') "
            "if m in sys.modules))")  # fmt: skip
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
