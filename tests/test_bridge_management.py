"""Management ops over `vpp/bridge/request/<op>` -> `vpp/bridge/response/<op>`, through mosquitto."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from semookii_bridge.management.ops import OPS
from semookii_bridge.service import Service
from semookii_bridge.simulator import Fault, RunningSimulator

from .support.broker import Mosquitto, Probe


async def request(probe: Probe, op: str, payload: Any) -> dict[str, Any]:
    before = len(probe.on(f"vpp/bridge/response/{op}"))
    probe.publish(f"vpp/bridge/request/{op}", payload)
    await probe.wait_for(lambda: len(probe.on(f"vpp/bridge/response/{op}")) > before)
    response: dict[str, Any] = probe.on(f"vpp/bridge/response/{op}")[-1].json()
    return response


def test_contract_ops_are_all_in_the_table() -> None:
    """Every op of CONTRACT.md section 3 has a handler."""
    assert set(OPS) == {
        "group/add", "group/rename", "group/remove", "group/list", "group/search", "inverter/add",
        "inverter/remove", "inverter/replace", "inverter/list", "inverter/search", "command/query",
        "task/result", "device/bind",
    }  # fmt: skip


async def test_group_ops_round_trip(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """add, rename, search, list and remove a group; transaction echoed, ids as strings."""
    with Probe(broker.port) as probe:
        added = await request(probe, "group/add", {"name": "east", "transaction": 7})
        assert added["status"] == "ok" and added["transaction"] == 7 and isinstance(added["data"]["id"], str)
        group_id = added["data"]["id"]
        assert (await request(probe, "group/rename", {"id": group_id, "name": "east-2"}))["status"] == "ok"
        found = await request(probe, "group/search", {"name": "east"})
        assert [g["name"] for g in found["data"]["items"]] == ["east-2"]
        listed = await request(probe, "group/list", {"all": True})
        assert listed["data"]["total"] == 3 and all(isinstance(g["id"], str) for g in listed["data"]["items"])
        page = await request(probe, "group/list", {"page": 1, "size": 2})
        assert len(page["data"]["items"]) == 2
        removed = await request(probe, "group/remove", {"id": int(group_id)})
        assert removed["data"] == {"removed": [group_id]}


async def test_inverter_ops_round_trip(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """add, list, search, replace and remove an inverter."""
    state = sim.simulator.state
    in_groups = {i.inverter_sn for i in state.inverters.values()}
    spare, other = [d for d in state.devices.values() if d.bound and d.inverter_sn not in in_groups][:2]
    group_id = state.list_groups()[0].id
    with Probe(broker.port) as probe:
        added = await request(probe, "inverter/add", {"group_id": group_id, "sn": spare.inverter_sn})
        inverter_id = added["data"]["id"]
        listed = await request(probe, "inverter/list", {"group_id": group_id, "all": True})
        assert listed["data"]["total"] == 4 and listed["data"]["items"][-1]["group_id"] == group_id
        found = await request(probe, "inverter/search", {"group_id": group_id, "sn": spare.inverter_sn})
        assert [i["id"] for i in found["data"]["items"]] == [inverter_id]
        replaced = await request(probe, "inverter/replace", {"id": inverter_id, "new_sn": other.inverter_sn})
        assert replaced["status"] == "ok"
        removed = await request(probe, "inverter/remove", {"ids": [inverter_id]})
        assert removed["data"] == {"removed": [inverter_id]}


async def test_query_ops_and_bind(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """command/query and task/result follow a command; device/bind sorts sns."""
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "q1"})
        done = await probe.wait_status(f"vpp/group/{group_id}/state", "q1", "completed")
        queried = await request(probe, "command/query", {"command_id": done["command_id"]})
        assert queried["data"]["task_id"] == done["task_id"]
        result = await request(probe, "task/result", {"task_id": done["task_id"]})
        assert result["data"]["results"] == done["results"]
        bound = await request(probe, "device/bind", {"sns": ["NOPE1"]})
        assert bound["data"]["non_existent"] == ["NOPE1"]


async def test_mqtt5_response_topic_and_correlation(bridge: Service, broker: Mosquitto) -> None:
    """An MQTT 5 response topic replaces the default one; correlation data comes back."""
    with Probe(broker.port, subscribe=["vpp/#", "client/7/reply"]) as probe:
        probe.publish("vpp/bridge/request/group/list", {}, response_topic="client/7/reply", correlation=b"abc")
        (reply,) = await probe.wait_for(lambda: probe.on("client/7/reply"))
    assert (
        reply.correlation == b"abc"
        and reply.json()["status"] == "ok"
        and not probe.on("vpp/bridge/response/group/list")
    )


@pytest.mark.parametrize(
    ("op", "payload", "code"),
    [
        ("group/add", b"{not json", "invalid_json"),
        ("group/add", b"[1,2]", "validation_error"),
        ("group/add", {"name": ""}, "validation_error"),
        ("group/add", {"name": "x", "colour": "red"}, "validation_error"),
        ("group/remove", {"id": "1", "ids": ["2"]}, "validation_error"),
        ("group/list", {"size": "ten"}, "validation_error"),
        ("group/explode", {}, "unknown_op"),
        ("group/add/extra", {}, "unknown_op"),
        ("group/add", b"{" + b'"name":"' + b"x" * 70000 + b'"}', "payload_too_large"),
        ("group/rename", {"id": "1234567890123456789", "name": "x"}, "api_error"),
    ],
)  # fmt: skip
async def test_bad_requests_get_error_responses(
    op: str, payload: Any, code: str, bridge: Service, broker: Mosquitto
) -> None:
    """Each class of bad request gets `status: error` with a stable code, and the bridge carries on."""
    with Probe(broker.port) as probe:
        response = await request(probe, op, payload)
        assert response["status"] == "error" and response["error"]["code"] == code and response["error"]["message"]
        assert (await request(probe, "group/list", {}))["status"] == "ok"


async def test_response_topic_inside_the_prefix_is_refused(bridge: Service, broker: Mosquitto) -> None:
    """A response topic under `vpp/` is ignored (the bridge never publishes into its own namespace on request);
    the answer goes to the default response topic."""
    with Probe(broker.port) as probe:
        probe.publish("vpp/bridge/request/group/list", {}, response_topic="vpp/bridge/state", correlation=b"x")
        response = await probe.wait_response("group/list")
    assert response["status"] == "ok"
    assert all(m.json().get("state") for m in probe.on("vpp/bridge/state"))


async def test_error_responses_echo_the_transaction(bridge: Service, broker: Mosquitto) -> None:
    """A refused, failed or unknown request still carries its `transaction` back, so the caller can match it."""
    cases = [("group/add", {"name": ""}, "validation_error"),
             ("group/rename", {"id": "1234567890123456789", "name": "x"}, "api_error"),
             ("group/explode", {}, "unknown_op")]  # fmt: skip
    with Probe(broker.port) as probe:
        for n, (op, payload, code) in enumerate(cases):
            response = await request(probe, op, {**payload, "transaction": f"t-{n}"})
            assert (response["status"], response["error"]["code"], response["transaction"]) == ("error", code, f"t-{n}")


async def test_requests_beyond_max_pending_answer_busy_at_once(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """With `management.max_pending = 2` and the API slow, a third and later request are answered
    `busy` (transaction echoed, no API call) while the first two are still answered `ok`."""
    sim.simulator.inject(Fault("slow", path="/vppgroup/findAll", delay=1.0, times=2))
    await make_bridge(management={"max_pending": 2})
    topic = "vpp/bridge/response/group/list"
    with Probe(broker.port, subscribe=topic) as probe:
        for n in range(5):
            probe.publish("vpp/bridge/request/group/list", {"transaction": n})
        await probe.wait_for(lambda: len(probe.on(topic)) == 5, timeout=10)
    answers = {m.json()["transaction"]: m.json() for m in probe.on(topic)}
    assert [answers[n]["status"] for n in range(5)] == ["ok", "ok", "error", "error", "error"]
    assert {answers[n]["error"]["code"] for n in (2, 3, 4)} == {"busy"}
    assert len(sim.simulator.calls_to("/vppgroup/findAll")) == 2


async def test_management_obeys_the_allow_lists_before_any_call(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """With `allow_groups = [g0]`: removing g1 and g2 is `not_allowed` with no API call, listing shows only g0,
    and g0's inverters can be searched without a filter (the document calls the filters optional)."""
    state = sim.simulator.state
    g0, g1 = [g.id for g in state.list_groups()][:2]
    g2 = state.add_group("third")
    await make_bridge(commands={"allow_groups": [g0]})
    with Probe(broker.port) as probe:
        refused = await request(probe, "group/remove", {"ids": [g1, g2], "transaction": "t1"})
        listed = await request(probe, "group/list", {"all": True})
        found = await request(probe, "inverter/search", {"group_id": g0})
        other = await request(probe, "inverter/list", {"group_id": g1})
    assert refused["status"] == "error" and refused["error"]["code"] == "not_allowed" and refused["transaction"] == "t1"
    assert not sim.simulator.calls_to("/vppgroup/deleteBatch") and g1 in {g.id for g in state.list_groups()}
    assert [g["id"] for g in listed["data"]["items"]] == [g0]
    assert found["status"] == "ok" and len(found["data"]["items"]) == 3
    assert other["error"]["code"] == "not_allowed"


async def test_read_only_refuses_every_change_and_answers_reads(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """`management.read_only`: group/add, inverter/remove and device/bind are `not_allowed` with no API call;
    group/list still answers."""
    await make_bridge(management={"read_only": True})
    before = len(sim.simulator.calls)
    with Probe(broker.port) as probe:
        answers = [await request(probe, op, body) for op, body in (
            ("group/add", {"name": "x"}), ("inverter/remove", {"id": "1"}), ("device/bind", {"sns": ["SW1"]}))]  # fmt: skip
        assert len(sim.simulator.calls) == before
        listed = await request(probe, "group/list", {})
    assert [a["error"]["code"] for a in answers] == ["not_allowed"] * 3
    assert listed["status"] == "ok"
