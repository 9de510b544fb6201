"""The other ways a command ends, through mosquitto and the simulator: ambiguous, unknown, quota, recovery."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from semookii_bridge.control.jobs import Job
from semookii_bridge.service import Service
from semookii_bridge.simulator import Fault, RunningSimulator

from .support.broker import Mosquitto, Probe

CONTROL = "/commandapi/groupControl"
STOP = {"type": "manual", "action": "stop"}


def gid(sim: RunningSimulator) -> str:
    return sim.simulator.state.list_groups()[0].id


async def test_timeout_after_sending_is_ambiguous_and_not_resent(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """The API took the command but answered too late: `failed` with code ambiguous, exactly one call."""
    await make_bridge(api={"timeout": 0.3})
    sim.simulator.inject(Fault("slow", path=CONTROL, delay=1.0))
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "amb"})
        failed = await probe.wait_status(f"vpp/group/{gid(sim)}/state", "amb", "failed")
    assert failed["error"]["code"] == "ambiguous" and len(sim.simulator.calls_to(CONTROL)) == 1


async def test_dropped_connection_after_sending_is_ambiguous(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A connection reset after the API processed the call is reported ambiguous, never repeated."""
    sim.simulator.inject(Fault("drop_after", path=CONTROL))
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "reset"})
        failed = await probe.wait_status(f"vpp/group/{gid(sim)}/state", "reset", "failed")
    assert failed["error"]["code"] == "ambiguous" and len(sim.simulator.state.commands) == 1


async def test_server_errors_while_polling_do_not_stop_tracking(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """5xx and garbage from queryCommand are retried; the command still completes."""
    sim.simulator.inject(Fault("http_500", path="/commandapi/queryCommand", times=6),
                         Fault("malformed", path="/commandapi/getQueryResult", times=3))  # fmt: skip
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "bumpy"})
        await probe.wait_status(f"vpp/group/{gid(sim)}/state", "bumpy", "completed")
    assert len(sim.simulator.calls_to(CONTROL)) == 1


async def test_no_results_within_the_window_is_unknown(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Results that never come within track_results_for end as `unknown` (code no_results)."""
    sim.simulator.state.timings.result_delay = 3600
    await make_bridge(commands={"track_results_for": 0.6, "poll_initial": 0.1, "poll_max": 0.2})
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "slowpoke"})
        unknown = await probe.wait_status(f"vpp/group/{gid(sim)}/state", "slowpoke", "unknown")
        statuses = [s["status"] for s in probe.states(f"vpp/group/{gid(sim)}/state", "slowpoke")]
    assert statuses == ["queued", "accepted", "dispatched", "unknown"] and unknown["error"]["code"] == "no_results"


async def test_no_results_names_the_last_poll_error(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """When polls kept failing until the window closed, `unknown` says what the last failure was."""
    sim.simulator.state.timings.result_delay = 3600
    sim.simulator.inject(Fault("http_500", path="/commandapi/getQueryResult", times=1000))
    await make_bridge(commands={"track_results_for": 0.6, "poll_initial": 0.1, "poll_max": 0.2})
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "erring"})
        unknown = await probe.wait_status(f"vpp/group/{gid(sim)}/state", "erring", "unknown")
    assert "last poll error: http_error" in unknown["error"]["message"]


async def test_tracked_commands_are_not_held_in_memory(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Accepted commands waiting for their first poll keep no Job object: the journal holds them."""
    service = await make_bridge(commands={"poll_initial": 600})
    groups = [g.id for g in sim.simulator.state.list_groups()]
    with Probe(broker.port) as probe:
        for n, group in enumerate(groups):
            probe.publish(f"vpp/group/{group}/set", {**STOP, "request_id": f"held-{n}"})
        for n, group in enumerate(groups):
            await probe.wait_status(f"vpp/group/{group}/state", f"held-{n}", "accepted")
    gc.collect()
    assert service.bridge.lifecycle.tracking == len(groups) > 1
    assert not [o for o in gc.get_objects() if isinstance(o, Job)]


async def test_tracking_resumes_after_a_restart(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A command accepted before a (graceful) restart is polled again afterwards and completes."""
    sim.simulator.state.timings.result_delay = 1.5
    first = await make_bridge()
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "across"})
        await probe.wait_status(f"vpp/group/{gid(sim)}/state", "across", "dispatched")
        await first.stop()
        await make_bridge()
        await probe.wait_status(f"vpp/group/{gid(sim)}/state", "across", "completed")
    assert len(sim.simulator.calls_to(CONTROL)) == 1


async def test_daily_quota_keeps_a_reserve_for_safety_commands(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """When only the reserve is left, other commands fail `quota_exhausted` at once, unsent; a manual stop still
    goes out; once all is spent, even that fails."""
    gid_ = gid(sim)
    await make_bridge(rate_limit={"rate": 0, "daily_quota": 3, "quota_reserve": 1}, commands={"track": "accepted"})
    power = {"type": "power_control", "active_power": 100, "duration": 60, "timeout": 1}
    topic = f"vpp/group/{gid_}/state"
    with Probe(broker.port) as probe:
        for rid, command, status in [("p1", power, "completed"), ("p2", power, "completed"), ("p3", power, "failed"),
                                     ("s1", STOP, "completed"), ("s2", STOP, "failed")]:  # fmt: skip
            probe.publish(f"vpp/group/{gid_}/set", {**command, "request_id": rid})
            final = await probe.wait_status(topic, rid, status)
            if status == "failed":
                assert final["error"]["code"] == "quota_exhausted", final
                assert [s["status"] for s in probe.states(topic, rid)] == ["queued", "failed"]
    sent = [c.params.get("manualMode") for c in sim.simulator.calls_to(CONTROL)]
    assert sent == [None, None, "0"]


async def test_mqtt_311_is_selectable(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """With protocol = 3 the bridge speaks MQTT 3.1.1 and the lifecycle is the same."""
    await make_bridge(mqtt={"protocol": 3})
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "v311"})
        await probe.wait_status(f"vpp/group/{gid(sim)}/state", "v311", "completed")


async def test_journal_failure_is_reported_not_swallowed(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the journal cannot record a command (SQLite says the disk is full), it is `rejected` with
    internal_error, not lost in silence, and the bridge goes on with the next one: the journal turns the driver's
    error into JournalError, which the core catches."""
    import sqlite3

    assert bridge.journal is not None
    real_write = bridge.journal._write  # type: ignore[attr-defined]
    failed: list[str] = []

    def full_disk_once(sql: str, values: Any) -> Any:
        if sql.startswith("INSERT INTO commands") and not failed:
            failed.append(sql)
            raise sqlite3.OperationalError("database or disk is full")
        return real_write(sql, values)

    monkeypatch.setattr(bridge.journal, "_write", full_disk_once)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "disk-full"})
        rejected = await probe.wait_status(f"vpp/group/{gid(sim)}/state", "disk-full", "rejected")
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "after-disk"})
        await probe.wait_status(f"vpp/group/{gid(sim)}/state", "after-disk", "completed")
    assert rejected["error"]["code"] == "internal_error" and len(sim.simulator.calls_to(CONTROL)) == 1
    assert "database or disk is full" in rejected["error"]["message"] and failed


@pytest.mark.parametrize(
    ("kind", "status", "code", "calls"),
    [
        ("http_500", "failed", "ambiguous", 1),
        ("http_502", "failed", "ambiguous", 1),
        ("drop_before", "failed", "ambiguous", 1),
        ("drop_after", "failed", "ambiguous", 1),
        ("malformed", "failed", "ambiguous", 1),
        ("reject", "failed", "api_error", 1),
        ("http_503", "completed", None, 2),
        ("http_429", "completed", None, 2),
    ],
)
async def test_each_api_fault_ends_in_the_right_state(
    kind: str, status: str, code: str | None, calls: int, bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Through the whole bridge: refusals the API signals (503, 429) are retried and complete; anything after
    which the command may have landed ends `ambiguous` after exactly one call; `success: false` is api_error."""
    sim.simulator.inject(Fault(kind, path=CONTROL, retry_after=0))  # type: ignore[arg-type]
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": f"fault-{kind}"})
        final = await probe.wait_status(f"vpp/group/{gid(sim)}/state", f"fault-{kind}", status)
    assert (final["error"] or {}).get("code") == code
    assert len(sim.simulator.calls_to(CONTROL)) == calls


async def test_a_ban_pauses_every_call_until_it_ends(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A bridge allowed more than the API takes gets banned: the command that met the ban fails `api_banned`,
    /healthz and the budget say so, no call is made while it lasts, and commands flow again after it."""
    from semookii_bridge.simulator import SimConfig

    from .support.bridges import get

    fields = {f: getattr(sim.simulator.config, f) for f in sim.simulator.config.__struct_fields__}
    sim.simulator.config = SimConfig(**{**fields, "rate": 0.5, "burst": 1, "ban_after": 1, "ban_for": 2.0})
    service = await make_bridge(rate_limit={"rate": 0}, commands={"track": "accepted"})
    groups = [g.id for g in sim.simulator.state.list_groups()]
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{groups[0]}/set", {**STOP, "request_id": "fine"})
        await probe.wait_status(f"vpp/group/{groups[0]}/state", "fine", "completed")
        probe.publish(f"vpp/group/{groups[1]}/set", {**STOP, "request_id": "meets-ban"})
        failed = await probe.wait_status(f"vpp/group/{groups[1]}/state", "meets-ban", "failed")
        assert failed["error"]["code"] == "api_banned" and "prohibit calls" in failed["error"]["message"]
        status, body = await get(service, "/healthz")
        assert status == 503 and '"banned_for":' in body
        budget = await probe.wait_for(lambda: [m.json() for m in probe.on("vpp/bridge/budget")
                                               if m.json()["paused_until"]], timeout=3)  # fmt: skip
        assert budget
        calls_in_ban = len(sim.simulator.calls)
        probe.publish(f"vpp/group/{groups[0]}/set", {**STOP, "request_id": "after-ban"})
        await asyncio.sleep(1.0)
        assert len(sim.simulator.calls) == calls_in_ban, "no call while the ban lasts"
        await probe.wait_status(f"vpp/group/{groups[0]}/state", "after-ban", "completed", timeout=10)
    assert sim.simulator.bans == 1


async def test_a_group_with_a_silent_device_ends_partial_and_one_that_answers_completed(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """One device of the first group never answers: that group's command ends `partial`, naming the device's
    dongle in `no_answer` (`devices_no_answer`) after the tracking window; the other group's ends `completed`."""
    state = sim.simulator.state
    quiet_group, loud_group = [g.id for g in state.list_groups()][:2]
    quiet_sn = state.list_inverters(quiet_group)[0].inverter_sn
    assert state.set_silent(quiet_sn, True)
    with Probe(broker.port, subscribe="vpp/group/+/state") as probe:
        for group, rid in ((quiet_group, "quiet"), (loud_group, "loud")):
            probe.publish(f"vpp/group/{group}/set", {"type": "manual", "action": "stop", "request_id": rid})
        loud = await probe.wait_status(f"vpp/group/{loud_group}/state", "loud", "completed")
        quiet = await probe.wait_status(f"vpp/group/{quiet_group}/state", "quiet", "partial", timeout=15)
    assert quiet["no_answer"] == [state.wifi_sn_of(quiet_sn)] and quiet["error"]["code"] == "devices_no_answer"
    assert quiet["results"][state.wifi_sn_of(quiet_sn)] == "null" and len(quiet["results"]) == 3
    assert loud["no_answer"] is None and set(loud["results"].values()) == {"success"}
    assert not [s for s in probe.states(f"vpp/group/{quiet_group}/state", "quiet") if s["status"] == "completed"]
