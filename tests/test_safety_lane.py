"""The safety lane: `<prefix>/safety/.../set` on an MQTT session of its own, so a stop overtakes a storm of
queued setpoints; only commands that stop or release devices may use it; supersede rules both ways."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from semookii_bridge.api import RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN, bridge_config_for
from .support.broker import Mosquitto, Probe, free_port, shipped_queue_limits
from .support.load import cpu_burners

CONTROL = "/commandapi/groupControl"
STOP = {"type": "manual", "action": "stop"}


def setpoint(n: int) -> dict[str, object]:
    return {"type": "power_control", "active_power": n % 5000, "duration": 60, "timeout": 10, "request_id": f"s{n}"}


async def test_a_stop_on_the_safety_lane_overtakes_thirty_thousand_queued_setpoints(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    """30,000 QoS 1 setpoints wait in the bridge's session (rate 5/s); the bridge starts, a stop is published
    on the safety topic of another group while two other processes load the CPU: its call reaches the API
    within 2 s of the publish."""
    port = free_port()
    broker = Mosquitto(tmp_path, port=port, config_text=(
        f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
        f"log_dest none\n{shipped_queue_limits()}"))  # fmt: skip
    broker.start()
    state = sim.simulator.state
    storm = [state.add_group(f"storm{i}") for i in range(50)]
    target = state.add_group("to-stop")
    config = bridge_config_for(port, sim, tmp_path, rate_limit={"rate": 5, "burst": 5},
                               commands={"merge": False, "track": "accepted"})  # fmt: skip
    try:
        service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
        await service.start()  # creates both persistent sessions
        await service.stop()
        with Probe(port, subscribe=f"vpp/group/{target}/state") as probe:
            infos = [probe.client.publish(f"vpp/group/{storm[n % 50]}/set", json.dumps(setpoint(n)), qos=1)
                     for n in range(30_000)]  # fmt: skip
            await probe.wait_for(lambda: all(i.is_published() for i in infos), timeout=120)
            service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
            await service.start()
            with cpu_burners(2):
                published = time.time()
                probe.publish(f"vpp/safety/group/{target}/set", {**STOP, "request_id": "halt"})
                await probe.wait_for(lambda: [c for c in sim.simulator.calls_to(CONTROL)
                                              if c.params["groupId"] == target], timeout=10)  # fmt: skip
            await service.stop()
        call = next(c for c in sim.simulator.calls_to(CONTROL) if c.params["groupId"] == target)
        assert call.ts - published < 2.0, call.ts - published
    finally:
        broker.stop()


async def test_other_command_types_on_the_safety_topics_are_refused_with_no_call(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A setpoint, a start, a system switch on: `rejected` / `not_allowed` on the target's ordinary state
    topic, and no API call; a stop, exit_remote_control and switch off on the same topics are sent."""
    await make_bridge()
    group = sim.simulator.state.list_groups()[0].id
    sn = sim.simulator.state.list_inverters(group)[0].inverter_sn
    refused = [("group", group, setpoint(1)), ("group", group, {"type": "manual", "action": "force_charge"}),
               ("inverter", sn, {"type": "system_switch", "on": True})]  # fmt: skip
    allowed = [("group", group, STOP), ("inverter", sn, {"type": "exit_remote_control"}),
               ("group", group, {"type": "system_switch", "on": False})]  # fmt: skip
    with Probe(broker.port) as probe:
        for n, (kind, ident, body) in enumerate(refused):
            probe.publish(f"vpp/safety/{kind}/{ident}/set", {**body, "request_id": f"no{n}"})
            state = await probe.wait_status(f"vpp/{kind}/{ident}/state", f"no{n}", "rejected")
            assert state["error"]["code"] == "not_allowed" and "safety" in state["error"]["message"]
        assert sim.simulator.calls == []
        for n, (kind, ident, body) in enumerate(allowed):
            probe.publish(f"vpp/safety/{kind}/{ident}/set", {**body, "request_id": f"ok{n}"})
            await probe.wait_status(f"vpp/{kind}/{ident}/state", f"ok{n}", "completed")


async def test_a_safety_command_supersedes_a_queued_setpoint_and_a_later_setpoint_supersedes_it(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Tokens scarce (one per 2 s, spent): a queued setpoint is superseded by a stop on the safety lane; a
    setpoint on the ordinary topic after the stop (still queued) supersedes the stop; only it is sent."""
    await make_bridge(rate_limit={"rate": 0.5, "burst": 1})
    groups = [g.id for g in sim.simulator.state.list_groups()]
    group, other = groups[0], groups[1]
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{other}/set", {**STOP, "request_id": "takes-the-token"})
        await probe.wait_for(lambda: len(sim.simulator.calls_to(CONTROL)) == 1)
        probe.publish(f"vpp/group/{group}/set", setpoint(1))
        await probe.wait_status(f"vpp/group/{group}/state", "s1", "queued")
        probe.publish(f"vpp/safety/group/{group}/set", {**STOP, "request_id": "stop"})
        await probe.wait_status(f"vpp/group/{group}/state", "s1", "superseded")
        await probe.wait_status(f"vpp/group/{group}/state", "stop", "queued")
        probe.publish(f"vpp/group/{group}/set", setpoint(2))
        await probe.wait_status(f"vpp/group/{group}/state", "stop", "superseded")
        await probe.wait_status(f"vpp/group/{group}/state", "s2", "completed", timeout=20)
    calls = [c for c in sim.simulator.calls_to(CONTROL) if c.params["groupId"] == group]
    assert len(calls) == 1 and calls[0].params.get("activePower") == "2"
    await asyncio.sleep(0)


async def test_the_lane_claims_the_loop_while_its_command_is_queued_and_only_then(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A stop on the lane waits for a token (one per 2 s, spent): while it is queued the ordinary intake takes
    one message per loop turn (`pending`), ordinary messages still flow; once its call leaves, it is over. An
    ordinary-topic stop makes no such claim."""
    service = await make_bridge(rate_limit={"rate": 0.5, "burst": 1})
    assert service.bridge is not None and service.link is not None
    lane, groups = service.bridge.lane, [g.id for g in sim.simulator.state.list_groups()]
    assert service.link._urgent is not None and service.link._urgent() is False
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{groups[1]}/set", {**STOP, "request_id": "takes-the-token"})
        await probe.wait_for(lambda: len(sim.simulator.calls_to(CONTROL)) == 1)
        probe.publish(f"vpp/group/{groups[1]}/set", {**STOP, "request_id": "ordinary-stop"})
        await probe.wait_status(f"vpp/group/{groups[1]}/state", "ordinary-stop", "queued")
        assert not lane.pending()
        probe.publish(f"vpp/safety/group/{groups[0]}/set", {**STOP, "request_id": "lane-stop"})
        await probe.wait_status(f"vpp/group/{groups[0]}/state", "lane-stop", "queued")
        assert lane.pending() and service.link._urgent() is True
        probe.publish(f"vpp/group/{groups[0]}/set", {**setpoint(7), "request_id": "still-flows"})
        await probe.wait_status(f"vpp/group/{groups[0]}/state", "still-flows", "queued")
        await probe.wait_status(f"vpp/group/{groups[0]}/state", "lane-stop", "superseded")
    assert not lane.pending()
