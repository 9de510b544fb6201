"""Token bucket with an injectable clock; the one rate limit for all API calls, by priority.

`TokenBucket` is pure arithmetic (testable with a fake clock). `RateLimiter` wraps it for asyncio:
waiters are served strictly by priority (control first) then arrival, and a 429 pauses everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Protocol

from .quota import DailyQuota, QuotaExhausted


class Priority(IntEnum):
    """Rate-limit priority: control calls go first, then management, then result polling."""

    CONTROL = 0
    MANAGEMENT = 1
    POLL = 2


__all__ = ["BucketState", "Priority", "QuotaExhausted", "RateLimiter", "TokenBucket"]

Clock = Callable[[], float]


class BucketState(NamedTuple):
    """What a restart needs to go on where the bucket stood, in instants of the journal's timeline."""

    tokens: float
    stamp: float
    paused_until: float
    banned_until: float


class BucketStore(Protocol):
    """Where the bucket's state is kept (the journal)."""

    def bucket_state(self) -> BucketState | None: ...

    def record_bucket(self, state: BucketState) -> None: ...


class TokenBucket:
    """`rate` tokens per second up to `burst`; `rate <= 0` means unlimited. Every token taken is counted
    against the daily quota (`daily_quota`, or the `quota` given).

    The vendor counts calls when they arrive, not when the bridge takes a token: between the two lie the
    event loop's delays, which vary (a busy loop, other processes on the CPU). If that variation stays
    within `margin` seconds, holding `rate * margin` fewer tokens at most keeps every window at the server
    within `burst + rate * window`: calls arriving in a window were granted in one `margin` longer.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        daily_quota: int = 0,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        quota: DailyQuota | None = None,
        margin: float = 0.0,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.capacity = max(1.0, self.burst - max(0.0, rate) * margin)
        self.quota = quota if quota is not None else DailyQuota(daily_quota, reserve=0, wall=wall)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._paused_until = 0.0
        self.banned_until = 0.0
        self._store: BucketStore | None = None

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def attach(self, store: BucketStore, clock: Clock, *, doubt: float = 0.0) -> None:
        """Keep time by `clock` (the journal's timeline) and go on from the state `store` holds, so a restart
        never starts from a full bucket; `doubt`: seconds of the downtime that may not have passed (after a
        reboot), not refilled."""
        self._clock, self._store = clock, store
        now = clock()
        self._stamp = now
        state = store.bucket_state()
        if state is not None:
            self._resume(state, now, doubt)

    def _resume(self, state: BucketState, now: float, doubt: float) -> None:
        elapsed = max(0.0, now - doubt - state.stamp)
        self._tokens = min(self.capacity, max(0.0, state.tokens) + elapsed * max(0.0, self.rate))
        self._stamp = max(now, state.stamp)
        self._paused_until = state.paused_until
        self.banned_until = state.banned_until

    def _save(self) -> None:
        if self._store is not None:
            state = BucketState(self._tokens, self._stamp, self._paused_until, self.banned_until)
            self._store.record_bucket(state)

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def tokens(self) -> float:
        """Tokens available now (for metrics)."""
        if self.unlimited:
            return float("inf")
        self._refill(self._clock())
        return self._tokens

    def delay(self) -> float:
        """Seconds until one token can be taken (0 when one is available now)."""
        now = self._clock()
        pause = max(0.0, self._paused_until - now)
        if self.unlimited:
            return pause
        self._refill(now)
        missing = max(0.0, 1.0 - self._tokens)
        if missing == 0.0:
            return pause
        # After a pause the bucket refills only from its end (`_stamp`), so the wait is the pause plus a refill.
        return max(pause, max(0.0, self._stamp - now) + missing / self.rate)

    def try_take(self, *, reserve_ok: bool = False) -> bool:
        """Take one token if available now; raises QuotaExhausted once the daily quota is spent (all of it
        with `reserve_ok`, for safety commands; all but the reserve otherwise)."""
        self.quota.check(reserve_ok=reserve_ok)
        if self.delay() > 0:
            return False
        if not self.unlimited:
            self._tokens -= 1.0
            self._save()
        self.quota.spend()
        return True

    def refund(self) -> None:
        """Give back a token that was taken but not used for a call."""
        if not self.unlimited:
            self._tokens = min(self.capacity, self._tokens + 1.0)
            self._save()
        self.quota.refund()

    def now(self) -> float:
        """The bucket's clock."""
        return self._clock()

    def paused_for(self) -> float:
        """Seconds left of a 429 pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    def pause(self, seconds: float) -> None:
        """Hold every call for `seconds` (after a 429) and empty the bucket so calls resume gently."""
        now = self._clock()
        self._paused_until = max(self._paused_until, now + seconds)
        self._tokens = 0.0
        self._stamp = max(self._stamp, now + seconds)
        self._save()

    def ban(self, seconds: float) -> None:
        """The API banned the token: a pause that is also reported as a ban (and survives a restart)."""
        self.banned_until = max(self.banned_until, self._clock() + seconds)
        self.pause(seconds)

    def banned_for(self) -> float:
        """Seconds left of a ban the API announced (0 when none)."""
        return max(0.0, self.banned_until - self._clock())


@dataclass(frozen=True, slots=True)
class _Waiter:
    future: asyncio.Future[None]
    reserve_ok: bool
    urgent: bool = False


class RateLimiter:
    """Async front of a TokenBucket: `await acquire(priority)`; lower priority numbers go first.

    Strict priority would starve result polling under sustained control load, so confirmations never came:
    while polls wait behind other calls, they earn `poll_share` of a token per token granted to those
    calls, and take the next token once they hold a whole one. Among polls the newest goes first: a
    just-accepted command is the one still worth confirming, while an old one is likely to be replaced
    by then (and its window, kept by the clock, ends it without a call). An `urgent` poll goes before the
    others: the result query of a command already dispatched, whose answer completes it (otherwise each
    newer command's first poll would overtake it, and under load nothing would ever complete).
    """

    def __init__(self, bucket: TokenBucket, *, default_pause: float = 1.0, poll_share: float = 0.0) -> None:
        self.bucket = bucket
        self.default_pause = default_pause
        self.poll_share = poll_share
        self.after_grant: Callable[[], Awaitable[None]] | None = None
        """Awaited after each grant: the journal's commit, so a counted call is on disk before it leaves."""
        self.on_grant: Callable[[int], None] | None = None
        """Told the priority of each call granted (the budget's call log)."""
        self._queues: dict[int, deque[_Waiter]] = {int(p): deque() for p in sorted(Priority)}
        self._poll_credit = 0.0
        self._pump: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def queue_depth(self) -> int:
        """Calls waiting for a token."""
        return sum(1 for queue in self._queues.values() for w in queue if not w.future.done())

    async def acquire(self, priority: int, *, reserve_ok: bool = False, urgent: bool = False) -> None:
        """Wait for a token; raises QuotaExhausted when the daily quota is spent. `reserve_ok`: a safety
        command, which may use the quota's reserve; `urgent`: a poll served before the other polls."""
        if self._pick() is not None or self._paced(priority) or not self.bucket.try_take(reserve_ok=reserve_ok):
            waiter = _Waiter(asyncio.get_running_loop().create_future(), reserve_ok, urgent)
            self._queues[priority].append(waiter)
            self._ensure_pump()
            self._wake.set()
            try:
                await waiter.future
            except asyncio.CancelledError:
                if _granted(waiter.future):
                    self.refund()  # granted just as the caller gave up: the token is not lost
                raise
        if self.on_grant is not None:
            self.on_grant(priority)
        if self.after_grant is not None:
            try:
                await self.after_grant()
            except asyncio.CancelledError:
                self.refund()  # the call will not be made
                raise

    def refund(self) -> None:
        """Return an unused token (the command it was taken for expired or was gone)."""
        self.bucket.refund()
        self._wake.set()

    def throttled(self, retry_after: float | None) -> None:
        """The API answered 429: pause all callers for its Retry-After (or the default)."""
        self.bucket.pause(retry_after if retry_after is not None else self.default_pause)
        self._wake.set()

    def banned(self, seconds: float) -> None:
        """The API banned the token: pause every call until the ban ends."""
        self.bucket.ban(seconds)
        self._wake.set()

    def banned_for(self) -> float:
        """Seconds left of a ban the API announced (0 when none)."""
        return self.bucket.banned_for()

    def _ensure_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run())

    def _paced(self, priority: int) -> bool:
        """Whether `priority` must wait for the quota's pace (`pace_quota`: polls and management calls
        follow an even spread of the day's quota; control calls are never paced)."""
        return priority != Priority.CONTROL and self.bucket.quota.pace_wait() > 0

    def _pick(self) -> int | None:
        """The priority whose next waiter gets the next token: the most urgent (the queues are kept in
        priority order), unless polls have earned a turn; None when nobody waits (or only paced calls)."""
        first = None
        paced = self.bucket.quota.pace_wait() > 0
        for priority, queue in self._queues.items():
            while queue and self._head(priority, queue).future.done():
                self._take(priority, queue)
            if queue and first is None and not (paced and priority != Priority.CONTROL):
                first = priority
        polls_earned = self._poll_credit >= 1.0 - 1e-9 and bool(self._queues[Priority.POLL]) and not paced
        return Priority.POLL if first is not None and polls_earned else first

    def _waiting(self) -> bool:
        return any(not w.future.done() for queue in self._queues.values() for w in queue)

    @staticmethod
    def _head(priority: int, queue: deque[_Waiter]) -> _Waiter:
        """The waiter served next in a queue: the oldest, except for polls: the newest urgent one, else the
        newest."""
        return queue[_poll_turn(queue)] if priority == Priority.POLL else queue[0]

    @staticmethod
    def _take(priority: int, queue: deque[_Waiter]) -> _Waiter:
        if priority != Priority.POLL:
            return queue.popleft()
        index = _poll_turn(queue)
        waiter = queue[index]
        del queue[index]
        return waiter

    def _granted(self, priority: int) -> None:
        """Book a token given to `priority` against the polls' share while polls are waiting."""
        if priority == Priority.POLL:
            self._poll_credit = max(0.0, self._poll_credit - 1.0)
        elif self._queues[Priority.POLL]:
            self._poll_credit = min(1.0, self._poll_credit + self.poll_share)

    async def _run(self) -> None:
        while True:
            priority = self._pick()
            if priority is None:
                if not self._waiting():
                    return
                await self._sleep(self.bucket.quota.pace_wait())  # only paced calls wait
                continue
            queue = self._queues[priority]
            try:
                taken = self.bucket.try_take(reserve_ok=self._head(priority, queue).reserve_ok)
            except Exception as exc:  # QuotaExhausted, or a bug: the caller hears it rather than hangs
                self._take(priority, queue).future.set_exception(exc)
                continue
            if taken:
                self._granted(priority)
                self._take(priority, queue).future.set_result(None)
                continue
            await self._sleep(self.bucket.delay())

    async def _sleep(self, seconds: float) -> None:
        """Wait `seconds` or until woken (a new waiter, a refund, a pause)."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0005))

    async def close(self) -> None:
        """Stop the pump; waiting callers are cancelled."""
        for queue in self._queues.values():
            for waiter in queue:
                if not waiter.future.done():
                    waiter.future.cancel()
            queue.clear()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)


def _granted(future: asyncio.Future[None]) -> bool:
    """Whether a waiter's future holds a grant (not cancelled, no QuotaExhausted)."""
    return future.done() and not future.cancelled() and future.exception() is None


def _poll_turn(queue: deque[_Waiter]) -> int:
    """Index of the poll served next: the newest urgent waiter, else the newest (polls wait a few dozen at
    most, bounded by the poll schedule's concurrency, so the scan is short)."""
    for index in range(len(queue) - 1, -1, -1):
        if queue[index].urgent:
            return index
    return len(queue) - 1
