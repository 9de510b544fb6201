"""The alternative users build today: a Node-RED flow (mqtt in -> function -> http request -> mqtt out)
doing the bridge's job for power_control on groups, against the same simulator at the same load, in the
same run as the bridge. Also checks the command ids the flow publishes against the API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import msgspec

from harness import ROOT, TOKEN, Recorder, free_port, percentile, stack, wait_port
from latency import BRIDGE_CONFIG, paced, through_bridge

CACHE = Path(os.environ.get("SEMOOKII_NODE_RED_CACHE", ROOT / ".cache" / "node-red"))

BUILD = r"""
const c = msg.payload;
const groupId = msg.topic.split('/')[2];
const q = {groupId: groupId, tokenId: env.get('SEMOOKII_TOKEN'), superType: 0, mode: 1,
           activePower: c.active_power, reactivePower: c.reactive_power || 0, setType: 1,
           proidTime: c.duration, timeout: c.timeout};
msg.url = env.get('API') + '/commandapi/groupControl?' +
    Object.keys(q).map(k => k + '=' + encodeURIComponent(q[k])).join('&');
msg.request_id = c.request_id;
msg.groupId = groupId;
msg.payload = '';
return msg;
"""
STATE = r"""
const ok = msg.payload && msg.payload.success === true;
msg.topic = 'alt/group/' + msg.groupId + '/state';
msg.payload = {request_id: msg.request_id, status: ok ? 'accepted' : 'failed',
               command_id: ok ? String(msg.payload.result) : null};
return msg;
"""


def flow() -> list[dict[str, object]]:
    broker = {
        "id": "b",
        "type": "mqtt-broker",
        "broker": "${MQTT_HOST}",
        "port": "${MQTT_PORT}",
        "clientid": "",
        "autoConnect": True,
        "usetls": False,
        "protocolVersion": "4",
        "keepalive": "60",
        "cleansession": True,
    }
    return [
        {"id": "t", "type": "tab", "label": "alternative"},
        broker,
        {"id": "in", "type": "mqtt in", "z": "t", "topic": "alt/group/+/set", "qos": "1", "datatype": "json",
         "broker": "b", "wires": [["build"]]},
        {"id": "build", "type": "function", "z": "t", "func": BUILD, "outputs": 1, "wires": [["http"]]},
        {"id": "http", "type": "http request", "z": "t", "method": "POST", "ret": "obj", "paytoqs": "ignore",
         "url": "", "persist": True, "wires": [["state"]]},
        {"id": "state", "type": "function", "z": "t", "func": STATE, "outputs": 1, "wires": [["out"]]},
        {"id": "out", "type": "mqtt out", "z": "t", "topic": "", "qos": "1", "retain": "false", "broker": "b",
         "wires": []},
    ]  # fmt: skip


def node_red_js() -> Path:
    red = CACHE / "node_modules" / "node-red" / "red.js"
    if not red.exists():
        subprocess.run(["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--omit=dev",
                        "node-red@4"], check=True, capture_output=True)  # fmt: skip
    return red


def through_node_red(port: int, group_ids: list[str], rate: float, seconds: float) -> tuple[list[float], list[str]]:
    published: dict[str, float] = {}
    accepted: dict[str, float] = {}
    ids: list[str] = []

    def on_state(topic: str, payload: bytes, ts: float) -> None:
        doc = msgspec.json.decode(payload)
        accepted[doc["request_id"]] = ts
        if doc["command_id"]:
            ids.append(doc["command_id"])

    rx = Recorder(port, ["alt/group/+/state"], on_state)
    tx = Recorder(port, [])

    def send(n: int) -> None:
        published[str(n)] = time.time()
        tx.publish(f"alt/group/{group_ids[n % len(group_ids)]}/set",
                   msgspec.json.encode({"type": "power_control", "active_power": n, "duration": 60, "timeout": 1,
                                        "request_id": str(n)}))  # fmt: skip

    paced(rate, seconds, send)
    deadline = time.time() + 10
    while len(accepted) < len(published) and time.time() < deadline:
        time.sleep(0.05)
    rx.close()
    tx.close()
    return [(accepted[k] - published[k]) * 1000 for k in published if k in accepted], ids


async def unknown_ids(url: str, ids: list[str]) -> int:
    """How many of these command ids the API does not know (queryCommand says success: false)."""
    bad = 0
    async with aiohttp.ClientSession() as session:
        for command_id in ids:
            params = {"tokenId": TOKEN, "commandId": command_id}
            async with session.post(f"{url}/commandapi/queryCommand", params=params) as r:
                doc = json.loads(await r.read())
                bad += not (doc.get("success") or doc.get("isSuccess"))
    return bad


def run(rate: float = 200, seconds: float = 10) -> str:
    red = node_red_js()
    with stack(groups=200, sim_args=("--task-delay", "300", "--result-delay", "600"), bridge_config=BRIDGE_CONFIG) as s:
        group_ids = s.group_ids()
        user_dir = s.workdir / "node-red"
        user_dir.mkdir()
        (user_dir / "flow.json").write_text(json.dumps(flow()))
        (user_dir / "settings.js").write_text('module.exports = {flowFile: "flow.json", httpAdminRoot: false, '
                                              'logging: {console: {level: "error"}}};')  # fmt: skip
        http_port = free_port()
        env = {**os.environ, "MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(s.broker_port), "API": s.sim_url,
               "SEMOOKII_TOKEN": TOKEN}  # fmt: skip
        node = subprocess.Popen([shutil.which("node") or "node", str(red), "--userDir", str(user_dir), "--port",
                                 str(http_port), "--settings", str(user_dir / "settings.js")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_port(http_port, node, 60)
            time.sleep(2)
            bridge = through_bridge(s.broker_port, group_ids, rate, seconds)
            red_latency, ids = through_node_red(s.broker_port, group_ids, rate, seconds)
            sample = ids[:: max(1, len(ids) // 50)][:50]
            bad = asyncio.run(unknown_ids(s.sim_url, sample))
        finally:
            node.terminate()
            node.wait(10)
    pub, acc = bridge["published"], bridge["accepted"]
    ours = [(acc[n] - pub[n]) * 1000 for n in pub if n in acc]
    b50, b99 = percentile(ours, 50), percentile(ours, 99)
    r50, r99 = percentile(red_latency, 50), percentile(red_latency, 99)
    return "\n".join([
        f"### The same job as a Node-RED flow, {rate:g} commands/s for {seconds:g} s, same broker and simulator",
        "",
        "| path: publish -> `accepted` | p50 ms | p99 ms | accepted |",
        "|---|---:|---:|---:|",
        f"| semookii-bridge (validation, journal, rate limiter, lifecycle) | {b50:.2f} | {b99:.2f} | {len(ours)}/{len(pub)} |",
        f"| Node-RED: mqtt in -> function -> http request -> mqtt out | {r50:.2f} | {r99:.2f} | {len(red_latency)}/{int(rate * seconds)} |",
        f"| ratio Node-RED / bridge | {r50 / b50:.2f} | {r99 / b99:.2f} | |",
        "",
        f"Command ids the Node-RED flow published that the API does not know: **{bad} of {len(sample)}** sampled.",
        "JavaScript parses the 19-digit ids as doubles and rounds them; the bridge publishes ids as strings.",
        "The flow also has no validation, rate limit, latest-wins, journal or result tracking.",
    ])  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(run(args.rate, args.seconds))
