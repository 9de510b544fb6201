"""Scheduling of control commands: latest wins per target, ttl expiry, a concurrency cap, rate limit.

One loop takes a rate-limit token first and only then picks the command to send, so a command that is
superseded while waiting for the token is never sent. A target never has two calls in flight, so a
newer setpoint cannot overtake an older one on the wire. With a merge policy, the picked inverter command
takes along the queued commands with the same API parameters (one batch call for all): no command waits
for company, and commands merge exactly when the limit makes them queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from ..budget.breaker import Breaker
from ..budget.ratelimit import Priority, QuotaExhausted, RateLimiter
from ..common.clock import steady
from ..errors import ErrorInfo
from ..ha.holdback import Holdback
from .commands import is_safety
from .jobs import Job
from .merging import MergePolicy
from .statuses import Status

log = logging.getLogger(__name__)

EXPIRY_SLICE = 500
"""Expired commands reported per loop turn."""
EXPIRED = ErrorInfo(code="expired", message="the command's ttl passed before it could be sent")
DropFn = Callable[[Job, Status, ErrorInfo | None], None]


class Dispatcher:
    """Queues control jobs per target and feeds them to `send` under the shared rate limiter."""

    def __init__(
        self,
        limiter: RateLimiter,
        send: Callable[[Sequence[Job]], Awaitable[None]],
        on_drop: DropFn,
        *,
        max_in_flight: int = 8,
        clock: Callable[[], float] = steady,
        merge: MergePolicy | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self._limiter = limiter
        self._send = send
        self._on_drop = on_drop
        self._clock = clock
        self._pending: dict[str, Job] = {}
        self._ready: dict[str, None] = {}
        self._first: dict[str, None] = {}
        """Targets whose queued command is a safety command (manual stop, ...): sent before the others."""
        self._in_flight: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wake = asyncio.Event()
        self._merge = merge
        self._expired: deque[Job] = deque()
        self._reporter: asyncio.Task[None] | None = None
        self._alike: dict[bytes, dict[str, None]] = {}
        self.breaker = breaker or Breaker()
        """Open after a control call timed out: only safety commands go until the API answers (`breaker.py`)."""
        self.breaker.listeners.append(lambda _open: self._wake.set())
        self.holdback = Holdback(clock)
        """Targets a previous leader may still have a call on the wire for (`holdback.py`)."""
        self._held: dict[str, None] = {}
        self._release_timer: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        """Commands waiting to be sent."""
        return len(self._pending)

    def oldest_age(self) -> float | None:
        """Seconds the longest-waiting queued command has waited, or None when none waits."""
        oldest = min((job.received_at for job in self._pending.values()), default=None)
        return None if oldest is None else max(0.0, self._clock() - oldest)

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
            self._unindex(key, older)
            self._on_drop(older, "superseded", None)
        if self._merge is not None:
            job.merge_sig = self._merge.signature(job)
            if job.merge_sig is not None:
                self._alike.setdefault(job.merge_sig, {})[key] = None
        self._pending[key] = job
        if key not in self._in_flight:
            self._mark_ready(key, job)
        delay = max(0.0, job.deadline - self._clock())
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._expire, key, job)
        self._wake.set()

    def _mark_ready(self, key: str, job: Job) -> None:
        """The target may be sent next: in arrival order, a safety command before every other command (a
        stop must not wait behind a thousand queued setpoints)."""
        (self._first if is_safety(job.command) else self._ready).setdefault(key, None)

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, key: str, job: Job) -> None:
        """A queued job's ttl passed: out of the queue now, reported in slices (60,000 commands expiring
        together once held the loop for a minute, and the broker disconnected the bridge)."""
        if self._pending.get(key) is job:
            self._take(key)
            self._expired.append(job)
            if self._reporter is None or self._reporter.done():
                self._reporter = asyncio.get_running_loop().create_task(self._report_expired())

    async def _report_expired(self) -> None:
        """Report expired jobs EXPIRY_SLICE at a time, yielding to the loop between slices."""
        while self._expired:
            for _ in range(min(EXPIRY_SLICE, len(self._expired))):
                self._on_drop(self._expired.popleft(), "expired", EXPIRED)
            await asyncio.sleep(0)

    def _take(self, key: str) -> Job | None:
        job = self._pending.pop(key, None)
        self._ready.pop(key, None)
        self._first.pop(key, None)
        self._cancel_timer(key)
        if job is not None:
            self._unindex(key, job)
        return job

    def _unindex(self, key: str, job: Job) -> None:
        """Forget a job that leaves the queue from the merge index."""
        if job.merge_sig is None:
            return
        alike = self._alike.get(job.merge_sig)
        if alike is not None:
            alike.pop(key, None)
            if not alike:
                del self._alike[job.merge_sig]

    async def _next_key(self) -> str:
        while True:
            for ready in (self._first,) if self.breaker.open else (self._first, self._ready):
                while ready:
                    key = next(iter(ready))
                    del ready[key]
                    if key in self._pending and key not in self._in_flight:
                        wait = self.holdback.left(self._pending[key])
                        if wait <= 0:
                            return key
                        self._hold(key, wait)
            self._wake.clear()
            await self._wake.wait()

    def _hold(self, key: str, wait: float) -> None:
        """Keep `key` out of the ready lists until the holdback has passed."""
        self._held[key] = None
        if self._release_timer is None:
            self._release_timer = asyncio.get_running_loop().call_later(wait, self._release)

    def _release(self) -> None:
        """The holdback passed: held targets are ready again (in the order they were held)."""
        self._release_timer = None
        held, self._held = self._held, {}
        for key in held:
            if (job := self._pending.get(key)) is not None and key not in self._in_flight:
                self._mark_ready(key, job)
        self._wake.set()

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
        held = self._pending.get(key)
        if held is not None and self.breaker.open and not is_safety(held.command):
            self._limiter.refund()  # the breaker opened while it waited for its token: it waits again
            self._slots.release()
            self._mark_ready(key, held)
            return
        job = self._take(key)
        if job is None or job.deadline <= self._clock():
            self._limiter.refund()
            self._slots.release()
            if job is not None:
                self._on_drop(job, "expired", EXPIRED)
            return
        jobs = [job, *self._companions(job)]
        self._in_flight.update(j.key for j in jobs)
        task = asyncio.get_running_loop().create_task(self._run_send(jobs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _companions(self, lead: Job) -> list[Job]:
        """Queued jobs to send in the lead's call: same parameters, inverters known and not overlapping,
        their targets not on the wire, within the batch size. Taken out of the queue."""
        if self._merge is None or not self._merge.eligible(lead) or lead.merge_sig is None:
            return []
        taken: list[Job] = []
        names = set(lead.inverters)
        now = self._clock()
        for key in list(self._alike.get(lead.merge_sig, ())):
            job = self._pending[key]
            sns = job.inverters
            if (
                key in self._in_flight
                or job.deadline <= now
                or len(names) + len(sns) > self._merge.max_sns
                or not names.isdisjoint(sns)
                or not self._merge.eligible(job)
                or self.holdback.left(job) > 0
            ):
                continue
            self._take(key)
            names.update(sns)
            taken.append(job)
            if len(names) >= self._merge.max_sns:
                break
        return taken

    async def _run_send(self, jobs: list[Job]) -> None:
        try:
            await self._send(jobs)
        except Exception:
            log.exception("send_crashed request_id=%s", jobs[0].request_id)
        finally:
            self._slots.release()
            for job in jobs:
                key = job.key
                self._in_flight.discard(key)
                if (queued := self._pending.get(key)) is not None:
                    self._mark_ready(key, queued)
                    self._wake.set()

    async def drain(self, seconds: float) -> None:
        """Wait up to `seconds` for calls in flight to finish (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)

    def close(self) -> None:
        """Cancel timers (queued jobs are left in the journal) and calls still in flight; report what has
        expired but was not reported yet."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._release_timer is not None:
            self._release_timer.cancel()
        if self._reporter is not None:
            self._reporter.cancel()
        while self._expired:
            self._on_drop(self._expired.popleft(), "expired", EXPIRED)
        for task in self._tasks:
            task.cancel()
