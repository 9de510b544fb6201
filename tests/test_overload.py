"""Overload through a real mosquitto: what cannot be taken is refused loudly, never dropped without a word."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from semookii_bridge.api import RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.control.statuses import TERMINAL
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN, bridge_config_for
from .support.broker import Mosquitto, Probe, free_port, shipped_queue_limits


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




async def test_fifty_thousand_commands_sent_while_the_bridge_is_down_each_get_one_terminal_state(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    """With the shipped broker's backlog limits, 50,000 QoS 1 commands published while the bridge is down
    are all kept by the broker, and after it starts each gets exactly one terminal state (dry run: no API)."""
    port = free_port()
    broker = Mosquitto(tmp_path, port=port, config_text=(
        f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
        f"log_dest none\n{shipped_queue_limits()}"))  # fmt: skip
    broker.start()
    config = bridge_config_for(port, sim, tmp_path, commands={"dry_run": True, "merge": False})
    try:
        service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
        await service.start()  # creates the bridge's persistent session
        await service.stop()
        groups = [g.id for g in sim.simulator.state.list_groups()]
        with Probe(port, subscribe="vpp/group/+/state") as probe:
            infos = [probe.client.publish(f"vpp/group/{groups[n % len(groups)]}/set",
                                          json.dumps({"type": "manual", "action": "stop", "request_id": f"d{n}"}),
                                          qos=1) for n in range(50_000)]  # fmt: skip
            await probe.wait_for(lambda: all(i.is_published() for i in infos), timeout=120)
            service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
            await service.start()

            counts: Counter[str] = Counter()
            seen = [0]

            def terminal() -> int:
                """Terminal states per request_id, counted incrementally (decoding all each time starves the bridge)."""
                messages = probe.messages[seen[0] :]
                seen[0] += len(messages)
                for m in messages:
                    doc = json.loads(m.payload) if m.payload else {}
                    if doc.get("status") in TERMINAL:
                        counts[doc["request_id"]] += 1
                return len(counts)

            await probe.wait_for(lambda: terminal() == 50_000, timeout=180)
            await asyncio.sleep(1)
            terminal()
            await service.stop()
        assert len(counts) == 50_000 and set(counts.values()) == {1}
    finally:
        broker.stop()
