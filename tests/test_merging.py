"""Merged control calls through mosquitto, the bridge and the simulator, counted at the simulator."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator, SimConfig

from .support.bridges import TOKEN
from .support.broker import Mosquitto, Probe

SETPOINT = {"type": "power_control", "active_power": -3000, "duration": 600, "timeout": 10}
CONTROL_PATHS = ("/commandapi/singleControl", "/commandapi/batchTempControl")


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(tokens=[TOKEN], task_delay=0.05, result_delay=0.1, groups=2, inverters_per_group=25)


async def merging_bridge(make_bridge: Callable[..., Awaitable[Service]], **commands: Any) -> Service:
    """A bridge with merging on at `rate_limit`, started once its inventory is read."""
    rate = commands.pop("rate", 1.0)
    service = await make_bridge(rate_limit={"rate": rate, "burst": 2}, commands={"merge": True, **commands})
    assert service.bridge is not None
    await asyncio.wait_for(service.bridge.inventory.loaded.wait(), 10)
    return service


def fleet(sim: RunningSimulator) -> list[str]:
    """Every inverter serial in a group."""
    state = sim.simulator.state
    return [row.inverter_sn for g in state.list_groups() for row in state.list_inverters(g.id)]


def control_calls(sim: RunningSimulator) -> list[tuple[str, list[str], str]]:
    """(path, serials, activePower) of every control call the simulator saw."""
    out = []
    for call in sim.simulator.calls:
        if call.path in CONTROL_PATHS:
            sns = (call.params.get("snList") or call.params.get("sn") or "").split(",")
            out.append((call.path, sns, call.params.get("activePower", "")))
    return out


async def test_identical_setpoints_merge_into_few_batch_calls(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """40 identical setpoints at 1 call/s, burst 2, are accepted within 10 s in at most 4 control calls, each
    inverter in exactly one call; one different setpoint among them goes out with its own value."""
    await merging_bridge(make_bridge, track="accepted")
    sns = fleet(sim)[:41]
    with Probe(broker.port, subscribe="vpp/inverter/+/state") as probe:
        for n, sn in enumerate(sns):
            power = -1000 if n == 20 else SETPOINT["active_power"]
            probe.publish(f"vpp/inverter/{sn}/set", {**SETPOINT, "active_power": power, "request_id": f"m{n}"})
        for n, sn in enumerate(sns):
            await probe.wait_status(f"vpp/inverter/{sn}/state", f"m{n}", "completed", timeout=10)
    calls = control_calls(sim)
    assert len(calls) <= 4, calls
    assert Counter(sn for _, call_sns, _ in calls for sn in call_sns) == Counter(sns)
    (odd,) = [c for c in calls if c[2] == "-1000"]
    assert odd[1] == [sns[20]]


async def test_merged_commands_share_the_call_and_get_their_own_results(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Merged commands keep their own request_id and state topic, share command_id and task_id, and each
    `completed` carries only its own dongle's entry; the call is polled once, not once per command."""
    await merging_bridge(make_bridge)
    sns = fleet(sim)[:5]
    state = sim.simulator.state
    with Probe(broker.port, subscribe="vpp/inverter/+/state") as probe:
        for n, sn in enumerate(sns):
            probe.publish(f"vpp/inverter/{sn}/set", {**SETPOINT, "request_id": f"r{n}"})
        done = [await probe.wait_status(f"vpp/inverter/{sn}/state", f"r{n}", "completed", 20)
                for n, sn in enumerate(sns)]  # fmt: skip
    batch = sim.simulator.calls_to("/commandapi/batchTempControl")
    assert batch, "the queued setpoints should have merged"
    shared = Counter(d["command_id"] for d in done)
    merged = [d for d in done if shared[d["command_id"]] > 1]
    assert len(merged) >= 2
    for doc in done:
        sn = doc["target"]["id"]
        assert doc["results"] == {state.wifi_sn_of(sn): "success"}
    commands = {d["command_id"] for d in done}
    assert len(sim.simulator.calls_to("/commandapi/queryCommand")) == len(commands)
    assert len({d["task_id"] for d in merged}) == len({d["command_id"] for d in merged})


async def test_a_newer_setpoint_takes_its_inverter_out_of_a_pending_merge(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Latest wins per inverter: while a merge waits for a token, a newer setpoint for one inverter supersedes
    that inverter's queued one, which is sent in no call; the newer one is sent with its own value."""
    await merging_bridge(make_bridge, rate=0.5, track="accepted")
    sns = fleet(sim)[:4]
    with Probe(broker.port, subscribe="vpp/inverter/+/state") as probe:
        probe.publish(f"vpp/inverter/{sns[3]}/set", {**SETPOINT, "request_id": "first"})
        await probe.wait_status(f"vpp/inverter/{sns[3]}/state", "first", "completed", 10)
        for n, sn in enumerate(sns[:3]):
            probe.publish(f"vpp/inverter/{sn}/set", {**SETPOINT, "request_id": f"old{n}"})
        probe.publish(f"vpp/inverter/{sns[0]}/set", {**SETPOINT, "active_power": 500, "request_id": "newer"})
        await probe.wait_status(f"vpp/inverter/{sns[0]}/state", "old0", "superseded", 5)
        await probe.wait_status(f"vpp/inverter/{sns[0]}/state", "newer", "completed", 20)
        for n, sn in enumerate(sns[1:3], start=1):
            await probe.wait_status(f"vpp/inverter/{sn}/state", f"old{n}", "completed", 20)
    calls = control_calls(sim)
    assert Counter(sn for _, s, _ in calls for sn in s)[sns[0]] == 1
    assert next(c for c in calls if sns[0] in c[1])[2] == "500"
    assert any(c[0].endswith("batchTempControl") and sorted(c[1]) == sorted(sns[1:3]) for c in calls)


async def test_an_inverter_outside_every_group_is_not_merged(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A serial the inventory does not list goes out alone, so that an API refusal of it cannot fail the others."""
    await merging_bridge(make_bridge, track="accepted")
    spare = next(d.inverter_sn for d in sim.simulator.state.devices.values()
                 if d.bound and d.inverter_sn not in fleet(sim))  # fmt: skip
    sns = [*fleet(sim)[:2], spare]
    with Probe(broker.port, subscribe="vpp/inverter/+/state") as probe:
        for n, sn in enumerate(sns):
            probe.publish(f"vpp/inverter/{sn}/set", {**SETPOINT, "request_id": f"s{n}"})
        for n, sn in enumerate(sns):
            await probe.wait_status(f"vpp/inverter/{sn}/state", f"s{n}", "completed", 20)
    assert ("/commandapi/singleControl", [spare], "-3000") in control_calls(sim)


async def test_merge_off_sends_one_call_per_command(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """`commands.merge = false`: no inventory calls, and each queued setpoint costs its own call."""
    await make_bridge(rate_limit={"rate": 5, "burst": 1}, commands={"merge": False, "track": "accepted"})
    sns = fleet(sim)[:4]
    with Probe(broker.port, subscribe="vpp/inverter/+/state") as probe:
        for n, sn in enumerate(sns):
            probe.publish(f"vpp/inverter/{sn}/set", {**SETPOINT, "request_id": f"o{n}"})
        for n, sn in enumerate(sns):
            await probe.wait_status(f"vpp/inverter/{sn}/state", f"o{n}", "completed", 10)
    assert [c[0] for c in control_calls(sim)] == ["/commandapi/singleControl"] * 4
    assert {c.path for c in sim.simulator.calls} == {"/commandapi/singleControl"}


def add_inverters(sim: RunningSimulator, count: int) -> list[str]:
    """`count` new inverters added at the vendor to the first group (as an installer would, after start)."""
    state = sim.simulator.state
    group_id = state.list_groups()[0].id
    added = []
    for _ in range(count):
        sn = state.add_device().inverter_sn
        state.add_inverter(group_id, sn)
        added.append(sn)
    return added


async def test_inverters_added_after_start_are_learned_and_merged(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """40 inverters added at the vendor after the inventory was read, then one setpoint to each at 1 call/s:
    one lookup (the group list and the one changed group's listing) and at most 4 control calls, all
    accepted within 10 s; a second burst to the same inverters costs no lookup."""
    service = await merging_bridge(make_bridge, track="accepted")
    sns = add_inverters(sim, 40)
    lists = len(sim.simulator.calls_to("/vppgroup/findAll")), len(sim.simulator.calls_to("/vppinverter/findByGroupId"))
    with Probe(broker.port, subscribe="vpp/inverter/+/state") as probe:
        for n, sn in enumerate(sns):
            probe.publish(f"vpp/inverter/{sn}/set", {**SETPOINT, "request_id": f"new{n}"})
        for n, sn in enumerate(sns):
            await probe.wait_status(f"vpp/inverter/{sn}/state", f"new{n}", "completed", timeout=10)
    calls = control_calls(sim)
    assert len(calls) <= 4, calls
    assert Counter(sn for _, call_sns, _ in calls for sn in call_sns) == Counter(sns)
    after = len(sim.simulator.calls_to("/vppgroup/findAll")), len(sim.simulator.calls_to("/vppinverter/findByGroupId"))
    assert (after[0] - lists[0], after[1] - lists[1]) == (1, 1)  # one group list, one changed group listed
    assert service.bridge is not None and service.bridge.learner.lookups == 1


async def test_unknown_serials_cost_one_lookup_then_none(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Commands to serials no group lists cause one lookup, then go out alone; more commands to them later
    cause no lookup again (junk cannot spend the budget)."""
    service = await merging_bridge(make_bridge, track="accepted")
    assert service.bridge is not None
    with Probe(broker.port, subscribe="vpp/inverter/+/state") as probe:
        for round_ in range(2):
            probe.publish("vpp/inverter/NOSUCH1/set", {**SETPOINT, "request_id": f"junk{round_}"})
            await probe.wait_for(lambda r=round_: probe.states("vpp/inverter/NOSUCH1/state", f"junk{r}")
                                 and probe.states("vpp/inverter/NOSUCH1/state", f"junk{r}")[-1]["status"]
                                 in ("completed", "failed"), timeout=15)  # fmt: skip
            if round_ == 0:
                await asyncio.sleep(11)  # past the spacing between lookups
    assert service.bridge.learner.lookups == 1


async def test_management_calls_update_the_inventory_at_once(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """An inverter added through `inverter/add` is known (merged) right after the answer, with one listing of
    its group; removed through `inverter/remove`, it is forgotten."""
    service = await merging_bridge(make_bridge, track="accepted")
    assert service.bridge is not None
    inventory = service.bridge.inventory
    state = sim.simulator.state
    group_id = state.list_groups()[0].id
    sn = state.add_device().inverter_sn
    with Probe(broker.port, subscribe="vpp/bridge/response/#") as probe:
        probe.publish("vpp/bridge/request/inverter/add", {"group_id": group_id, "sn": sn})
        added = await probe.wait_response("inverter/add")
        await probe.wait_for(lambda: inventory.known(sn), timeout=5)
        assert service.bridge.learner.lookups == 0  # no command-triggered lookup was needed
        probe.publish("vpp/bridge/request/inverter/remove", {"id": added["data"]["id"]})
        await probe.wait_response("inverter/remove")
        await probe.wait_for(lambda: not inventory.known(sn), timeout=5)
