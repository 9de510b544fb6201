"""The budget topic: what it says of the day's calls, and that it is published only when something changed."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from semookii_bridge.api.endpoints import Priority
from semookii_bridge.budget.quota import DailyQuota
from semookii_bridge.budget.ratelimit import RateLimiter, TokenBucket
from semookii_bridge.budget.report import BudgetReporter, CallLog
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.broker import Mosquitto, Probe


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Queue:
    def __init__(self) -> None:
        self.queued = 0
        self.oldest: float | None = None

    def oldest_age(self) -> float | None:
        return self.oldest


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []

    def __call__(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.messages.append((topic, json.loads(payload), retain))


def reporter(limit: int = 100) -> tuple[BudgetReporter, CallLog, Queue, Published, Clock, Clock]:
    mono, wall = Clock(), Clock(datetime.fromisoformat("2026-11-27T12:00:00+00:00").timestamp())
    limiter = RateLimiter(TokenBucket(0.5, 3, clock=mono, quota=DailyQuota(limit, reserve=2, wall=wall)))
    calls, queue, published = CallLog(clock=mono), Queue(), Published()
    limiter.on_grant = calls.record
    budget = BudgetReporter(limiter=limiter, calls=calls, queue=queue, tracking=lambda: 4, publish=published,
                            topic="vpp/bridge/budget", wall=wall, clock=mono)  # fmt: skip
    return budget, calls, queue, published, mono, wall


def test_call_log_counts_the_last_minute_by_kind_and_the_ten_minute_rate() -> None:
    """Calls are counted per kind for 60 s; the projection rate spans 10 minutes."""
    clock = Clock()
    calls = CallLog(clock=clock)
    for priority in (Priority.CONTROL, Priority.CONTROL, Priority.POLL, Priority.MANAGEMENT):
        calls.record(priority)
    assert calls.last_minute() == {"control": 2, "management": 1, "polling": 1}
    clock.now += 61
    assert calls.last_minute() == {"control": 0, "management": 0, "polling": 0}
    assert calls.rate() == 4 / 600
    clock.now += 540
    assert calls.rate() == 0.0


async def test_the_budget_says_what_was_spent_and_what_is_left() -> None:
    """used, remaining, reserve, rate, burst, queue, tracking and a projected exhaustion from the recent rate."""
    budget, _, queue, _, _, _ = reporter(limit=100)
    for _ in range(3):
        await budget.limiter.acquire(Priority.CONTROL)
    queue.queued, queue.oldest = 2, 4.5
    doc = budget.snapshot()
    assert (doc.day, doc.used, doc.quota, doc.remaining, doc.reserve) == ("2026-11-27", 3, 100, 97, 2)
    assert (doc.rate, doc.burst, doc.queued, doc.oldest_queued_age, doc.tracking) == (0.5, 3, 2, 4.5, 4)
    assert doc.calls_last_minute == {"control": 3, "management": 0, "polling": 0}
    assert doc.exhausts_at == "2026-11-27T17:23:00.000Z"  # 97 calls at 3 per 600 s: 19,400 s, to the minute
    assert doc.paused_until is None and doc.ts == "2026-11-27T12:00:00.000Z"
    await budget.limiter.close()


def test_without_a_quota_nothing_is_projected() -> None:
    """No quota: quota, remaining and exhausts_at are null; calls are still counted."""
    budget, *_ = reporter(limit=0)
    doc = budget.snapshot()
    assert (doc.quota, doc.remaining, doc.exhausts_at, doc.oldest_queued_age) == (None, None, None, None)


def test_a_429_pause_shows_until_when() -> None:
    """While the API's 429 pause lasts, paused_until says when it ends."""
    budget, *_ = reporter()
    budget.limiter.throttled(30)
    assert budget.snapshot().paused_until == "2026-11-27T12:00:30.000Z"


async def test_published_retained_and_only_when_something_changed() -> None:
    """The same budget a second later is not published again; a new call is."""
    budget, _, _, published, _, wall = reporter()
    assert budget.publish_if_changed()
    wall.now += 1
    assert not budget.publish_if_changed()
    await budget.limiter.acquire(Priority.POLL)
    assert budget.publish_if_changed()
    assert [(t, d["used"], r) for t, d, r in published.messages] == [("vpp/bridge/budget", 0, True),
                                                                      ("vpp/bridge/budget", 1, True)]  # fmt: skip
    await budget.limiter.close()


async def test_budget_topic_through_the_broker(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """`vpp/bridge/budget` is retained and counts a command's calls by kind, as the API saw them."""
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port, subscribe=["vpp/bridge/budget", f"vpp/group/{group_id}/state"]) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "b1"})
        await probe.wait_status(f"vpp/group/{group_id}/state", "b1", "completed")
        calls = len(sim.simulator.calls)
        await probe.wait_for(lambda: [m for m in probe.on("vpp/bridge/budget") if m.json()["used"] == calls], timeout=5)
    with Probe(broker.port, subscribe="vpp/bridge/budget") as late:
        (retained,) = await late.wait_for(lambda: late.on("vpp/bridge/budget"))
    doc = retained.json()
    polls = len([c for c in sim.simulator.calls if c.path != "/commandapi/groupControl"])
    assert retained.retain and doc["used"] == calls
    assert doc["calls_last_minute"] == {"control": 1, "management": 0, "polling": polls}
    assert doc["quota"] is None and doc["tracking"] == 0 and doc["queued"] == 0
