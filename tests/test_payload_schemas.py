"""Every kind of message the bridge publishes, captured from a running bridge, validates against the schema
docs/asyncapi.yaml gives its topic (checked by jsonschema, an independent validator), and declares no field
the schema does not name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from semookii_bridge.api import RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN, bridge_config_for
from .support.broker import Mosquitto, Probe

DOC = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs/asyncapi.yaml").read_text())
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]


def schema_of(topic: str) -> str:
    """The schema name the document's channels give `topic` (one level per parameter)."""
    for channel in DOC["channels"].values():
        pattern = channel["address"].split("/")
        if len(pattern) == len(topic.split("/")) and all(
            p.startswith("{") or p == t for p, t in zip(pattern, topic.split("/"), strict=True)
        ):
            message = next(iter(channel["messages"].values()))["$ref"].rsplit("/", 1)[1]
            return str(DOC["components"]["messages"][message]["payload"]["$ref"].rsplit("/", 1)[1])
    raise AssertionError(f"no channel for {topic}")


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def undeclared(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Keys of `instance` (and of its nested objects) that the schema does not declare."""
    schema = resolve(schema)
    if not isinstance(instance, dict) or "properties" not in schema:
        return []
    out = [f"{path}.{key}" for key in instance if key not in schema["properties"]]
    for key, value in instance.items():
        if key in schema["properties"]:
            for branch in schema["properties"][key].get("anyOf", [schema["properties"][key]]):
                out += undeclared(value, branch, f"{path}.{key}")
    return out


def check(topic: str, payload: dict[str, Any]) -> str:
    name = schema_of(topic)
    jsonschema.validate(payload, {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]})
    assert undeclared(payload, SCHEMAS[name]) == [], (topic, payload)
    return name


async def test_every_published_message_matches_its_schema(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path, pg_url: str
) -> None:
    """States (each status met, with results, errors, a batch's sns, a duplicate), answers (ok and error),
    presence, info, budget and the hot standby's instance state all validate and declare every field."""
    cfg = bridge_config_for(broker.port, sim, tmp_path, journal={"url": pg_url},
                            ha={"enabled": True, "name": "schema", "lease": 3})  # fmt: skip
    service = Service(cfg, Secret(TOKEN), retry=RetryPolicy.instant())
    group_id = sim.simulator.state.list_groups()[0].id
    sns = [row.inverter_sn for row in sim.simulator.state.group_members(group_id)[:2]]
    with Probe(broker.port, subscribe="vpp/#") as probe:
        await service.start()
        try:
            probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "g1"})
            await probe.wait_status(f"vpp/group/{group_id}/state", "g1", "completed")
            probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "g1"})
            probe.publish("vpp/batch/set", {"type": "manual", "action": "stop", "request_id": "b1", "sns": sns})
            await probe.wait_status("vpp/batch/state", "b1", "completed")
            probe.publish(f"vpp/inverter/{sns[0]}/set", b"{oops")
            probe.publish("vpp/bridge/request/group/list", {"all": True, "transaction": 1})
            probe.publish("vpp/bridge/request/group/rename", {"transaction": "t"})
            await probe.wait_for(lambda: len(probe.on("vpp/bridge/response/group/rename")) == 1)
            await probe.wait_for(lambda: probe.on("vpp/bridge/budget") and probe.on("vpp/bridge/instance/schema/state"))
            await asyncio.sleep(0.3)
        finally:
            await service.stop()
    checked: dict[str, set[str]] = {}
    for message in probe.messages:
        if message.topic.endswith("/set") or message.topic.startswith("vpp/bridge/request/") or not message.payload:
            continue
        payload = message.json()
        checked.setdefault(check(message.topic, payload), set()).add(str(payload.get("status", "")))
    assert set(checked) == {"StateMessage", "Response", "BridgePresence", "BridgeInfo", "Budget", "InstanceState"}
    assert {"queued", "accepted", "dispatched", "completed", "rejected"} <= checked["StateMessage"]
    assert checked["Response"] == {"ok", "error"}
