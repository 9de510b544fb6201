"""Scheduling rules in isolation: latest wins, expiry, one call in flight per target, concurrency cap."""

from __future__ import annotations

import asyncio
import time

from semookii_bridge.commands import Manual
from semookii_bridge.dispatcher import Dispatcher
from semookii_bridge.errors import ErrorInfo
from semookii_bridge.jobs import Job
from semookii_bridge.ratelimit import RateLimiter, TokenBucket
from semookii_bridge.topics import Target


def job(rid: str, target: str = "1", ttl: float = 60.0) -> Job:
    command = Manual(action="stop")
    return Job(request_id=rid, target=Target("group", target), command=command, sns=None,
               received_at=time.time(), deadline=time.time() + ttl)  # fmt: skip


class Recorder:
    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.sent: list[str] = []
        self.dropped: list[tuple[str, str]] = []
        self.active = 0
        self.peak = 0
        self.hold = hold

    async def send(self, j: Job) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.sent.append(j.request_id)
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(0.01)
        self.active -= 1

    def drop(self, j: Job, status: str, error: ErrorInfo | None) -> None:
        self.dropped.append((j.request_id, status))


async def run_until(dispatcher: Dispatcher, condition: object, seconds: float = 3.0) -> None:
    task = asyncio.create_task(dispatcher.run())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():  # type: ignore[operator]
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_latest_wins_while_waiting_for_a_token() -> None:
    """Three setpoints for one group queued behind the rate limit: only the newest is sent."""
    bucket = TokenBucket(5, 1)
    bucket.try_take()
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop)
    for rid in ("a", "b", "c"):
        dispatcher.submit(job(rid))
    await run_until(dispatcher, lambda: rec.sent)
    assert rec.sent == ["c"] and rec.dropped == [("a", "superseded"), ("b", "superseded")]


async def test_different_targets_do_not_supersede_each_other() -> None:
    """Latest-wins is per target: commands for two groups are both sent."""
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), rec.send, rec.drop)
    dispatcher.submit(job("a", "1"))
    dispatcher.submit(job("b", "2"))
    await run_until(dispatcher, lambda: len(rec.sent) == 2)
    assert sorted(rec.sent) == ["a", "b"] and not rec.dropped


async def test_queued_command_expires_at_its_deadline() -> None:
    """A command that cannot be sent before its ttl is `expired` on time, not sent late."""
    bucket = TokenBucket(0.1, 1)
    bucket.try_take()
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop)
    dispatcher.submit(job("late", ttl=0.1))
    await run_until(dispatcher, lambda: rec.dropped, seconds=1)
    assert rec.dropped == [("late", "expired")] and rec.sent == []


async def test_one_call_in_flight_per_target() -> None:
    """A newer command for a target waits until the call for the older one has returned."""
    hold = asyncio.Event()
    rec = Recorder(hold)
    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), rec.send, rec.drop)
    task = asyncio.create_task(dispatcher.run())
    dispatcher.submit(job("first"))
    await asyncio.sleep(0.05)
    dispatcher.submit(job("second"))
    await asyncio.sleep(0.05)
    assert rec.sent == ["first"]
    hold.set()
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rec.sent == ["first", "second"] and rec.peak == 1


async def test_concurrency_cap() -> None:
    """No more than max_in_flight control calls at once."""
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), rec.send, rec.drop, max_in_flight=3)
    for i in range(20):
        dispatcher.submit(job(str(i), target=str(i)))
    await run_until(dispatcher, lambda: len(rec.sent) == 20)
    assert len(rec.sent) == 20 and rec.peak == 3
