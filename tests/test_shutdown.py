"""SIGTERM ends `run` within 2 s in every state: reconnecting with backoff to a broker that went away, and with
a control call hanging at the API (which a restart then reports, never resends)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from semookii_bridge.simulator import Fault, RunningSimulator

from .support.bridges import online, restart_config, start_bridge
from .support.broker import Mosquitto, Probe

STOP_WITHIN = 2.0


async def sigterm_exit_seconds(bridge: object) -> float:
    """Seconds from SIGTERM to the process's exit (it is killed after 10 s)."""
    started = time.monotonic()
    bridge.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    for _ in range(200):
        if bridge.poll() is not None:  # type: ignore[attr-defined]
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    bridge.kill()  # type: ignore[attr-defined]
    return float("inf")


async def test_sigterm_during_the_reconnect_backoff(tmp_path: Path, broker: Mosquitto, sim: RunningSimulator) -> None:
    """The broker goes away; after 8 s of reconnect backoff (reconnect_max 30 s) SIGTERM ends the bridge in 2 s."""
    config = tmp_path / "bridge.toml"
    restart_config(config, broker, sim, rate=0, burst=1)
    config.write_text(config.read_text().replace("reconnect_max = 1", "reconnect_max = 30"))
    with Probe(broker.port) as probe:
        bridge = start_bridge(config, "INFO")
        await online(probe)
    broker.stop()
    await asyncio.sleep(8)
    assert bridge.poll() is None
    assert await sigterm_exit_seconds(bridge) <= STOP_WITHIN
    assert bridge.returncode == 0


async def test_sigterm_with_a_control_call_hanging(tmp_path: Path, broker: Mosquitto, sim: RunningSimulator) -> None:
    """A control call that the API holds for 60 s: SIGTERM ends the bridge in 2 s; restarted, the bridge reports
    the command `failed` `ambiguous` and calls no more."""
    config = tmp_path / "bridge.toml"
    restart_config(config, broker, sim, rate=0, burst=1)
    control = "/commandapi/groupControl"
    sim.simulator.inject(Fault("slow", path=control, delay=60.0))
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port) as probe:
        bridge = start_bridge(config, "INFO")
        await online(probe)
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "hang"})
        await probe.wait_for(lambda: sim.simulator.calls_to(control), timeout=10)
        await asyncio.sleep(0.5)
        assert await sigterm_exit_seconds(bridge) <= STOP_WITHIN
        again = start_bridge(config, "INFO")
        try:
            failed = await probe.wait_status(f"vpp/group/{group_id}/state", "hang", "failed", timeout=15)
        finally:
            again.send_signal(signal.SIGTERM)
            again.wait(10)
    assert failed["error"]["code"] == "ambiguous"
    assert len(sim.simulator.calls_to(control)) == 1
