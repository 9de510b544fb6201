"""Sparkplug node commands paced (`sparkplug/pacing.py`): a Rebirth or Refresh asked for while one is under way
is carried out once more after it, never dropped and never doubled."""

from __future__ import annotations

import asyncio
from collections import Counter

from semookii_bridge.sparkplug.pacing import Paced


class SlowAction:
    """An action (a rebirth: births to publish) that stays under way until released."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.started += 1
        await self.release.wait()
        self.release.clear()


async def test_a_request_during_a_run_is_carried_out_once_after_it() -> None:
    """Three requests while the first run is under way: exactly one more run follows it, after it ends."""
    action, counts = SlowAction(), Counter[str]()
    paced = Paced("rebirth", action, 0.05, counts)
    paced.request()
    await asyncio.sleep(0.01)
    for _ in range(3):
        paced.request()
    assert action.started == 1
    action.release.set()
    await asyncio.sleep(0.15)
    assert action.started == 2 and counts["rebirth_coalesced"] == 3
    action.release.set()
    await asyncio.sleep(0.15)
    assert action.started == 2
    await paced.close()


async def test_requests_while_a_run_waits_for_its_interval_join_it() -> None:
    """Requests that arrive while the next run waits out the interval are merged into that run, not another."""
    action, counts = SlowAction(), Counter[str]()
    paced = Paced("refresh", action, 0.2, counts)
    paced.request()
    await asyncio.sleep(0.01)
    action.release.set()
    await asyncio.sleep(0.01)
    paced.request()  # the interval has not passed: this run waits
    await asyncio.sleep(0.05)
    paced.request()
    paced.request()
    await asyncio.sleep(0.25)
    assert action.started == 2
    action.release.set()
    await asyncio.sleep(0.3)
    assert action.started == 2
    await paced.close()


async def test_closing_what_never_ran_is_quiet() -> None:
    """A node shut down before any rebirth was asked for closes without error."""
    await Paced("rebirth", SlowAction(), 0.05, Counter()).close()


async def test_closing_cancels_a_run_waiting_for_its_interval_and_returns_once_it_ended() -> None:
    """A run waiting out the interval is cancelled by close, which returns quietly only once that run has ended;
    the action never runs again."""
    action = SlowAction()
    paced = Paced("rebirth", action, 10.0, Counter())
    paced.request()
    await asyncio.sleep(0.01)
    action.release.set()
    await asyncio.sleep(0.01)
    paced.request()  # waits 10 s for the interval
    task = paced._task
    await paced.close()
    assert task is not None and task.done() and action.started == 1
