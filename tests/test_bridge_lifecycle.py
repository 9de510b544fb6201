"""The whole lifecycle through a real mosquitto and the simulator: queued -> accepted -> dispatched -> completed."""

from __future__ import annotations

import json

import pytest

from semookii_bridge.control.commands import COMMAND_TYPES
from semookii_bridge.interface.payloads import INTERFACE_VERSION
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.broker import Mosquitto, Probe

LIFECYCLE = ["queued", "accepted", "dispatched", "completed"]

EXAMPLES: dict[str, dict[str, object]] = {
    "power_control": {"active_power": -3000, "duration": 600, "timeout": 10},
    "energy_control": {"target_energy": 5000, "charge_power": 2000, "timeout": 10, "update": True},
    "soc_control": {"target_soc": 80, "charge_power": 3000, "timeout": 10},
    "exit_remote_control": {},
    "system_switch": {"on": False},
    "self_use": {"min_soc": 10, "charge_upper_soc": 90, "charge_from_grid": True},
    "feed_in_priority": {"min_soc": 15, "charge_upper_soc": 95},
    "backup": {"min_soc": 30, "charge_upper_soc": 100},
    "manual": {"action": "force_discharge"},
    "schedule": {"period1": {"charge": ["01:00", "05:00"], "discharge": ["17:00", "21:00"]},
                 "period2": {"charge": ["11:00", "13:00"], "discharge": ["22:00", "23:00"]}},
}  # fmt: skip


def test_every_command_type_has_an_example() -> None:
    """The lifecycle tests below cover every command type of the contract."""
    assert set(EXAMPLES) == set(COMMAND_TYPES)


def group_and_members(sim: RunningSimulator) -> tuple[str, list[str]]:
    group = sim.simulator.state.list_groups()[0]
    return group.id, [i.inverter_sn for i in sim.simulator.state.group_members(group.id)]


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
async def test_group_command_lifecycle(kind: str, bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """Each command type on a group topic goes through all four steps, ids as strings."""
    group_id, _ = group_and_members(sim)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": kind, "request_id": f"r-{kind}", **EXAMPLES[kind]})
        topic = f"vpp/group/{group_id}/state"
        done = await probe.wait_status(topic, f"r-{kind}", "completed")
        states = probe.states(topic, f"r-{kind}")
    assert [s["status"] for s in states] == LIFECYCLE
    assert all(isinstance(s["command_id"], str) and s["command_id"].isdigit() for s in states[1:])
    assert all(isinstance(s["task_id"], str) for s in states[2:])
    assert isinstance(done["task_id"], str) and done["results"] and set(done["results"].values()) == {"success"}
    assert done["target"] == {"kind": "group", "id": group_id} and done["command"]["type"] == kind
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) == 1


async def test_inverter_command_lifecycle(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """A command on `vpp/inverter/<sn>/set` goes to singleControl and ends completed."""
    _, sns = group_and_members(sim)
    with Probe(broker.port) as probe:
        probe.publish(
            f"vpp/inverter/{sns[0]}/set", {"type": "power_control", "request_id": "inv-1", **EXAMPLES["power_control"]}
        )
        await probe.wait_status(f"vpp/inverter/{sns[0]}/state", "inv-1", "completed")
    (call,) = sim.simulator.calls_to("/commandapi/singleControl")
    assert call.params["sn"] == sns[0] and call.params["activePower"] == "-3000"


async def test_batch_command_lifecycle(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """`vpp/batch/set` with `sns` goes to batchTempControl and its results cover every device."""
    _, sns = group_and_members(sim)
    with Probe(broker.port) as probe:
        probe.publish("vpp/batch/set", {"type": "system_switch", "on": True, "sns": sns[:2], "request_id": "b-1"})
        done = await probe.wait_status("vpp/batch/state", "b-1", "completed")
    (call,) = sim.simulator.calls_to("/commandapi/batchTempControl")
    assert call.params["snList"] == ",".join(sns[:2]) and len(done["results"]) == 2
    assert done["target"] == {"kind": "batch", "id": None}


async def test_api_name_form_is_accepted(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """The vendor's own parameter names are accepted and echoed back in the typed form."""
    group_id, _ = group_and_members(sim)
    payload = {"superType": 0, "mode": 1, "activePower": 1000, "reactivePower": 0, "setType": 1, "proidTime": 600,
               "timeout": 10, "request_id": "api-form"}  # fmt: skip
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", payload)
        done = await probe.wait_status(f"vpp/group/{group_id}/state", "api-form", "completed")
    assert done["command"] == {"type": "power_control", "active_power": 1000, "reactive_power": 0, "duration": 600,
                               "timeout": 10}  # fmt: skip


async def test_last_state_is_retained(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """A dashboard connecting later sees the final state of the last command."""
    group_id, _ = group_and_members(sim)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "ret-1"})
        await probe.wait_status(f"vpp/group/{group_id}/state", "ret-1", "completed")
    with Probe(broker.port, subscribe=f"vpp/group/{group_id}/state") as late:
        (seen,) = await late.wait_for(lambda: late.on(f"vpp/group/{group_id}/state"))
    assert seen.retain and seen.json()["status"] == "completed"


async def test_generated_request_id_when_absent(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """Without a request_id the bridge makes one and uses it for every step."""
    group_id, _ = group_and_members(sim)
    topic = f"vpp/group/{group_id}/state"
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop"})
        done = await probe.wait_for(lambda: [s for s in probe.states(topic) if s["status"] == "completed"])
        rid = done[0]["request_id"]
        assert rid and [s["status"] for s in probe.states(topic, rid)] == LIFECYCLE


async def test_bridge_state_online_and_info(bridge: Service, broker: Mosquitto) -> None:
    """`vpp/bridge/state` is retained online; `vpp/bridge/info` names the versions (bridge and interface) and
    limits, not the token."""
    with Probe(broker.port, subscribe="vpp/bridge/#") as probe:
        await probe.wait_for(lambda: probe.on("vpp/bridge/info"))
        state = probe.on("vpp/bridge/state")[-1]
        info = probe.on("vpp/bridge/info")[-1]
    assert state.retain and state.json() == {"state": "online"}
    assert info.json()["prefix"] == "vpp" and "rate_limit" in info.json() and "token" not in json.dumps(info.json())
    assert info.json()["interface"] == INTERFACE_VERSION


async def test_failed_when_api_says_no(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """`success: false` from the API ends in `failed` with code api_error and the API's message."""
    with Probe(broker.port) as probe:
        probe.publish("vpp/group/1234567890123456789/set", {"type": "manual", "action": "stop", "request_id": "nf"})
        failed = await probe.wait_status("vpp/group/1234567890123456789/state", "nf", "failed")
    assert failed["error"]["code"] == "api_error" and "does not exist" in failed["error"]["message"]


async def test_mqtt5_response_topic_and_correlation(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """A control command with an MQTT 5 response topic gets its lifecycle there too, with correlation data."""
    group_id, _ = group_and_members(sim)
    with Probe(broker.port, subscribe=["vpp/#", "my/replies"]) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "c5"},
                      response_topic="my/replies", correlation=b"corr-1")  # fmt: skip
        replies = await probe.wait_for(lambda: [m for m in probe.on("my/replies") if m.json()["status"] == "completed"])
    assert replies[0].correlation == b"corr-1" and not replies[0].retain


async def test_send_command_prints_the_lifecycle(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """`semookii-bridge send group <id> '<json>'` prints each state and exits 0 on completed."""
    import asyncio
    import sys

    group_id, _ = group_and_members(sim)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "semookii_bridge.cli", "send", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port),
        "group", group_id, '{"type":"manual","action":"stop"}', stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    statuses = [json.loads(line)["status"] for line in out.decode().splitlines()]
    assert proc.returncode == 0 and statuses == LIFECYCLE


async def test_send_on_the_safety_lane_goes_there_and_refuses_a_setpoint(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """`send --safety` publishes a stop on the safety lane (it completes, read by the lane's own session) and
    refuses a setpoint before publishing anything (exit 2)."""
    import asyncio
    import sys

    group_id, _ = group_and_members(sim)
    base = [
        sys.executable,
        "-m",
        "semookii_bridge.cli",
        "send",
        "--safety",
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        str(broker.port),
        "group",
        group_id,
    ]
    with Probe(broker.port, subscribe="vpp/safety/#") as probe:
        stop = await asyncio.create_subprocess_exec(
            *base, '{"type":"manual","action":"stop"}', stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(stop.communicate(), 30)
        setpoint = await asyncio.create_subprocess_exec(
            *base, '{"type":"power_control","active_power":-3000,"duration":60,"timeout":10}', stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(setpoint.communicate(), 30)
        lane = [m.topic for m in probe.on(f"vpp/safety/group/{group_id}/set")]
    assert stop.returncode == 0 and json.loads(out.decode().splitlines()[-1])["status"] == "completed"
    assert setpoint.returncode == 2 and "--safety takes only" in err.decode() and len(lane) == 1
