"""The shipped Node-RED flow, built of the palette's nodes and run headless with the packed palette installed: it
sends a command through mosquitto and sees `completed`, knows every status of the interface, follows VPP_PREFIX on
every topic, and its HTTP endpoints need the token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import typing
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from semookii_bridge.api import RetryPolicy
from semookii_bridge.cli.demo import REPO_MOSQUITTO, render_broker_config, running_broker
from semookii_bridge.config.secret import Secret
from semookii_bridge.control.statuses import TERMINAL, Status
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support import node_red as palette
from .support.bridges import TOKEN, bridge_config_for
from .support.broker import PASSWORDS, Mosquitto, Probe, free_port

ROOT = Path(__file__).resolve().parents[1]
FLOW_DIR = ROOT / "deploy" / "node-red"
HTTP_TOKEN = "flow-http-token"
AUTH = {"Authorization": f"Bearer {HTTP_TOKEN}"}


@pytest.fixture(scope="session")
def node_red_js() -> Path:
    """Node-RED 4 (the palette's devDependency, from its lock file)."""
    return palette.palette_modules()


@pytest.fixture(scope="session")
def palette_tarball(node_red_js: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The palette as `npm pack` makes it."""
    return palette.pack(tmp_path_factory.mktemp("palette"))


@pytest.fixture
def vpp_prefix() -> str:
    return "vpp"


@contextlib.asynccontextmanager
async def running_flow(
    tarball: Path, user_dir: Path, broker_port: int, group_id: str, prefix: str,
    marker_login: tuple[str | None, str | None] = (None, None),
) -> AsyncIterator[str]:
    """Node-RED running the example flow headless (deploy/node-red/settings.js), the packed palette installed in
    `user_dir` (which may already hold the flow's credentials file); yields its URL once the flow hears states."""
    palette.install(user_dir, tarball)
    shutil.copy(FLOW_DIR / "semookii-flow.json", user_dir / "semookii-flow.json")
    env = {"MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(broker_port), "VPP_GROUP_ID": group_id,
           "VPP_HTTP_TOKEN": HTTP_TOKEN, "VPP_PREFIX": prefix}  # fmt: skip
    async with palette.running(user_dir, FLOW_DIR / "settings.js", "/vpp/state", env=env, headers=AUTH) as base:
        await subscribed(base, broker_port, prefix, marker_login)
        yield base


@pytest.fixture
async def node_red(
    palette_tarball: Path, broker: Mosquitto, tmp_path: Path, sim: RunningSimulator,
    vpp_prefix: str,
) -> AsyncIterator[str]:
    """Node-RED running the example flow, the packed palette installed, against the test broker; yields its URL."""
    group_id = sim.simulator.state.list_groups()[0].id
    async with running_flow(palette_tarball, tmp_path / "node-red", broker.port, group_id, vpp_prefix) as base:
        yield base


async def subscribed(base: str, port: int, prefix: str, login: tuple[str | None, str | None]) -> None:
    """Wait until the flow's state subscription (made once it starts) delivers: publish a marker state (as `login`,
    a user who may publish states) until the flow has it."""
    marker = {"request_id": "flow-ready", "status": "queued", "target": {"kind": "batch", "id": None}}
    async with aiohttp.ClientSession(headers=AUTH) as session:
        with Probe(port, username=login[0], password=login[1]) as probe:
            for _ in range(100):
                probe.publish(f"{prefix}/batch/state", marker)
                await asyncio.sleep(0.1)
                async with session.get(f"{base}/vpp/state", params={"request_id": "flow-ready"}) as r:
                    if r.status == 200:
                        return
    pytest.fail("the flow never subscribed to the state topics")


async def test_flow_sends_a_command_and_sees_completed(node_red: str, bridge: Service, sim: RunningSimulator) -> None:
    """POST /vpp/command -> mqtt out -> bridge -> API -> state topic -> mqtt in -> the flow's memory."""
    group_id = sim.simulator.state.list_groups()[0].id
    command = {"type": "power_control", "active_power": -3000, "duration": 600, "timeout": 10, "request_id": "nr-1"}
    body = {"target": {"kind": "group", "id": group_id}, "command": command}
    async with aiohttp.ClientSession() as session:
        # If the flow's MQTT connection is still opening, its client queues the QoS 1 publish until it is up.
        async with session.post(f"{node_red}/vpp/command", json=body, headers=AUTH) as r:
            assert r.status == 202 and (await r.json())["request_id"] == "nr-1"
        seen: dict[str, object] = {}
        for _ in range(300):
            async with session.get(f"{node_red}/vpp/state", params={"request_id": "nr-1"}, headers=AUTH) as r:
                if r.status == 200:
                    seen = await r.json()
                    if seen["state"]["status"] == "completed":  # type: ignore[index]
                        break
            await asyncio.sleep(0.1)
    assert seen and seen["state"]["status"] == "completed", json.dumps(seen)  # type: ignore[index]
    assert seen["history"] == ["queued", "accepted", "dispatched", "completed"]
    assert seen["final"] is True and seen["outcome"] == "ok"
    (issued,) = sim.simulator.state.commands
    assert seen["state"]["command_id"] == issued  # type: ignore[index]
    assert isinstance(seen["state"]["target"]["id"], str) and seen["state"]["target"]["id"] == group_id  # type: ignore[index]


async def test_flow_rejects_a_command_without_target(node_red: str) -> None:
    """The flow's HTTP shim answers 400 when the target is missing."""
    async with aiohttp.ClientSession(headers=AUTH) as session, session.post(f"{node_red}/vpp/command",
                                                                            json={"command": {}}) as r:
        assert r.status == 400


async def test_the_flows_stop_takes_the_safety_lane(node_red: str, bridge: Service, sim: RunningSimulator) -> None:
    """A stop sent through the flow goes to `vpp/safety/group/<id>/set` and completes; its states come back
    on the group's ordinary state topic, where the flow follows them."""
    group_id = sim.simulator.state.list_groups()[0].id
    body = {"target": {"kind": "group", "id": group_id}, "command": {"type": "manual", "action": "stop",
                                                                       "request_id": "nr-stop"}}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{node_red}/vpp/command", json=body, headers=AUTH) as r:
            assert r.status == 202 and (await r.json())["topic"] == f"vpp/safety/group/{group_id}/set"
        status = None
        for _ in range(300):
            async with session.get(f"{node_red}/vpp/state", params={"request_id": "nr-stop"}, headers=AUTH) as r:
                if r.status == 200 and (status := (await r.json())["state"]["status"]) == "completed":
                    break
            await asyncio.sleep(0.1)
    assert status == "completed"


async def test_the_flow_knows_every_status_of_the_interface(node_red: str, broker: Mosquitto) -> None:
    """Each status the bridge can publish (payloads.Status), fed to the flow on a state topic, is classified by the
    palette: final exactly for the terminal ones, never `unrecognised`; `partial` is a failure, `superseded`
    neutral."""
    statuses = typing.get_args(Status)
    with Probe(broker.port) as probe:
        for status in statuses:
            probe.publish("vpp/group/1028902640000737745/state", {"request_id": f"st-{status}", "status": status,
                          "target": {"kind": "group", "id": "1028902640000737745"}, "duplicate": False})  # fmt: skip
    seen: dict[str, dict[str, object]] = {}
    async with aiohttp.ClientSession(headers=AUTH) as session:
        for status in statuses:
            for _ in range(100):
                async with session.get(f"{node_red}/vpp/state", params={"request_id": f"st-{status}"}) as r:
                    if r.status == 200:
                        seen[status] = await r.json()
                        break
                await asyncio.sleep(0.1)
    assert set(seen) == set(statuses)
    assert {s for s, doc in seen.items() if doc["final"]} == set(TERMINAL)
    assert "unrecognised" not in {doc["outcome"] for doc in seen.values()}
    assert seen["partial"]["outcome"] == "failure" and seen["completed"]["outcome"] == "ok"
    assert seen["superseded"]["outcome"] == "neutral" and seen["queued"]["outcome"] == "pending"


async def test_the_http_endpoints_need_the_token(node_red: str) -> None:
    """Without the bearer token (or with a wrong one) both endpoints answer 401 and nothing is published."""
    body = {"target": {"kind": "group", "id": "1"}, "command": {"type": "manual", "action": "stop"}}
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with session.post(f"{node_red}/vpp/command", json=body, headers=headers) as r:
                assert r.status == 401
            async with session.get(f"{node_red}/vpp/state", headers=headers) as r:
                assert r.status == 401


@pytest.mark.parametrize("vpp_prefix", ["plant7"])
async def test_the_flow_follows_vpp_prefix_everywhere(
    node_red: str, broker: Mosquitto, sim: RunningSimulator, make_bridge: Any
) -> None:
    """With VPP_PREFIX=plant7 and a bridge on that prefix, a command the flow sends completes and the flow sees
    its states: commands, state subscriptions and requests all live under plant7/."""
    await make_bridge(mqtt={"prefix": "plant7"})
    group_id = sim.simulator.state.list_groups()[0].id
    command = {"type": "power_control", "active_power": -1000, "duration": 60, "timeout": 10, "request_id": "p7"}
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(f"{node_red}/vpp/command", json={"target": {"kind": "group", "id": group_id},
                                                                   "command": command}) as r:  # fmt: skip
            assert (await r.json())["topic"] == f"plant7/group/{group_id}/set"
        outcome = None
        for _ in range(300):
            async with session.get(f"{node_red}/vpp/state", params={"request_id": "p7"}) as r:
                if r.status == 200 and (outcome := (await r.json())["outcome"]) == "ok":
                    break
            await asyncio.sleep(0.1)
    assert outcome == "ok"


async def test_the_day_plan_tab_turns_csv_rows_into_a_plan_the_bridge_carries_out(
    node_red: str, bridge: Service, sim: RunningSimulator
) -> None:
    """POST /vpp/plan with CSV rows start,end,active_power: 202 with the plan_id, and each row's setpoint reaches
    the API at its start; a row without a number is refused (400, naming the row) and nothing is published."""
    import time
    from datetime import UTC, datetime

    group_id = sim.simulator.state.list_groups()[0].id
    t0 = time.time() + 3

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat()

    csv = f"start,end,active_power\n{iso(t0)},{iso(t0 + 1.5)},-1500\n{iso(t0 + 1.5)},{iso(t0 + 3)},-2500\n"
    body = {"target": {"kind": "group", "id": group_id}, "plan_id": "nr-day", "csv": csv}
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(f"{node_red}/vpp/plan", json={**body, "csv": "start,end,active_power\na,b,c\n"}) as r:
            assert r.status == 400 and "row 2" in (await r.json())["error"]
        async with session.post(f"{node_red}/vpp/plan", json=body) as r:
            answer = await r.json()
            assert r.status == 202 and (answer["plan_id"], answer["intervals"]) == ("nr-day", 2)
    for _ in range(100):
        calls = sim.simulator.calls_to("/commandapi/groupControl")
        if len(calls) == 2:
            break
        await asyncio.sleep(0.1)
    assert [c.params["activePower"] for c in calls] == ["-1500", "-2500"]
    assert calls[0].ts >= t0 and calls[1].ts >= t0 + 1.5


async def test_headless_credentials_log_the_flow_in_as_operator_under_the_shipped_acl(
    palette_tarball: Path, tmp_path: Path, sim: RunningSimulator
) -> None:
    """The broker runs the shipped password file and ACL; the flow's broker credentials are given without the
    editor, in `semookii-flow_cred.json` (plain JSON under `credentialSecret: false`): the flow logs in as
    `operator`, and a command and a stop (safety lane) sent through it complete, their states heard."""
    port = free_port()
    group_id = sim.simulator.state.list_groups()[0].id
    user_dir = tmp_path / "node-red"
    user_dir.mkdir()
    (user_dir / "semookii-flow_cred.json").write_text(json.dumps(
        {"semookii.broker": {"user": "operator", "password": PASSWORDS["operator"]}}))  # fmt: skip
    with running_broker(render_broker_config(REPO_MOSQUITTO, tmp_path, port, PASSWORDS), port):
        mqtt = {"username": "bridge", "password": PASSWORDS["bridge"]}
        service = Service(bridge_config_for(port, sim, tmp_path, mqtt=mqtt), Secret(TOKEN), retry=RetryPolicy.instant())
        await service.start()
        try:
            async with running_flow(palette_tarball, user_dir, port, group_id, "vpp",
                                    ("bridge", PASSWORDS["bridge"])) as base:  # fmt: skip
                outcomes = {}
                async with aiohttp.ClientSession(headers=AUTH) as session:
                    for rid, command in (("cred-1", {"type": "power_control", "active_power": -500, "duration": 60,
                                                     "timeout": 10}), ("cred-2", {"type": "manual", "action": "stop"})):  # fmt: skip
                        body = {"target": {"kind": "group", "id": group_id}, "command": {**command, "request_id": rid}}
                        async with session.post(f"{base}/vpp/command", json=body) as r:
                            assert r.status == 202
                        for _ in range(300):
                            async with session.get(f"{base}/vpp/state", params={"request_id": rid}) as r:
                                if r.status == 200 and (doc := await r.json())["final"]:
                                    outcomes[rid] = doc["outcome"]
                                    break
                            await asyncio.sleep(0.1)
        finally:
            await service.stop()
    assert outcomes == {"cred-1": "ok", "cred-2": "ok"}
