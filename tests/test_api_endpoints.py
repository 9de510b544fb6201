"""Every endpoint of the client against the simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio

import pytest

from semookii_bridge.api import ApiRejected, CloudClient, ControlParams, RetryPolicy
from semookii_bridge.budget.ratelimit import RateLimiter, TokenBucket
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import LimiterGate
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN

POWER = ControlParams(super_type=0, mode=1, set_type=1, active_power=1000, reactive_power=0, proid_time=600, timeout=10)


def first_group(sim: RunningSimulator) -> str:
    return sim.simulator.state.list_groups()[0].id


def members(sim: RunningSimulator, group_id: str) -> list[str]:
    return [i.inverter_sn for i in sim.simulator.state.group_members(group_id)]


async def test_group_control_returns_command_id_as_string(client: CloudClient, sim: RunningSimulator) -> None:
    """groupControl answers the command id as a JSON number; the client returns a 19-digit string."""
    command_id = await client.group_control(first_group(sim), POWER)
    assert isinstance(command_id, str) and command_id.isdigit() and len(command_id) == 19


async def test_single_control_targets_one_sn(client: CloudClient, sim: RunningSimulator) -> None:
    """singleControl sends `sn` and the power parameters."""
    sn = members(sim, first_group(sim))[0]
    await client.single_control(sn, POWER)
    (call,) = sim.simulator.calls_to("/commandapi/singleControl")
    assert call.params["sn"] == sn and call.params["activePower"] == "1000"


async def test_batch_control_joins_sns_with_commas(client: CloudClient, sim: RunningSimulator) -> None:
    """batchTempControl takes `snList` comma separated."""
    sns = members(sim, first_group(sim))[:2]
    await client.batch_control(sns, ControlParams(super_type=1, system_swich=1))
    (call,) = sim.simulator.calls_to("/commandapi/batchTempControl")
    assert call.params["snList"] == ",".join(sns)


async def test_group_add_update_and_search(client: CloudClient) -> None:
    """A new group can be renamed and found by part of its name."""
    group_id = await client.group_add("north-field")
    await client.group_update(group_id, "north-field-2")
    page = await client.group_find_like_name("field-2")
    assert [(g.id, g.name) for g in page.items] == [(group_id, "north-field-2")]


async def test_group_delete_one_and_batch(client: CloudClient) -> None:
    """deleteById removes one group, deleteBatch several."""
    ids = [await client.group_add(f"g{i}") for i in range(3)]
    await client.group_delete(ids[0])
    await client.group_delete_batch(ids[1:])
    names = {g.name for g in await client.group_list_all()}
    assert not names & {"g0", "g1", "g2"}


async def test_group_find_all_pages(client: CloudClient) -> None:
    """findAll pages by `current` and `size`; list_all reads every page."""
    for i in range(5):
        await client.group_add(f"paged-{i}")
    page = await client.group_find_all(current=2, size=3)
    assert page.total == 7 and len(page.items) == 3
    assert len(await client.group_list_all(page_size=2)) == 7


async def test_inverter_add_list_search_update_delete(client: CloudClient, sim: RunningSimulator) -> None:
    """An inverter goes through add, list, fuzzy search, replace and delete."""
    spare, other = [d for d in sim.simulator.state.devices.values() if d.bound][-2:]
    group_id = await client.group_add("inv-ops")
    inverter_id = await client.inverter_add(group_id, spare.inverter_sn)
    listed = await client.inverter_list_all(group_id)
    assert [(i.id, i.inverter_sn, i.group_id) for i in listed] == [(inverter_id, spare.inverter_sn, group_id)]
    found = await client.inverter_find_like(group_id, wifi_sn=spare.wifi_sn[:5])
    assert [i.wifi_sn for i in found.items] == [spare.wifi_sn]
    await client.inverter_update(inverter_id, other.inverter_sn)
    assert (await client.inverter_find_by_group(group_id)).items[0].inverter_sn == other.inverter_sn
    await client.inverter_delete(inverter_id)
    assert (await client.inverter_find_by_group(group_id)).total == 0


async def test_inverter_delete_batch(client: CloudClient, sim: RunningSimulator) -> None:
    """deleteBatch removes several inverters of a group at once."""
    group_id = first_group(sim)
    ids = [i.id for i in await client.inverter_list_all(group_id)]
    await client.inverter_delete_batch(ids[:2])
    assert [i.id for i in await client.inverter_list_all(group_id)] == ids[2:]


async def test_query_command_then_result(client: CloudClient, sim: RunningSimulator) -> None:
    """queryCommand gives a task id after the dispatch delay, getQueryResult the per-device map."""
    group_id = first_group(sim)
    command_id = await client.group_control(group_id, POWER)
    task_id = await client.query_command(command_id)
    while task_id is None:
        await asyncio.sleep(0.02)
        task_id = await client.query_command(command_id)
    results = await client.get_query_result(task_id)
    while results is None:
        await asyncio.sleep(0.02)
        results = await client.get_query_result(task_id)
    wifi = {sim.simulator.state.wifi_sn_of(sn) for sn in members(sim, group_id)}
    assert set(results) == wifi and set(results.values()) == {"success"}


async def test_bind_sorts_sns(client: CloudClient, sim: RunningSimulator) -> None:
    """regsn answers which sns were bound, already bound, or do not exist."""
    devices = list(sim.simulator.state.devices.values())
    unbound = next(d.wifi_sn for d in devices if not d.bound)
    bound = next(d.wifi_sn for d in devices if d.bound)
    result = await client.bind_sns([unbound, bound, "NOPE0001"])
    assert (result.bound, result.already_bound, result.non_existent) == ([unbound], [bound], ["NOPE0001"])


async def test_api_rejection_carries_exception_text(client: CloudClient) -> None:
    """`success: false` raises ApiRejected (code api_error) with the API's `exception` message."""
    with pytest.raises(ApiRejected) as info:
        await client.group_control("1000000000000000000", POWER)
    assert info.value.code == "api_error" and "does not exist" in info.value.message


async def test_control_calls_overtake_waiting_polls_through_the_client(sim: RunningSimulator) -> None:
    """Through the client's own endpoint table, a control call waiting for a token goes before earlier polls."""
    limiter = RateLimiter(TokenBucket(10, 1))
    async with CloudClient(sim.base_url, Secret(TOKEN), retry=RetryPolicy.instant(), gate=LimiterGate(limiter)) as c:
        command_id = await c.group_control(first_group(sim), POWER)
        polls = [asyncio.create_task(c.query_command(command_id)) for _ in range(2)]
        polls.append(asyncio.create_task(c.get_query_result("1")))
        await asyncio.sleep(0.01)
        control = asyncio.create_task(c.group_control(first_group(sim), POWER))
        await asyncio.gather(control, *polls, return_exceptions=True)
    await limiter.close()
    order = [call.path for call in sim.simulator.calls]
    assert order[:2] == ["/commandapi/groupControl", "/commandapi/groupControl"], order


async def test_each_call_sends_the_documents_parameter_names(client: CloudClient, sim: RunningSimulator) -> None:
    """The query parameters each call sends, as the vendor's document names them, counted at the simulator:
    search by serial or dongle, paging of the full listings, the serial list of a batch, one inverter's sn."""
    state = sim.simulator.state
    group = str(state.list_groups()[0].id)
    rows = state.list_inverters(group)
    await client.inverter_find_like(group, sn=rows[0].inverter_sn[:6])
    await client.inverter_find_like(group, wifi_sn="SW")
    await client.group_list_all(page_size=1)
    await client.inverter_list_all(group, page_size=2)
    await client.batch_control([r.inverter_sn for r in rows[:2]], ControlParams(super_type=1, system_swich=1))
    await client.single_control(rows[0].inverter_sn, ControlParams(super_type=1, system_swich=1))
    calls = [(c.path.rsplit("/", 1)[1], {k: v for k, v in c.params.items() if k != "tokenId"})
             for c in sim.simulator.calls]  # fmt: skip
    likes = [p for name, p in calls if name == "findByLike"]
    assert likes == [{"groupId": group, "inverterSn": rows[0].inverter_sn[:6]}, {"groupId": group, "wifiSn": "SW"}]
    pages = [p for name, p in calls if name in ("findAll", "findByGroupId")]
    assert pages[0] == {"current": "1", "size": "1"} and {"current": "2", "size": "1"} in pages
    assert {"groupId": group, "current": "1", "size": "2"} in pages
    batch = next(p for name, p in calls if name == "batchTempControl")
    assert batch["snList"] == ",".join(r.inverter_sn for r in rows[:2])
    single = next(p for name, p in calls if name == "singleControl")
    assert single["sn"] == rows[0].inverter_sn


@pytest.mark.parametrize(("call", "endpoint"), [
    ("group_add", "group_add"), ("inverter_add", "inverter_add"), ("group_control", "group_control"),
])  # fmt: skip
async def test_an_answer_without_the_id_it_promised_is_a_bad_response(call: str, endpoint: str) -> None:
    """`success: true` with a null result where an id is due: BadResponse naming the endpoint and what is
    missing, never a None that a caller would journal as an id."""
    from aiohttp import web

    from semookii_bridge.api import BadResponse

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"success": True, "result": None, "exception": None})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    args = {"group_add": ("east",), "inverter_add": ("1", "SN1"),
            "group_control": ("1", ControlParams(super_type=1, system_swich=1))}[call]  # fmt: skip
    try:
        async with CloudClient(f"http://127.0.0.1:{port}", Secret(TOKEN), retry=RetryPolicy.instant()) as c:
            with pytest.raises(BadResponse) as info:
                await getattr(c, call)(*args)
    finally:
        await runner.cleanup()
    assert info.value.endpoint == endpoint and "returned no" in info.value.message and "id" in info.value.message
