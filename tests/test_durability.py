"""Nothing lost, nothing sent twice: bridge downtime, broker restarts, and SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from semookii_bridge.api import RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import Fault, RunningSimulator

from .support.bridges import TOKEN, sigkill_config, start_bridge
from .support.broker import Mosquitto, Probe, free_port
from .support.states import journal_statuses, terminal_states


async def test_commands_sent_while_bridge_is_down_are_executed_on_return(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """The persistent session keeps QoS 1 commands for the bridge while it is stopped."""
    group_id = sim.simulator.state.list_groups()[0].id
    service = await make_bridge()
    await service.stop()
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "while-down"})
        await asyncio.sleep(0.2)
        assert not probe.states(f"vpp/group/{group_id}/state", "while-down")
        await make_bridge()
        await probe.wait_status(f"vpp/group/{group_id}/state", "while-down", "completed")


async def test_broker_restart_mid_stream(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """The broker restarts under load; commands published before the bridge is back are kept in its session.

    Every command, before and after the restart, ends in exactly one terminal state and none is sent twice.
    """
    groups = [g.id for g in sim.simulator.state.list_groups()]
    sent: list[str] = []
    with Probe(broker.port) as probe:
        for i in range(20):
            rid = f"before-{i}"
            probe.publish(f"vpp/group/{groups[i % 2]}/set", {"type": "power_control", "active_power": i, "duration": 9,
                                                               "timeout": 1, "request_id": rid})  # fmt: skip
            sent.append(rid)
    broker.restart(down_for=0.5)
    assert bridge.link is not None
    with Probe(broker.port) as probe:
        for i in range(20):
            rid = f"after-{i}"
            probe.publish(f"vpp/group/{groups[i % 2]}/set", {"type": "power_control", "active_power": 100 + i,
                                                               "duration": 9, "timeout": 1, "request_id": rid})  # fmt: skip
            sent.append(rid)
        await probe.wait_for(lambda: all(r in terminal_states(probe) for r in sent), timeout=20)
        finals = terminal_states(probe)
    assert bridge.link.reconnects >= 1
    assert all(len(finals[r]) == 1 for r in sent)
    calls = Counter(c.params["activePower"] for c in sim.simulator.calls_to("/commandapi/groupControl"))
    assert max(calls.values()) == 1 and {"118", "119"} <= set(calls)






def has_every_stage(statuses: dict[str, str], rids: list[str], tracked: tuple[str, ...]) -> bool:
    """Some commands are queued (or not yet received), one is on the wire, one has been accepted."""
    seen = {statuses.get(r, "queued") for r in rids}
    return {"queued", "sending"} <= seen and bool(seen & set(tracked))


async def test_sigkill_with_commands_queued_and_in_flight(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """SIGKILL with commands queued, on the wire and being tracked, read from the journal at the kill.

    After a restart each command ends exactly once, as the journal promises: one that was `sending` ends
    `failed`/`ambiguous` with at most one call; every other one ends `completed` with exactly one call.
    """
    state = sim.simulator.state
    groups = [g.id for g in state.list_groups()] + [state.add_group(f"k{i}") for i in range(6)]
    sim.simulator.config = sim.simulator.config.__class__(**{**_fields(sim.simulator.config), "latency": 0.2})
    # The first control call hangs past the kill, so one command is surely on the wire when it comes.
    sim.simulator.inject(Fault("slow", path="/commandapi/groupControl", delay=30))
    config, journal = tmp_path / "bridge.toml", tmp_path / "journal.db"
    sigkill_config(config, broker, sim, journal)
    bridge = start_bridge(config)
    rids = [f"k-{g}" for g in groups]
    try:
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: [m for m in probe.on("vpp/bridge/state") if m.json()["state"] == "online"])
            for n, g in enumerate(groups):
                probe.publish(f"vpp/group/{g}/set", {"type": "power_control", "active_power": n, "duration": 9,
                                                     "timeout": 1, "request_id": f"k-{g}"})  # fmt: skip
            tracking = ("accepted", "dispatched")
            await probe.wait_for(lambda: has_every_stage(journal_statuses(journal), rids, tracking), timeout=20)
            bridge.send_signal(signal.SIGKILL)
            bridge.wait(5)
            at_kill = journal_statuses(journal)
            bridge = start_bridge(config)
            await probe.wait_for(lambda: all(r in terminal_states(probe) for r in rids), timeout=60)
            finals = terminal_states(probe)
            states = [
                m.json() for m in probe.messages if m.topic.startswith("vpp/group/") and m.topic.endswith("/state")
            ]
            errors = {d["request_id"]: d["error"] for d in states if d["status"] == "failed"}
    finally:
        bridge.kill()
        bridge.wait(5)
    assert has_every_stage(at_kill, rids, ("accepted", "dispatched", "completed")), at_kill
    per_group = Counter(c.params["groupId"] for c in sim.simulator.calls_to("/commandapi/groupControl"))
    # The day's count is written before each call leaves: never below what reached the API, and above it
    # only by calls counted in the instant before the kill (at 3 calls/s, burst 2).
    with sqlite3.connect(journal) as db:
        (counted,) = db.execute(
            "SELECT used FROM api_calls WHERE day = ?", (datetime.now(UTC).date().isoformat(),)
        ).fetchone()
    assert len(sim.simulator.calls) <= counted <= len(sim.simulator.calls) + 3, (counted, len(sim.simulator.calls))
    for rid in rids:
        gid = rid.removeprefix("k-")
        if at_kill.get(rid) == "sending":
            assert finals[rid] == ["failed"] and errors[rid]["code"] == "ambiguous" and per_group[gid] <= 1, rid
        else:
            assert finals[rid] == ["completed"] and per_group[gid] == 1, (rid, at_kill.get(rid), finals[rid])


def _fields(config: object) -> dict[str, object]:
    return {f: getattr(config, f) for f in config.__struct_fields__}  # type: ignore[attr-defined]


async def test_the_publish_window_follows_the_brokers_receive_maximum(tmp_path: Path, sim: RunningSimulator) -> None:
    """MQTT 5: the bridge keeps at most the broker's Receive Maximum (mosquitto's max_inflight_messages)
    publishes unacknowledged, below mqtt.max_inflight; states still all arrive. MQTT 3.1.1 uses the setting."""
    from .support.bridges import bridge_config_for

    port = free_port()
    broker = Mosquitto(tmp_path, port=port, config_text=f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
                                             "max_inflight_messages 3\nlog_dest none\n")  # fmt: skip
    broker.start()
    try:
        services = []
        for protocol, client_id in ((5, "window-v5"), (3, "window-v3")):
            config = bridge_config_for(port, sim, tmp_path / client_id, mqtt={"protocol": protocol,
                                       "client_id": client_id, "max_inflight": 50})  # fmt: skip
            service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
            await service.start()
            services.append(service)
        windows = [s.link._client._max_inflight_messages for s in services if s.link is not None]
        assert windows == [3, 50]
        group_id = sim.simulator.state.list_groups()[0].id
        with Probe(port, subscribe=f"vpp/group/{group_id}/state") as probe:
            for n in range(20):
                probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": f"w{n}"})
            for n in range(20):
                await probe.wait_status(f"vpp/group/{group_id}/state", f"w{n}", "queued")
        for service in services:
            await service.stop()
    finally:
        broker.stop()
