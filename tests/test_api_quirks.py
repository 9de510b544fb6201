"""Each Cloud API quirk of CONTRACT.md section 6, handled by the client (and played by the simulator)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from semookii_bridge.api import CloudClient, ControlParams, RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.control.commands import Schedule, decode_command, to_params
from semookii_bridge.simulator import RunningSimulator, SimConfig, serve

from .support.bridges import TOKEN


async def test_parameters_travel_in_query_string_of_a_post(client: CloudClient, sim: RunningSimulator) -> None:
    """Every call is a POST with its parameters (and tokenId) in the query string."""
    await client.group_add("q")
    (call,) = sim.simulator.calls_to("/vppgroup/add")
    assert call.params == {"name": "q"} and call.token == "valid" and call.status == 200


async def test_regsn_takes_a_json_body_with_token(client: CloudClient, sim: RunningSimulator) -> None:
    """/api/regsn is the exception: a JSON body `{"token", "sns"}`."""
    await client.bind_sns(["A1", "B2"])
    (call,) = sim.simulator.calls_to("/api/regsn")
    assert call.body == {"sns": "A1,B2"} and call.token == "valid" and call.params == {}


@pytest.mark.parametrize("key", ["isSuccess", "success"])
async def test_query_endpoints_accept_either_success_key(key: str) -> None:
    """queryCommand/getQueryResult document `isSuccess`, their examples `success`: both are honoured."""
    config = SimConfig(tokens=[TOKEN], task_delay=0, result_delay=0, query_success_key=key)  # type: ignore[arg-type]
    async with serve(config) as running, CloudClient(running.base_url, Secret(TOKEN)) as client:
        group_id = running.simulator.state.list_groups()[0].id
        command_id = await client.group_control(group_id, ControlParams(super_type=1, system_swich=0))
        task_id = await client.query_command(command_id)
        assert task_id and await client.get_query_result(task_id)


async def test_update_succeeded_exception_is_not_an_error(client: CloudClient, sim: RunningSimulator) -> None:
    """inverter updateById answers `"exception": "update succeeded"` with success true: a success."""
    state = sim.simulator.state
    inverter = next(iter(state.inverters.values()))
    spare = next(
        d
        for d in state.devices.values()
        if d.bound and d.inverter_sn not in {i.inverter_sn for i in state.inverters.values()}
    )
    await client.inverter_update(inverter.id, spare.inverter_sn)
    assert state.inverters[inverter.id].inverter_sn == spare.inverter_sn


async def test_ids_as_numbers_and_strings_both_become_strings(client: CloudClient, sim: RunningSimulator) -> None:
    """findAll sends ids as numbers, findLikeName as strings: the client gives equal strings for both."""
    by_all = {g.id for g in (await client.group_find_all(1, 50)).items}
    by_like = {g.id for g in (await client.group_find_like_name("vpp")).items}
    assert by_all == by_like and all(type(i) is not int and i.isdigit() for i in by_all)


async def test_system_switch_is_sent_in_both_spellings(client: CloudClient, sim: RunningSimulator) -> None:
    """The tables say `systemSwich`, the examples `systemSwitch`: both are sent."""
    group_id = sim.simulator.state.list_groups()[0].id
    await client.group_control(group_id, ControlParams(super_type=1, system_swich=1))
    (call,) = sim.simulator.calls_to("/commandapi/groupControl")
    assert call.params["systemSwich"] == "1" and call.params["systemSwitch"] == "1"


def test_schedule_uses_the_apis_own_spellings() -> None:
    """`proidTime`, `dischargerEndTime1*` (period 1) but `dischargeEndTime2*` (period 2) as the API spells them."""
    command = decode_command(
        b'{"type":"schedule","period1":{"charge":["01:00","05:30"],"discharge":["17:00","21:15"]},'
        b'"period2":{"charge":["10:00","11:00"],"discharge":["22:00","23:45"]}}'
    )
    assert isinstance(command, Schedule)
    query = to_params(command).to_query()
    assert query["dischargerEndTime1Hour"] == "21" and query["dischargerEndTime1Minute"] == "15"
    assert query["dischargeEndTime2Hour"] == "23" and query["dischargeEndTime2Minute"] == "45"
    assert query["p2TimeSetEnable"] == "1"
    power = to_params(decode_command(b'{"type":"power_control","active_power":5,"duration":60,"timeout":1}'))
    assert power.to_query()["proidTime"] == "60"


async def test_batch_deletes_send_id_and_ids(client: CloudClient, sim: RunningSimulator) -> None:
    """The table names the batch-delete parameter `id`, the example `ids`: both are sent, equal."""
    ids = [await client.group_add(f"d{i}") for i in range(2)]
    await client.group_delete_batch(ids)
    (call,) = sim.simulator.calls_to("/vppgroup/deleteBatch")
    assert call.params["id"] == call.params["ids"] == ",".join(ids)


async def test_group_and_batch_mode1_send_active_power(client: CloudClient, sim: RunningSimulator) -> None:
    """The group and batch tables omit `activePower` for mode 1; it is sent anyway (and required)."""
    params = to_params(decode_command(b'{"type":"power_control","active_power":-3000,"duration":600,"timeout":10}'))
    group_id = sim.simulator.state.list_groups()[0].id
    await client.group_control(group_id, params)
    sns = [i.inverter_sn for i in sim.simulator.state.group_members(group_id)]
    await client.batch_control(sns, params)
    for path in ("/commandapi/groupControl", "/commandapi/batchTempControl"):
        (call,) = sim.simulator.calls_to(path)
        assert call.params["activePower"] == "-3000"


async def test_query_result_may_hold_the_string_null(client: CloudClient, sim: RunningSimulator) -> None:
    """getQueryResult maps dongles to status strings, `"null"` for a device that never answered."""
    state = sim.simulator.state
    group_id = state.list_groups()[0].id
    offline = state.wifi_sn_of(state.group_members(group_id)[0].inverter_sn)
    state.devices[offline].online = False
    state.timings.task_delay = state.timings.result_delay = 0
    command_id = await client.group_control(group_id, ControlParams(super_type=1, system_swich=1))
    task_id = await client.query_command(command_id)
    assert task_id is not None
    results = await client.get_query_result(task_id)
    assert results is not None and results[offline] == "null" and list(results.values()).count("success") == 2


async def test_regsn_keys_with_spaces_become_lists(client: CloudClient, sim: RunningSimulator) -> None:
    """regsn answers `"Binding success": "A,B"`; the client returns lists under plain names."""
    unbound = [d.wifi_sn for d in sim.simulator.state.devices.values() if not d.bound]
    result = await client.bind_sns(unbound)
    assert result.bound == unbound and result.failed == []


async def test_regsn_splits_into_calls_of_at_most_100(client: CloudClient, sim: RunningSimulator) -> None:
    """250 sns go out as three calls of 100, 100 and 50; results are merged."""
    sns = [f"X{i:05d}" for i in range(250)]
    result = await client.bind_sns(sns)
    sizes = [len(c.body["sns"].split(",")) for c in sim.simulator.calls_to("/api/regsn") if c.body]
    assert sizes == [100, 100, 50] and result.non_existent == sns


@contextlib.asynccontextmanager
async def regsn_server(handler: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    """A stand-in /api/regsn on a loopback port, answering with `handler`; yields its base URL."""
    app = web.Application()
    app.router.add_post("/api/regsn", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_regsn_binding_fail_key_is_read() -> None:
    """A `"Binding fail"` list (never produced by the simulator) is read too."""

    async def regsn(request: web.Request) -> web.Response:
        return web.json_response({"exception": "", "success": True, "Binding fail": "AAA, BBB"})

    async with regsn_server(regsn) as url, CloudClient(url, Secret(TOKEN), retry=RetryPolicy.instant()) as client:
        assert (await client.bind_sns(["AAA", "BBB"])).failed == ["AAA", "BBB"]


def test_control_params_reject_out_of_range_values() -> None:
    """The shared parameter model enforces the document's ranges (|power| <= 65535, SoC 0..100)."""
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"superType": 0, "activePower": 70000}, ControlParams)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"superType": 2, "minSoc": 101}, ControlParams)
    assert json.loads(msgspec.json.encode(ControlParams(super_type=1))) == {"superType": 1}


async def test_regsn_sends_the_token_under_both_documented_names() -> None:
    """The parameter table names `tokenId`, the example body `token`: the client sends both, same value."""
    bodies: list[dict[str, str]] = []

    async def regsn(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.json_response({"success": True, "Binding success": "A1"})

    async with regsn_server(regsn) as url, CloudClient(url, Secret("tok-1"), retry=RetryPolicy.instant()) as c:
        assert (await c.bind_sns(["A1"])).bound == ["A1"]
    assert bodies == [{"tokenId": "tok-1", "token": "tok-1", "sns": "A1"}]
