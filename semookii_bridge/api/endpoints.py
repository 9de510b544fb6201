"""The 18 endpoints of the Cloud Control API document, with what retry and rate-limit policy need to know."""

from __future__ import annotations

import msgspec

from ..budget.ratelimit import Priority as Priority


class Endpoint(msgspec.Struct, frozen=True):
    """One API endpoint: its path, whether repeating it is harmless, and its rate-limit priority."""

    name: str
    path: str
    idempotent: bool
    priority: Priority


def _ep(name: str, path: str, idempotent: bool, priority: Priority) -> Endpoint:
    return Endpoint(name=name, path=path, idempotent=idempotent, priority=priority)


C, M, P = Priority.CONTROL, Priority.MANAGEMENT, Priority.POLL

SINGLE_CONTROL = _ep("single_control", "/commandapi/singleControl", False, C)
BATCH_CONTROL = _ep("batch_control", "/commandapi/batchTempControl", False, C)
GROUP_CONTROL = _ep("group_control", "/commandapi/groupControl", False, C)
GROUP_ADD = _ep("group_add", "/vppgroup/add", False, M)
GROUP_UPDATE = _ep("group_update", "/vppgroup/updateById", False, M)
GROUP_DELETE = _ep("group_delete", "/vppgroup/deleteById", False, M)
GROUP_DELETE_BATCH = _ep("group_delete_batch", "/vppgroup/deleteBatch", False, M)
GROUP_FIND_ALL = _ep("group_find_all", "/vppgroup/findAll", True, M)
GROUP_FIND_LIKE_NAME = _ep("group_find_like_name", "/vppgroup/findLikeName", True, M)
INVERTER_ADD = _ep("inverter_add", "/vppinverter/add", False, M)
INVERTER_DELETE = _ep("inverter_delete", "/vppinverter/deleteById", False, M)
INVERTER_DELETE_BATCH = _ep("inverter_delete_batch", "/vppinverter/deleteBatch", False, M)
INVERTER_UPDATE = _ep("inverter_update", "/vppinverter/updateById", False, M)
INVERTER_FIND_BY_GROUP = _ep("inverter_find_by_group", "/vppinverter/findByGroupId", True, M)
INVERTER_FIND_LIKE = _ep("inverter_find_like", "/vppinverter/findByLike", True, M)
QUERY_COMMAND = _ep("query_command", "/commandapi/queryCommand", True, P)
GET_QUERY_RESULT = _ep("get_query_result", "/commandapi/getQueryResult", True, P)
REGISTER_SN = _ep("register_sn", "/api/regsn", False, M)

ALL: tuple[Endpoint, ...] = (
    SINGLE_CONTROL,
    BATCH_CONTROL,
    GROUP_CONTROL,
    GROUP_ADD,
    GROUP_UPDATE,
    GROUP_DELETE,
    GROUP_DELETE_BATCH,
    GROUP_FIND_ALL,
    GROUP_FIND_LIKE_NAME,
    INVERTER_ADD,
    INVERTER_DELETE,
    INVERTER_DELETE_BATCH,
    INVERTER_UPDATE,
    INVERTER_FIND_BY_GROUP,
    INVERTER_FIND_LIKE,
    QUERY_COMMAND,
    GET_QUERY_RESULT,
    REGISTER_SN,
)
BY_PATH: dict[str, Endpoint] = {e.path: e for e in ALL}
