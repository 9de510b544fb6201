"""Async client for the Semookii Cloud Control API: one method per endpoint, on `Caller`'s plumbing.

Parameters travel in the query string (POST), except `/api/regsn` which takes a JSON body."""

from collections.abc import Iterable, Sequence
from typing import Any

from ..interface.wire import Id
from . import endpoints as ep
from .answers import all_pages, decode_json, id_list, split
from .caller import Caller
from .endpoints import Endpoint
from .errors import (
    BadResponse,
)
from .params import ControlParams
from .types import (
    BIND_KEYS,
    BindResult,
    CommandStatus,
    Group,
    GroupPage,
    Inverter,
    InverterPage,
    TaskResults,
)

REGSN_CHUNK = 100


class CloudClient(Caller):
    """One client per process; use as `async with CloudClient(...) as client`."""

    def __repr__(self) -> str:
        return f"CloudClient(base_url={self._base_url!r}, token=Secret('***'))"

    # ---- control -------------------------------------------------------------------------------

    # `prepaid=True`: the caller already took a rate-limit token for the first attempt (the bridge's
    # dispatcher takes it before choosing which queued command to send, so the newest one goes out; result
    # polling takes it before checking that the command is still worth polling).

    async def single_control(self, sn: str, params: ControlParams, *, prepaid: bool = False) -> Id:
        """Control one inverter; returns the command id."""
        return await self._command(ep.SINGLE_CONTROL, {"sn": sn}, params, prepaid)

    async def batch_control(self, sns: Sequence[str], params: ControlParams, *, prepaid: bool = False) -> Id:
        """Control a list of inverters (`snList`, comma separated); returns the command id."""
        return await self._command(ep.BATCH_CONTROL, {"snList": ",".join(sns)}, params, prepaid)

    async def group_control(self, group_id: str, params: ControlParams, *, prepaid: bool = False) -> Id:
        """Control every inverter of a group; returns the command id."""
        return await self._command(ep.GROUP_CONTROL, {"groupId": str(group_id)}, params, prepaid)

    async def _command(self, endpoint: Endpoint, target: dict[str, str], params: ControlParams, prepaid: bool) -> Id:
        query = {**target, **params.to_query()}
        result: Id | None = await self._call(endpoint, query, Id | None, prepaid=prepaid)
        if result is None:
            raise BadResponse("the API accepted the command but returned no command id", endpoint=endpoint.name)
        return result

    # ---- groups --------------------------------------------------------------------------------

    async def group_add(self, name: str) -> Id:
        """Create a group; returns its id."""
        result: Id | None = await self._call(ep.GROUP_ADD, {"name": name}, Id | None)
        if result is None:
            raise BadResponse("the API created a group but returned no id", endpoint=ep.GROUP_ADD.name)
        return result

    async def group_update(self, group_id: str, name: str) -> None:
        """Rename a group (the API may answer `exception: "update succeeded"`, which is a success)."""
        await self._call(ep.GROUP_UPDATE, {"id": str(group_id), "name": name}, Any)

    async def group_delete(self, group_id: str) -> None:
        """Delete one group."""
        await self._call(ep.GROUP_DELETE, {"id": str(group_id)}, Any)

    async def group_delete_batch(self, group_ids: Iterable[str]) -> None:
        """Delete several groups in one call."""
        await self._call(ep.GROUP_DELETE_BATCH, id_list(group_ids), Any)

    async def group_find_all(self, current: int = 1, size: int = 20) -> GroupPage:
        """One page of groups (pages count from 1)."""
        query = {"current": str(current), "size": str(size)}
        page: GroupPage = await self._call(ep.GROUP_FIND_ALL, query, GroupPage)
        return page

    async def group_list_all(self, page_size: int = 100) -> list[Group]:
        """Every group, reading all pages."""
        return await all_pages(lambda cur: self.group_find_all(cur, page_size), page_size)

    async def group_find_like_name(self, name: str) -> GroupPage:
        """Groups whose name contains `name`."""
        page: GroupPage = await self._call(ep.GROUP_FIND_LIKE_NAME, {"name": name}, GroupPage)
        return page

    # ---- inverters -----------------------------------------------------------------------------

    async def inverter_add(self, group_id: str, sn: str) -> Id:
        """Add an inverter to a group; returns the inverter id."""
        query = {"groupId": str(group_id), "inverterSn": sn}
        result: Id | None = await self._call(ep.INVERTER_ADD, query, Id | None)
        if result is None:
            raise BadResponse("the API added the inverter but returned no id", endpoint=ep.INVERTER_ADD.name)
        return result

    async def inverter_delete(self, inverter_id: str) -> None:
        """Remove one inverter from its group."""
        await self._call(ep.INVERTER_DELETE, {"id": str(inverter_id)}, Any)

    async def inverter_delete_batch(self, inverter_ids: Iterable[str]) -> None:
        """Remove several inverters in one call."""
        await self._call(ep.INVERTER_DELETE_BATCH, id_list(inverter_ids), Any)

    async def inverter_update(self, inverter_id: str, new_sn: str) -> None:
        """Replace the inverter behind `inverter_id` with `new_sn`."""
        query = {"id": str(inverter_id), "newInverterSn": new_sn}
        await self._call(ep.INVERTER_UPDATE, query, Any)

    async def inverter_find_by_group(self, group_id: str, current: int = 1, size: int = 20) -> InverterPage:
        """One page of a group's inverters."""
        query = {"groupId": str(group_id), "current": str(current), "size": str(size)}
        page: InverterPage = await self._call(ep.INVERTER_FIND_BY_GROUP, query, InverterPage)
        return page

    async def inverter_list_all(self, group_id: str, page_size: int = 100) -> list[Inverter]:
        """Every inverter of a group, reading all pages."""
        return await all_pages(lambda cur: self.inverter_find_by_group(group_id, cur, page_size), page_size)

    async def inverter_find_like(
        self, group_id: str, *, wifi_sn: str | None = None, sn: str | None = None
    ) -> InverterPage:
        """Inverters of a group whose dongle or inverter serial contains the given text."""
        query = {"groupId": str(group_id)}
        if wifi_sn:
            query["wifiSn"] = wifi_sn
        if sn:
            query["inverterSn"] = sn
        page: InverterPage = await self._call(ep.INVERTER_FIND_LIKE, query, InverterPage)
        return page

    # ---- queries -------------------------------------------------------------------------------

    async def query_command(self, command_id: str, *, prepaid: bool = False) -> str | None:
        """The task id of a command, or None while the cloud has not dispatched it yet."""
        query = {"commandId": str(command_id)}
        status = await self._call(ep.QUERY_COMMAND, query, CommandStatus | None, prepaid=prepaid)
        return status.task_id if status else None

    async def get_query_result(self, task_id: str, *, prepaid: bool = False) -> TaskResults | None:
        """Per-device results (dongle registration number -> status string, maybe "null"), or None."""
        raw = await self._call(ep.GET_QUERY_RESULT, {"taskId": task_id}, dict[str, Any] | None, prepaid=prepaid)
        if raw is None:
            return None
        return {str(k): "null" if v is None else str(v) for k, v in raw.items()}

    # ---- device binding ------------------------------------------------------------------------

    async def bind_sns(self, sns: Sequence[str]) -> BindResult:
        """Bind dongles to this account, at most 100 per call; results merged over all calls."""
        merged: dict[str, list[str]] = {field: [] for field in BIND_KEYS.values()}
        for start in range(0, len(sns), REGSN_CHUNK):
            chunk = sns[start : start + REGSN_CHUNK]
            answer = await self._regsn(list(chunk))
            for field, values in answer.items():
                merged[field].extend(values)
        return BindResult(**merged)

    async def _regsn(self, sns: list[str]) -> dict[str, list[str]]:
        endpoint = ep.REGISTER_SN

        async def attempt() -> dict[str, list[str]]:
            # The parameter table names `tokenId`, the example body sends `token`: send both.
            token = self.token.reveal()
            body = {"tokenId": token, "token": token, "sns": ",".join(sns)}
            raw = await self._http(endpoint, params=None, json_body=body)
            doc = decode_json(endpoint, raw, dict[str, Any])
            if doc.get("success") is not True:
                message = self.token.vet(str(doc.get("exception") or "the API reported a failure"))
                raise self._rejected(message, endpoint)
            self._on_token(True, "")
            return {field: split(doc.get(key)) for key, field in BIND_KEYS.items()}

        answer: dict[str, list[str]] = await self._retrying(endpoint, attempt)
        return answer
