"""Every management op obeys the allow-lists and `read_only`: one table over every op in OPS, each request
refused before any call, so the simulator sees 0 calls; what is inside the lists goes through."""

from __future__ import annotations

from typing import Any

import pytest

from semookii_bridge.api import CloudClient
from semookii_bridge.management.answer import handle_request
from semookii_bridge.management.guard import Guard
from semookii_bridge.management.ops import OPS, Scope
from semookii_bridge.simulator import RunningSimulator

ALLOWED_GROUP, OTHER_GROUP = "100", "200"
ALLOWED_SN, OTHER_SN = "SNALLOWED1", "SNOTHER002"
ROWS = {"11": (ALLOWED_GROUP, ALLOWED_SN), "22": (OTHER_GROUP, OTHER_SN)}
CALLS = {"501": Scope(groups=(ALLOWED_GROUP,)), "502": Scope(groups=(OTHER_GROUP,)),
         "t-in": Scope(sns=(ALLOWED_SN,)), "t-out": Scope(sns=(OTHER_SN,))}  # fmt: skip

OUTSIDE: dict[str, dict[str, Any]] = {
    "group/add": {"name": "new"},
    "group/rename": {"id": OTHER_GROUP, "name": "x"},
    "group/remove": {"ids": [ALLOWED_GROUP, OTHER_GROUP]},
    "group/list": None,  # a listing: filtered, not refused (test_listings_are_filtered)
    "group/search": None,
    "inverter/add": {"group_id": ALLOWED_GROUP, "sn": OTHER_SN},
    "inverter/remove": {"id": "22"},
    "inverter/replace": {"id": "11", "new_sn": OTHER_SN},
    "inverter/list": {"group_id": OTHER_GROUP},
    "inverter/search": {"group_id": OTHER_GROUP, "sn": "X"},
    "command/query": {"command_id": "502"},
    "task/result": {"task_id": "t-out"},
    "device/bind": {"sns": [ALLOWED_SN, OTHER_SN]},
}
"""For each op, a request that touches something outside the allow-lists (None: the op touches nothing)."""

UNKNOWN: dict[str, dict[str, Any]] = {
    "inverter/remove": {"id": "99"},
    "command/query": {"command_id": "599"},
    "task/result": {"task_id": "never-sent"},
}
"""Requests naming something the bridge cannot resolve: refused, since the lists cannot be checked."""

MUTATING = {"group/add": {"name": "n"}, "group/rename": {"id": ALLOWED_GROUP, "name": "n"},
            "group/remove": {"id": ALLOWED_GROUP}, "inverter/add": {"group_id": ALLOWED_GROUP, "sn": ALLOWED_SN},
            "inverter/remove": {"id": "11"}, "inverter/replace": {"id": "11", "new_sn": ALLOWED_SN},
            "device/bind": {"sns": [ALLOWED_SN]}}  # fmt: skip


def guard(*, read_only: bool = False, lists: bool = True) -> Guard:
    return Guard(allow_groups=frozenset({ALLOWED_GROUP}) if lists else frozenset(),
                 allow_inverters=frozenset({ALLOWED_SN}) if lists else frozenset(), read_only=read_only,
                 inverter_of=ROWS.get, call_scope=_call)  # fmt: skip


async def _call(command_id: str | None, task_id: str | None) -> Scope | None:
    return CALLS.get(command_id or task_id or "")


async def ask(client: CloudClient, op: str, body: dict[str, Any], g: Guard) -> dict[str, Any]:
    import msgspec

    response = await handle_request(client, op, msgspec.json.encode(body), max_payload=65536, guard=g)
    return {"status": response.status, "code": response.error.code if response.error else None}


def test_the_tables_cover_every_op() -> None:
    """A new op must say what it touches and whether it changes the account, or this test fails."""
    assert set(OUTSIDE) == set(OPS)
    assert set(MUTATING) == {name for name, op in OPS.items() if op.mutating}


REFUSED = [(op, body, False) for op, body in sorted(OUTSIDE.items()) if body is not None]
REFUSED += [(op, body, False) for op, body in sorted(UNKNOWN.items())]
REFUSED += [(op, body, True) for op, body in sorted(MUTATING.items())]
"""Outside the allow-lists, not resolvable under them, or changing the account under `read_only`."""


@pytest.mark.parametrize(("op", "body", "read_only"), REFUSED)
async def test_a_request_the_rules_refuse_costs_no_call(
    op: str, body: dict[str, Any], read_only: bool, client: CloudClient, sim: RunningSimulator
) -> None:
    """`not_allowed` before any call, so the simulator saw nothing: a request that touches a group or inverter
    outside the allow-lists, one naming an inverter row or control call the bridge cannot resolve (so it
    cannot check the lists), and, with `management.read_only` (no allow-lists), every op that changes the
    account."""
    before = len(sim.simulator.calls)
    rules = guard(read_only=True, lists=False) if read_only else guard()
    assert await ask(client, op, body, rules) == {"status": "error", "code": "not_allowed"}
    assert len(sim.simulator.calls) == before


@pytest.mark.parametrize(("op", "body"), [("command/query", {"command_id": "501"}),
                                          ("task/result", {"task_id": "t-in"}),
                                          ("inverter/list", {"group_id": ALLOWED_GROUP})])  # fmt: skip
async def test_a_request_inside_the_allow_lists_reaches_the_api(
    op: str, body: dict[str, Any], client: CloudClient, sim: RunningSimulator
) -> None:
    """The checks refuse only what is outside: these make their call (whatever the API answers)."""
    before = len(sim.simulator.calls)
    assert (await ask(client, op, body, guard()))["code"] != "not_allowed"
    assert len(sim.simulator.calls) > before


async def test_listings_leave_out_what_is_outside_the_allow_lists(client: CloudClient, sim: RunningSimulator) -> None:
    """group/list and group/search show only allowed groups; inverter/list only allowed serials; `total`
    counts what is shown. Without allow-lists everything is listed."""
    import msgspec

    groups = sim.simulator.state.list_groups()
    keep = str(groups[0].id)
    sns = [i.inverter_sn for i in sim.simulator.state.list_inverters(keep)]
    allowed = Guard(allow_groups=frozenset({keep}), allow_inverters=frozenset(sns[:1]))

    async def listed(op: str, body: dict[str, Any], g: Guard) -> dict[str, Any]:
        response = await handle_request(client, op, msgspec.json.encode(body), max_payload=65536, guard=g)
        assert response.status == "ok", response
        return response.data  # type: ignore[return-value]

    shown = await listed("group/list", {"all": True}, allowed)
    assert [g["id"] for g in shown["items"]] == [keep] and shown["total"] == 1
    everything = await listed("group/list", {"all": True}, Guard())
    assert everything["total"] == len(groups) > 1
    rows = await listed("inverter/list", {"group_id": keep, "all": True}, allowed)
    assert len(sns) > 1 and [r["inverter_sn"] for r in rows["items"]] == sns[:1] and rows["total"] == 1


SHAPES = [
    ("group/list", {}),
    ("group/list", {"page": 1, "size": 1}),
    ("group/list", {"page": 2, "size": 1}),
    ("group/list", {"all": True}),
    ("group/search", {"name": "{name}"}),
    ("inverter/list", {"group_id": "{group}"}),
    ("inverter/list", {"group_id": "{group}", "page": 1, "size": 1}),
    ("inverter/list", {"group_id": "{group}", "page": 2, "size": 1}),
    ("inverter/list", {"group_id": "{group}", "all": True}),
    ("inverter/search", {"group_id": "{group}", "sn": "{sn}"}),
]
"""Every answer that lists groups or inverters, paged (first page, a later one) and whole."""


@pytest.mark.parametrize(("op", "template"), SHAPES)
async def test_no_listing_shape_shows_what_is_outside_the_allow_lists(
    op: str, template: dict[str, Any], client: CloudClient, sim: RunningSimulator
) -> None:
    """With allow-lists naming the second group and its second inverter, no item of any listing shape is outside
    them, and `total` counts what is shown."""
    import msgspec

    groups = sim.simulator.state.list_groups()
    keep = groups[1]
    inverters = sim.simulator.state.list_inverters(str(keep.id))
    sn = inverters[1].inverter_sn
    values = {"group": str(keep.id), "name": keep.name, "sn": inverters[0].inverter_sn}
    body = {k: v.format(**values) if isinstance(v, str) else v for k, v in template.items()}
    allowed = Guard(allow_groups=frozenset({str(keep.id)}), allow_inverters=frozenset({sn}))
    response = await handle_request(client, op, msgspec.json.encode(body), max_payload=65536, guard=allowed)
    assert response.status == "ok", response
    data = msgspec.to_builtins(response.data)
    items = data["items"] if isinstance(data, dict) else data
    for item in items:
        if op.startswith("group"):
            assert str(item["id"]) == str(keep.id), item
        else:
            assert item["inverter_sn"] == sn, item
    if isinstance(data, dict) and "total" in data:
        assert data["total"] == len(items)
