"""The shipped Node-RED flow, run headless: it sends a command through mosquitto and sees `completed`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .broker import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[1]
FLOW_DIR = ROOT / "deploy" / "node-red"
NODE_RED_VERSION = "4"
CACHE = Path(os.environ.get("SEMOOKII_NODE_RED_CACHE", ROOT / ".cache" / "node-red"))


@pytest.fixture(scope="session")
def node_red_js() -> Path:
    """node-red installed from npm into a cache dir (skipped only where npm is absent)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm/node are not installed: the Node-RED flow test needs them")
    red = CACHE / "node_modules" / "node-red" / "red.js"
    if not red.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--omit=dev",
                        f"node-red@{NODE_RED_VERSION}"], check=True, capture_output=True, timeout=600)  # fmt: skip
    return red


@pytest.fixture
async def node_red(node_red_js: Path, broker: Mosquitto, tmp_path: Path, sim: RunningSimulator) -> AsyncIterator[str]:
    """Node-RED running the example flow against the test broker; yields its HTTP base URL."""
    user_dir = tmp_path / "node-red"
    user_dir.mkdir()
    shutil.copy(FLOW_DIR / "semookii-flow.json", user_dir / "semookii-flow.json")
    port = free_port()
    env = {**os.environ, "MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(broker.port),
           "VPP_GROUP_ID": sim.simulator.state.list_groups()[0].id}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        shutil.which("node") or "node", str(node_red_js), "--userDir", str(user_dir), "--port", str(port),
        "--settings", str(FLOW_DIR / "settings.js"), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"{base}/vpp/state") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("Node-RED did not start")
        if proc.returncode is not None:
            output = await proc.stdout.read() if proc.stdout else b""
            pytest.fail(f"Node-RED exited: {output.decode(errors='replace')}")
        yield base
    finally:
        proc.terminate()
        await proc.wait()


async def test_flow_sends_a_command_and_sees_completed(node_red: str, bridge: Service, sim: RunningSimulator) -> None:
    """POST /vpp/command -> mqtt out -> bridge -> API -> state topic -> mqtt in -> the flow's memory."""
    group_id = sim.simulator.state.list_groups()[0].id
    command = {"type": "power_control", "active_power": -3000, "duration": 600, "timeout": 10, "request_id": "nr-1"}
    body = {"target": {"kind": "group", "id": group_id}, "command": command}
    async with aiohttp.ClientSession() as session:
        # If the flow's MQTT connection is still opening, its client queues the QoS 1 publish until it is up.
        async with session.post(f"{node_red}/vpp/command", json=body) as r:
            assert r.status == 202 and (await r.json())["request_id"] == "nr-1"
        seen: dict[str, object] = {}
        for _ in range(300):
            async with session.get(f"{node_red}/vpp/state", params={"request_id": "nr-1"}) as r:
                if r.status == 200:
                    seen = await r.json()
                    if seen["state"]["status"] == "completed":  # type: ignore[index]
                        break
            await asyncio.sleep(0.1)
    assert seen and seen["state"]["status"] == "completed", json.dumps(seen)  # type: ignore[index]
    assert seen["history"] == ["queued", "accepted", "dispatched", "completed"]
    (issued,) = sim.simulator.state.commands
    assert seen["state"]["command_id"] == issued  # type: ignore[index]
    assert isinstance(seen["state"]["target"]["id"], str) and seen["state"]["target"]["id"] == group_id  # type: ignore[index]


async def test_flow_rejects_a_command_without_target(node_red: str) -> None:
    """The flow's HTTP shim answers 400 when the target is missing."""
    async with aiohttp.ClientSession() as session, session.post(f"{node_red}/vpp/command", json={"command": {}}) as r:
        assert r.status == 400


async def test_the_flows_stop_takes_the_safety_lane(node_red: str, bridge: Service, sim: RunningSimulator) -> None:
    """A stop sent through the flow goes to `vpp/safety/group/<id>/set` and completes; its states come back
    on the group's ordinary state topic, where the flow follows them."""
    group_id = sim.simulator.state.list_groups()[0].id
    body = {"target": {"kind": "group", "id": group_id}, "command": {"type": "manual", "action": "stop",
                                                                       "request_id": "nr-stop"}}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{node_red}/vpp/command", json=body) as r:
            assert r.status == 202 and (await r.json())["topic"] == f"vpp/safety/group/{group_id}/set"
        status = None
        for _ in range(300):
            async with session.get(f"{node_red}/vpp/state", params={"request_id": "nr-stop"}) as r:
                if r.status == 200 and (status := (await r.json())["state"]["status"]) == "completed":
                    break
            await asyncio.sleep(0.1)
    assert status == "completed"
