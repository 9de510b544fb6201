"""The token bucket is never exceeded in any window; priorities; pause on 429; daily quota."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semookii_bridge.api.endpoints import Priority
from semookii_bridge.budget.ratelimit import QuotaExhausted, RateLimiter, TokenBucket

from .support.load import max_in_window


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now




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


def test_tokens_start_full_and_refill_at_the_rate_up_to_burst() -> None:
    """A new bucket holds `burst` tokens; taken ones come back at `rate` per second, never above burst."""
    clock = FakeClock()
    bucket = TokenBucket(2, 3, clock=clock)
    assert bucket.tokens() == 3.0
    assert bucket.try_take() and bucket.try_take() and bucket.tokens() == 1.0
    clock.now += 0.25
    assert bucket.tokens() == 1.5
    clock.now += 10
    assert bucket.tokens() == 3.0
    assert TokenBucket(0, 1).tokens() == float("inf") and TokenBucket(0, 0).burst == 1


def test_delay_says_when_the_next_token_comes() -> None:
    """delay() is 0 with a token, else the time until one token has refilled, or the pause if longer."""
    clock = FakeClock()
    bucket = TokenBucket(4, 1, clock=clock)
    assert bucket.delay() == 0.0
    bucket.try_take()
    assert bucket.delay() == 0.25
    clock.now += 0.1
    assert abs(bucket.delay() - 0.15) < 1e-9
    bucket.pause(3.0)
    assert bucket.delay() == 3.25
    unlimited = TokenBucket(0, 1, clock=clock)
    assert unlimited.delay() == 0.0
    unlimited.pause(2.0)
    assert unlimited.delay() == 2.0 and not unlimited.try_take()


def test_a_shorter_pause_does_not_cut_a_longer_one() -> None:
    """Two 429s: the pause lasts until the later of the two ends."""
    clock = FakeClock()
    bucket = TokenBucket(100, 5, clock=clock)
    bucket.pause(5.0)
    clock.now += 1
    bucket.pause(1.0)
    clock.now += 3.5
    assert not bucket.try_take()
    clock.now += 0.6
    assert bucket.try_take()


def test_refund_never_overfills_and_gives_back_quota() -> None:
    """A refund adds at most up to burst and returns the call to the daily quota."""
    clock, wall = FakeClock(), FakeClock()
    bucket = TokenBucket(1, 2, daily_quota=1, clock=clock, wall=wall)
    bucket.refund()
    assert bucket.tokens() == 2.0
    assert bucket.try_take()
    bucket.refund()
    assert bucket.try_take()
    with pytest.raises(QuotaExhausted, match="daily quota of 1 API calls used up"):
        bucket.try_take()


def test_unlimited_rate_still_counts_the_quota() -> None:
    """rate = 0 has no per-second limit but the daily quota holds, and refunds give calls back."""
    bucket = TokenBucket(0, 1, daily_quota=2)
    assert bucket.try_take() and bucket.try_take()
    bucket.refund()
    assert bucket.try_take()
    with pytest.raises(QuotaExhausted):
        bucket.try_take()


async def test_waiters_are_counted_and_throttling_pauses_them() -> None:
    """queue_depth counts callers waiting; a 429 without Retry-After pauses for the default pause."""
    limiter = RateLimiter(TokenBucket(50, 1), default_pause=0.3)
    await limiter.acquire(Priority.CONTROL)
    waiters = [asyncio.create_task(limiter.acquire(Priority.POLL)) for _ in range(3)]
    await asyncio.sleep(0)
    assert limiter.queue_depth() == 3
    started = asyncio.get_running_loop().time()
    limiter.throttled(None)
    await asyncio.gather(*waiters)
    assert asyncio.get_running_loop().time() - started >= 0.29 and limiter.queue_depth() == 0
    limiter.throttled(0.2)
    started = asyncio.get_running_loop().time()
    await limiter.acquire(Priority.CONTROL)
    assert asyncio.get_running_loop().time() - started >= 0.19
    await limiter.close()


async def test_quota_exhausted_fails_every_waiter() -> None:
    """Callers waiting when the quota runs out get QuotaExhausted instead of waiting for ever."""
    limiter = RateLimiter(TokenBucket(20, 1, daily_quota=2))
    await limiter.acquire(Priority.CONTROL)
    results = await asyncio.gather(*(limiter.acquire(Priority.POLL) for _ in range(3)), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "QuotaExhausted", "QuotaExhausted"]
    await limiter.close()


async def test_a_cancelled_waiter_does_not_take_a_token() -> None:
    """A caller that gave up waiting is skipped; the next one gets the token."""
    limiter = RateLimiter(TokenBucket(20, 1))
    await limiter.acquire(Priority.CONTROL)
    gone = asyncio.create_task(limiter.acquire(Priority.CONTROL))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(limiter.acquire(Priority.POLL), 1)
    assert limiter.bucket.tokens() < 1
    await limiter.close()


async def test_close_cancels_waiting_callers() -> None:
    """close() cancels everyone still waiting and stops the pump."""
    limiter = RateLimiter(TokenBucket(0.01, 1))
    await limiter.acquire(Priority.CONTROL)
    waiter = asyncio.create_task(limiter.acquire(Priority.CONTROL))
    await asyncio.sleep(0.01)
    await limiter.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.queue_depth() == 0 and limiter._pump is not None and limiter._pump.done()


async def test_gate_gives_api_calls_their_endpoint_priority_and_quota_error() -> None:
    """The client's gate: a spent quota is the client's QuotaExceeded naming the endpoint; 429s pause all."""
    from semookii_bridge.api import endpoints
    from semookii_bridge.api.errors import QuotaExceeded
    from semookii_bridge.service import LimiterGate

    limiter = RateLimiter(TokenBucket(0, 1, daily_quota=1))
    gate = LimiterGate(limiter)
    await gate.acquire(endpoints.GROUP_CONTROL)
    with pytest.raises(QuotaExceeded) as info:
        await gate.acquire(endpoints.QUERY_COMMAND)
    assert info.value.endpoint == "query_command" and "daily quota" in info.value.message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    gate.throttled(5.0)
    assert limiter.bucket.delay() > 4.9
    await limiter.close()


async def grant_order(poll_share: float, polls: int, controls: int) -> list[str]:
    """The order in which waiting polls (p0, p1, ...) and control calls (c0, ...) get tokens at 1 call/s."""
    clock = FakeClock()
    limiter = RateLimiter(TokenBucket(1, 1, clock=clock), poll_share=poll_share)
    await limiter.acquire(Priority.CONTROL)
    order: list[str] = []

    async def take(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        order.append(name)

    tasks = [asyncio.create_task(take(f"p{i}", Priority.POLL)) for i in range(polls)]
    tasks += [asyncio.create_task(take(f"c{i}", Priority.CONTROL)) for i in range(controls)]
    await asyncio.sleep(0)
    for _ in range(polls + controls):
        clock.now += 1.0
        limiter._wake.set()
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)
    await limiter.close()
    return order


async def test_polls_get_their_share_under_sustained_control_load() -> None:
    """With control calls always waiting, polls still get `poll_share` of the tokens, the newest poll first."""
    order = await grant_order(0.2, polls=4, controls=16)
    assert order[:12] == ["c0", "c1", "c2", "c3", "c4", "p3", "c5", "c6", "c7", "c8", "c9", "p2"]
    assert [name for name in order if name.startswith("p")] == ["p3", "p2", "p1", "p0"]


async def test_without_a_poll_share_control_always_goes_first() -> None:
    """poll_share = 0 keeps strict priority: every waiting control call before any poll."""
    assert await grant_order(0.0, polls=1, controls=6) == ["c0", "c1", "c2", "c3", "c4", "c5", "p0"]


async def test_a_cancelled_newest_poll_is_skipped() -> None:
    """Polls are served newest first; one that gave up is skipped and the next newest gets the token."""
    clock = FakeClock()
    limiter = RateLimiter(TokenBucket(1, 1, clock=clock))
    await limiter.acquire(Priority.CONTROL)
    older = asyncio.create_task(limiter.acquire(Priority.POLL))
    newest = asyncio.create_task(limiter.acquire(Priority.POLL))
    await asyncio.sleep(0)
    newest.cancel()
    clock.now += 1.0
    limiter._wake.set()
    await asyncio.wait_for(older, 1)
    await limiter.close()


async def test_an_urgent_poll_goes_before_newer_polls() -> None:
    """A result query (urgent) is served before polls that started later, then the newest of the rest."""
    clock = FakeClock()
    limiter = RateLimiter(TokenBucket(1, 1, clock=clock))
    await limiter.acquire(Priority.CONTROL)
    order: list[str] = []

    async def poll(name: str, urgent: bool = False) -> None:
        await limiter.acquire(Priority.POLL, urgent=urgent)
        order.append(name)

    tasks = [asyncio.create_task(poll("old")), asyncio.create_task(poll("result", urgent=True))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(poll("newer")), asyncio.create_task(poll("newest"))]
    for _ in range(4):
        await asyncio.sleep(0)
        clock.now += 1.0
        limiter._wake.set()
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert order == ["result", "newest", "newer", "old"]
    await limiter.close()


async def test_only_safety_callers_may_use_the_reserve() -> None:
    """In the reserve, a waiting call flagged reserve_ok gets its token; the others get QuotaExhausted."""
    from semookii_bridge.budget.quota import DailyQuota

    clock = FakeClock()
    limiter = RateLimiter(TokenBucket(1, 1, clock=clock, quota=DailyQuota(3, reserve=2)))
    await limiter.acquire(Priority.CONTROL)
    plain = asyncio.create_task(limiter.acquire(Priority.CONTROL))
    safety = asyncio.create_task(limiter.acquire(Priority.CONTROL, reserve_ok=True))
    await asyncio.sleep(0)
    clock.now += 1.0
    limiter._wake.set()
    await asyncio.wait_for(safety, 1)
    with pytest.raises(QuotaExhausted, match="kept for safety commands"):
        await plain
    assert limiter.bucket.quota.used == 2
    await limiter.close()


async def test_a_ban_pauses_every_call_and_says_for_how_long() -> None:
    """banned(s) holds every caller for s seconds and reports the time left; the client's gate passes it on."""
    from semookii_bridge.service import LimiterGate

    clock = FakeClock()
    limiter = RateLimiter(TokenBucket(100, 5, clock=clock))
    assert limiter.banned_for() == 0.0 and limiter.bucket.paused_for() == 0.0
    LimiterGate(limiter).banned(30.0)
    assert limiter.banned_for() == 30.0 and limiter.bucket.paused_for() == 30.0 and not limiter.bucket.try_take()
    limiter.banned(5.0)
    clock.now += 29.0
    assert limiter.banned_for() == 1.0 and not limiter.bucket.try_take()
    clock.now += 1.5
    assert limiter.banned_for() == 0.0 and limiter.bucket.try_take()


async def test_each_grant_is_reported_with_its_priority() -> None:
    """on_grant hears the priority of every call granted, at once or after waiting."""
    clock = FakeClock()
    limiter = RateLimiter(TokenBucket(1, 1, clock=clock))
    heard: list[int] = []
    limiter.on_grant = heard.append
    await limiter.acquire(Priority.MANAGEMENT)
    waiting = asyncio.create_task(limiter.acquire(Priority.POLL))
    await asyncio.sleep(0)
    clock.now += 1.0
    limiter._wake.set()
    await asyncio.wait_for(waiting, 1)
    assert heard == [Priority.MANAGEMENT, Priority.POLL]
    await limiter.close()


async def test_paced_polls_wait_while_control_goes_at_once() -> None:
    """Ahead of the quota's pace, a poll waits for the pace while a control call is granted at once; when the
    pace allows (time passes), the poll is granted."""
    from semookii_bridge.budget.quota import DailyQuota

    wall = [datetime(2026, 11, 27, 0, 0, 10, tzinfo=UTC).timestamp()]
    quota = DailyQuota(8640, wall=lambda: wall[0], pace=True)
    for _ in range(90):
        quota.spend()
    limiter = RateLimiter(TokenBucket(0, 1, quota=quota))
    poll = asyncio.create_task(limiter.acquire(Priority.POLL))
    await asyncio.wait_for(limiter.acquire(Priority.CONTROL), 1)
    await asyncio.sleep(0.05)
    assert not poll.done()
    wall[0] += 3600
    limiter._wake.set()
    await asyncio.wait_for(poll, 1)
    await limiter.close()


@settings(max_examples=30, deadline=None)
@given(delays=st.lists(st.floats(0.0, 1.0), min_size=50, max_size=50))
def test_the_default_limit_is_never_refused_by_a_vendor_allowing_10_a_minute(delays: list[float]) -> None:
    """A bridge with the default rate_limit, taking every token as soon as it can, with each call arriving up to
    send_margin later, is never refused by the simulator's gate set to the vendor's 10 calls a minute, burst 5;
    the default daily quota is the vendor's 10,000 and max_in_flight is at most burst."""
    from semookii_bridge.config import RateLimitConfig

    cfg = RateLimitConfig()
    assert cfg.daily_quota == 10_000 and cfg.max_in_flight <= cfg.burst
    ours, theirs = FakeClock(), FakeClock()
    bridge = TokenBucket(cfg.rate, cfg.burst, clock=ours, margin=cfg.send_margin)
    vendor = TokenBucket(10 / 60, 5, clock=theirs)
    arrivals = []
    for delay in delays:
        ours.now += bridge.delay()
        assert bridge.try_take()
        arrivals.append(ours.now + delay * cfg.send_margin)
    for at in sorted(arrivals):
        theirs.now = at
        assert vendor.try_take(), f"refused at {at - 1000.0:.2f} s"
