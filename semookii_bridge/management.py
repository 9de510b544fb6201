"""Management over MQTT: `<prefix>/bridge/request/<op>` -> `<prefix>/bridge/response/<op>`.

One dispatch table from op to (request type, handler); one catch point turns every failure into
`{"status": "error", "error": {code, message}, "transaction": ...}`. Handlers only return data.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import msgspec

from .api.errors import ApiError
from .api.types import BindResult, Group, GroupPage, Inverter, InverterPage
from .control.commands import SerialNumber
from .control.inventory import FleetApi
from .control.jobs import job_from_entry
from .control.polling import QueryApi
from .errors import BridgeError, ErrorInfo
from .interface import wire
from .interface.payloads import Response
from .interface.wire import Id
from .journal.protocol import Entry

log = logging.getLogger(__name__)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
PageNo = Annotated[int, msgspec.Meta(ge=1)]
PageSize = Annotated[int, msgspec.Meta(ge=1, le=1000)]
IdList = Annotated[list[Id], msgspec.Meta(min_length=1, max_length=1000)]


class ManagementApi(FleetApi, QueryApi, Protocol):
    """The part of the Cloud API client the management ops use (the core names no HTTP client): the
    inventory's list calls and polling's queries, and the rest below."""

    async def group_add(self, name: str) -> Id: ...

    async def group_update(self, group_id: str, name: str) -> None: ...

    async def group_delete(self, group_id: str) -> None: ...

    async def group_delete_batch(self, group_ids: Iterable[str]) -> None: ...

    async def group_find_all(self, current: int = 1, size: int = 20) -> GroupPage: ...

    async def group_find_like_name(self, name: str) -> GroupPage: ...

    async def inverter_add(self, group_id: str, sn: str) -> Id: ...

    async def inverter_delete(self, inverter_id: str) -> None: ...

    async def inverter_delete_batch(self, inverter_ids: Iterable[str]) -> None: ...

    async def inverter_update(self, inverter_id: str, new_sn: str) -> None: ...

    async def inverter_find_by_group(self, group_id: str, current: int = 1, size: int = 20) -> InverterPage: ...

    async def inverter_find_like(
        self, group_id: str, *, wifi_sn: str | None = None, sn: str | None = None
    ) -> InverterPage: ...

    async def bind_sns(self, sns: Sequence[str]) -> BindResult: ...


class _Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class GroupAdd(_Request, frozen=True):
    name: Name


class GroupRename(_Request, frozen=True):
    id: Id
    name: Name


class IdOrIds(_Request, frozen=True):
    id: Id | None = None
    ids: IdList | None = None


class Paging(_Request, frozen=True):
    page: PageNo = 1
    size: PageSize = 20
    all: bool = False


class GroupSearch(_Request, frozen=True):
    name: Name


class InverterAdd(_Request, frozen=True):
    group_id: Id
    sn: SerialNumber


class InverterReplace(_Request, frozen=True):
    id: Id
    new_sn: SerialNumber


class InverterList(Paging, frozen=True, kw_only=True):
    group_id: Id


class InverterSearch(_Request, frozen=True):
    group_id: Id
    wifi_sn: Name | None = None
    sn: Name | None = None


class CommandQuery(_Request, frozen=True):
    command_id: Id


class TaskResult(_Request, frozen=True):
    task_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class DeviceBind(_Request, frozen=True):
    sns: Annotated[list[SerialNumber], msgspec.Meta(min_length=1, max_length=10000)]


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
    "inverter/add": Op(InverterAdd, _inverter_add, mutating=True,
                       scope=lambda r: Scope(groups=(r.group_id,), sns=(r.sn,))),
    "inverter/remove": Op(IdOrIds, _inverter_remove, mutating=True, scope=lambda r: Scope(inverter_ids=_ids(r))),
    "inverter/replace": Op(InverterReplace, _inverter_replace, mutating=True,
                           scope=lambda r: Scope(sns=(r.new_sn,), inverter_ids=(r.id,))),
    "inverter/list": Op(InverterList, _inverter_list, scope=lambda r: Scope(groups=(r.group_id,))),
    "inverter/search": Op(InverterSearch, _inverter_search, scope=lambda r: Scope(groups=(r.group_id,))),
    "command/query": Op(CommandQuery, _command_query, scope=lambda r: Scope(command_id=r.command_id)),
    "task/result": Op(TaskResult, _task_result, scope=lambda r: Scope(task_id=r.task_id)),
    "device/bind": Op(DeviceBind, _device_bind, mutating=True, scope=lambda r: Scope(sns=tuple(r.sns))),
}  # fmt: skip


async def _no_call(_command: str | None, _task: str | None) -> Scope | None:
    return None


@dataclass(frozen=True)
class Guard:
    """The same rules as on the command topics: allow-lists (empty: all) and read-only mode.

    `inverter_of` names the group and serial behind an inverter row id (from the fleet inventory), and
    `call_scope` what a control call touched (from the journal, by command or task id); with allow-lists
    set, what they cannot name is refused, since the bridge cannot tell what the request would touch.
    """

    allow_groups: frozenset[str] = frozenset()
    allow_inverters: frozenset[str] = frozenset()
    read_only: bool = False
    dry_run: bool = False
    inverter_of: Callable[[str], tuple[str, str] | None] = lambda _id: None
    call_scope: Callable[[str | None, str | None], Awaitable[Scope | None]] = _no_call

    async def check(self, name: str, op: Op, request: Any) -> None:
        """Raise BridgeError `not_allowed` before any call when the request is outside the rules."""
        if self.dry_run:
            raise BridgeError("dry_run", f"{name} is not sent: commands.dry_run is set and a dry run calls nothing")
        if self.read_only and op.mutating:
            raise BridgeError("not_allowed", f"{name} changes the account; management.read_only is set")
        if not (self.allow_groups or self.allow_inverters):
            return
        scope = await self._resolved(op.scope(request))
        if scope.new_group and self.allow_groups:
            raise BridgeError("not_allowed", f"{name} creates a group, which cannot be in commands.allow_groups")
        self._inside(list(scope.groups), list(scope.sns))

    async def _resolved(self, scope: Scope) -> Scope:
        """The scope with inverter row ids and control calls replaced by the groups and serials they name."""
        groups, sns = list(scope.groups), list(scope.sns)
        for inverter_id in scope.inverter_ids:
            known = self.inverter_of(inverter_id)
            if known is None:
                raise BridgeError("not_allowed", f"inverter id {inverter_id} is not in the bridge's inventory, so "
                                  "the allow-lists cannot be checked")  # fmt: skip
            groups.append(known[0])
            sns.append(known[1])
        if scope.command_id is not None or scope.task_id is not None:
            call = await self.call_scope(scope.command_id, scope.task_id)
            if call is None:
                which = scope.command_id if scope.command_id is not None else scope.task_id
                raise BridgeError("not_allowed", f"{which} is not a control call this bridge sent, so the "
                                  "allow-lists cannot be checked")  # fmt: skip
            groups += call.groups
            sns += call.sns
        return Scope(groups=tuple(groups), sns=tuple(sns), new_group=scope.new_group)

    def _inside(self, groups: list[str], sns: list[str]) -> None:
        """`not_allowed` naming the groups or inverters outside the allow-lists."""
        outside = [g for g in groups if self.allow_groups and g not in self.allow_groups]
        if outside:
            raise BridgeError("not_allowed", f"group(s) {', '.join(outside)} not in commands.allow_groups")
        outside = [sn for sn in sns if self.allow_inverters and sn not in self.allow_inverters]
        if outside:
            raise BridgeError("not_allowed", f"inverter(s) {', '.join(outside)} not in commands.allow_inverters")

    def reveal(self, data: Any) -> Any:
        """Leave out of a listing the groups and inverters outside the allow-lists."""
        items = getattr(data, "items", None) if not isinstance(data, dict) else data.get("items")
        if not isinstance(items, list) or not (self.allow_groups or self.allow_inverters):
            return data
        kept = [item for item in items if self._visible(item)]
        return {"total": len(kept), "items": kept}

    def _visible(self, item: Any) -> bool:
        if isinstance(item, Group):
            return not self.allow_groups or str(item.id) in self.allow_groups
        if isinstance(item, Inverter):
            return not self.allow_inverters or (item.inverter_sn or "") in self.allow_inverters
        return True


def _parse(payload: bytes) -> tuple[dict[str, Any], Any]:
    """The request's fields and its `transaction`; an empty payload is an empty request."""
    if not payload.strip():
        return {}, None
    doc = wire.json_object(payload)
    transaction = doc.pop("transaction", None)
    return doc, transaction


def busy(payload: bytes, pending: int, *, max_payload: int) -> Response:
    """The answer to a request that arrives while `pending` others wait: `busy` at once, no API call."""
    transaction: Any = None
    if len(payload) <= max_payload:
        with contextlib.suppress(BridgeError):
            _, transaction = _parse(payload)
    message = f"{pending} management requests are already waiting; try again later"
    return Response(status="error", error=ErrorInfo(code="busy", message=message), transaction=transaction)


async def handle_request(
    api: ManagementApi, op: str, payload: bytes, *, max_payload: int, guard: Guard | None = None
) -> Response:
    """Run one management request; never raises, every outcome is a Response."""
    transaction: Any = None
    try:
        if len(payload) > max_payload:
            raise BridgeError("payload_too_large", f"payload of {len(payload)} bytes exceeds {max_payload}")
        fields, transaction = _parse(payload)
        spec = OPS.get(op)
        if spec is None:
            raise BridgeError("unknown_op", f"unknown op {op!r}; known: {', '.join(sorted(OPS))}")
        try:
            request = wire.convert(fields, spec.request)
        except msgspec.ValidationError as exc:
            raise BridgeError("validation_error", str(exc)) from None
        guard = guard or Guard()
        await guard.check(op, spec, request)
        data = guard.reveal(await spec.handler(api, request))
        return Response(status="ok", data=wire.to_user(data), transaction=transaction)
    except BridgeError as exc:
        return Response(status="error", error=exc.info(), transaction=transaction)
    except ApiError as exc:
        return Response(status="error", error=ErrorInfo(code=exc.code, message=exc.message), transaction=transaction)
    except Exception as exc:
        log.exception("management_failed op=%s", op)
        error = ErrorInfo(code="internal_error", message=f"{type(exc).__name__} in the bridge")
        return Response(status="error", error=error, transaction=transaction)
