"""The hot standby as the tests run it: bridges as processes on one PostgreSQL journal, and what they did."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from semookii_bridge.simulator import RunningSimulator

from .bridges import TOKEN, write_config
from .broker import Mosquitto, Probe

CONTROL = "/commandapi/groupControl"


LEASE = 2.0


def standby_config(path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, name: str) -> Path:
    """One bridge of a hot standby: `[ha]` with a 2 s lease on the shared journal at `pg_url`."""
    return write_config(
        path, broker, sim, "bridge-ha",
        rate_limit={"rate": 20, "burst": 5},
        commands={"poll_initial": 0.2, "poll_max": 0.5, "track_results_for": 10, "merge": False},
        journal={"path": path.parent / f"{name}.db", "url": pg_url},
        ha={"enabled": True, "name": name, "lease": LEASE},
        http={"enabled": False},
    )


class Bridges:
    """The bridges of one hot standby, as processes on one configuration (each its own `ha.name`, log and,
    when given, database URL through the environment); `kill()` ends them all."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, url: str) -> None:
        self.tmp_path, self.broker, self.sim, self.url = tmp_path, broker, sim, url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.finals: dict[str, list[str]] = {}

    def start(
        self, name: str, *, url: str | None = None, api: str | None = None, level: str = "INFO",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """`semookii-bridge run` as a process, logging to `<name>.log` (at DEBUG every API call is a line); `url`
        and `api`: its own database URL and API base URL (through a relay, say); `env`: more variables."""
        config = self.tmp_path / f"{name}.toml"
        standby_config(config, self.broker, self.sim, self.url, name)
        env = {**os.environ, "SEMOOKII_TOKEN": TOKEN, "SEMOOKII_BRIDGE_JOURNAL_URL": url or self.url,
               "SEMOOKII_BRIDGE_API_BASE_URL": api or self.sim.base_url, **(env or {})}  # fmt: skip
        log = (self.tmp_path / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "semookii_bridge.cli", "--log-level", level,
                                             "run", "--config", str(config)], env=env, stdout=subprocess.DEVNULL,
                                            stderr=log)  # fmt: skip
        return self.procs[name]

    async def up(self, probe: Probe, *names: str, **start: Any) -> None:
        """Start the first to lead (and to subscribe: it says `online` after that), then the others as
        standbys (`start`: options for the first)."""
        self.start(names[0], **start)
        await probe.wait_for(lambda: role(probe, names[0]) == "leader", timeout=20)
        await probe.wait_for(lambda: any(m.payload and m.json()["state"] == "online"
                                         for m in probe.on("vpp/bridge/state")), timeout=20)  # fmt: skip
        for name in names[1:]:
            self.start(name)
            await probe.wait_for(lambda n=name: role(probe, n) == "standby", timeout=20)  # type: ignore[misc]

    async def exit_code(self, name: str, within: float) -> int | None:
        return await asyncio.get_running_loop().run_in_executor(None, self.procs[name].wait, within)

    def kill(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(10)


def role(probe: Probe, name: str) -> str | None:
    states = probe.on(f"vpp/bridge/instance/{name}/state")
    return states[-1].json()["role"] if states and states[-1].payload else None


def sent_twice(sim: RunningSimulator) -> list[tuple[str, str]]:
    calls = Counter((c.params["groupId"], c.params.get("activePower", "")) for c in sim.simulator.calls_to(CONTROL))
    return [key for key, n in calls.items() if n > 1]


def ended_once(finals: dict[str, list[str]]) -> bool:
    """Each command has one terminal status (a repeat of the same state after a takeover is the same one)."""
    return all(len(set(v)) == 1 for v in finals.values())
