"""The Sparkplug B edge node against an independent host: Eclipse Tahu's `sparkplug-payload` codec and
MQTT.js from npm (tests/sparkplug/host.js), on a real mosquitto, with the bridge as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from semookii_bridge.simulator import RunningSimulator

from .support.bridges import start_bridge as _start
from .support.bridges import write_config
from .support.broker import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
HOST_JS = ROOT / "tests" / "sparkplug" / "host.js"
CACHE = Path(os.environ.get("SEMOOKII_SPARKPLUG_HOST_CACHE", ROOT / ".cache" / "sparkplug-host"))
PACKAGES = ("sparkplug-payload@1.0.3", "mqtt@5")
EDGE = "semookii-bridge"


@pytest.fixture(scope="session")
def host_modules() -> Path:
    """Tahu's sparkplug-payload and MQTT.js installed from npm into a cache dir (skipped only without npm)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm/node are not installed: the Sparkplug host test needs them")
    if not (CACHE / "node_modules" / "sparkplug-payload").exists() or not (CACHE / "node_modules" / "mqtt").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--omit=dev", *PACKAGES],
                       check=True, capture_output=True, timeout=600)  # fmt: skip
    return CACHE / "node_modules"


class Host:
    """The host process: every Sparkplug message it receives, decoded by Tahu's codec, and a way to write."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.seen.append(json.loads(line))
            self._changed.set()

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """The first message (seen so far or arriving within `timeout`) that `match` accepts."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = next((doc for doc in self.seen if match(doc)), None)
            if found is not None:
                return found
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no matching message; seen: {[d.get('topic') for d in self.seen]}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    def send(self, order: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(order).encode() + b"\n")


@pytest.fixture
async def host(host_modules: Path, broker: Mosquitto) -> AsyncIterator[Callable[..., Any]]:
    """Start a host (optionally as primary host `host_id`) and wait until it is subscribed."""
    started: list[Host] = []

    async def start(host_id: str = "") -> Host:
        env = {**os.environ, "NODE_PATH": str(host_modules)}
        proc = await asyncio.create_subprocess_exec(
            shutil.which("node") or "node", str(HOST_JS), f"mqtt://127.0.0.1:{broker.port}", "vpp",
            *([host_id] if host_id else []), env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        running = Host(proc)
        started.append(running)
        await running.wait_for(lambda d: d.get("ready") is True)
        return running

    yield start
    for running in started:
        running.proc.kill()
        await running.proc.wait()


def sparkplug_config(path: Path, broker: Mosquitto, sim: RunningSimulator, **sparkplug: object) -> Path:
    """A bridge with its Sparkplug edge node on (`sparkplug`: more of that section) and the token check at start."""
    return write_config(
        path, broker, sim, "bridge-sparkplug",
        api={"check_token": True},
        rate_limit={"rate": 0},
        commands={"poll_initial": 0.1, "poll_max": 0.3, "merge": False},
        journal={"path": path.parent / "journal.db"},
        http={"enabled": False},
        sparkplug={"enabled": True, **sparkplug},
    )


def start_bridge_at_info(config: Path) -> subprocess.Popen[bytes]:
    """`run` with its log at INFO (the tests read the edge node's lines)."""
    return _start(config, "INFO")


def metrics(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A decoded payload's metrics by name."""
    return {m["name"]: m for m in doc["payload"].get("metrics", []) if "name" in m}


def is_topic(kind: str, device: str | None = None) -> Callable[[dict[str, Any]], bool]:
    topic = f"spBv1.0/vpp/{kind}/{EDGE}" + (f"/{device}" if device else "")
    return lambda doc: doc.get("topic") == topic


async def test_a_host_writes_a_setpoint_and_follows_it_to_completed(
    host: Callable[..., Any], broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """NBIRTH and DBIRTH decode with Tahu's codec; a written ActivePower of -2000 becomes one groupControl with
    activePower -2000; DDATA reports its lifecycle to `completed`; after SIGKILL the NDEATH's bdSeq is the
    NBIRTH's."""
    group = sim.simulator.state.list_groups()[0].id
    device = f"group-{group}"
    scada = await host()
    config = tmp_path / "bridge.toml"
    sparkplug_config(config, broker, sim)
    bridge = start_bridge_at_info(config)
    try:
        nbirth = await scada.wait_for(is_topic("NBIRTH"))
        node = metrics(nbirth)
        assert nbirth["payload"]["seq"] == 0
        assert node["Node Control/Rebirth"]["type"] == "Boolean" and node["Node Control/Rebirth"]["value"] is False
        assert node["Node Control/Refresh"]["type"] == "Boolean" and node["bdSeq"]["type"] == "Int64"
        assert node["Bridge/Version"]["type"] == "String" and node["Budget/Used"]["type"] == "Int64"
        dbirth = metrics(await scada.wait_for(is_topic("DBIRTH", device)))
        assert dbirth["Setpoint/ActivePower"]["type"] == "Int32" and dbirth["Setpoint/Duration"]["type"] == "UInt32"
        assert dbirth["Command"]["type"] == "String" and dbirth["State/Updated"]["type"] == "DateTime"
        before = len(scada.seen)
        scada.send({"dcmd": {"topic": f"spBv1.0/vpp/DCMD/{EDGE}/{device}",
                             "metrics": [{"name": "Setpoint/ActivePower", "type": "Int32", "value": -2000}]}})  # fmt: skip
        await scada.wait_for(lambda d: is_topic("DDATA", device)(d)
                             and metrics(d).get("State/Status", {}).get("value") == "completed")  # fmt: skip
        statuses = [metrics(d)["State/Status"]["value"] for d in scada.seen[before:]
                    if is_topic("DDATA", device)(d) and "State/Status" in metrics(d)]  # fmt: skip
        assert statuses[0] == "queued" and statuses[-1] == "completed" and "accepted" in statuses
        calls = sim.simulator.calls_to("/commandapi/groupControl")
        assert len(calls) == 1 and calls[0].params["activePower"] == "-2000" and calls[0].params["groupId"] == group
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(10)
        ndeath = await scada.wait_for(is_topic("NDEATH"))
        assert metrics(ndeath)["bdSeq"]["value"] == node["bdSeq"]["value"] and "seq" not in ndeath["payload"]
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait(10)


async def test_births_wait_for_the_primary_host_and_follow_its_state(
    host: Callable[..., Any], broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """With primary_host_id set, the edge node stays silent until the host's STATE says online; when the
    host goes offline it ends its session (NDEATH) and, once the host is back, is born with the next bdSeq."""
    scada = await host("scada")
    config = tmp_path / "bridge.toml"
    sparkplug_config(config, broker, sim, primary_host_id="scada", devices=["inverter-H475A"])
    bridge = start_bridge_at_info(config)
    try:
        await asyncio.sleep(2.0)
        assert not any(is_topic("NBIRTH")(d) for d in scada.seen), "born before the primary host was online"
        scada.send({"state": True})
        first = metrics(await scada.wait_for(is_topic("NBIRTH")))["bdSeq"]["value"]
        await scada.wait_for(is_topic("DBIRTH", "inverter-H475A"))
        scada.send({"state": False})
        death = await scada.wait_for(is_topic("NDEATH"))
        assert metrics(death)["bdSeq"]["value"] == first
        scada.send({"state": True})
        second = await scada.wait_for(lambda d: is_topic("NBIRTH")(d) and metrics(d)["bdSeq"]["value"] != first)
        assert metrics(second)["bdSeq"]["value"] == (first + 1) % 256
    finally:
        bridge.kill()
        bridge.wait(10)


async def test_writes_the_bridge_refuses_come_back_as_rejected_ddata(
    host: Callable[..., Any], broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """A setpoint beyond the command's range is refused by the bridge's own validation (no API call) and a
    write to an unknown metric by the edge node: both are DDATA with State/Status `rejected` and the code."""
    scada = await host()
    config = tmp_path / "bridge.toml"
    sparkplug_config(config, broker, sim, devices=["inverter-H475A"])
    bridge = start_bridge_at_info(config)
    topic = f"spBv1.0/vpp/DCMD/{EDGE}/inverter-H475A"
    try:
        await scada.wait_for(is_topic("DBIRTH", "inverter-H475A"))

        def rejected(code: str) -> Callable[[dict[str, Any]], bool]:
            return lambda d: is_topic("DDATA", "inverter-H475A")(d) and metrics(d).get("State/ErrorCode", {}).get(
                "value") == code and metrics(d)["State/Status"]["value"] == "rejected"  # fmt: skip

        scada.send({"dcmd": {"topic": topic, "metrics": [{"name": "Setpoint/ActivePower", "type": "Int32",
                                                          "value": 70000}]}})  # fmt: skip
        await scada.wait_for(rejected("validation_error"))
        scada.send({"dcmd": {"topic": topic, "metrics": [{"name": "Setpoint/Bogus", "type": "Int32", "value": 1}]}})
        await scada.wait_for(rejected("unknown_metric"))
        assert sim.simulator.calls_to("/commandapi/singleControl") == []
    finally:
        bridge.kill()
        bridge.wait(10)


async def test_after_a_broker_restart_the_node_is_born_again_with_the_next_bd_seq(
    host: Callable[..., Any], broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """The broker goes away and comes back: the edge node reconnects by itself and publishes NBIRTH (seq 0,
    bdSeq + 1) and its DBIRTHs again, and a write after that still completes."""
    scada = await host()
    device = f"group-{sim.simulator.state.list_groups()[0].id}"
    config = tmp_path / "bridge.toml"
    sparkplug_config(config, broker, sim, devices=[device])
    bridge = start_bridge_at_info(config)
    try:
        first = metrics(await scada.wait_for(is_topic("NBIRTH")))["bdSeq"]["value"]
        await asyncio.get_running_loop().run_in_executor(None, broker.restart, 1.0)
        again = await scada.wait_for(
            lambda d: is_topic("NBIRTH")(d) and metrics(d)["bdSeq"]["value"] != first, timeout=40
        )
        assert metrics(again)["bdSeq"]["value"] == (first + 1) % 256 and again["payload"]["seq"] == 0
        reborn = scada.seen.index(again)
        await scada.wait_for(lambda d: scada.seen.index(d) > reborn and is_topic("DBIRTH", device)(d))
        scada.send({"dcmd": {"topic": f"spBv1.0/vpp/DCMD/{EDGE}/{device}",
                             "metrics": [{"name": "Command", "type": "String",
                                          "value": '{"type":"system_switch","on":true}'}]}})  # fmt: skip
        await scada.wait_for(lambda d: is_topic("DDATA", device)(d)
                             and metrics(d).get("State/Status", {}).get("value") == "completed", timeout=30)  # fmt: skip
    finally:
        bridge.kill()
        bridge.wait(10)
