"""A takeover that is safe in every fault, with real processes and a TCP relay the test controls between a
bridge and PostgreSQL or the simulator: no call of the old leader lands after the new leader's for the same
target, and a leader stopped or cut off inside its fence transaction does not hold the takeover up."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from semookii_bridge.journal.postgres import SCHEMA
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import libfaketime
from .support.broker import Mosquitto, Probe
from .support.postgres import Postgres
from .support.relay import Relay
from .support.standby import CONTROL, LEASE, Bridges, ended_once, role, sent_twice
from .support.states import terminal_states

TAKEOVER_TARGET = 5.0
"""Seconds from a leader's stall inside its fence transaction to the standby leading (issue 28's target)."""


@pytest.fixture
async def relay_factory() -> AsyncIterator[list[Relay]]:
    relays: list[Relay] = []
    yield relays
    for relay in relays:
        await relay.close()


async def relay_to(relays: list[Relay], port: int) -> Relay:
    relay = await Relay(port).start()
    relays.append(relay)
    return relay


def setpoint(probe: Probe, group: str, power: int, rid: str) -> None:
    probe.publish(f"vpp/group/{group}/set", {"type": "power_control", "active_power": power, "duration": 60,
                                             "timeout": 10, "request_id": rid})  # fmt: skip


def powers(sim: RunningSimulator, group: str) -> list[str]:
    """The active powers of the control calls for `group`, in the order they reached the simulator."""
    return [c.params.get("activePower", "") for c in sim.simulator.calls_to(CONTROL) if c.params["groupId"] == group]


async def test_a_request_held_on_the_wire_lands_before_the_new_leaders_call(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, relay_factory: list[Relay]
) -> None:
    """The old leader's setpoint is held between it and the API, it is killed, the standby takes over with a
    newer setpoint for the same group, the held bytes arrive a second after the takeover: the new leader's call
    comes after them (it waits `ha.wire_bound` for targets that were in flight), so the devices run the newer
    setpoint, and the old command is reported ambiguous, not resent."""
    group = sim.simulator.state.add_group("held")
    api_relay = await relay_to(relay_factory, int(sim.base_url.rsplit(":", 1)[1].split("/")[0]))
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b", api=f"http://127.0.0.1:{api_relay.port}")
            api_relay.hold()
            setpoint(probe, group, 111, "old")
            await probe.wait_for(lambda: any(b"groupControl" in data for _, data in api_relay._held), timeout=10)
            bridges.procs["a"].send_signal(signal.SIGKILL)
            setpoint(probe, group, 222, "new")
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
            await asyncio.sleep(1.0)
            api_relay.release()
            await probe.wait_for(lambda: {"old", "new"} <= set(terminal_states(probe)), timeout=20)
            finals = terminal_states(probe)
    finally:
        bridges.kill()
    assert powers(sim, group) == ["111", "222"]
    assert finals["old"][-1] == "failed" and finals["new"][-1] == "completed"


async def test_a_leader_paused_after_its_sending_write_makes_no_call(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, postgres_server: Postgres,
    relay_factory: list[Relay],
) -> None:
    """The leader is stopped (SIGSTOP) the moment PostgreSQL confirms its `sending` write, the standby takes over
    and sends a newer setpoint for the same group; the old leader resumes: it sends nothing (the lease is checked
    before any byte is written) and exits 75; the devices run the newer setpoint. (Here the lease's own check
    usually stops the process first; tests/test_fenced_transport.py is the one that bites on the write guard.)"""
    group = sim.simulator.state.add_group("paused")
    db_relay = await relay_to(relay_factory, postgres_server.port)
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b", url=through(db_relay, pg_url, postgres_server.port))
            old = bridges.procs["a"]
            stopped = db_relay.on(b"COMMIT", lambda: old.send_signal(signal.SIGSTOP), downstream=True,
                                  after=db_relay.on(b"sending"))  # fmt: skip
            setpoint(probe, group, 111, "old")
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
            setpoint(probe, group, 222, "new")
            await probe.wait_for(lambda: "new" in terminal_states(probe), timeout=20)
            old.send_signal(signal.SIGCONT)
            assert await bridges.exit_code("a", 10) == 75
            await asyncio.sleep(0.5)
    finally:
        bridges.kill()
    assert stopped.fired, "the hook never saw the sending write confirmed"
    assert powers(sim, group) == ["222"]


def through(relay: Relay, url: str, port: int) -> str:
    """`url` with the database server's port replaced by the relay's."""
    return url.replace(f":{port}/", f":{relay.port}/")


async def stall_in_fence(bridges: Bridges, postgres_server: Postgres, relay: Relay, stall: str) -> float:
    """Leader `a` reaches PostgreSQL through `relay`; once its fence holds the share lock on the lease row, the
    relay is frozen (`stall="cut"`) or `a` is stopped (`"stop"`). Seconds from the stall to `b` leading; then
    every command has ended."""
    groups = [bridges.sim.simulator.state.add_group(f"stall{i}") for i in range(4)]
    stalled: list[float] = []

    def do_stall() -> None:
        stalled.append(time.monotonic())
        if stall == "cut":
            relay.freeze()
        else:
            bridges.procs["a"].send_signal(signal.SIGSTOP)

    with Probe(bridges.broker.port) as probe:
        await bridges.up(probe, "a", "b", url=through(relay, bridges.url, postgres_server.port))
        relay.after(b"BEGIN;", do_stall, skip=1)  # BEGIN, the fence (prepared: no text), then the writes
        for i, group in enumerate(groups):
            setpoint(probe, group, 100 + i, f"s{i}")
        await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=60)
        took = time.monotonic() - stalled[0]
        await probe.wait_for(lambda: all(f"s{i}" in terminal_states(probe) for i in range(4)), timeout=30)
        bridges.finals = terminal_states(probe)
    return took


@pytest.mark.parametrize("stall", ["cut", "stop"])
async def test_a_leader_stalled_inside_its_fence_transaction_does_not_hold_the_takeover(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, postgres_server: Postgres,
    relay_factory: list[Relay], stall: str,
) -> None:
    """The leader's connection is cut, or the leader stopped, while its fence transaction holds the share lock
    on the lease row: the database ends that transaction within half a lease, so the standby leads within 5 s
    of the stall (not when TCP keepalive notices, hours later); every command ends once, none is sent twice."""
    relay = await relay_to(relay_factory, postgres_server.port)
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        took = await stall_in_fence(bridges, postgres_server, relay, stall)
    finally:
        bridges.kill()
    assert LEASE / 2 < took < TAKEOVER_TARGET, f"takeover took {took:.1f} s"
    assert ended_once(bridges.finals) and sent_twice(sim) == []


def skewed(offset: str) -> dict[str, str]:
    """The environment of a bridge whose wall clock is `offset` off (libfaketime; boot and monotonic clocks true)."""
    return {"LD_PRELOAD": libfaketime(), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


async def test_expires_at_follows_the_databases_clock_not_a_skewed_hosts(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """A leader whose wall clock is an hour behind: a command whose `expires_at` has passed by the database's
    clock expires unsent (the host would have thought it had an hour left); one still valid completes; the skew
    is logged."""
    late, fine = sim.simulator.state.add_group("late"), sim.simulator.state.add_group("fine")
    now = datetime.now(UTC)
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", env=skewed("-1h"))
            for group, rid, at in ((late, "late", now - timedelta(seconds=1)), (fine, "fine", now + timedelta(minutes=5))):
                probe.publish(f"vpp/group/{group}/set", {"type": "power_control", "active_power": 7, "duration": 60,
                                                         "timeout": 10, "request_id": rid,
                                                         "expires_at": at.isoformat()})  # fmt: skip
            await probe.wait_for(lambda: {"late", "fine"} <= set(terminal_states(probe)), timeout=20)
            finals = terminal_states(probe)
    finally:
        bridges.kill()
    assert finals["late"][-1] in ("expired", "rejected") and finals["fine"][-1] == "completed"
    assert powers(sim, late) == [] and powers(sim, fine) == ["7"]
    assert "clock_skew host_minus_database_seconds=-3600" in (tmp_path / "a.log").read_text()


async def test_the_quota_day_is_the_databases_not_a_skewed_hosts(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, postgres_server: Postgres
) -> None:
    """Today's quota is spent by the database's day; a leader whose wall clock is already on tomorrow counts
    today's calls, not a fresh day: an ordinary command fails `quota_exhausted` without a call."""
    group = sim.simulator.state.add_group("quota")
    today = datetime.now(UTC).date().isoformat()
    conn = await asyncpg.connect(pg_url)
    await conn.execute(SCHEMA)
    await conn.execute("INSERT INTO api_calls VALUES ($1, 50)", today)
    await conn.close()
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", env={**skewed("+1d"), "SEMOOKII_BRIDGE_RATE_LIMIT_DAILY_QUOTA": "50",
                                              "SEMOOKII_BRIDGE_RATE_LIMIT_QUOTA_RESERVE": "2%"})  # fmt: skip
            setpoint(probe, group, 9, "q1")
            final = await probe.wait_for(lambda: terminal_states(probe).get("q1"), timeout=20)
            state = probe.states(f"vpp/group/{group}/state", "q1")[-1]
    finally:
        bridges.kill()
    assert final[-1] == "failed" and state["error"]["code"] == "quota_exhausted"
    assert powers(sim, group) == []


TENURE = 5 * LEASE
"""A leader hands over only after leading this long (`fleet.LinkWatch`)."""


async def cut_and_serve(
    bridges: Bridges, relay: Relay, start: dict[str, Any], *, first_ends: bool = False
) -> tuple[float, dict[str, list[str]]]:
    """`a` leads with one link through `relay` (`start`: its options), `b` stands by; after the tenure the relay
    is frozen (a silent cut) and two setpoints are published (the second once the first has ended, with
    `first_ends`): seconds from the cut until `b` has completed the second, and every command's states."""
    group, other = bridges.sim.simulator.state.add_group("cut1"), bridges.sim.simulator.state.add_group("cut2")
    with Probe(bridges.broker.port) as probe:
        await bridges.up(probe, "a", "b", **start)
        await asyncio.sleep(TENURE + 0.5)
        relay.freeze()
        cut = time.monotonic()
        setpoint(probe, group, 11, "c1")
        await asyncio.sleep(0.5)
        if first_ends:
            await probe.wait_for(lambda: "c1" in terminal_states(probe), timeout=20)
        setpoint(probe, other, 22, "c2")
        await probe.wait_status(f"vpp/group/{other}/state", "c2", "completed", timeout=40)
        served = time.monotonic() - cut
        assert role(probe, "b") == "leader"
        await probe.wait_for(lambda: "c1" in terminal_states(probe), timeout=20)
        return served, terminal_states(probe)


async def test_a_leader_cut_off_from_the_broker_hands_over_to_the_standby(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, relay_factory: list[Relay]
) -> None:
    """The leader's path to the broker goes silent (no FIN, no RST) while the standby's is fine: within 12 s of
    the cut the standby leads and has served a command published after the cut; nothing is lost or sent twice,
    and the old leader exits 75 saying why."""
    relay = await relay_to(relay_factory, broker.port)
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        served, finals = await cut_and_serve(bridges, relay, {"env": {"SEMOOKII_BRIDGE_MQTT_PORT": str(relay.port)}})
        assert await bridges.exit_code("a", 10) == 75
    finally:
        bridges.kill()
    assert served < 12.0, f"served {served:.1f} s after the cut"
    assert all(v[-1] == "completed" for v in finals.values()) and sent_twice(sim) == []
    assert 'ha_handing_over name=a reason="its broker link' in (tmp_path / "a.log").read_text()


async def test_a_leader_cut_off_from_the_api_hands_over_to_the_standby(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, relay_factory: list[Relay]
) -> None:
    """The leader's path to the API accepts requests and never answers: its first setpoint times out (5 s) and
    ends ambiguous, the next (published after that) waits (breaker), and the leader hands over to the standby,
    which serves it within 15 s of the cut; nothing is sent twice."""
    relay = await relay_to(relay_factory, int(sim.base_url.rsplit(":", 1)[1]))
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        served, finals = await cut_and_serve(bridges, relay, {"api": f"http://127.0.0.1:{relay.port}"},
                                             first_ends=True)  # fmt: skip
        assert await bridges.exit_code("a", 10) == 75
    finally:
        bridges.kill()
    assert served < 15.0, f"served {served:.1f} s after the cut"
    assert finals["c1"][-1] == "failed" and finals["c2"][-1] == "completed" and sent_twice(sim) == []
    assert 'ha_handing_over name=a reason="its API link' in (tmp_path / "a.log").read_text()
