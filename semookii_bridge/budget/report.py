"""The API budget as operators see it on `<prefix>/bridge/budget`: what was spent today, what is left, how
fast it goes, and what waits. Plain code: it reads the limiter, the dispatcher and the tracker, and hands a
payload to a publisher; it knows no MQTT.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import msgspec

from ..interface import wire
from ..interface.payloads import ApiState, utc_now_text
from .ratelimit import Priority, RateLimiter

KINDS = {Priority.CONTROL: "control", Priority.MANAGEMENT: "management", Priority.POLL: "polling"}
PROJECTION_WINDOW = 600.0
"""Seconds of recent calls whose rate projects when the quota runs out."""


class CallLog:
    """Calls granted, by kind, counted per second for the last ten minutes (bounded memory at any rate)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seconds: deque[list[int]] = deque()
        """[second, control, management, polling] per second that saw a call, oldest first."""
        self._total = 0
        self.totals = [0, 0, 0]
        """Calls granted since start: control, management, polling."""

    def by_kind(self) -> dict[str, int]:
        """Calls granted since start per kind (`control`, `management`, `polling`)."""
        return dict(zip(KINDS.values(), self.totals, strict=True))

    def record(self, priority: int) -> None:
        """One call granted (the limiter's `on_grant`)."""
        second = int(self._clock())
        if not self._seconds or self._seconds[-1][0] != second:
            self._seconds.append([second, 0, 0, 0])
            self._trim()
        column = _COLUMN.get(priority, 0)
        self._seconds[-1][1 + column] += 1
        self.totals[column] += 1
        self._total += 1

    def _trim(self) -> None:
        horizon = self._clock() - PROJECTION_WINDOW
        while self._seconds and self._seconds[0][0] < horizon:
            self._total -= sum(self._seconds.popleft()[1:])

    def last_minute(self) -> dict[str, int]:
        """Calls per kind in the last 60 s."""
        self._trim()
        since = self._clock() - 60.0
        counts = [0, 0, 0]
        for row in reversed(self._seconds):
            if row[0] < since:
                break
            for i in range(3):
                counts[i] += row[1 + i]
        return dict(zip(KINDS.values(), counts, strict=True))

    def rate(self) -> float:
        """Calls per second over the projection window."""
        self._trim()
        return self._total / PROJECTION_WINDOW


_COLUMN = {int(Priority.CONTROL): 0, int(Priority.MANAGEMENT): 1, int(Priority.POLL): 2}


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """The retained budget message."""

    day: str
    used: int
    quota: int | None
    remaining: int | None
    reserve: int
    exhausts_at: str | None
    rate: float
    burst: int
    calls_last_minute: dict[str, int]
    queued: int
    oldest_queued_age: float | None
    tracking: int
    paused_until: str | None
    planned_next_hour: int = 0
    """Calls the dispatch plans held will need in the next hour (one per interval start, before merging)."""
    api: ApiState = "unknown"
    """The token's standing: `authorized`, `unauthorized` (every call fails at once) or `unknown`."""
    ts: str


class Queue(Protocol):
    """What the budget reads of the dispatcher."""

    @property
    def queued(self) -> int: ...

    def oldest_age(self) -> float | None: ...


class Publish(Protocol):
    def __call__(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...


class BudgetReporter:
    """Publishes the budget (retained) at most once per `interval` and only when something in it changed."""

    def __init__(
        self,
        *,
        limiter: RateLimiter,
        calls: CallLog,
        queue: Queue,
        tracking: Callable[[], int],
        publish: Publish,
        topic: str,
        interval: float = 1.0,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter, self.calls, self.queue = limiter, calls, queue
        self._tracking, self._publish, self.topic = tracking, publish, topic
        self.interval, self._wall, self._clock = interval, wall, clock
        self._last: Budget | None = None
        self.api_state: Callable[[], ApiState] = lambda: "unknown"
        self.planned: Callable[[], int] = lambda: 0
        """Calls the dispatch plans held need in the next hour (set by the bridge)."""

    def snapshot(self) -> Budget:
        """The budget now."""
        bucket, quota = self.limiter.bucket, self.limiter.bucket.quota
        now = self._wall()
        rate = self.calls.rate()
        remaining = quota.remaining
        exhausts = None
        if remaining is not None and rate > 0:
            exhausts = utc_now_text((now + remaining / rate) // 60 * 60)  # to the minute: no churn each second
        oldest = self.queue.oldest_age()
        pause = bucket.paused_for()
        return Budget(
            day=quota.day,
            used=quota.used,
            quota=quota.limit or None,
            remaining=remaining,
            reserve=quota.reserve,
            exhausts_at=exhausts,
            rate=bucket.rate,
            burst=bucket.burst,
            calls_last_minute=self.calls.last_minute(),
            queued=self.queue.queued,
            oldest_queued_age=None if oldest is None else round(oldest, 3),
            tracking=self._tracking(),
            paused_until=None if pause <= 0 else utc_now_text(now + pause),
            planned_next_hour=self.planned(),
            api=self.api_state(),
            ts=utc_now_text(now),
        )

    def publish_if_changed(self) -> bool:
        """Publish the budget if anything but its timestamp changed since the last one; True if published."""
        budget = self.snapshot()
        if self._last is not None and msgspec.structs.replace(budget, ts=self._last.ts) == self._last:
            return False
        self._last = budget
        self._publish(self.topic, wire.encode(budget), retain=True)
        return True

    async def run(self) -> None:
        """Publish changes, at most once per interval, until cancelled."""
        while True:
            self.publish_if_changed()
            await asyncio.sleep(self.interval)


class BridgeSample(msgspec.Struct, frozen=True, kw_only=True):
    """What the bridge's queue and budget look like now: read by the status page and the metrics, so neither
    reaches into the bridge's parts."""

    queued: int
    in_flight: int
    tracking: int
    oldest_queued: float
    calls_by_kind: dict[str, int]
    plans: dict[str, int] | None = None
    """How many targets' plans are in each status."""
    budget: Budget | None = None
    """The budget report (only when asked for: the status page shows it, the metrics need not compute it)."""
    plan_rows: list[dict[str, object]] | None = None
    """The active plans (only when asked for, with the budget: the status page lists them)."""
