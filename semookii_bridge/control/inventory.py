"""What the bridge knows of the fleet: each inverter serial in a group and the dongle serial behind it.

Read from the group and inverter lists (management calls, counted in the budget) at start and every
`commands.inventory_refresh` seconds, and between those where something changed: `refresh_changed` re-lists
only the groups whose inverter count moved (when a command names an inverter not known yet,
`inventory_learning.py`), `refresh_groups` the groups a management call changed. Two uses: only inverters
listed here are merged into a shared batch call (an unknown or unauthorized serial would make the API refuse
the whole batch), and a merged command's results, keyed by dongle serial, are cut down to its own devices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import msgspec

from ..api.errors import ApiError
from ..api.types import Group, Inverter
from ..budget.ratelimit import QuotaExhausted
from ..common.clock import steady

log = logging.getLogger(__name__)

RETRY_FIRST = 30.0
"""Seconds before a failed load is tried again (doubling up to the refresh interval)."""


class FleetApi(Protocol):
    """The list calls the inventory reads."""

    async def group_list_all(self, page_size: int = 100) -> list[Group]: ...

    async def inverter_list_all(self, group_id: str, page_size: int = 100) -> list[Inverter]: ...


class Inventory:
    """Inverter serial -> dongle serial for every inverter in a group, as last read from the API."""

    def __init__(self, clock: Callable[[], float] = steady) -> None:
        self._dongles: dict[str, str] = {}
        self._rows: dict[str, tuple[str, str]] = {}
        self._counts: dict[str, int] = {}
        """Group id -> how many inverters its last listing had (the group list's `num` says when it moved)."""
        self._clock = clock
        self.loaded_at: float | None = None
        self.loaded = asyncio.Event()

    def __len__(self) -> int:
        return len(self._dongles)

    def known(self, sn: str) -> bool:
        """Whether `sn` was listed in a group (so the account may control it)."""
        return sn in self._dongles

    def dongle(self, sn: str) -> str | None:
        """The dongle serial that result maps are keyed by, or None for an inverter not listed."""
        return self._dongles.get(sn)

    def inverter_of(self, inverter_id: str) -> tuple[str, str] | None:
        """(group id, inverter serial) of an inverter row id, or None when it was not listed."""
        return self._rows.get(inverter_id)

    def groups_of(self, sn: str) -> set[str]:
        """The groups an inverter serial was listed in (empty when it was not listed)."""
        return {group for group, listed in self._rows.values() if listed == sn}

    def replace(self, inverters: list[Inverter]) -> None:
        """Take a fresh listing (inverters without both serials are left out of the dongle map)."""
        self._dongles, self._rows, self._counts = {}, {}, {}
        for inverter in inverters:
            self._add(inverter)
        self.loaded_at = self._clock()
        self.loaded.set()

    def _add(self, inverter: Inverter) -> None:
        group = str(inverter.group_id) if inverter.group_id is not None else ""
        self._counts[group] = self._counts.get(group, 0) + 1
        if inverter.inverter_sn and inverter.wifi_sn:
            self._dongles[inverter.inverter_sn] = inverter.wifi_sn
        if inverter.inverter_sn and group:
            self._rows[str(inverter.id)] = (group, inverter.inverter_sn)

    def drop_groups(self, group_ids: list[str]) -> None:
        """Forget what the listings of these groups said (the groups were removed, or are listed again)."""
        gone = set(group_ids)
        for row_id, (group, sn) in list(self._rows.items()):
            if group in gone:
                del self._rows[row_id]
                self._dongles.pop(sn, None)
        for group in gone:
            self._counts.pop(group, None)

    async def refresh_groups(self, api: FleetApi, group_ids: list[str]) -> None:
        """List these groups' inverters again (one call per 100 inverters of each) and take what they say."""
        for group_id in dict.fromkeys(group_ids):
            listed = await api.inverter_list_all(group_id)
            self.drop_groups([group_id])
            self._counts[group_id] = 0
            for inverter in listed:
                self._add(inverter if inverter.group_id else msgspec.structs.replace(inverter, group_id=group_id))

    async def refresh_changed(self, api: FleetApi) -> list[str]:
        """One group list; then only the groups that are new or whose inverter count moved are listed again.
        Returns the groups listed again."""
        groups = await api.group_list_all()
        listed = {str(g.id): g.device_count for g in groups}
        self.drop_groups([g for g in self._counts if g and g not in listed])
        changed = [g for g, count in listed.items() if count is None or self._counts.get(g) != count]
        await self.refresh_groups(api, changed)
        log.info("inventory_refreshed groups_listed=%d inverters=%d", len(changed), len(self._dongles))
        return changed

    async def load(self, api: FleetApi) -> None:
        """Read every group's inverters (1 call per 100 groups, plus 1 per 100 inverters of each group)."""
        inverters: list[Inverter] = []
        for group in await api.group_list_all():
            listed = await api.inverter_list_all(str(group.id))
            inverters += [i if i.group_id else msgspec.structs.replace(i, group_id=group.id) for i in listed]
        self.replace(inverters)
        log.info("inventory_loaded inverters=%d", len(self._dongles))

    async def run(self, api: FleetApi, refresh: float) -> None:
        """Load now and every `refresh` seconds; a failed load is retried sooner, keeping the last listing."""
        retry = RETRY_FIRST
        while True:
            try:
                await self.load(api)
            except (ApiError, QuotaExhausted) as exc:
                log.warning("inventory_load_failed error=%s retry_in=%.0f", type(exc).__name__, min(retry, refresh))
                await asyncio.sleep(min(retry, refresh))
                retry *= 2
                continue
            retry = RETRY_FIRST
            await asyncio.sleep(refresh)
