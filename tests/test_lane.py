"""The safety lane's claim on the loop, in isolation: it lasts until the stop's `sending` write is on record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from semookii_bridge.api import ControlParams
from semookii_bridge.control.lane import SafetyLane

from .support.doubles import World


async def test_the_claim_holds_until_the_sending_write_is_on_record_and_ends_before_the_call(tmp_path: Path) -> None:
    """While a lane stop's `sending` write waits for the journal the lane stays claimed (a storm read at full
    speed would fill that flush: 3.6 s behind 100,000 QoS 0 setpoints); the claim ends before the call."""
    world, lane, gate = World(tmp_path), SafetyLane(), asyncio.Event()
    durable, group_control = world.journal.durable, world.api.group_control
    claimed_at_call: list[bool] = []

    async def slow_durable() -> None:
        await gate.wait()
        await durable()

    async def recording_call(group_id: str, params: ControlParams, *, prepaid: bool = False) -> str:
        claimed_at_call.append(lane.pending())
        return await group_control(group_id, params, prepaid=prepaid)

    world.journal.durable = slow_durable  # type: ignore[method-assign]
    world.api.group_control = recording_call  # type: ignore[method-assign]
    world.life.recorded = lane.release
    job = world.job()
    lane.entered(job.request_id)
    sending = asyncio.ensure_future(lane.sending(world.life.send_all)([job]))
    await asyncio.sleep(0.05)
    assert lane.pending() and world.row().status == "sending"
    gate.set()
    await sending
    assert claimed_at_call == [False] and not lane.pending()
    await world.life.close()
    world.journal.close()


async def test_the_claim_ends_when_the_send_fails_before_the_write_is_on_record(tmp_path: Path) -> None:
    """A send that ends without reaching the call (the lease lost while waiting) still lets go of the loop."""
    world, lane = World(tmp_path), SafetyLane()

    async def lost() -> None:
        raise RuntimeError("fenced")

    world.journal.durable = lost  # type: ignore[method-assign]
    world.life.recorded = lane.release
    job = world.job()
    lane.entered(job.request_id)
    with pytest.raises(RuntimeError):
        await lane.sending(world.life.send_all)([job])
    assert not lane.pending() and world.api.calls == []
    await world.life.close()
    world.journal.close()
