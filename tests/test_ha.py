"""Hot standby on PostgreSQL, with real processes: bridges sharing one database and one configuration, the
leader killed (SIGKILL) or paused (SIGSTOP past its lease) under load. In each: every command ends in one
terminal state, none reaches the API twice, and a stale leader makes no call."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from semookii_bridge.simulator import RunningSimulator

from .broker import Mosquitto, Probe
from .conftest import TOKEN
from .test_durability import terminal_states

CONTROL = "/commandapi/groupControl"
LEASE = 2.0


def write_config(path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, name: str) -> None:
    path.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
client_id = "bridge-ha"
reconnect_min = 0.2
reconnect_max = 1

[api]
base_url = "{sim.base_url}"
timeout = 5.0

[rate_limit]
rate = 20
burst = 5

[commands]
poll_initial = 0.2
poll_max = 0.5
track_results_for = 10
merge = false

[journal]
path = "{path.parent / f"{name}.db"}"
url = "{pg_url}"

[ha]
enabled = true
name = "{name}"
lease = {LEASE}

[http]
enabled = false
""")


def start(tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, name: str,
          level: str = "INFO") -> subprocess.Popen[bytes]:  # fmt: skip
    """`semookii-bridge run` as a process, logging to `<name>.log` (at DEBUG every API call is a line)."""
    config = tmp_path / f"{name}.toml"
    write_config(config, broker, sim, pg_url, name)
    env = {**os.environ, "SEMOOKII_TOKEN": TOKEN}
    log = (tmp_path / f"{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "semookii_bridge.cli", "--log-level", level, "run",
                             "--config", str(config)], env=env, stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip


def role(probe: Probe, name: str) -> str | None:
    states = probe.on(f"vpp/bridge/instance/{name}/state")
    return states[-1].json()["role"] if states and states[-1].payload else None


async def leader_and_standby(probe: Probe, first: str, second: str) -> None:
    await probe.wait_for(lambda: role(probe, first) == "leader", timeout=20)
    await probe.wait_for(lambda: role(probe, second) == "standby", timeout=20)


async def publish_load(probe: Probe, groups: list[str], rounds: int, pause: float) -> list[str]:
    """One setpoint per group per round, each with a unique power (so calls can be traced to commands)."""
    rids = []
    for n in range(rounds):
        for i, g in enumerate(groups):
            rid = f"ha-{n}-{i}"
            probe.publish(f"vpp/group/{g}/set", {"type": "power_control", "active_power": n * 100 + i, "duration": 60,
                                                 "timeout": 10, "request_id": rid})  # fmt: skip
            rids.append(rid)
            await asyncio.sleep(pause)
    return rids


def sent_twice(sim: RunningSimulator) -> list[tuple[str, str]]:
    calls = Counter((c.params["groupId"], c.params.get("activePower", "")) for c in sim.simulator.calls_to(CONTROL))
    return [key for key, n in calls.items() if n > 1]


async def test_a_killed_leader_is_replaced_and_nothing_is_lost_or_sent_twice(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """Two bridges, 20 groups at 5 commands/s; SIGKILL of the leader after 2 s: the standby takes over, the
    broker hands it what the dead one had not acknowledged, and every command ends exactly once."""
    groups = [sim.simulator.state.add_group(f"ha{i}") for i in range(20)]
    bridges = {"a": start(tmp_path, broker, sim, pg_url, "a")}
    try:
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: role(probe, "a") == "leader", timeout=20)
            bridges["b"] = start(tmp_path, broker, sim, pg_url, "b")
            await leader_and_standby(probe, "a", "b")
            load = asyncio.ensure_future(publish_load(probe, groups, 3, 0.2))
            await asyncio.sleep(2.0)
            bridges["a"].send_signal(signal.SIGKILL)
            rids = await load
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
            await probe.wait_for(lambda: all(r in terminal_states(probe) for r in rids), timeout=40)
            finals = terminal_states(probe)
    finally:
        for proc in bridges.values():
            proc.kill()
            proc.wait(10)
    assert all(len(set(v)) == 1 for v in finals.values()), {k: v for k, v in finals.items() if len(set(v)) > 1}
    assert sent_twice(sim) == []
    assert sim.simulator.bans == 0


async def test_a_paused_leader_makes_no_call_after_it_resumes(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """SIGSTOP of the leader for 3 x lease while commands wait, the standby takes over, SIGCONT: the old leader
    exits (code 75) without a single API call (its log, at DEBUG, has no call after the resume), and the
    commands are carried out once by the new leader."""
    groups = [sim.simulator.state.add_group(f"hp{i}") for i in range(4)]
    bridges = {"a": start(tmp_path, broker, sim, pg_url, "a", level="DEBUG")}
    try:
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: role(probe, "a") == "leader", timeout=20)
            bridges["b"] = start(tmp_path, broker, sim, pg_url, "b")
            await leader_and_standby(probe, "a", "b")
            bridges["a"].send_signal(signal.SIGSTOP)
            rids = await publish_load(probe, groups, 1, 0.0)
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
            await asyncio.sleep(3 * LEASE)
            resumed_at = (tmp_path / "a.log").stat().st_size
            bridges["a"].send_signal(signal.SIGCONT)
            assert bridges["a"].wait(10) == 75  # fail-stop: it no longer leads
            await probe.wait_for(lambda: all(r in terminal_states(probe) for r in rids), timeout=30)
            finals = terminal_states(probe)
    finally:
        for proc in bridges.values():
            proc.kill()
            proc.wait(10)
    after = (tmp_path / "a.log").read_bytes()[resumed_at:].decode()
    assert "api_call " not in after and "ha_lost" in after, after
    assert all(v == ["completed"] for v in finals.values()) and sent_twice(sim) == []
