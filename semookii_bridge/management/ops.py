"""The one dispatch table from op to (request type, handler, whether it changes the account, what it touches).
A handler turns a valid request into data and nothing else; `answer.handle_request` catches what it raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..control.jobs import job_from_entry
from ..errors import BridgeError
from ..journal.protocol import Entry
from .requests import (
    CommandQuery,
    DeviceBind,
    GroupAdd,
    GroupRename,
    GroupSearch,
    IdOrIds,
    InverterAdd,
    InverterList,
    InverterReplace,
    InverterSearch,
    ManagementApi,
    Paging,
    TaskResult,
    _Request,
)


def _one_of(req: IdOrIds) -> list[str] | str:
    if (req.id is None) == (req.ids is None):
        raise BridgeError("validation_error", "give exactly one of `id` or `ids`")
    return req.id if req.id is not None else list(req.ids or [])


async def _group_add(api: ManagementApi, r: GroupAdd) -> Any:
    return {"id": await api.group_add(r.name)}


async def _group_rename(api: ManagementApi, r: GroupRename) -> Any:
    await api.group_update(r.id, r.name)
    return {"id": r.id, "name": r.name}


async def _group_remove(api: ManagementApi, r: IdOrIds) -> Any:
    which = _one_of(r)
    if isinstance(which, str):
        await api.group_delete(which)
        return {"removed": [which]}
    await api.group_delete_batch(which)
    return {"removed": which}


async def _group_list(api: ManagementApi, r: Paging) -> Any:
    if r.all:
        groups = await api.group_list_all()
        return {"total": len(groups), "items": groups}
    return await api.group_find_all(r.page, r.size)


async def _group_search(api: ManagementApi, r: GroupSearch) -> Any:
    return await api.group_find_like_name(r.name)


async def _inverter_add(api: ManagementApi, r: InverterAdd) -> Any:
    return {"id": await api.inverter_add(r.group_id, r.sn)}


async def _inverter_remove(api: ManagementApi, r: IdOrIds) -> Any:
    which = _one_of(r)
    if isinstance(which, str):
        await api.inverter_delete(which)
        return {"removed": [which]}
    await api.inverter_delete_batch(which)
    return {"removed": which}


async def _inverter_replace(api: ManagementApi, r: InverterReplace) -> Any:
    await api.inverter_update(r.id, r.new_sn)
    return {"id": r.id, "sn": r.new_sn}


async def _inverter_list(api: ManagementApi, r: InverterList) -> Any:
    if r.all:
        inverters = await api.inverter_list_all(r.group_id)
        return {"total": len(inverters), "items": inverters}
    return await api.inverter_find_by_group(r.group_id, r.page, r.size)


async def _inverter_search(api: ManagementApi, r: InverterSearch) -> Any:
    return await api.inverter_find_like(r.group_id, wifi_sn=r.wifi_sn, sn=r.sn)


async def _command_query(api: ManagementApi, r: CommandQuery) -> Any:
    return {"command_id": r.command_id, "task_id": await api.query_command(r.command_id)}


async def _task_result(api: ManagementApi, r: TaskResult) -> Any:
    return {"task_id": r.task_id, "results": await api.get_query_result(r.task_id)}


async def _device_bind(api: ManagementApi, r: DeviceBind) -> Any:
    return await api.bind_sns(r.sns)


@dataclass(frozen=True)
class Scope:
    """What a request touches, for the allow-lists: group ids, inverter serials, inverter (row) ids."""

    groups: tuple[str, ...] = ()
    sns: tuple[str, ...] = ()
    inverter_ids: tuple[str, ...] = ()
    new_group: bool = False
    """Creates a group, whose id no allow-list can hold yet."""
    command_id: str | None = None
    task_id: str | None = None
    """A control call (by command or task id), which touches what the commands sent with it name."""


def scope_of(entries: Iterable[Entry]) -> Scope | None:
    """The groups and inverters the journaled commands of one control call touched (None: no such call)."""
    jobs = [job for job in map(job_from_entry, entries) if job is not None]
    if not jobs:
        return None
    groups = tuple(str(job.target.id) for job in jobs if job.target.kind == "group")
    return Scope(groups=groups, sns=tuple(sn for job in jobs for sn in job.inverters))


def _ids(r: IdOrIds) -> tuple[str, ...]:
    return tuple([r.id] if r.id is not None else list(r.ids or []))


@dataclass(frozen=True)
class Op:
    """A management operation: its request type, the handler that turns it into data, whether it changes
    the account (refused when read-only), and what it touches (checked against the allow-lists)."""

    request: type[_Request]
    handler: Callable[[ManagementApi, Any], Awaitable[Any]]
    mutating: bool = False
    scope: Callable[[Any], Scope] = lambda _r: Scope()


OPS: dict[str, Op] = {
    "group/add": Op(GroupAdd, _group_add, mutating=True, scope=lambda r: Scope(new_group=True)),
    "group/rename": Op(GroupRename, _group_rename, mutating=True, scope=lambda r: Scope(groups=(r.id,))),
    "group/remove": Op(IdOrIds, _group_remove, mutating=True, scope=lambda r: Scope(groups=_ids(r))),
    "group/list": Op(Paging, _group_list),
    "group/search": Op(GroupSearch, _group_search),
    "inverter/add": Op(
        InverterAdd, _inverter_add, mutating=True, scope=lambda r: Scope(groups=(r.group_id,), sns=(r.sn,))
    ),
    "inverter/remove": Op(IdOrIds, _inverter_remove, mutating=True, scope=lambda r: Scope(inverter_ids=_ids(r))),
    "inverter/replace": Op(
        InverterReplace, _inverter_replace, mutating=True, scope=lambda r: Scope(sns=(r.new_sn,), inverter_ids=(r.id,))
    ),
    "inverter/list": Op(InverterList, _inverter_list, scope=lambda r: Scope(groups=(r.group_id,))),
    "inverter/search": Op(InverterSearch, _inverter_search, scope=lambda r: Scope(groups=(r.group_id,))),
    "command/query": Op(CommandQuery, _command_query, scope=lambda r: Scope(command_id=r.command_id)),
    "task/result": Op(TaskResult, _task_result, scope=lambda r: Scope(task_id=r.task_id)),
    "device/bind": Op(DeviceBind, _device_bind, mutating=True, scope=lambda r: Scope(sns=tuple(r.sns))),
}
