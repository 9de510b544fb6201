"""The Node-RED palette (deploy/node-red, @semookii-bridge/node-red): its specs pass on Node-RED 4 with Node.js 20
and on Node-RED 5 with Node.js 22; the packed tarball holds the nodes, examples and licence only; and, installed
from that tarball into a real Node-RED (4 and 5) beside a real mosquitto, simulator and bridge, a flow loaded
through the admin API sends a setpoint, a plan, a stop on the safety lane and a request, and the group picker
names groups."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from selenium import webdriver

from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support import node_red as palette
from .support.broker import Mosquitto, Probe

ROOT = Path(__file__).resolve().parents[1]


def passed(result: subprocess.CompletedProcess[str]) -> str:
    """mocha's output, failing the test on a failing spec."""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passing" in result.stdout and " failing" not in result.stdout
    return result.stdout


def test_specs_pass_on_node_red_4_with_node_20() -> None:
    """The node-red-node-test-helper specs of every node pass on the palette's own Node-RED 4 and the machine's Node."""
    output = passed(palette.early("specs-4", palette.specs_on_node_red_4))
    assert "specs on Node-RED 4." in output and "Node.js v20." in output


def test_specs_pass_on_node_red_5_with_node_22() -> None:
    """The same specs pass on Node-RED 5 (which needs Node >= 22.9) under Node.js 22 from the npm registry."""
    output = passed(palette.early("specs-5", palette.specs_on_node_red_5))
    assert "specs on Node-RED 5." in output and "Node.js v22." in output


def test_the_packed_tarball_holds_the_nodes_examples_and_licence_only(tmp_path: Path) -> None:
    """`npm pack` ships every node named in package.json with its editor file, the examples and the licence (the
    repository's own), and no specs or modules; it has no runtime dependency to download."""
    palette.palette_modules()
    with tarfile.open(palette.pack(tmp_path)) as tar:
        names = {n.removeprefix("package/") for n in tar.getnames()}
        licence = tar.extractfile("package/LICENSE")
        assert licence is not None and licence.read() == (ROOT / "LICENSE").read_bytes()
    manifest = json.loads((palette.PALETTE / "package.json").read_text())
    for module in manifest["node-red"]["nodes"].values():
        assert module in names and module.replace(".js", ".html") in names
    assert "dependencies" not in manifest and "node-red" in manifest["keywords"]
    assert {"README.md", "LICENSE", "package.json", "nodes/icons/semookii.svg"} <= names
    assert {n for n in names if n.startswith("examples/")} == {f"examples/{p.name}" for p in
                                                                (palette.PALETTE / "examples").glob("*.json")}  # fmt: skip
    assert not any(n.startswith(("test/", "node_modules/")) for n in names)


CATALOGUE_STAND_IN = b'{"name": "stand-in", "updated_at": "2026-12-06", "modules": []}'


async def catalogue_stand_in(requests: list[str]) -> asyncio.Server:
    """An HTTP proxy that answers node-red-dev's requests for catalogue.nodered.org (not reachable from here) with
    an empty catalogue, recording each request line; anything else is refused (502)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode(errors="replace").strip()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        requests.append(line)
        ok = line.startswith("GET https://catalogue.nodered.org/")
        body = CATALOGUE_STAND_IN if ok else b"{}"
        head = f"HTTP/1.1 {'200 OK' if ok else '502 Bad Gateway'}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_node_red_dev_validate_finds_nothing_but_the_missing_repository_url(tmp_path: Path) -> None:
    """The flow library's scorecard (node-red-dev validate) on the palette: every check passes but P03 (no public
    repository or bugs URL to name). Its two catalogue checks (P08 similar names, N01 unique node types) read
    catalogue.nodered.org, which this machine cannot reach: a stand-in answers them with an empty catalogue, so
    those two pass without comparing; the registry checks (P06 Node-RED versions) reach the npm registry."""
    command = palette.early("node-red-dev", palette.node_red_dev)
    requests: list[str] = []
    server = await catalogue_stand_in(requests)
    port = server.sockets[0].getsockname()[1]
    scorecard = tmp_path / "scorecard.json"
    env = {**os.environ, "https_proxy": f"http://127.0.0.1:{port}", "no_proxy": "registry.npmjs.org"}
    async with server:
        proc = await asyncio.create_subprocess_exec(
            str(command), "validate", "-p", str(palette.PALETTE), "-o", str(scorecard), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)  # fmt: skip
        output = (await asyncio.wait_for(proc.communicate(), 120))[0].decode(errors="replace")
    assert proc.returncode == 0 and "Complete" in output, output
    card = json.loads(scorecard.read_text())
    failed = {check for check, result in card.items() if isinstance(result, dict) and result.get("test") is False}
    assert failed == {"P03"}, output
    assert set(card["N02"]["nodes"]) == {"semookii-command", "semookii-plan", "semookii-state", "semookii-request"}
    assert requests == ["GET https://catalogue.nodered.org/catalogue.json HTTP/1.1"] * 2


# ---- end to end: a real Node-RED with the packed palette, a real broker, simulator and bridge ----------------


@pytest.fixture(scope="session")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    palette.palette_modules()
    return palette.pack(tmp_path_factory.mktemp("palette-pack"))


@pytest.fixture
def major() -> int:
    """Which Node-RED the `editor` runs: 4 unless a test says 5."""
    return 4


@pytest.fixture
async def editor(tarball: Path, broker: Mosquitto, tmp_path: Path, major: int) -> AsyncIterator[str]:
    """Node-RED (4, or 5 on Node.js 22) with the admin API on, the palette installed from the tarball and no flow;
    yields its URL."""
    user_dir = tmp_path / "node-red"
    palette.install(user_dir, tarball)
    (user_dir / "settings.js").write_text("module.exports = { flowFile: 'flows.json', credentialSecret: false, "
                                          "logging: { console: { level: 'info' } } };\n")  # fmt: skip
    settings = user_dir / "settings.js"
    async with palette.running(user_dir, settings, "/nodes", expect="semookii-command",
                               headers={"Accept": "application/json"}, major=major) as base:  # fmt: skip
        yield base


def e2e_flow(port: int, group_id: str) -> list[dict[str, Any]]:
    """mqtt in `e2e/<name>` -> a palette node -> mqtt out `e2e/out/<name>/<output>`: the test drives the nodes over
    the broker and reads their outputs there."""
    tab = "e2e"

    def node(id: str, type: str, wires: list[list[str]] | None = None, **kw: Any) -> dict[str, Any]:
        return {"id": id, "type": type, "z": tab, "x": 100, "y": 100, **({"wires": wires} if wires is not None else {}),
                **kw}  # fmt: skip

    def drive(name: str, under: dict[str, Any], outputs: int) -> list[dict[str, Any]]:
        outs = [node(f"{name}.out{i}", "mqtt out", topic=f"e2e/out/{name}/{i}", qos="1", retain="false",
                     broker="broker") for i in range(outputs)]  # fmt: skip
        under["wires"] = [[o["id"]] for o in outs]
        return [node(f"{name}.in", "mqtt in", [[under["id"]]], topic=f"e2e/{name}", qos="1", datatype="auto-detect",
                     broker="broker"), under, *outs]  # fmt: skip

    return [
        {"id": tab, "type": "tab", "label": "e2e"},
        {"id": "broker", "type": "mqtt-broker", "broker": "127.0.0.1", "port": str(port), "protocolVersion": "4",
         "autoConnect": True, "keepalive": "60", "cleansession": True, "clientid": ""},
        {"id": "cfg", "type": "semookii-bridge", "name": "sim", "broker": "broker", "prefix": "vpp"},
        *drive("command", node("cmd", "semookii-command", bridge="cfg", targetKind="group", targetId=group_id,
                               ackTimeout=10, finalTimeout=60), 2),
        *drive("stop", node("stop", "semookii-command", bridge="cfg", targetKind="group", targetId=group_id,
                            safety=True, command='{"type": "manual", "action": "stop"}', ackTimeout=10,
                            finalTimeout=60), 2),
        *drive("plan", node("plan", "semookii-plan", bridge="cfg", targetKind="group", targetId=group_id,
                            ackTimeout=10), 2),
        *drive("request", node("req", "semookii-request", bridge="cfg", op="group/list", timeout=30), 1),
    ]


async def deploy(base: str, flow: list[dict[str, Any]], broker: Mosquitto) -> None:
    """POST the flow to the admin API, then wait until its `mqtt in` nodes are subscribed."""
    headers = {"Node-RED-Deployment-Type": "full"}
    async with aiohttp.ClientSession() as session, session.post(f"{base}/flows", json=flow, headers=headers) as r:
        assert r.status in (200, 204), await r.text()
    with Probe(broker.port, subscribe="e2e/out/#") as probe:
        for _ in range(100):
            probe.publish("e2e/request", {"all": True})
            await asyncio.sleep(0.2)
            if probe.on("e2e/out/request/0"):
                return
    pytest.fail("the deployed flow never answered (Node-RED's output: node-red.log in its user directory)")


def outputs(probe: Probe, name: str, index: int) -> list[dict[str, Any]]:
    return [m.json() for m in probe.on(f"e2e/out/{name}/{index}")]


@pytest.mark.parametrize("major", [4, 5])
async def test_a_flow_of_palette_nodes_drives_the_bridge_end_to_end(
    editor: str, broker: Mosquitto, bridge: Service, sim: RunningSimulator
) -> None:
    """A setpoint completes (output 2), a plan's intervals reach the API at their starts, a stop through the
    safety checkbox arrives on the safety topic and completes, and a request's answer comes out."""
    group_id = sim.simulator.state.list_groups()[0].id

    def plan_calls() -> list[Any]:
        calls = sim.simulator.calls_to("/commandapi/groupControl")
        return [c for c in calls if c.params.get("activePower") in ("-1000", "-2000")]

    await deploy(editor, e2e_flow(broker.port, group_id), broker)
    with Probe(broker.port, subscribe=["e2e/out/#", "vpp/safety/#"]) as probe:
        probe.publish("e2e/command", {"type": "power_control", "active_power": -3000, "duration": 600, "timeout": 10})
        await probe.wait_for(lambda: outputs(probe, "command", 1), timeout=30)  # else the stop supersedes it
        probe.publish("e2e/stop", "now")
        t0 = time.time() + 3
        rows = "start,end,active_power\n" + "".join(
            f"{datetime.fromtimestamp(t0 + 2 * i, UTC).isoformat()},{datetime.fromtimestamp(t0 + 2 * i + 2, UTC).isoformat()},{-1000 * (i + 1)}\n"
            for i in range(2))  # fmt: skip
        probe.publish("e2e/plan", rows)
        await probe.wait_for(lambda: outputs(probe, "command", 1) and outputs(probe, "stop", 1), timeout=30)
        probe.publish("e2e/request", {"all": True})
        await probe.wait_for(lambda: len(plan_calls()) == 2 and outputs(probe, "request", 0), timeout=30)
        answered = outputs(probe, "request", 0)
        safety = probe.on(f"vpp/safety/group/{group_id}/set")
    assert outputs(probe, "command", 1)[0]["status"] == "completed"
    assert [s["status"] for s in outputs(probe, "command", 0)][-1] == "completed"
    assert len(safety) == 1 and safety[0].json()["action"] == "stop"
    assert outputs(probe, "stop", 1)[0]["status"] == "completed"
    assert outputs(probe, "plan", 0)[0]["status"] == "active"
    plan_calls = plan_calls()
    assert [c.params["activePower"] for c in plan_calls] == ["-1000", "-2000"]
    assert plan_calls[0].ts >= t0 and plan_calls[1].ts >= t0 + 2
    assert {g["id"] for g in answered[-1]["items"]} == {g.id for g in sim.simulator.state.list_groups()}


async def test_the_group_picker_names_the_simulators_groups(
    editor: str, broker: Mosquitto, bridge: Service, sim: RunningSimulator
) -> None:
    """The editor's picker endpoint asks the bridge (group/list) through the deployed config node and answers
    each group's id and name; a config node not deployed answers 404."""
    group_id = sim.simulator.state.list_groups()[0].id
    await deploy(editor, e2e_flow(broker.port, group_id), broker)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{editor}/semookii-bridge/cfg/groups") as r:
            assert r.status == 200, await r.text()
            groups = await r.json()
        async with session.get(f"{editor}/semookii-bridge/absent/groups") as r:
            assert r.status == 404
        async with session.get(f"{editor}/semookii-bridge/cfg/inverters", params={"group_id": group_id}) as r:
            inverters = await r.json()
    assert {(g["id"], g["name"]) for g in groups} == {(g.id, g.name) for g in sim.simulator.state.list_groups()}
    assert {i["sn"] for i in inverters} == {i.inverter_sn for i in sim.simulator.state.group_members(group_id)}


async def test_the_examples_load_in_node_red_without_a_missing_type_or_an_error(editor: str, tmp_path: Path) -> None:
    """The four examples (Import > Examples), deployed together, start with every node type known and no error
    logged (their broker, localhost:1883, is absent: the nodes wait for it)."""
    flows = [n for example in sorted((palette.PALETTE / "examples").glob("*.json"))
             for n in json.loads(example.read_text())]  # fmt: skip
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{editor}/flows", json=flows, headers={"Node-RED-Deployment-Type": "full"}) as r:
            assert r.status in (200, 204), await r.text()
        await asyncio.sleep(1.0)
        async with session.get(f"{editor}/flows", headers={"Node-RED-API-Version": "v2"}) as r:
            deployed = (await r.json())["flows"]
    assert {n["id"] for n in deployed} == {n["id"] for n in flows}
    log = (tmp_path / "node-red" / "node-red.log").read_text()
    assert "missing types" not in log and "[error]" not in log, log
    assert {n["type"] for n in flows if n["type"].startswith("semookii-")} == {
        "semookii-bridge", "semookii-command", "semookii-plan", "semookii-state", "semookii-request"}


def wait_js(chrome: webdriver.Chrome, script: str, timeout: float = 20.0) -> Any:
    """Run `script` in the page until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = chrome.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out: {script}; browser log: {chrome.get_log('browser')[-5:]}")


async def test_the_editor_checks_the_safety_lane_and_its_picker_shows_group_names(
    editor: str, broker: Mosquitto, bridge: Service, sim: RunningSimulator, browser: webdriver.Chrome
) -> None:
    """In the real editor (Chromium): a command node with the safety box checked is invalid with a setpoint as
    its own command and valid with a stop; a group id that is not digits is invalid; the command node's edit
    dialog's group picker fills with the simulator's group names and choosing one sets the id."""
    groups = sim.simulator.state.list_groups()
    await deploy(editor, e2e_flow(broker.port, groups[0].id), broker)

    def drive() -> tuple[list[bool], list[str], str]:
        browser.get(editor)
        wait_js(browser, "return window.RED && RED.nodes && RED.nodes.node('cmd') && window.semookiiPalette")
        valid = browser.execute_script("""
            const check = RED.nodes.getType('semookii-command').defaults.command.validate;
            return [check.call({safety: true}, '{"type": "manual", "action": "force_charge"}'),
                    check.call({safety: true}, '{"type": "manual", "action": "stop"}'),
                    check.call({safety: false}, '{"type": "manual", "action": "force_charge"}'),
                    check.call({safety: false}, 'not json'),
                    RED.nodes.getType('semookii-plan').defaults.targetId.validate.call({targetKind: 'group'}, '12a'),
                    RED.nodes.getType('semookii-plan').defaults.targetId.validate.call({targetKind: 'group'}, '12')];""")
        browser.execute_script("RED.editor.edit(RED.nodes.node('cmd'))")
        names = wait_js(browser, """const options = $('#semookii-command-target select').eq(1).find('option');
            return options.length > 1 && options.toArray().slice(1).map((o) => o.textContent);""")
        browser.execute_script(f"""$('#semookii-command-target select').eq(1).val('{groups[-1].id}').trigger('change');""")
        return valid, names, browser.execute_script("return $('#node-input-targetId').val()")

    valid, names, chosen = await asyncio.get_running_loop().run_in_executor(None, drive)
    assert valid == [False, True, True, False, False, True]
    assert all(any(g.name in name and g.id in name for name in names) for g in groups)
    assert chosen == groups[-1].id
