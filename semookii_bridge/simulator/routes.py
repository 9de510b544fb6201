"""The simulator's 18 endpoints: one small handler per path, (simulator, query, body) -> response, answering
in the document's envelopes (and with its quirks: ids as numbers here and strings there, `isSuccess`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from .state import CloudState
from .validation import InvalidParams, parse_control


class Sim(Protocol):
    """What a handler uses of the simulator: its state, and the query endpoints' envelope."""

    state: CloudState

    def query_envelope(self, result: Any) -> web.Response: ...


Handler = Callable[[Sim, Mapping[str, str], dict[str, Any] | None], web.StreamResponse]


def envelope(result: Any, *, ok: bool = True, exception: str | None = None) -> web.Response:
    return web.json_response({"exception": exception, "result": result, "success": ok})


def _need(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "").strip()
    if not value:
        raise InvalidParams(f"Required parameter '{name}' is not present")
    return value


def _int_param(query: Mapping[str, str], name: str) -> int:
    value = _need(query, name)
    if not value.isdigit():
        raise InvalidParams(f"Parameter '{name}' must be a number")
    return int(value)


def _id_list(query: Mapping[str, str]) -> list[str]:
    """Batch deletes: the table says `id`, the example sends `ids`; accept either."""
    raw = query.get("ids") or query.get("id") or ""
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if not ids:
        raise InvalidParams("Required parameter 'ids' is not present")
    return ids


def _single(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    request = parse_control(q)
    sn = _need(q, "sn")
    return envelope(int(sim.state.control(f"inverter:{sn}", [sn], request)))


def _batch(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    request = parse_control(q)
    sns = [s.strip() for s in _need(q, "snList").split(",") if s.strip()]
    return envelope(int(sim.state.control("batch", sns, request)))


def _group_control(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    request = parse_control(q)
    return envelope(int(sim.state.control_group(_need(q, "groupId"), request)))


def _group_add(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    return envelope(int(sim.state.add_group(_need(q, "name"))))


def _group_update(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.update_group(_need(q, "id"), _need(q, "name"))
    return envelope(None)


def _group_delete(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.delete_groups([_need(q, "id")])
    return envelope(None)


def _group_delete_batch(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.delete_groups(_id_list(q))
    return envelope(None)


def _page(rows: list[Any], q: Mapping[str, str]) -> tuple[int, list[Any]]:
    current, size = _int_param(q, "current"), _int_param(q, "size")
    if current < 1 or size < 1:
        raise InvalidParams("current and size must be positive")
    return len(rows), rows[(current - 1) * size : current * size]


def _group_json(sim: Sim, group: Any, *, id_as_number: bool) -> dict[str, Any]:
    return {
        "id": int(group.id) if id_as_number else group.id,
        "name": group.name,
        "num": len(sim.state.group_members(group.id)),
        "createTime": group.create_time,
        "updateTime": group.update_time,
    }


def _group_find_all(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    total, rows = _page(sim.state.list_groups(), q)
    return envelope({"num": total, "list": [_group_json(sim, g, id_as_number=True) for g in rows]})


def _group_find_like(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    rows = sim.state.list_groups(_need(q, "name"))
    return envelope({"num": len(rows), "list": [_group_json(sim, g, id_as_number=False) for g in rows]})


def _inverter_json(sim: Sim, row: Any) -> dict[str, Any]:
    return {
        "id": int(row.id),
        "groupId": int(row.group_id),
        "wifiSn": sim.state.wifi_sn_of(row.inverter_sn),
        "inverterSn": row.inverter_sn,
        "groupStatus": 1,
        "ratePower": sim.state.rate_power_of(row.inverter_sn),
        "createTime": row.create_time,
        "updateTime": row.update_time,
    }


def _inverter_add(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    return envelope(sim.state.add_inverter(_need(q, "groupId"), _need(q, "inverterSn")))


def _inverter_delete(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.delete_inverters([_need(q, "id")])
    return envelope(None)


def _inverter_delete_batch(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.delete_inverters(_id_list(q))
    return envelope(None)


def _inverter_update(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.replace_inverter(_need(q, "id"), _need(q, "newInverterSn"))
    return envelope(None, exception="update succeeded")


def _inverter_find_by_group(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    total, rows = _page(sim.state.list_inverters(_need(q, "groupId")), q)
    return envelope({"num": total, "list": [_inverter_json(sim, r) for r in rows]})


def _inverter_find_like(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    rows = sim.state.list_inverters(_need(q, "groupId"), q.get("wifiSn"), q.get("inverterSn"))
    return envelope({"num": len(rows), "list": [_inverter_json(sim, r) for r in rows]})


def _query_command(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    return sim.query_envelope({"taskId": sim.state.query_command(_need(q, "commandId"))})


def _query_result(sim: Sim, q: Mapping[str, str], _: Any) -> web.Response:
    return sim.query_envelope(sim.state.query_result(_need(q, "taskId")))


def _regsn(sim: Sim, _: Mapping[str, str], body: dict[str, Any] | None) -> web.Response:
    raw = str((body or {}).get("sns") or "")
    sns = [s.strip() for s in raw.split(",") if s.strip()]
    if not sns:
        raise InvalidParams("sns is required")
    if len(sns) > 100:
        raise InvalidParams("At most 100 sns per request")
    answer: dict[str, Any] = {"exception": None, "code": 0, "success": True}
    answer.update({k: ",".join(v) for k, v in sim.state.bind(sns).items() if v})
    return web.json_response(answer)


ROUTES: dict[str, Handler] = {
    "/commandapi/singleControl": _single,
    "/commandapi/batchTempControl": _batch,
    "/commandapi/groupControl": _group_control,
    "/vppgroup/add": _group_add,
    "/vppgroup/updateById": _group_update,
    "/vppgroup/deleteById": _group_delete,
    "/vppgroup/deleteBatch": _group_delete_batch,
    "/vppgroup/findAll": _group_find_all,
    "/vppgroup/findLikeName": _group_find_like,
    "/vppinverter/add": _inverter_add,
    "/vppinverter/deleteById": _inverter_delete,
    "/vppinverter/deleteBatch": _inverter_delete_batch,
    "/vppinverter/updateById": _inverter_update,
    "/vppinverter/findByGroupId": _inverter_find_by_group,
    "/vppinverter/findByLike": _inverter_find_like,
    "/commandapi/queryCommand": _query_command,
    "/commandapi/getQueryResult": _query_result,
    "/api/regsn": _regsn,
}
