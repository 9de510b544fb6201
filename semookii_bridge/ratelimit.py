"""Token bucket with an injectable clock; the one rate limit for all API calls, by priority.

`TokenBucket` is pure arithmetic (testable with a fake clock). `RateLimiter` wraps it for asyncio:
waiters are served strictly by priority (control first) then arrival, and a 429 pauses everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from .api.endpoints import Endpoint, Priority
from .api.errors import QuotaExceeded

Clock = Callable[[], float]


class QuotaExhausted(Exception):
    """The daily quota is used up until the next UTC day."""

    code = "rate_limited"


class TokenBucket:
    """`rate` tokens per second up to `burst`; `rate <= 0` means unlimited. Optional daily quota."""

    def __init__(
        self, rate: float, burst: int, *, daily_quota: int = 0, clock: Clock = time.monotonic, wall: Clock = time.time
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.daily_quota = daily_quota
        self._clock = clock
        self._wall = wall
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._paused_until = 0.0
        self._day = self._today()
        self._used_today = 0

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def _today(self) -> int:
        return int(self._wall() // 86400)

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
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

    def try_take(self) -> bool:
        """Take one token if available now; raises QuotaExhausted once the daily quota is spent."""
        self._check_quota()
        if self.delay() > 0:
            return False
        if not self.unlimited:
            self._tokens -= 1.0
        self._used_today += 1
        return True

    def refund(self) -> None:
        """Give back a token that was taken but not used for a call."""
        if not self.unlimited:
            self._tokens = min(float(self.burst), self._tokens + 1.0)
        self._used_today = max(0, self._used_today - 1)

    def pause(self, seconds: float) -> None:
        """Hold every call for `seconds` (after a 429) and empty the bucket so calls resume gently."""
        now = self._clock()
        self._paused_until = max(self._paused_until, now + seconds)
        self._tokens = 0.0
        self._stamp = max(self._stamp, now + seconds)

    def _check_quota(self) -> None:
        if self.daily_quota <= 0:
            return
        today = self._today()
        if today != self._day:
            self._day, self._used_today = today, 0
        if self._used_today >= self.daily_quota:
            raise QuotaExhausted(f"daily quota of {self.daily_quota} API calls used up")


class RateLimiter:
    """Async front of a TokenBucket: `await acquire(priority)`; lower priority numbers go first.

    Strict priority would starve result polling under sustained control load, so confirmations never came:
    while polls wait behind other calls, they earn `poll_share` of a token per token granted to those
    calls, and take the next token once they hold a whole one.
    """

    def __init__(self, bucket: TokenBucket, *, default_pause: float = 1.0, poll_share: float = 0.0) -> None:
        self.bucket = bucket
        self.default_pause = default_pause
        self.poll_share = poll_share
        self._queues: dict[int, deque[asyncio.Future[None]]] = {int(p): deque() for p in Priority}
        self._poll_credit = 0.0
        self._pump: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def queue_depth(self) -> int:
        """Calls waiting for a token."""
        return sum(1 for queue in self._queues.values() for f in queue if not f.done())

    async def acquire(self, priority: int) -> None:
        """Wait for a token; raises QuotaExhausted when the daily quota is spent."""
        if not self._pick() and self.bucket.try_take():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues[priority].append(future)
        self._ensure_pump()
        self._wake.set()
        await future

    def refund(self) -> None:
        """Return an unused token (the command it was taken for expired or was gone)."""
        self.bucket.refund()
        self._wake.set()

    def throttled(self, retry_after: float | None) -> None:
        """The API answered 429: pause all callers for its Retry-After (or the default)."""
        self.bucket.pause(retry_after if retry_after is not None else self.default_pause)
        self._wake.set()

    def _ensure_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run())

    def _pick(self) -> deque[asyncio.Future[None]] | None:
        """The queue whose head gets the next token: the most urgent, unless polls have earned a turn."""
        for queue in self._queues.values():
            while queue and queue[0].done():
                queue.popleft()
        first = next((q for _, q in sorted(self._queues.items()) if q), None)
        polls = self._queues[Priority.POLL]
        if first is not None and first is not polls and polls and self._poll_credit >= 1.0 - 1e-9:
            return polls
        return first

    def _granted(self, queue: deque[asyncio.Future[None]]) -> None:
        """Book a token given to `queue` against the polls' share while polls are waiting."""
        polls = self._queues[Priority.POLL]
        if queue is polls:
            self._poll_credit = max(0.0, self._poll_credit - 1.0)
        elif polls:
            self._poll_credit = min(1.0, self._poll_credit + self.poll_share)

    async def _run(self) -> None:
        while (queue := self._pick()) is not None:
            try:
                taken = self.bucket.try_take()
            except QuotaExhausted as exc:
                queue.popleft().set_exception(exc)
                continue
            if taken:
                self._granted(queue)
                queue.popleft().set_result(None)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(self.bucket.delay(), 0.0005))

    async def close(self) -> None:
        """Stop the pump; waiting callers are cancelled."""
        for queue in self._queues.values():
            for future in queue:
                if not future.done():
                    future.cancel()
            queue.clear()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)


class LimiterGate:
    """Adapts the RateLimiter to the API client's gate: priority by endpoint, 429 pauses everyone."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def acquire(self, endpoint: Endpoint) -> None:
        try:
            await self.limiter.acquire(endpoint.priority)
        except QuotaExhausted as exc:
            raise QuotaExceeded(str(exc), endpoint=endpoint.name) from None

    def throttled(self, retry_after: float | None) -> None:
        self.limiter.throttled(retry_after)
