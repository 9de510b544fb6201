"""Scheduling of control commands: latest wins per target, ttl expiry, a concurrency cap, rate limit.

One loop takes a rate-limit token first and only then picks the command to send, so a command that is
superseded while waiting for the token is never sent. A target never has two calls in flight, so a
newer setpoint cannot overtake an older one on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .api.endpoints import Priority
from .commands import is_safety
from .errors import ErrorInfo
from .jobs import Job
from .ratelimit import QuotaExhausted, RateLimiter
from .states import Status

log = logging.getLogger(__name__)

EXPIRED = ErrorInfo(code="expired", message="the command's ttl passed before it could be sent")
DropFn = Callable[[Job, Status, ErrorInfo | None], None]


class Dispatcher:
    """Queues control jobs per target and feeds them to `send` under the shared rate limiter."""

    def __init__(
        self,
        limiter: RateLimiter,
        send: Callable[[Job], Awaitable[None]],
        on_drop: DropFn,
        *,
        max_in_flight: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limiter = limiter
        self._send = send
        self._on_drop = on_drop
        self._clock = clock
        self._pending: dict[str, Job] = {}
        self._ready: dict[str, None] = {}
        self._in_flight: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wake = asyncio.Event()

    @property
    def queued(self) -> int:
        """Commands waiting to be sent."""
        return len(self._pending)

    def oldest_received(self) -> float | None:
        """When the longest-waiting queued command arrived (wall clock), or None when none waits."""
        return min((job.received_at for job in self._pending.values()), default=None)

    @property
    def in_flight(self) -> int:
        """Control calls on the wire now."""
        return len(self._in_flight)

    def submit(self, job: Job) -> None:
        """Queue a job; a queued job for the same target is superseded by it."""
        key = job.key
        older = self._pending.get(key)
        if older is not None:
            self._cancel_timer(key)
            self._on_drop(older, "superseded", None)
        self._pending[key] = job
        if key not in self._in_flight:
            self._ready.setdefault(key, None)
        delay = max(0.0, job.deadline - self._clock())
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._expire, key, job)
        self._wake.set()

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, key: str, job: Job) -> None:
        if self._pending.get(key) is job:
            self._take(key)
            self._on_drop(job, "expired", EXPIRED)

    def _take(self, key: str) -> Job | None:
        job = self._pending.pop(key, None)
        self._ready.pop(key, None)
        self._cancel_timer(key)
        return job

    async def _next_key(self) -> str:
        while True:
            for key in list(self._ready):
                del self._ready[key]
                if key in self._pending and key not in self._in_flight:
                    return key
            self._wake.clear()
            await self._wake.wait()

    async def run(self) -> None:
        """Dispatch forever (cancel to stop); queued jobs stay journaled for the next start."""
        while True:
            key = await self._next_key()
            await self._slots.acquire()
            try:
                await self._limiter.acquire(Priority.CONTROL, reserve_ok=self._safety(key))
            except QuotaExhausted as exc:
                self._slots.release()
                job = self._take(key)
                if job is not None:
                    self._on_drop(job, "failed", ErrorInfo(code=QuotaExhausted.code, message=str(exc)))
                continue
            except BaseException:
                self._slots.release()
                raise
            self._launch(key)

    def _safety(self, key: str) -> bool:
        """Whether the command queued for `key` may use the quota's safety reserve (no reference kept: a
        local would hold the Job in this long-lived loop's frame)."""
        job = self._pending.get(key)
        return job is not None and is_safety(job.command)

    def _launch(self, key: str) -> None:
        job = self._take(key)
        if job is None or job.deadline <= self._clock():
            self._limiter.refund()
            self._slots.release()
            if job is not None:
                self._on_drop(job, "expired", EXPIRED)
            return
        self._in_flight.add(key)
        task = asyncio.get_running_loop().create_task(self._run_send(key, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_send(self, key: str, job: Job) -> None:
        try:
            await self._send(job)
        except Exception:
            log.exception("send_crashed request_id=%s", job.request_id)
        finally:
            self._in_flight.discard(key)
            self._slots.release()
            if key in self._pending:
                self._ready[key] = None
                self._wake.set()

    async def drain(self, seconds: float) -> None:
        """Wait up to `seconds` for calls in flight to finish (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)

    def close(self) -> None:
        """Cancel timers (queued jobs are left in the journal) and calls still in flight."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
