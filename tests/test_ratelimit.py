"""The token bucket is never exceeded in any window; priorities; pause on 429; daily quota."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semookii_bridge.api.endpoints import Priority
from semookii_bridge.ratelimit import QuotaExhausted, RateLimiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def max_in_window(stamps: list[float], window: float) -> int:
    best, start = 0, 0
    for end in range(len(stamps)):
        while stamps[end] - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.5, 50),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=400),
    window=st.floats(0.05, 5),
)
def test_bucket_never_exceeds_burst_plus_rate_in_any_window(
    rate: float, burst: int, gaps: list[float], window: float
) -> None:
    """Whatever the arrival pattern, calls in any window of T seconds are at most burst + rate * T."""
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock=clock)
    taken: list[float] = []
    for gap in gaps:
        clock.now += gap
        while bucket.try_take():
            taken.append(clock.now)
    assert max_in_window(taken, window) <= burst + rate * window + 1e-9


def test_pause_holds_every_call_then_resumes_gently() -> None:
    """After a 429 pause nothing is taken until it ends, then one token at a time."""
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock)
    bucket.pause(2.0)
    clock.now += 1.9
    assert not bucket.try_take()
    clock.now += 0.2
    assert bucket.try_take() and not bucket.try_take()


def test_daily_quota_is_enforced_and_resets_at_midnight_utc() -> None:
    """The third call of a two-call daily quota fails; the next UTC day it works again."""
    clock, wall = FakeClock(), FakeClock()
    wall.now = 86400 * 20000 + 100
    bucket = TokenBucket(0, 1, daily_quota=2, clock=clock, wall=wall)
    assert bucket.try_take() and bucket.try_take()
    with pytest.raises(QuotaExhausted):
        bucket.try_take()
    wall.now += 86400
    assert bucket.try_take()


def test_refund_returns_an_unused_token() -> None:
    """A token taken for a command that then expired goes back into the bucket."""
    clock = FakeClock()
    bucket = TokenBucket(1, 1, clock=clock)
    assert bucket.try_take() and not bucket.try_take()
    bucket.refund()
    assert bucket.try_take()


async def test_control_waiters_go_before_polling() -> None:
    """When tokens are scarce, a waiting control call is served before earlier polling calls."""
    limiter = RateLimiter(TokenBucket(20, 1))
    await limiter.acquire(Priority.POLL)
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        order.append(name)

    tasks = [asyncio.create_task(take("poll-1", Priority.POLL)), asyncio.create_task(take("poll-2", Priority.POLL))]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(take("control", Priority.CONTROL)))
    await asyncio.gather(*tasks)
    await limiter.close()
    assert order[0] == "control"


async def test_unlimited_rate_never_waits() -> None:
    """rate = 0 means no limit: a thousand acquisitions complete at once."""
    limiter = RateLimiter(TokenBucket(0, 1))
    await asyncio.wait_for(asyncio.gather(*(limiter.acquire(Priority.CONTROL) for _ in range(1000))), 1)
    await limiter.close()
