"""Dispatch plans against a real mosquitto, the simulator and the bridge (in-process, and as a process killed
with SIGKILL): each interval reaches the API at its start and never before, a missed one is never sent late,
a safety stop suspends the plan, bad plans change nothing, and a restart goes on without sending twice."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import get, start_bridge, write_config
from .support.broker import Mosquitto, Probe
from .support.standby import Bridges, role

CONTROL = "/commandapi/groupControl"


def plan(plan_id: str, *windows: tuple[float, float, int]) -> dict[str, Any]:
    """A plan of power setpoints from (start, end, active power) with epoch-second times."""
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")

    return {"plan_id": plan_id, "intervals": [
        {"start": iso(a), "end": iso(b), "command": {"type": "power_control", "active_power": p}} for a, b, p in windows]}


def plan_states(probe: Probe, group: str) -> list[dict[str, Any]]:
    return [m.json() for m in probe.on(f"vpp/group/{group}/plan/state") if m.payload]


async def until_status(probe: Probe, group: str, status: str, timeout: float = 20) -> dict[str, Any]:
    found: dict[str, Any] = await probe.wait_for(
        lambda: next((s for s in plan_states(probe, group) if s["status"] == status), None), timeout=timeout)
    return found


async def test_each_interval_reaches_the_api_at_its_start_and_never_before(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Three adjacent 1.5 s intervals: one call each, in order, each within 1 s after its start and none before
    it; the device is held to the next interval's deadline; the plan ends `finished`, 3 sent, 0 missed."""
    await make_bridge()
    group = sim.simulator.state.list_groups()[0].id
    t0 = time.time() + 2
    starts = [t0, t0 + 1.5, t0 + 3]
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group}/plan/set", plan("live", *((s, s + 1.5, -1000 * (i + 1)) for i, s in enumerate(starts))))
        active = await until_status(probe, group, "active")
        finished = await until_status(probe, group, "finished")
    assert (active["interval"], active["sent"]) == (0, 0)
    assert (finished["sent"], finished["missed"]) == (3, 0)
    calls = sim.simulator.calls_to(CONTROL)
    assert [c.params["activePower"] for c in calls] == ["-1000", "-2000", "-3000"]
    for call, start in zip(calls, starts, strict=True):
        assert start <= call.ts < start + 1.0, (call.ts - start)
    assert [c.params["proidTime"] for c in calls] == ["3", "3", "3"]  # 1.5 s + the next interval's deadline


async def test_an_interval_past_its_grace_is_missed_and_never_sent(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """An interval whose start is more than plans.start_grace ago is counted missed and not sent; the next one
    goes at its start."""
    await make_bridge(plans={"start_grace": 0.5})
    group = sim.simulator.state.list_groups()[0].id
    now = time.time()
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group}/plan/set", plan("late", (now - 2, now + 1.5, -111), (now + 1.5, now + 3, -222)))
        finished = await until_status(probe, group, "finished")
    assert (finished["sent"], finished["missed"]) == (1, 1)
    assert [c.params["activePower"] for c in sim.simulator.calls_to(CONTROL)] == ["-222"]


async def test_an_interval_without_a_token_by_its_deadline_expires_and_counts_missed(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Two groups' intervals start together at one call every 5 s: the second call cannot leave within the
    0.5 s grace, so that interval ends `expired`, counts missed, and never reaches the API."""
    await make_bridge(rate_limit={"rate": 0.2, "burst": 1}, plans={"start_grace": 0.5})
    groups = [g.id for g in sim.simulator.state.list_groups()[:2]]
    start = time.time() + 1.5
    with Probe(broker.port) as probe:
        for i, group in enumerate(groups):
            probe.publish(f"vpp/group/{group}/plan/set", plan(f"g{i}", (start, start + 2, -500 - i)))
        done = [await until_status(probe, group, "finished") for group in groups]
    assert sorted((d["sent"], d["missed"]) for d in done) == [(0, 1), (1, 0)]
    assert len(sim.simulator.calls_to(CONTROL)) == 1


async def test_a_stop_on_the_safety_lane_suspends_the_plan(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """After the first interval, a stop on the safety lane for the group: the plan says `suspended` and no later
    interval is sent; the stop is not undone."""
    await make_bridge()
    group = sim.simulator.state.list_groups()[0].id
    t0 = time.time() + 1
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group}/plan/set", plan("s", (t0, t0 + 2, -1), (t0 + 2, t0 + 4, -2), (t0 + 4, t0 + 6, -3)))
        await probe.wait_for(lambda: sim.simulator.calls_to(CONTROL), timeout=10)
        probe.publish(f"vpp/safety/group/{group}/set", {"type": "manual", "action": "stop", "request_id": "halt"})
        suspended = await until_status(probe, group, "suspended")
        await probe.wait_status(f"vpp/group/{group}/state", "halt", "completed")
        await asyncio.sleep(t0 + 5 - time.time())
    assert suspended["error"]["code"] == "suspended"
    powers = [c.params.get("activePower") for c in sim.simulator.calls_to(CONTROL)]
    assert powers[0] == "-1" and "-2" not in powers and "-3" not in powers


async def test_bad_plans_are_rejected_whole_and_change_nothing(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A retained plan, an overlapping one and one with a command over the power ceiling are each rejected
    (not retained) naming the cause; the plan in force goes on."""
    await make_bridge(commands={"max_abs_power": 5000})
    group = sim.simulator.state.list_groups()[0].id
    t0 = time.time() + 1.5
    topic = f"vpp/group/{group}/plan/set"
    with Probe(broker.port) as probe:
        probe.publish(topic, plan("good", (t0, t0 + 1, -100), (t0 + 1, t0 + 2, -200)))
        await until_status(probe, group, "active")
        probe.publish(topic, plan("kept", (t0, t0 + 1, -9)), retain=True)
        probe.publish(topic, plan("overlap", (t0, t0 + 2, -9), (t0 + 1, t0 + 3, -9)))
        probe.publish(topic, plan("strong", (t0, t0 + 2, -9000)))
        await probe.wait_for(lambda: len([s for s in plan_states(probe, group) if s["status"] == "rejected"]) == 3)
        finished = await until_status(probe, group, "finished")
        probe.publish(topic, b"", retain=True)
    rejected = {s["plan_id"]: s["error"] for s in plan_states(probe, group) if s["status"] == "rejected"}
    assert rejected["kept"]["code"] == "retained_command"
    assert rejected["overlap"]["code"] == "validation_error" and rejected["overlap"]["message"].startswith("interval 1:")
    assert rejected["strong"]["code"] == "not_allowed" and "max_abs_power" in rejected["strong"]["message"]
    assert finished["plan_id"] == "good" and finished["sent"] == 2
    assert [c.params["activePower"] for c in sim.simulator.calls_to(CONTROL)] == ["-100", "-200"]
    assert not [m for m in probe.on(f"vpp/group/{group}/plan/state") if m.retain and b"rejected" in m.payload]


async def test_sigkill_in_the_middle_of_a_plan_sends_no_interval_twice_and_skips_none(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """Six 3 s intervals; the bridge is killed (SIGKILL) right after each of the first two calls and started
    again (each interval's 3 s deadline outlasts a restart): every interval reaches the API once, in order, none
    before its start."""
    group = sim.simulator.state.list_groups()[0].id
    config = write_config(tmp_path / "bridge.toml", broker, sim, "bridge-plans", rate_limit={"rate": 0},
                          commands={"merge": False}, journal={"path": tmp_path / "j.db"}, http={"enabled": False})
    t0 = time.time() + 4
    starts = [t0 + 3.0 * i for i in range(6)]
    bridge = start_bridge(config)
    try:
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: any(m.payload and m.json()["state"] == "online" for m in probe.on("vpp/bridge/state")),
                                 timeout=20)
            probe.publish(f"vpp/group/{group}/plan/set", plan("k", *((s, s + 3.0, -10 - i) for i, s in enumerate(starts))))
            for kills in (1, 2):
                await probe.wait_for(lambda k=kills: len(sim.simulator.calls_to(CONTROL)) >= k, timeout=15)
                bridge.send_signal(signal.SIGKILL)
                bridge.wait(10)
                bridge = start_bridge(config)
            finished = await until_status(probe, group, "finished", timeout=40)
    finally:
        bridge.kill()
        bridge.wait(10)
    calls = sim.simulator.calls_to(CONTROL)
    powers = [c.params["activePower"] for c in calls]
    assert Counter(powers).most_common(1)[0][1] == 1, powers
    assert powers == [str(-10 - i) for i in range(6)]
    assert all(c.ts >= s for c, s in zip(calls, starts, strict=True))
    assert finished["sent"] == 6 and finished["missed"] == 0


async def test_a_takeover_in_the_middle_of_a_plan_goes_on_without_sending_twice(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """Hot standby on PostgreSQL: the leader is killed (SIGKILL) after the plan's second call; the standby takes
    over and carries out the rest: every interval once, in order, none before its start, none missed."""
    group = sim.simulator.state.add_group("plan-ha")
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b")
            t0 = time.time() + 2
            starts = [t0 + 4.0 * i for i in range(6)]  # each interval's deadline (4 s) outlasts a takeover
            probe.publish(f"vpp/group/{group}/plan/set", plan("ha", *((s, s + 4.0, -20 - i) for i, s in enumerate(starts))))
            await probe.wait_for(lambda: len(sim.simulator.calls_to(CONTROL)) >= 2, timeout=15)
            bridges.procs["a"].send_signal(signal.SIGKILL)
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
            finished = await until_status(probe, group, "finished", timeout=40)
    finally:
        bridges.kill()
    calls = sim.simulator.calls_to(CONTROL)
    assert [c.params["activePower"] for c in calls] == [str(-20 - i) for i in range(6)]
    assert all(c.ts >= s for c, s in zip(calls, starts, strict=True))
    assert finished["sent"] == 6 and finished["missed"] == 0


async def test_a_wall_clock_step_between_runs_fires_no_interval_early_or_twice(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """The bridge is stopped after the plan's first call and started again with its wall clock an hour ahead
    (libfaketime): the journal's timeline keeps the plan's time, so the next intervals go at their real starts,
    the first is not sent again, and nothing is missed."""
    group = sim.simulator.state.list_groups()[0].id
    config = write_config(tmp_path / "bridge.toml", broker, sim, "bridge-plan-step", rate_limit={"rate": 0},
                          commands={"merge": False}, journal={"path": tmp_path / "j.db"}, http={"enabled": False})
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    t0 = time.time() + 4
    starts = [t0 + 3.0 * i for i in range(4)]
    bridge = start_bridge(config, "INFO", wall_offset_file=offset)
    try:
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: any(m.payload and m.json()["state"] == "online" for m in probe.on("vpp/bridge/state")),
                                 timeout=20)
            probe.publish(f"vpp/group/{group}/plan/set", plan("step", *((s, s + 3.0, -30 - i) for i, s in enumerate(starts))))
            await probe.wait_for(lambda: sim.simulator.calls_to(CONTROL), timeout=15)
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(10)
            offset.write_text("+3600\n")
            bridge = start_bridge(config, "INFO", wall_offset_file=offset)
            finished = await until_status(probe, group, "finished", timeout=40)
    finally:
        bridge.kill()
        bridge.wait(10)
    calls = sim.simulator.calls_to(CONTROL)
    assert [c.params["activePower"] for c in calls] == [str(-30 - i) for i in range(4)]
    assert all(s <= c.ts < s + 1.5 for c, s in zip(calls, starts, strict=True))
    assert finished["sent"] == 4 and finished["missed"] == 0


async def test_metrics_and_the_status_page_show_the_plans(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """While a plan runs the status page lists it (target, plan, interval, next start); afterwards /metrics
    counts its intervals by outcome, their lateness, and the plans by status."""
    service = await make_bridge()
    group = sim.simulator.state.list_groups()[0].id
    t0 = time.time() + 1
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group}/plan/set", plan("m", (t0, t0 + 1.5, -1), (t0 + 1.5, t0 + 3, -2)))
        await until_status(probe, group, "active")
        _, page = await get(service, "/status.json")
        listed = json.loads(page)["plans"]
        await until_status(probe, group, "finished")
    assert [(row["target"], row["plan_id"], row["interval"]) for row in listed] == [(f"group:{group}", "m", 0)]
    _, metrics = await get(service, "/metrics")
    assert 'semookii_plan_intervals_total{outcome="issued"} 2.0' in metrics
    assert "semookii_plan_interval_lateness_seconds_count 2.0" in metrics
    assert 'semookii_plans{status="finished"} 1.0' in metrics


async def test_send_plan_from_a_csv_file_and_a_bad_row_is_bad_usage(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """`send group <id> --plan day.csv` (start,end,active_power rows) prints the plan's `active` state and exits 0,
    and its intervals reach the API; a row without an end is refused before anything is published (exit 2)."""
    import sys

    await make_bridge()
    group = sim.simulator.state.list_groups()[0].id
    t0 = time.time() + 1.5

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat()

    day = tmp_path / "day.csv"
    day.write_text(f"start,end,active_power\n{iso(t0)},{iso(t0 + 1)},-700\n{iso(t0 + 1)},{iso(t0 + 2)},-800\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"start,end,active_power\n{iso(t0)},,-700\n")
    base = [sys.executable, "-m", "semookii_bridge.cli", "send", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port),
            "group", group, "--plan"]  # fmt: skip
    sent = await asyncio.create_subprocess_exec(*base, str(day), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(sent.communicate(), 30)
    refused = await asyncio.create_subprocess_exec(*base, str(bad), stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(refused.communicate(), 30)
    with Probe(broker.port) as probe:
        await until_status(probe, group, "finished")
    answer = json.loads(out.decode().splitlines()[-1])
    assert sent.returncode == 0 and (answer["plan_id"], answer["status"]) == ("day", "active")
    assert refused.returncode == 2 and "line 2: every row needs `start` and `end`" in err.decode()
    assert [c.params["activePower"] for c in sim.simulator.calls_to(CONTROL)] == ["-700", "-800"]


async def test_an_ordinary_command_overrides_the_interval_in_progress_and_the_plan_resumes(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """During the first interval an ordinary setpoint for the group goes out (latest wins); the plan's next
    interval still goes at its start, and the plan ends `finished`, not suspended."""
    await make_bridge()
    group = sim.simulator.state.list_groups()[0].id
    t0 = time.time() + 1.5
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group}/plan/set", plan("o", (t0, t0 + 2, -1), (t0 + 2, t0 + 4, -2)))
        await probe.wait_for(lambda: sim.simulator.calls_to(CONTROL), timeout=10)
        body = {"type": "power_control", "active_power": -99, "duration": 60, "timeout": 10, "request_id": "manual"}
        probe.publish(f"vpp/group/{group}/set", body)
        await probe.wait_status(f"vpp/group/{group}/state", "manual", "completed")
        finished = await until_status(probe, group, "finished")
    assert [c.params["activePower"] for c in sim.simulator.calls_to(CONTROL)] == ["-1", "-99", "-2"]
    assert finished["sent"] == 2
