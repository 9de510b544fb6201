"""A restart is not a reset: the journal's timeline, the rate limiter's state, the quota day and the dedup
window carry over restarts and wall-clock steps (unit level; tests/test_restart.py runs real processes)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from semookii_bridge.bridge import Bridge
from semookii_bridge.budget.quota import DailyQuota, QuotaExhausted
from semookii_bridge.budget.ratelimit import RateLimiter, TokenBucket
from semookii_bridge.config import BridgeConfig, CommandsConfig
from semookii_bridge.journal.sqlite import Journal
from semookii_bridge.journal.timeline import resume

from .support.doubles import NoApi, Recorder
from .support.journal import entry_now

DAY = 86400.0


class Clocks:
    """A wall clock that can be stepped and a boot clock that only advances, as the kernel keeps them."""

    def __init__(self, wall: float = 1_790_000_000.0, up: float = 100.0) -> None:
        self.wall_at, self.up = wall, up

    def wall(self) -> float:
        return self.wall_at

    def elapsed(self) -> float:
        return self.up

    def advance(self, seconds: float) -> None:
        self.wall_at += seconds
        self.up += seconds


def test_a_restart_in_the_same_boot_resumes_the_timeline_whatever_the_wall_clock_did(tmp_path: Path) -> None:
    """Stop, step the wall clock back 1 h, 45 s pass, restart: the timeline has moved by exactly 45 s."""
    clocks, journal = Clocks(), Journal(tmp_path / "j.db")
    first = resume(journal, wall=clocks.wall, elapsed=clocks.elapsed, boot="boot-a")
    before = first()
    clocks.advance(45)
    clocks.wall_at -= 3600
    second = resume(journal, wall=clocks.wall, elapsed=clocks.elapsed, boot="boot-a")
    assert second() == pytest.approx(before + 45, abs=0.01) and second.doubt == 0


def test_a_new_journal_starts_its_timeline_at_the_wall_clock(tmp_path: Path) -> None:
    """The first start reads the wall clock once; the timeline then follows elapsed time only."""
    clocks = Clocks()
    timeline = resume(Journal(tmp_path / "j.db"), wall=clocks.wall, elapsed=clocks.elapsed, boot="b")
    assert timeline() == pytest.approx(clocks.wall(), abs=0.01)
    clocks.wall_at += 7200
    assert timeline() == pytest.approx(clocks.wall() - 7200, abs=0.01)


def test_after_a_reboot_the_timeline_never_goes_back_and_says_how_unsure_it_is(tmp_path: Path) -> None:
    """Rebooted with the wall clock 1 h behind the journal: the timeline goes on from the latest instant plus
    the time since boot (no doubt); with the wall clock ahead it believes the wall and reports the doubt."""
    clocks, journal = Clocks(), Journal(tmp_path / "j.db")
    first = resume(journal, wall=clocks.wall, elapsed=clocks.elapsed, boot="boot-a")
    last = first()
    journal.save_clock_anchor(first.anchor())
    behind = Clocks(wall=clocks.wall() - 3600, up=30)
    after = resume(journal, wall=behind.wall, elapsed=behind.elapsed, boot="boot-b")
    assert after() == pytest.approx(last + 30, abs=0.01) and after.doubt == 0
    ahead = Clocks(wall=after() + 500, up=20)
    again = resume(journal, wall=ahead.wall, elapsed=ahead.elapsed, boot="boot-c")
    assert again() == pytest.approx(ahead.wall(), abs=0.01) and again.doubt == pytest.approx(500 - 20)


def test_after_a_reboot_with_the_wall_clock_behind_the_journal_no_queued_command_goes_out_late(
    tmp_path: Path,
) -> None:
    """A setpoint queued with a 30 s deadline, then a reboot whose wall clock is behind the journal (not set
    yet): the downtime is unknown, so the timeline starts at the deadline (the command expires at recovery
    instead of going out late) and says how far it may be ahead; without a queued command, nothing moves."""
    clocks, journal = Clocks(), Journal(tmp_path / "j.db")
    first = resume(journal, wall=clocks.wall, elapsed=clocks.elapsed, boot="boot-a")
    late = entry_now("late", "queued")
    journal.use_clock(first)
    journal.insert(msgspec.structs.replace(late, received_at=first(), deadline=first() + 30))
    journal.commit()
    journal.save_clock_anchor(first.anchor())
    unset = Clocks(wall=1_000_000.0, up=5)
    after = resume(journal, wall=unset.wall, elapsed=unset.elapsed, boot="boot-b")
    assert after() >= first() + 30 and after.doubt == pytest.approx(25, abs=0.01)


def test_the_bucket_goes_on_from_its_journaled_state_not_from_full(tmp_path: Path) -> None:
    """Burst 5 at 0.5/s, 5 calls, a restart 2 s later: 1 token, not 5; 4 more seconds: 3."""
    clocks, journal = Clocks(), Journal(tmp_path / "j.db")
    timeline = resume(journal, wall=clocks.wall, elapsed=clocks.elapsed, boot="b")
    bucket = TokenBucket(0.5, 5)
    bucket.attach(journal, timeline)
    assert all(bucket.try_take() for _ in range(5)) and not bucket.try_take()
    clocks.advance(2)
    restarted = TokenBucket(0.5, 5)
    restarted.attach(journal, resume(journal, wall=clocks.wall, elapsed=clocks.elapsed, boot="b"))
    assert restarted.tokens() == pytest.approx(1.0)
    clocks.advance(4)
    assert restarted.tokens() == pytest.approx(3.0)


def test_the_bucket_refills_nothing_for_doubtful_downtime(tmp_path: Path) -> None:
    """After a reboot the part of the downtime that may not have passed (`doubt`) earns no tokens."""
    clocks, journal = Clocks(), Journal(tmp_path / "j.db")
    timeline = resume(journal, wall=clocks.wall, elapsed=clocks.elapsed, boot="b")
    bucket = TokenBucket(1.0, 5)
    bucket.attach(journal, timeline)
    while bucket.try_take():
        pass
    rebooted = Clocks(wall=timeline() + 1000, up=2)
    after = resume(journal, wall=rebooted.wall, elapsed=rebooted.elapsed, boot="other")
    fresh = TokenBucket(1.0, 5)
    fresh.attach(journal, after, doubt=after.doubt)
    assert fresh.tokens() == pytest.approx(2.0)


def test_a_ban_survives_a_restart(tmp_path: Path) -> None:
    """A ban of 95 s with 90 s left at the restart still holds every call, and is still reported."""
    clocks, journal = Clocks(), Journal(tmp_path / "j.db")
    bucket = TokenBucket(1.0, 5)
    bucket.attach(journal, resume(journal, wall=clocks.wall, elapsed=clocks.elapsed, boot="b"))
    bucket.ban(95)
    clocks.advance(5)
    restarted = TokenBucket(1.0, 5)
    restarted.attach(journal, resume(journal, wall=clocks.wall, elapsed=clocks.elapsed, boot="b"))
    assert restarted.banned_for() == pytest.approx(90) and restarted.delay() >= 89 and not restarted.try_take()


def test_a_step_back_of_two_days_does_not_start_a_fresh_count(tmp_path: Path) -> None:
    """Quota 10: 10 calls, the wall clock steps back 2 days: the 11th call is still refused."""
    clocks = Clocks()
    quota = DailyQuota(10, reserve=0, wall=clocks.wall)
    quota.attach(Journal(tmp_path / "j.db"))
    for _ in range(10):
        quota.check()
        quota.spend()
    clocks.wall_at -= 2 * DAY
    with pytest.raises(QuotaExhausted):
        quota.check()


def test_a_restart_with_the_clock_days_back_counts_on_the_latest_day(tmp_path: Path) -> None:
    """The journal counted 10 calls on a day; restarted with the wall clock 2 days earlier, the count goes
    on for that day (a quota day is never lived twice)."""
    clocks, journal = Clocks(), Journal(tmp_path / "j.db")
    quota = DailyQuota(10, reserve=0, wall=clocks.wall)
    quota.attach(journal)
    for _ in range(10):
        quota.spend()
    day = quota.day
    clocks.wall_at -= 2 * DAY
    restarted = DailyQuota(10, reserve=0, wall=clocks.wall)
    restarted.attach(journal)
    assert restarted.day == day and restarted.used == 10
    with pytest.raises(QuotaExhausted):
        restarted.check()


def test_the_quota_day_still_moves_forward(tmp_path: Path) -> None:
    """Without steps, the next midnight starts a fresh count."""
    clocks = Clocks()
    quota = DailyQuota(10, reserve=0, wall=clocks.wall)
    quota.attach(Journal(tmp_path / "j.db"))
    quota.spend()
    first = quota.day
    clocks.advance(DAY)
    assert quota.day > first and quota.used == 0


@pytest.mark.parametrize(("doubt", "kept"), [(30.0, True), (0.0, False)])
async def test_the_dedup_window_is_kept_longer_by_the_clock_doubt(tmp_path: Path, doubt: float, kept: bool) -> None:
    """A finished command 70 s old with a 60 s window is kept while the timeline may be 30 s ahead of real
    time (after a reboot), and forgotten when it cannot."""
    journal = Journal(tmp_path / "j.db")
    old = entry_now("once-only", "completed")
    old.received_at = time.time() - 70
    journal.insert(old)
    bridge = Bridge(BridgeConfig(commands=CommandsConfig(dedup_window=60)), api=NoApi(), publisher=Recorder(),  # type: ignore[arg-type]
                    journal=journal, limiter=RateLimiter(TokenBucket(0, 1)), clock=time.time, clock_doubt=doubt)  # fmt: skip
    pruning = asyncio.create_task(bridge._pruning())
    await asyncio.sleep(0.05)
    pruning.cancel()
    await asyncio.gather(pruning, return_exceptions=True)
    assert (journal.get("once-only") is not None) is kept
