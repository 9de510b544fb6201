"""The simulator behaves like the Cloud API: validation, token check, rate limit, timing."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from semookii_bridge.simulator import RunningSimulator, SimConfig, serve
from semookii_bridge.simulator.validation import InvalidParams, parse_control

from .support.bridges import TOKEN


async def post(sim: RunningSimulator, path: str, **params: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.post(sim.base_url + path, params=params) as response:
        return response.status, (await response.json(content_type=None) if response.status != 429 else {})


async def test_missing_required_parameter_is_rejected_like_the_api(sim: RunningSimulator) -> None:
    """Power control without activePower: `success: false` naming the parameter."""
    group_id = sim.simulator.state.list_groups()[0].id
    status, body = await post(
        sim,
        "/commandapi/groupControl",
        tokenId=TOKEN,
        groupId=group_id,
        superType="0",
        mode="1",
        reactivePower="0",
        setType="1",
        proidTime="60",
        timeout="1",
    )
    assert status == 200 and body["success"] is False and "activePower" in str(body["exception"])


async def test_bad_token_is_refused(sim: RunningSimulator) -> None:
    """An unknown tokenId gets `success: false` and nothing happens."""
    _, body = await post(sim, "/vppgroup/add", tokenId="wrong", name="x")
    assert body["success"] is False and len(sim.simulator.state.groups) == 2


async def test_unknown_path_is_404(sim: RunningSimulator) -> None:
    """A path the API does not have answers 404."""
    status, _ = await post(sim, "/vppgroup/nothing", tokenId=TOKEN)
    assert status == 404


async def test_rate_limit_answers_429_with_retry_after() -> None:
    """Past the per-token burst, calls get HTTP 429 with a Retry-After header."""
    async with serve(SimConfig(tokens=[TOKEN], rate=1, burst=2)) as sim, aiohttp.ClientSession() as session:
        statuses, retry_after = [], None
        for _ in range(3):
            async with session.post(
                sim.base_url + "/vppgroup/findLikeName", params={"tokenId": TOKEN, "name": "v"}
            ) as r:
                statuses.append(r.status)
                retry_after = r.headers.get("Retry-After", retry_after)
        assert statuses == [200, 200, 429] and retry_after == "1"


async def test_results_come_after_the_configured_delay() -> None:
    """A command has no task id before task_delay and no results before result_delay."""
    now = [100.0]
    async with serve(SimConfig(tokens=[TOKEN], task_delay=5, result_delay=10), clock=lambda: now[0]) as sim:
        state = sim.simulator.state
        group_id = state.list_groups()[0].id
        command_id = state.control_group(group_id, parse_control({"superType": "1", "systemSwich": "1"}))
        assert state.query_command(command_id) is None
        now[0] += 5
        task_id = state.query_command(command_id)
        assert task_id is not None and state.query_result(task_id) is None
        now[0] += 5
        assert state.query_result(task_id) is not None


def test_ids_have_19_digits() -> None:
    """Seeded groups and inverters get 19-digit ids, as the real cloud's."""
    from semookii_bridge.simulator import Simulator

    state = Simulator(SimConfig()).state
    ids = [*state.groups, *state.inverters]
    assert ids and all(len(i) == 19 and i.isdigit() for i in ids)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"superType": "0"}, "mode"),
        ({"superType": "2", "mode": "10", "chargeStartTime1Hour": "1"}, "chargeStartTime1Minute"),
        (
            {
                "superType": "0",
                "mode": "1",
                "activePower": "1",
                "reactivePower": "0",
                "setType": "2",
                "proidTime": "1",
                "timeout": "1",
            },
            "setType",
        ),
        ({"superType": "1", "systemSwich": "7"}, "systemSwich"),
        ({"superType": "2", "mode": "7"}, "mode"),
    ],
)
def test_parameter_validation_names_the_problem(query: dict[str, str], fragment: str) -> None:
    """The server-side checks of the "Required if" column name the offending parameter."""
    with pytest.raises(InvalidParams, match=fragment):
        parse_control(query)


async def test_too_many_over_limit_calls_in_a_row_ban_the_token() -> None:
    """With ban_after = 2, the second over-limit call in a row starts a ban: every call is refused with the
    vendor's words until it ends."""
    config = SimConfig(tokens=[TOKEN], rate=0.5, burst=1, ban_after=2, ban_for=0.5)
    async with serve(config) as sim:
        assert (await post(sim, "/vppgroup/findAll", tokenId=TOKEN, current="1", size="10"))[0] == 200
        assert (await post(sim, "/vppgroup/findAll", tokenId=TOKEN, current="1", size="10"))[0] == 429
        status, body = await post(sim, "/vppgroup/findAll", tokenId=TOKEN, current="1", size="10")
        assert status == 200 and body["success"] is False
        assert body["exception"] == "Several violations in a row, prohibit calls within the next 1 seconds"
        assert sim.simulator.bans == 1
        assert (await post(sim, "/vppgroup/findAll", tokenId=TOKEN, current="1", size="10"))[1]["success"] is False
        await asyncio.sleep(0.6)
        await post(sim, "/vppgroup/findAll", tokenId=TOKEN, current="1", size="10")
        assert [c.outcome for c in sim.simulator.calls] == ["ok", "rate_limited", "banned", "banned", "rate_limited"]


async def test_an_in_limit_call_resets_the_violation_count() -> None:
    """Over-limit calls must come in a row to ban: a call within the limit starts the count again."""
    config = SimConfig(tokens=[TOKEN], rate=20, burst=1, ban_after=2, ban_for=60)
    async with serve(config) as sim:
        for _ in range(3):
            assert (await post(sim, "/vppgroup/findAll", tokenId=TOKEN, current="1", size="10"))[0] == 200
            assert (await post(sim, "/vppgroup/findAll", tokenId=TOKEN, current="1", size="10"))[0] == 429
            await asyncio.sleep(0.06)
        assert sim.simulator.bans == 0


async def test_silent_devices_never_answer_and_can_be_toggled() -> None:
    """`silent_devices = 2` silences the first inverter of each of two groups (result "null"); the admin
    route turns one back on."""
    async with serve(SimConfig(tokens=[TOKEN], groups=2, inverters_per_group=2, silent_devices=2)) as running:
        state = running.simulator.state
        firsts = [state.list_inverters(g.id)[0].inverter_sn for g in state.list_groups()]
        assert [not state.devices[state.wifi_sn_of(sn)].online for sn in firsts] == [True, True]
        assert sum(not d.online for d in state.devices.values()) == 2
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{running.base_url}/_sim/devices/{firsts[0]}/silent?on=false") as r:
                assert r.status == 200
            async with http.post(f"{running.base_url}/_sim/devices/NOPE/silent") as r:
                assert r.status == 404
        assert state.devices[state.wifi_sn_of(firsts[0])].online


async def test_dates_are_written_in_the_sites_time_zone() -> None:
    """`tz = "Asia/Shanghai"`: createTime is the site's local time (UTC+8), as the document says; default UTC."""
    from datetime import UTC, datetime, timedelta

    for tz, offset in (("Asia/Shanghai", 8), ("UTC", 0)):
        async with serve(SimConfig(tokens=[TOKEN], groups=1, tz=tz)) as running:
            created = running.simulator.state.list_groups()[0].create_time
        written = datetime.strptime(created, "%Y-%m-%d %H:%M:%S")
        expected = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=offset)
        assert abs((written - expected).total_seconds()) < 120, tz
