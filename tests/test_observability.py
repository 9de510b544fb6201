"""`/readyz` (`/healthz`) and `/metrics` answer over HTTP and change as commands flow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import get
from .support.broker import Mosquitto, Probe, free_port


def metric(text: str, name: str) -> float:
    """The value of one sample line (`name{labels} value`) of the exposition, 0 when absent."""
    for line in text.splitlines():
        if line.rsplit(" ", 1)[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_change_as_commands_flow(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """Command and API-call counters rise with a completed command; live gauges are exported."""
    group_id = sim.simulator.state.list_groups()[0].id
    _, before = await get(bridge, "/metrics")
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "m1"})
        await probe.wait_status(f"vpp/group/{group_id}/state", "m1", "completed")
    status, after = await get(bridge, "/metrics")
    assert status == 200
    done = 'semookii_commands_finished_total{code="none",status="completed",target="group"}'
    assert metric(before, done) == 0 and metric(after, done) == 1
    published = 'semookii_command_states_published_total{status="completed",target="group"}'
    assert metric(after, published) == 1
    assert metric(after, 'semookii_api_attempts_total{endpoint="group_control",outcome="ok"}') == 1
    assert metric(after, 'semookii_api_call_duration_seconds_count{endpoint="group_control"}') == 1
    assert metric(after, "semookii_mqtt_connected") == 1 and "semookii_ratelimit_waiting" in after
    assert "semookii_mqtt_reconnects_total" in after and "semookii_commands_queued" in after


async def test_budget_metrics_count_calls_by_kind_and_setpoint_age(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """`semookii_api_calls_total{kind}` counts calls as the API saw them; each sent setpoint's age is observed;
    the oldest queued command's age is exported (0 with nothing queued)."""
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "k1"})
        await probe.wait_status(f"vpp/group/{group_id}/state", "k1", "completed")
    _, text = await get(bridge, "/metrics")
    polls = len([c for c in sim.simulator.calls if c.path != "/commandapi/groupControl"])
    assert metric(text, 'semookii_api_calls_total{kind="control"}') == 1
    assert metric(text, 'semookii_api_calls_total{kind="polling"}') == polls > 0
    assert metric(text, 'semookii_api_calls_total{kind="management"}') == 0
    assert metric(text, "semookii_setpoint_age_seconds_count") == 1
    assert 0 <= metric(text, "semookii_setpoint_age_seconds_sum") < 1
    age = "semookii_oldest_queued_command_age_seconds"
    assert metric(text, age) == 0 and age in text


async def test_healthz_ok_when_connected_and_api_answers(bridge: Service, sim: RunningSimulator) -> None:
    """200 with mqtt connected and the API answering."""
    status, body = await get(bridge, "/healthz")
    assert status == 200 and '"connected":true' in body


async def test_healthz_fails_when_the_api_is_unreachable(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """After a call that could not reach the API, /healthz answers 503 naming the API."""
    service = await make_bridge(api={"base_url": f"http://127.0.0.1:{free_port()}", "attempts": 1})
    with Probe(broker.port) as probe:
        probe.publish("vpp/group/1/set", {"type": "manual", "action": "stop", "request_id": "nowhere"})
        await probe.wait_status("vpp/group/1/state", "nowhere", "failed")
    status, body = await get(service, "/healthz")
    assert status == 503 and '"reachable":false' in body


async def test_healthz_fails_when_the_broker_is_gone(bridge: Service, broker: Mosquitto) -> None:
    """With the broker down, /healthz answers 503 naming MQTT."""
    broker.stop()
    assert bridge.link is not None
    for _ in range(200):
        if not bridge.link.connected:
            break
        await asyncio.sleep(0.02)
    status, body = await get(bridge, "/healthz")
    assert status == 503 and '"connected":false' in body


async def test_quota_metrics_and_healthz_when_only_the_reserve_is_left(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Quota gauges follow the calls; once only the safety reserve is left, /healthz answers 503 saying so."""
    service = await make_bridge(rate_limit={"rate": 0, "daily_quota": 3, "quota_reserve": 1},
                                commands={"track": "accepted"})  # fmt: skip
    group_id = sim.simulator.state.list_groups()[0].id
    status, _ = await get(service, "/healthz")
    assert status == 200
    with Probe(broker.port) as probe:
        for rid in ("q1", "q2"):
            probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "force_charge", "request_id": rid})
            await probe.wait_status(f"vpp/group/{group_id}/state", rid, "completed")
    _, metrics = await get(service, "/metrics")
    assert metric(metrics, "semookii_quota_used_calls") == 2 and metric(metrics, "semookii_quota_remaining_calls") == 1
    assert metric(metrics, "semookii_quota_limit_calls") == 3 and metric(metrics, "semookii_quota_reserve_calls") == 1
    status, body = await get(service, "/healthz")
    assert status == 503 and "only the safety reserve" in body


async def test_a_stalled_event_loop_shows_in_metrics_and_fails_healthz(bridge: Service) -> None:
    """A loop held for 6 s is measured (`semookii_event_loop_lag_seconds`) and /healthz answers 503 with the
    lag for the next 30 s."""
    await asyncio.sleep(0.3)
    time.sleep(6)  # noqa: ASYNC251 - the bridge runs in this loop: this is the stall
    await asyncio.sleep(0.3)
    status, body = await get(bridge, "/healthz")
    assert status == 503 and '"loop":{"ok":false' in body
    _, text = await get(bridge, "/metrics")
    assert metric(text, 'semookii_event_loop_lag_seconds_bucket{le="5.0"}') < metric(
        text, 'semookii_event_loop_lag_seconds_bucket{le="10.0"}'
    )
