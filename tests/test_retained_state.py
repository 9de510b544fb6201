"""A target's retained state is the latest command that passed validation: junk is answered but not
retained, an invalid topic keeps no retained message, and the batch state topic tells batches apart."""

from __future__ import annotations

import asyncio

from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.broker import Mosquitto, Probe


async def retained(broker: Mosquitto, topic: str) -> list[dict[str, object]]:
    """What a subscriber arriving now is given on `topic` (the retained message, if any)."""
    with Probe(broker.port, subscribe=topic) as late:
        await asyncio.sleep(0.3)
        return [m.json() for m in late.on(topic) if m.retain]


async def test_junk_after_a_command_does_not_replace_its_retained_state(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A command completes; junk on the same topic is rejected live, and the retained state is still the
    command's `completed`."""
    group_id = sim.simulator.state.list_groups()[0].id
    topic = f"vpp/group/{group_id}/state"
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "real"})
        await probe.wait_status(topic, "real", "completed")
        probe.publish(f"vpp/group/{group_id}/set", b"{not json")
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "bogus", "request_id": "junk"})
        await probe.wait_status(topic, "junk", "rejected")
        assert [m.retain for m in probe.on(topic) if m.json()["status"] == "rejected"] == [False, False]
    last = await retained(broker, topic)
    assert [(m["request_id"], m["status"]) for m in last] == [("real", "completed")]


async def test_an_invalid_topic_keeps_no_retained_state(bridge: Service, broker: Mosquitto) -> None:
    """`vpp/group/abc/set` is answered `rejected` on `vpp/group/abc/state` but nothing stays retained there."""
    with Probe(broker.port) as probe:
        probe.publish("vpp/group/abc/set", {"type": "manual", "action": "stop", "request_id": "bad-id"})
        answer = await probe.wait_status("vpp/group/abc/state", "bad-id", "rejected")
    assert answer["error"]["code"] == "validation_error"  # type: ignore[index]
    assert await retained(broker, "vpp/group/abc/state") == []


async def test_the_batch_state_echoes_the_serials(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """Every state on `vpp/batch/state` carries the batch's `sns`, so two batches can be told apart."""
    group_id = sim.simulator.state.list_groups()[0].id
    sns = [row.inverter_sn for row in sim.simulator.state.group_members(group_id)[:2]]
    with Probe(broker.port) as probe:
        probe.publish("vpp/batch/set", {"type": "manual", "action": "stop", "request_id": "b1", "sns": sns})
        await probe.wait_status("vpp/batch/state", "b1", "completed")
        states = probe.states("vpp/batch/state", "b1")
    assert states and all(s["command"]["sns"] == sns for s in states)  # type: ignore[index]
