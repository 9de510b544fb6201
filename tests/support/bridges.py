"""The bridge as the tests run it: a configuration against the test broker and simulator (in-process), or
`semookii-bridge run` as a real process with its log beside its configuration."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import aiohttp
import msgspec
import pytest

from semookii_bridge import config as bridge_config
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .broker import Mosquitto, Probe

TOKEN = "test-token-2020110909210abcdef"


def bridge_config_for(
    broker_port: int, sim: RunningSimulator, tmp_path: Path, **sections: dict[str, object]
) -> bridge_config.BridgeConfig:
    """A configuration pointing at the test broker and simulator, with fast polling and no rate limit or daily quota.

    Merging is off, so the bridge reads no fleet inventory at start, and so is the token check at start (one
    call; tests/test_operations.py turns it on): most tests count API calls exactly. The merge tests
    (test_merging.py) turn merging on.
    """
    base: dict[str, dict[str, object]] = {
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": f"bridge-{zlib.crc32(str(tmp_path).encode()):08x}", "reconnect_min": 0.2,
                 "reconnect_max": 1},
        "api": {"base_url": sim.base_url, "timeout": 2.0, "check_token": False},
        "rate_limit": {"rate": 0, "burst": 1, "daily_quota": 0},
        "commands": {"poll_initial": 0.05, "poll_max": 0.2, "track_results_for": 5, "merge": False},
        "journal": {"path": str(tmp_path / "journal.db")},
        "http": {"port": 0},
    }  # fmt: skip
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return msgspec.convert(base, bridge_config.BridgeConfig)


def process_config(broker: Mosquitto, sim: RunningSimulator, client_id: str) -> dict[str, dict[str, object]]:
    """The `[mqtt]` and `[api]` sections of a bridge run as a process by a test: the test's broker and
    simulator, quick reconnects, a 5 s API timeout, no token check at start (the tests count calls)."""
    mqtt = {"host": "127.0.0.1", "port": broker.port, "client_id": client_id, "reconnect_min": 0.2, "reconnect_max": 1}
    return {"mqtt": mqtt, "api": {"base_url": sim.base_url, "timeout": 5.0, "check_token": False}}


def write_config(
    path: Path, broker: Mosquitto, sim: RunningSimulator, client_id: str, **sections: dict[str, object]
) -> Path:
    """`run`'s configuration file: `process_config`, with each of `sections` laid over its table."""
    tables = process_config(broker, sim, client_id)
    for name, values in sections.items():
        tables[name] = {**tables.get(name, {}), **values}
    lines = []
    for name, values in tables.items():
        lines += [f"[{name}]", *(f"{key} = {_toml(value)}" for key, value in values.items()), ""]
    path.write_text("\n".join(lines))
    return path


def _toml(value: object) -> str:
    """A scalar as TOML: JSON's strings, numbers and booleans are TOML's too; a path is its string."""
    return json.dumps(str(value) if isinstance(value, Path) else value)


def start_bridge(
    config: Path, level: str = "WARNING", *, env: dict[str, str] | None = None, wall_offset_file: Path | None = None
) -> subprocess.Popen[bytes]:
    """`semookii-bridge run` as a real process; its log (at `level`) goes to bridge.log beside the config. `env`:
    instead of this environment with the test token; with `wall_offset_file`, the process's wall clock is
    libfaketime's (the monotonic and boot clocks stay the kernel's, as a clock step leaves them)."""
    env = dict(env if env is not None else {**os.environ, "SEMOOKII_TOKEN": TOKEN})
    if wall_offset_file is not None:
        env["LD_PRELOAD"] = libfaketime()
        env["FAKETIME_TIMESTAMP_FILE"] = str(wall_offset_file)
        env["FAKETIME_NO_CACHE"] = env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    log = (config.parent / "bridge.log").open("ab")
    command = [sys.executable, "-m", "semookii_bridge.cli", "--log-level", level, "run", "--config", str(config)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)


def libfaketime() -> str:
    """The path of Debian's libfaketime (`make test` installs the `faketime` package)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        pytest.fail("libfaketime is not installed; `make test` installs the faketime package")
    return found[0]


def vendor(sim: RunningSimulator, **fields: object) -> None:
    """Reconfigure the simulator (its limit, its ban rule)."""
    config = sim.simulator.config
    values = {f: getattr(config, f) for f in config.__struct_fields__}
    sim.simulator.config = config.__class__(**{**values, **fields})


async def online(probe: Probe) -> None:
    await probe.wait_for(lambda: [m for m in probe.on("vpp/bridge/state") if m.json()["state"] == "online"])


async def get(service: Service, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{service.http_port}{path}") as r:
        return r.status, await r.text()


def sigkill_config(
    path: Path, broker: Mosquitto, sim: RunningSimulator, journal: Path, *, rate: float = 3.0, **over: object
) -> Path:
    """A bridge killed and restarted by the tests: a rate below the simulator's, results tracked 20 s, no merging;
    `over`: commands settings laid over these."""
    commands = {"poll_initial": 0.1, "poll_max": 0.3, "track_results_for": 20, "merge": False, **over}
    return write_config(path, broker, sim, "bridge-sigkill", rate_limit={"rate": rate, "burst": 2, "daily_quota": 10000},
                        commands=commands, journal={"path": journal}, http={"port": 0})


def restart_config(
    path: Path, broker: Mosquitto, sim: RunningSimulator, *, rate: float, burst: int, dedup_window: float = 3600.0
) -> Path:
    """A bridge at the vendor's limit, tracking results briefly, its journal beside the config."""
    commands = {"poll_initial": 0.2, "poll_max": 0.5, "track_results_for": 5, "merge": False, "dedup_window": dedup_window}
    return write_config(path, broker, sim, "bridge-restart", rate_limit={"rate": rate, "burst": burst, "daily_quota": 0},
                        commands=commands, journal={"path": path.parent / "journal.db"}, http={"enabled": False})
