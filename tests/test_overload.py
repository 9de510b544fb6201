"""Overload through a real mosquitto: what cannot be taken is refused loudly, never dropped without a word."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .broker import Mosquitto, Probe


async def test_qos0_commands_beyond_the_inbox_bound_are_refused_overloaded(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """5,000 QoS 0 commands published as fast as one client can: each gets an answer, and those that
    arrived while the inbox held `mqtt.inbox_limit` messages are `rejected` with `overloaded`."""
    await make_bridge(mqtt={"inbox_limit": 100}, commands={"dry_run": True})
    groups = [g.id for g in sim.simulator.state.list_groups()]
    with Probe(broker.port, subscribe="vpp/group/+/state") as probe:
        for n in range(5000):
            payload = json.dumps({"type": "manual", "action": "stop", "request_id": f"q{n}"})
            probe.client.publish(f"vpp/group/{groups[n % len(groups)]}/set", payload, qos=0)

        def answered() -> set[str]:
            return {json.loads(m.payload)["request_id"] for m in probe.messages if m.payload}

        await probe.wait_for(lambda: len(answered()) == 5000, timeout=60)
        docs = [json.loads(m.payload) for m in probe.messages if m.payload]
    assert answered() == {f"q{n}" for n in range(5000)}
    refused = [d for d in docs if d["status"] == "rejected"]
    assert refused and {d["error"]["code"] for d in refused} == {"overloaded"}
    assert all(d["status"] in ("queued", "completed", "rejected") for d in docs)


async def test_the_broker_sends_at_most_receive_maximum_unacknowledged_commands(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto
) -> None:
    """MQTT 5: the bridge asks the broker (CONNECT Receive Maximum) to keep at most `mqtt.receive_maximum`
    QoS 1 commands in flight to it, so a flood of QoS 1 commands waits at the broker, not in memory."""
    service = await make_bridge(mqtt={"receive_maximum": 7})
    assert service.link is not None
    props = service.link._client._connect_properties
    assert props is not None and props.ReceiveMaximum == 7
