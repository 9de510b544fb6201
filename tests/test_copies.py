"""A second copy of a bridge without `[ha]` refuses to start and the running one keeps running; a broker that
restarts again and again is never taken for a takeover of the session."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from semookii_bridge.api import RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.mqtt.failures import TAKEOVER_COUNT, ConnectionWatch
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN, bridge_config_for, write_config
from .support.broker import Mosquitto, Probe


def run(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "semookii_bridge.cli", "run", "--config", str(config)],
                            env={**os.environ, "SEMOOKII_TOKEN": TOKEN}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


async def test_a_second_copy_refuses_to_start_and_the_first_keeps_running(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """The same configuration started twice (no `[ha]`): the second exits 2 naming the first and the ways out;
    the first still serves commands."""
    config = tmp_path / "bridge.toml"
    write_config(config, broker, sim, "bridge-copy", journal={"path": tmp_path / "j.db"}, http={"enabled": False})
    group = sim.simulator.state.list_groups()[0].id
    first = run(config)
    try:
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: any(m.payload and m.json()["state"] == "online"
                                             for m in probe.on("vpp/bridge/state")), timeout=20)  # fmt: skip
            second = run(config)
            code = await asyncio.get_running_loop().run_in_executor(None, second.wait, 20)
            err = second.stderr.read() if second.stderr else ""
            probe.publish(f"vpp/group/{group}/set", {"type": "manual", "action": "stop", "request_id": "still"})
            await probe.wait_status(f"vpp/group/{group}/state", "still", "completed")
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(10)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert "another bridge runs on prefix 'vpp' at this broker (" in last and "[ha]" in last and "mqtt.prefix" in last


async def test_broker_restarts_however_many_never_end_the_bridge(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """Four broker restarts 4 s apart (each connection shorter than a takeover's): no other bridge is present,
    so the bridge keeps running and serves the next command."""
    service = Service(bridge_config_for(broker.port, sim, tmp_path), Secret(TOKEN), retry=RetryPolicy.instant())
    await service.start()
    assert service.link is not None
    try:
        for _ in range(4):
            await asyncio.sleep(4.0)
            await asyncio.get_running_loop().run_in_executor(None, broker.restart)
        with Probe(broker.port) as probe:
            group = sim.simulator.state.list_groups()[0].id
            probe.publish(f"vpp/group/{group}/set", {"type": "manual", "action": "stop", "request_id": "after"})
            await probe.wait_status(f"vpp/group/{group}/state", "after", "completed", timeout=20)
        assert service.failed is not None and not service.failed.done()
        assert service.link.reconnects >= 4
    finally:
        await service.stop()


def test_short_connections_are_a_takeover_only_while_a_rival_is_present() -> None:
    """Three connections closed soon after they opened: no takeover without a rival bridge, a takeover with one."""
    now = [0.0]
    for present, taken in ((False, False), (True, True)):
        watch = ConnectionWatch("h", 1, "id", clock=lambda: now[0])
        watch.rival = lambda p=present: p  # type: ignore[misc]
        for _ in range(TAKEOVER_COUNT):
            watch.connected()
            now[0] += 1.0
            watch.lost(expected=False)
        assert (watch.last is not None and watch.last.kind == "taken_over") is taken
