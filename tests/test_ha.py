"""Hot standby on PostgreSQL, with real processes: bridges sharing one database and one configuration, the
leader killed (SIGKILL) or paused (SIGSTOP past its lease) under load. In each: every command ends in one
terminal state, none reaches the API twice, and a stale leader makes no call."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from semookii_bridge.simulator import RunningSimulator

from .support.bridges import vendor
from .support.broker import Mosquitto, Probe
from .support.postgres import Postgres
from .support.standby import CONTROL, LEASE, Bridges, ended_once, role, sent_twice
from .support.states import TERMINAL, terminal_states


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


def pg_statuses(url: str) -> dict[str, str]:
    """request_id -> status in the shared journal, read with psql."""
    out = subprocess.run(["psql", url, "-XAtF", "\t", "-c", "SELECT request_id, status FROM commands"],
                         capture_output=True, text=True, check=True, timeout=30).stdout  # fmt: skip
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)  # type: ignore[misc]


async def probe_journal(url: str, rids: list[str], timeout: float = 30.0) -> None:
    """Wait until the shared journal holds a terminal status for each of `rids` (states published while the
    broker was down reached no subscriber, so the journal is where to look)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        statuses = pg_statuses(url)
        if all(statuses.get(r) in TERMINAL for r in rids):
            return
        assert asyncio.get_running_loop().time() < deadline, {r: statuses.get(r) for r in rids}
        await asyncio.sleep(0.5)






@pytest.mark.parametrize("standbys", [1, 2])
async def test_a_killed_leader_is_replaced_and_nothing_is_lost_or_sent_twice(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, standbys: int
) -> None:
    """Two and three bridges, 20 groups at 5 commands/s; SIGKILL of the leader after 2 s: one standby takes
    over (the other stays a standby), the broker hands it what the dead one had not acknowledged, every
    command ends exactly once, and a simulator that bans after one over-limit call bans nobody."""
    vendor(sim, rate=20.0, burst=5, ban_after=1)
    groups = [sim.simulator.state.add_group(f"ha{i}") for i in range(20)]
    names = ["a", "b", "c"][: standbys + 1]
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, *names)
            load = asyncio.ensure_future(publish_load(probe, groups, 3, 0.2))
            await asyncio.sleep(2.0)
            bridges.procs["a"].send_signal(signal.SIGKILL)
            rids = await load
            await probe.wait_for(lambda: sorted(role(probe, n) or "" for n in names[1:])[0] == "leader", timeout=20)
            await probe.wait_for(lambda: all(r in terminal_states(probe) for r in rids), timeout=40)
            finals = terminal_states(probe)
            roles = sorted(role(probe, n) or "" for n in names[1:])
    finally:
        bridges.kill()
    assert roles == ["leader", "standby"][:standbys]
    assert ended_once(finals) and sent_twice(sim) == []
    refused = [c for c in sim.simulator.calls if c.outcome in ("rate_limited", "banned")]
    assert sim.simulator.bans == 0 and refused == []


async def test_a_command_finished_before_a_takeover_is_still_a_duplicate_after_it(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """A command completed and announced under the old leader (which the new one holds only as a key): sent
    again with its request_id after the takeover, it is answered with its old state, `duplicate: true`, and
    makes no second call."""
    group = sim.simulator.state.add_group("dup")
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    body = {"type": "power_control", "active_power": 4321, "duration": 60, "timeout": 10, "request_id": "once"}
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b")
            probe.publish(f"vpp/group/{group}/set", body)
            await probe.wait_for(lambda: terminal_states(probe).get("once") == ["completed"], timeout=20)
            await probe.wait_for(lambda: "1" in pg_announced(pg_url, "once"), timeout=10)
            bridges.procs["a"].send_signal(signal.SIGKILL)
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
            await probe.wait_for(lambda: sum(1 for m in probe.on("vpp/bridge/state")
                                             if m.payload and m.json()["state"] == "online") >= 2, timeout=20)  # fmt: skip
            probe.publish(f"vpp/group/{group}/set", body)
            again = await probe.wait_for(lambda: [m.json() for m in probe.on(f"vpp/group/{group}/state")
                                                  if m.payload and m.json().get("duplicate")], timeout=20)  # fmt: skip
    finally:
        bridges.kill()
    assert again[0]["request_id"] == "once" and again[0]["status"] == "completed"
    assert len(sim.simulator.calls_to(CONTROL)) == 1


def pg_announced(url: str, request_id: str) -> str:
    """The `announced` flag of one command in the shared journal."""
    sql = f"SELECT announced FROM commands WHERE request_id = '{request_id}'"  # noqa: S608
    return subprocess.run(["psql", url, "-XAtc", sql], capture_output=True, text=True, check=True, timeout=30).stdout


async def test_a_paused_leader_makes_no_call_after_it_resumes(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """SIGSTOP of the leader for 3 x lease while commands wait, the standby takes over, SIGCONT: the old leader
    exits (code 75) without a single API call (its log, at DEBUG, has no call after the resume), and the
    commands are carried out once by the new leader."""
    groups = [sim.simulator.state.add_group(f"hp{i}") for i in range(4)]
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b", level="DEBUG")
            bridges.procs["a"].send_signal(signal.SIGSTOP)
            rids = await publish_load(probe, groups, 1, 0.0)
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
            await asyncio.sleep(3 * LEASE)
            resumed_at = (tmp_path / "a.log").stat().st_size
            bridges.procs["a"].send_signal(signal.SIGCONT)
            assert await bridges.exit_code("a", 10) == 75  # fail-stop: it no longer leads
            await probe.wait_for(lambda: all(r in terminal_states(probe) for r in rids), timeout=30)
            finals = terminal_states(probe)
    finally:
        bridges.kill()
    after = (tmp_path / "a.log").read_bytes()[resumed_at:].decode()
    assert "api_call " not in after and "ha_lost" in after, after
    assert all(v == ["completed"] for v in finals.values()) and sent_twice(sim) == []


async def test_a_leader_cut_off_from_the_database_steps_down_and_the_standby_takes_over(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, postgres_server: Postgres, pg_url: str
) -> None:
    """The leader's database connections are terminated and its logins refused for 10 s, under load: it
    stops (exit 75) within its lease, the standby takes over, every command ends once, none is sent twice."""
    postgres_server.sql("CREATE ROLE ra LOGIN SUPERUSER")
    cut_off = pg_url.replace("postgres@", "ra@")
    groups = [sim.simulator.state.add_group(f"hc{i}") for i in range(10)]
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b", url=cut_off)
            load = asyncio.ensure_future(publish_load(probe, groups, 4, 0.2))
            await asyncio.sleep(1.0)
            postgres_server.sql("ALTER ROLE ra NOLOGIN")
            postgres_server.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'ra'")
            assert await bridges.exit_code("a", 3 * LEASE) == 75
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
            rids = await load
            await asyncio.sleep(max(0.0, 10 - 3 * LEASE))
            postgres_server.sql("ALTER ROLE ra LOGIN")
            bridges.start("a", url=cut_off)  # the supervisor's restart
            await probe.wait_for(lambda: role(probe, "a") == "standby", timeout=20)
            await probe.wait_for(lambda: all(r in terminal_states(probe) for r in rids), timeout=40)
            finals = terminal_states(probe)
    finally:
        bridges.kill()
    assert ended_once(finals) and sent_twice(sim) == []


async def test_postgresql_stopped_mid_stream_then_started_again(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """PostgreSQL stops under load: the leader sends nothing it cannot record and stops within its lease;
    commands wait in the broker; PostgreSQL starts again and a bridge leads (the supervisor restarts the
    stopped one): every command ends once, none is sent twice."""
    server = Postgres()
    server.start()
    groups = [sim.simulator.state.add_group(f"hs{i}") for i in range(10)]
    bridges = Bridges(tmp_path, broker, sim, server.url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b")
            load = asyncio.ensure_future(publish_load(probe, groups, 4, 0.2))
            await asyncio.sleep(1.0)
            server.stop()
            assert await bridges.exit_code("a", 3 * LEASE) == 75
            rids = await load
            await asyncio.sleep(2.0)
            server.start()
            bridges.start("a")
            await probe.wait_for(lambda: "leader" in (role(probe, "a"), role(probe, "b")), timeout=30)
            await probe.wait_for(lambda: all(r in terminal_states(probe) for r in rids), timeout=40)
            finals = terminal_states(probe)
    finally:
        bridges.kill()
        server.remove()
    assert ended_once(finals) and sent_twice(sim) == []


async def test_the_broker_restarting_during_a_takeover_loses_nothing(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """SIGKILL of the leader, then the broker restarts while the standby takes over: the standby leads once
    the broker is back, with the session's commands; every command ends once, none is sent twice."""
    groups = [sim.simulator.state.add_group(f"hb{i}") for i in range(10)]
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b")
            rids = await publish_load(probe, groups, 2, 0.1)
            bridges.procs["a"].send_signal(signal.SIGKILL)
        await asyncio.sleep(LEASE / 2)
        broker.restart(down_for=LEASE)
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=30)
            more = await publish_load(probe, groups, 1, 0.0)
            await probe.wait_for(lambda: all(r in terminal_states(probe) for r in more), timeout=40)
        await probe_journal(pg_url, rids)
    finally:
        bridges.kill()
    assert sent_twice(sim) == []
