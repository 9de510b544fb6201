"""What each management request may hold (msgspec types, unknown fields refused) and the part of the Cloud API
client the ops use."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Protocol

import msgspec

from ..api.types import BindResult, GroupPage, InverterPage
from ..control.commands import SerialNumber
from ..control.inventory import FleetApi
from ..control.polling import QueryApi
from ..interface.wire import Id

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
