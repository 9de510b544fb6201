"""The other ways a command ends, through mosquitto and the simulator: ambiguous, unknown, quota, recovery."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable

import pytest

from semookii_bridge.jobs import Job
from semookii_bridge.service import Service
from semookii_bridge.simulator import Fault, RunningSimulator

from .broker import Mosquitto, Probe

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


async def test_daily_quota_exhausted_fails_with_rate_limited(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """With the daily quota spent, a command is `failed` with code rate_limited and never sent."""
    groups = [g.id for g in sim.simulator.state.list_groups()]
    await make_bridge(rate_limit={"rate": 0, "daily_quota": 1})
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{groups[0]}/set", {**STOP, "request_id": "q1"})
        await probe.wait_status(f"vpp/group/{groups[0]}/state", "q1", "accepted")
        probe.publish(f"vpp/group/{groups[1]}/set", {**STOP, "request_id": "q2"})
        failed = await probe.wait_status(f"vpp/group/{groups[1]}/state", "q2", "failed")
    assert failed["error"]["code"] == "rate_limited" and len(sim.simulator.calls_to(CONTROL)) == 1


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
    """If the journal cannot record a command (disk full), it is `rejected` with internal_error, not lost in
    silence, and the bridge goes on with the next one."""
    import sqlite3

    assert bridge.journal is not None
    real_insert = bridge.journal.insert
    calls = {"n": 0}

    def failing_once(entry: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database or disk is full")
        real_insert(entry)  # type: ignore[arg-type]

    monkeypatch.setattr(bridge.journal, "insert", failing_once)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "disk-full"})
        rejected = await probe.wait_status(f"vpp/group/{gid(sim)}/state", "disk-full", "rejected")
        probe.publish(f"vpp/group/{gid(sim)}/set", {**STOP, "request_id": "after-disk"})
        await probe.wait_status(f"vpp/group/{gid(sim)}/state", "after-disk", "completed")
    assert rejected["error"]["code"] == "internal_error" and len(sim.simulator.calls_to(CONTROL)) == 1


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
