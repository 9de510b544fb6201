"""Wire types of the Cloud API answers, decoded with msgspec; ids as `Id` strings."""

from __future__ import annotations

import msgspec

from ..interface.wire import Id


class Envelope(msgspec.Struct):
    """`{"exception", "result", "success"}`; query endpoints document `isSuccess` instead of `success`."""

    exception: str | None = None
    result: msgspec.Raw = msgspec.Raw(b"null")
    success: bool | None = None
    isSuccess: bool | None = None

    @property
    def ok(self) -> bool | None:
        """The call's verdict, from whichever success key the API sent (None when it sent neither)."""
        return self.success if self.success is not None else self.isSuccess


class Group(msgspec.Struct, frozen=True):
    """A VPP group as findAll / findLikeName return it."""

    id: Id
    name: str | None = None
    device_count: int | None = msgspec.field(default=None, name="num")
    create_time: str | None = msgspec.field(default=None, name="createTime")
    update_time: str | None = msgspec.field(default=None, name="updateTime")


class Inverter(msgspec.Struct, frozen=True):
    """An inverter in a group as findByGroupId / findByLike return it."""

    id: Id
    group_id: Id | None = msgspec.field(default=None, name="groupId")
    wifi_sn: str | None = msgspec.field(default=None, name="wifiSn")
    inverter_sn: str | None = msgspec.field(default=None, name="inverterSn")
    group_status: int | None = msgspec.field(default=None, name="groupStatus")
    rate_power: float | None = msgspec.field(default=None, name="ratePower")
    create_time: str | None = msgspec.field(default=None, name="createTime")
    update_time: str | None = msgspec.field(default=None, name="updateTime")


class GroupPage(msgspec.Struct, frozen=True):
    """One page of groups; `total` is the API's `num`."""

    total: int = msgspec.field(default=0, name="num")
    items: list[Group] = msgspec.field(default_factory=list, name="list")


class InverterPage(msgspec.Struct, frozen=True):
    """One page of inverters; `total` is the API's `num`."""

    total: int = msgspec.field(default=0, name="num")
    items: list[Inverter] = msgspec.field(default_factory=list, name="list")


class CommandStatus(msgspec.Struct, frozen=True):
    """queryCommand's result: the task id once the cloud dispatched the command."""

    task_id: str | None = msgspec.field(default=None, name="taskId")


class BindResult(msgspec.Struct, frozen=True):
    """`/api/regsn` merged over every call of at most 100 sns."""

    bound: list[str] = msgspec.field(default_factory=list)
    failed: list[str] = msgspec.field(default_factory=list)
    already_bound: list[str] = msgspec.field(default_factory=list)
    non_existent: list[str] = msgspec.field(default_factory=list)


# regsn answers with keys containing spaces, each holding a comma-separated list of sns.
BIND_KEYS: dict[str, str] = {
    "Binding success": "bound",
    "Binding fail": "failed",
    "Have bound sn": "already_bound",
    "Non-existent sn": "non_existent",
}

TaskResults = dict[str, str]
