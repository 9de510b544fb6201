"""What the bridge knows of the fleet: each inverter serial in a group and the dongle serial behind it.

Read from the group and inverter lists (management calls, counted in the budget) at start and every
`commands.inventory_refresh` seconds. Two uses: only inverters listed here are merged into a shared
batch call (an unknown or unauthorized serial would make the API refuse the whole batch), and a merged
command's results, keyed by dongle serial, are cut down to its own devices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import msgspec

from .api.errors import ApiError
from .api.types import Group, Inverter
from .clock import steady
from .ratelimit import QuotaExhausted

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

    def replace(self, inverters: list[Inverter]) -> None:
        """Take a fresh listing (inverters without both serials are left out of the dongle map)."""
        self._dongles = {i.inverter_sn: i.wifi_sn for i in inverters if i.inverter_sn and i.wifi_sn}
        self._rows = {str(i.id): (str(i.group_id), i.inverter_sn) for i in inverters if i.inverter_sn and i.group_id}
        self.loaded_at = self._clock()
        self.loaded.set()

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
