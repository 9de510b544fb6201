"""Scheduling survives wall-clock steps: queued commands do not expire early, polls do not stall."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from semookii_bridge.bridge import Bridge
from semookii_bridge.budget.ratelimit import RateLimiter, TokenBucket
from semookii_bridge.common.clock import SteadyClock, steady
from semookii_bridge.config import BridgeConfig, CommandsConfig
from semookii_bridge.control.commands import Manual
from semookii_bridge.control.dispatcher import Dispatcher
from semookii_bridge.control.jobs import Job
from semookii_bridge.control.lifecycle import Lifecycle
from semookii_bridge.control.poll_schedule import PollSchedule
from semookii_bridge.interface.payloads import Incoming
from semookii_bridge.interface.topics import Target, Topics
from semookii_bridge.journal.sqlite import Journal
from semookii_bridge.journal.timeline import SKEW_WARNING, Anchor, resume_shared


class Quiet:
    """A publisher that drops everything."""

    def publish(self, *args: object, **kwargs: object) -> None:
        return None


class Wall:
    """A wall clock that an operator (or NTP) can step."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_a_steady_clock_ignores_wall_steps_and_follows_elapsed_time() -> None:
    """Stepping the wall clock by +-1 h moves the steady clock by nothing; elapsed time moves it."""
    wall, mono = Wall(), [100.0]
    clock = SteadyClock(wall, lambda: mono[0])
    start = clock()
    wall.offset += 3600
    assert clock() == start
    wall.offset -= 7200
    mono[0] += 2.5
    assert clock() == start + 2.5


async def test_a_queued_command_survives_a_forward_step() -> None:
    """A command queued with a 60 s ttl is still sent after the wall clock jumps 1 h forward while it waits."""
    wall = Wall()
    clock = SteadyClock(wall)
    bucket = TokenBucket(5, 1)
    bucket.try_take()
    sent: list[str] = []
    dropped: list[str] = []

    async def send(jobs: Sequence[Job]) -> None:
        sent.extend(j.request_id for j in jobs)

    dispatcher = Dispatcher(RateLimiter(bucket), send, lambda j, s, e: dropped.append(s), clock=clock)
    now = clock()
    dispatcher.submit(Job(request_id="r", target=Target("group", "1"), command=Manual(action="stop"), sns=None,
                          received_at=now, deadline=now + 60))  # fmt: skip
    wall.offset += 3600
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(0.4)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sent == ["r"] and dropped == []


async def test_polls_stay_due_after_a_backward_step() -> None:
    """A poll due in 0.1 s runs in 0.1 s even when the wall clock is stepped back 1 h meanwhile."""
    wall = Wall()
    polled = asyncio.Event()

    async def step(key: str, backoff: float) -> None:
        polled.set()

    schedule = PollSchedule(step, clock=SteadyClock(wall))
    schedule.add("c", 0.1, 1.0)
    wall.offset -= 3600
    runner = asyncio.create_task(schedule.run())
    await asyncio.wait_for(polled.wait(), 2)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


def test_scheduling_modules_use_the_steady_clock_by_default(tmp_path: Path) -> None:
    """The bridge, its dispatcher, lifecycle and poll schedule keep time with the steady clock, not time.time."""
    journal = Journal(tmp_path / "j.db")
    bridge = Bridge(BridgeConfig(), api=None, publisher=Quiet(), journal=journal,  # type: ignore[arg-type]
                    limiter=RateLimiter(TokenBucket(0, 1)))  # fmt: skip
    assert bridge.clock is steady and bridge.dispatcher._clock is steady and bridge.lifecycle.clock is steady
    assert bridge.lifecycle.polls.schedule._clock is steady
    own = Lifecycle(api=None, journal=journal, publisher=Quiet(), topics=Topics("vpp"),  # type: ignore[arg-type]
                    config=CommandsConfig())  # fmt: skip
    assert own.clock is steady
    journal.close()


def test_expires_at_is_read_against_the_wall_clock_at_receipt(tmp_path: Path) -> None:
    """`expires_at` 30 s ahead of the wall clock gives a deadline 30 s ahead on the steady clock, even when the
    two differ by an hour (the wall clock was stepped since start)."""
    wall = Wall()
    wall.offset = 3600
    journal = Journal(tmp_path / "j.db")
    bridge = Bridge(BridgeConfig(), api=None, publisher=Quiet(), journal=journal, wall=wall,  # type: ignore[arg-type]
                    limiter=RateLimiter(TokenBucket(0, 1)))  # fmt: skip
    expires = datetime.fromtimestamp(wall() + 30, UTC)
    command = Manual(action="stop", expires_at=expires)
    now = bridge.clock()
    deadline = bridge.admission.deadline(command, Incoming(topic="vpp/group/1/set", payload=b""), now)
    assert abs(deadline - (now + 30)) < 0.5
    journal.close()


class _Anchors:
    """An empty journal, as far as the timeline goes."""

    saved: object = None

    def clock_anchor(self) -> None:
        return None

    def save_clock_anchor(self, anchor: object) -> None:
        self.saved = anchor

    def latest_instant(self) -> None:
        return None


def test_a_shared_timeline_counts_the_time_since_the_database_clock_was_read() -> None:
    """The database said 1000.0 when the boot clock read 50; the timeline is built at boot clock 52 (a slow
    load): it reads 1002, not 1000, so a slow load does not leave the journal's instants behind real time."""
    from semookii_bridge.journal.timeline import resume_shared

    boot = [52.0]
    timeline = resume_shared(_Anchors(), 1000.0, elapsed=lambda: boot[0], wall=lambda: 1002.0, read_at=50.0)
    assert timeline() == 1002.0 and timeline.skew == 0.0


class _Written(_Anchors):
    """A shared journal that holds an anchor and a latest instant."""

    def __init__(self, high: float | None, latest: float | None) -> None:
        self.high, self.latest = high, latest

    def clock_anchor(self) -> Anchor | None:  # type: ignore[override]
        return None if self.high is None else Anchor(boot_id=None, offset=0.0, high=self.high)

    def latest_instant(self) -> float | None:  # type: ignore[override]
        return self.latest


def test_a_shared_timeline_never_starts_before_the_anchors_high_mark() -> None:
    """The database's clock says 1000 but the journal's anchor reached 1500: the timeline goes on from 1500
    (a takeover after the database's clock stepped back must not make journaled deadlines lie in the future)."""
    timeline = resume_shared(_Written(1500.0, 1200.0), 1000.0, elapsed=lambda: 10.0, wall=lambda: 1000.0)
    assert timeline() == 1500.0


def test_a_shared_timeline_never_starts_before_the_latest_instant_written() -> None:
    """With no anchor, the latest instant in the journal is the lower bound."""
    timeline = resume_shared(_Written(None, 1200.0), 1000.0, elapsed=lambda: 10.0, wall=lambda: 1000.0)
    assert timeline() == 1200.0


def test_a_shared_timeline_without_a_read_time_starts_at_the_database_clock() -> None:
    """No `read_at`: exactly the database's clock, nothing added."""
    timeline = resume_shared(_Anchors(), 1000.0, elapsed=lambda: 10.0, wall=lambda: 1000.0)
    assert timeline() == 1000.0


def test_a_read_time_after_now_adds_nothing() -> None:
    """A `read_at` later than the boot clock now (it cannot be, but clocks are read apart) adds no time."""
    timeline = resume_shared(_Anchors(), 1000.0, elapsed=lambda: 10.0, wall=lambda: 1000.0, read_at=12.0)
    assert timeline() == 1000.0


def test_a_shared_timeline_saves_its_anchor_at_once() -> None:
    """The anchor is journaled as the timeline starts, reading where it stands."""
    store = _Anchors()
    timeline = resume_shared(store, 1000.0, elapsed=lambda: 10.0, wall=lambda: 1000.0)
    assert store.saved == timeline.anchor() and isinstance(store.saved, Anchor) and store.saved.high == 1000.0


def test_a_host_clock_off_by_more_than_the_limit_is_logged_with_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    """Off by exactly SKEW_WARNING: quiet; by more: a warning naming the fix."""
    caplog.set_level(logging.WARNING, logger="semookii_bridge.journal.timeline")
    resume_shared(_Anchors(), 1000.0, elapsed=lambda: 10.0, wall=lambda: 1000.0 + SKEW_WARNING)
    assert not caplog.records
    timeline = resume_shared(_Anchors(), 1000.0, elapsed=lambda: 10.0, wall=lambda: 1000.0 - SKEW_WARNING - 1)
    assert timeline.skew == -SKEW_WARNING - 1
    (record,) = caplog.records
    assert "fix this host's time sync; deadlines, expires_at and the quota day follow the database's clock" in (
        record.getMessage()
    )
