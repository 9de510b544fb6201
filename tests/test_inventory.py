"""The fleet inventory in isolation: what a load reads, and that a failed load keeps the last listing."""

from __future__ import annotations

import asyncio

import pytest

from semookii_bridge.api import ConnectFailed, Group, Inverter
from semookii_bridge.control import inventory as inventory_module
from semookii_bridge.control.inventory import Inventory


class Fleet:
    """List calls answered from a dict of group id -> inverters; an exception in `fail` is raised once."""

    def __init__(self, groups: dict[str, list[Inverter]]) -> None:
        self.groups = groups
        self.calls = 0
        self.fail: Exception | None = None

    async def group_list_all(self, page_size: int = 100) -> list[Group]:
        self.calls += 1
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        return [Group(id=g) for g in self.groups]

    async def inverter_list_all(self, group_id: str, page_size: int = 100) -> list[Inverter]:
        self.calls += 1
        return self.groups[group_id]


def inverter(sn: str | None, wifi: str | None) -> Inverter:
    return Inverter(id="1", inverter_sn=sn, wifi_sn=wifi)


async def test_a_load_maps_every_listed_inverter_to_its_dongle() -> None:
    """Each group's inverters are read; rows missing either serial are left out (they cannot be mapped)."""
    api = Fleet({"1": [inverter("SN1", "SW1")], "2": [inverter("SN2", "SW2"), inverter("SN3", None)]})
    inv = Inventory()
    await inv.load(api)
    assert (inv.dongle("SN1"), inv.dongle("SN2"), inv.dongle("SN3")) == ("SW1", "SW2", None)
    assert inv.known("SN2") and not inv.known("SN3") and len(inv) == 2
    assert api.calls == 3 and inv.loaded.is_set() and inv.loaded_at is not None


async def test_a_failed_refresh_keeps_the_last_listing_and_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """An API error during a refresh keeps what was known and tries again after RETRY_FIRST, not the interval."""
    monkeypatch.setattr(inventory_module, "RETRY_FIRST", 0.01)
    api = Fleet({"1": [inverter("SN1", "SW1")]})
    inv = Inventory()
    await inv.load(api)
    api.fail = ConnectFailed("down", endpoint="group_find_all")
    api.groups = {"1": [inverter("SN1", "SW1"), inverter("SN2", "SW2")]}
    task = asyncio.create_task(inv.run(api, refresh=60))
    await asyncio.sleep(0.005)
    assert inv.known("SN1") and not inv.known("SN2")
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert inv.known("SN2")
