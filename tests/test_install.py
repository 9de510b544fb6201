"""docs/install.md's wheel route, for real: the wheel is built from the repository, installed into a fresh
virtual environment, and the installed command runs with everything it ships (Sparkplug module, status page)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from semookii_bridge import __version__

ROOT = Path(__file__).resolve().parents[1]
LEFT_BEHIND = ("build", "*.egg-info", ".venv", ".git", "node_modules", "mutants", "__pycache__", ".*_cache")
"""What a checkout may hold that the wheel must not be built from (a stale `build/` once hid a moved file)."""


def run(*args: str | Path, cwd: Path | None = None) -> str:
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    """`pip wheel` then `pip install` into a new venv: `--version` says the package version, `config check`
    and `schema asyncapi` work, the status page and the generated Sparkplug module are in the install."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*LEFT_BEHIND))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("semookii_bridge-*.whl")
    assert wheel.name.startswith(f"semookii_bridge-{__version__}-")
    run(sys.executable, "-m", "venv", tmp_path / "venv")
    bin_dir = tmp_path / "venv" / "bin"
    run(bin_dir / "pip", "install", "-q", wheel)
    assert run(bin_dir / "semookii-bridge", "--version").strip() == f"semookii-bridge, version {__version__}"
    effective = json.loads(_config_check(bin_dir, tmp_path))
    assert effective["mqtt"]["prefix"] == "vpp"
    assert "asyncapi: 3.0.0" in run(bin_dir / "semookii-bridge", "schema", "asyncapi")
    code = ("import importlib.resources as r, semookii_bridge.sparkplug.sparkplug_b_pb2 as pb; "
            "print(all(len(r.files('semookii_bridge.ops').joinpath(f).read_text()) > 1000 "
            "for f in ('status.html', 'status.js', 'status.css')))")  # fmt: skip
    assert run(bin_dir / "python", "-c", code, cwd=tmp_path).strip() == "True"


def _config_check(bin_dir: Path, cwd: Path) -> str:
    """`config check`'s printed configuration (it exits 1 here: no token is set)."""
    out = subprocess.run([str(bin_dir / "semookii-bridge"), "config", "check"], capture_output=True, text=True,
                         timeout=60, cwd=cwd, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 1 and "FAIL api token missing" in out.stderr, out.stderr
    return out.stdout
