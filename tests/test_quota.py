"""The daily quota: its day in the configured time zone, the safety reserve, and the count kept in the journal."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from semookii_bridge import config
from semookii_bridge.budget.quota import DailyQuota, QuotaExhausted, default_reserve, zone
from semookii_bridge.control.commands import ExitRemoteControl, Manual, PowerControl, SystemSwitch, is_safety
from semookii_bridge.journal.sqlite import Journal


class Wall:
    def __init__(self, iso: str) -> None:
        self.now = datetime.fromisoformat(iso).timestamp()

    def __call__(self) -> float:
        return self.now


def test_the_day_starts_at_midnight_of_the_quota_time_zone() -> None:
    """In Europe/Berlin (UTC+1 in winter) the day turns at 23:00 UTC, not at 00:00 UTC."""
    wall = Wall("2026-11-27T22:59:59+00:00")
    quota = DailyQuota(10, tz=zone("Europe/Berlin"), wall=wall)
    assert quota.today() == "2026-11-27"
    quota.spend()
    wall.now += 2
    assert quota.today() == "2026-11-28" and quota.used == 0
    utc = DailyQuota(10, tz=zone("UTC"), wall=wall)
    assert utc.today() == "2026-11-27"


def test_unknown_time_zone_is_refused() -> None:
    """A misspelt zone fails at load, not at midnight."""
    with pytest.raises(ValueError, match="Mars/Olympus"):
        zone("Mars/Olympus")
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"rate_limit": {"quota_timezone": "Mars/Olympus"}}, config.BridgeConfig)


def test_the_reserve_is_kept_for_safety_commands() -> None:
    """Past limit - reserve only safety calls pass; at the limit nothing does."""
    quota = DailyQuota(5, reserve=2, wall=Wall("2026-11-27T12:00:00+00:00"))
    for _ in range(3):
        quota.check()
        quota.spend()
    assert quota.reserve_only() and quota.remaining == 2
    with pytest.raises(QuotaExhausted, match="but for the 2 kept for safety commands"):
        quota.check()
    quota.check(reserve_ok=True)
    quota.spend()
    quota.spend()
    with pytest.raises(QuotaExhausted, match=r"daily quota of 5 API calls used up for 2026-11-27$"):
        quota.check(reserve_ok=True)
    assert quota.remaining == 0


def test_no_quota_counts_but_never_refuses() -> None:
    """limit 0: no refusal and no reserve, calls still counted."""
    quota = DailyQuota(0)
    for _ in range(100):
        quota.check()
        quota.spend()
    assert quota.used == 100 and quota.remaining is None and not quota.reserve_only() and quota.reserve == 0


def test_refund_uncounts_a_call_not_made() -> None:
    """A granted call that was not made gives its count back, never below zero."""
    quota = DailyQuota(2, reserve=0)
    quota.spend()
    quota.refund()
    quota.refund()
    assert quota.used == 0


@pytest.mark.parametrize(("limit", "reserve"), [(0, 0), (1, 0), (2, 1), (49, 1), (50, 1), (75, 1), (10000, 200)])
def test_default_reserve_is_two_percent_at_least_one(limit: int, reserve: int) -> None:
    """2 % of the quota, at least 1, never the whole quota: the same rule the configuration's "2%" gives."""
    assert default_reserve(limit) == reserve
    assert config.RateLimitConfig(daily_quota=limit).reserve() == reserve


@pytest.mark.parametrize(("setting", "limit", "reserve"),
                         [("2%", 10000, 200), ("2%", 10, 1), ("2%", 1, 0), ("2%", 0, 0), (5, 100, 5), ("10%", 10, 1)])  # fmt: skip
def test_configured_reserve(setting: int | str, limit: int, reserve: int) -> None:
    """quota_reserve is a count or a percentage; a percentage never takes the whole quota."""
    rl = msgspec.convert({"daily_quota": limit, "quota_reserve": setting}, config.RateLimitConfig)
    assert rl.reserve() == reserve and rl.quota().reserve == reserve


def test_a_reserve_as_large_as_the_quota_is_refused() -> None:
    """A reserve that leaves nothing for other calls is a configuration error."""
    with pytest.raises(msgspec.ValidationError, match="quota_reserve"):
        msgspec.convert({"daily_quota": 5, "quota_reserve": 5}, config.RateLimitConfig)


def test_the_count_survives_a_restart_in_the_journal(tmp_path: Path) -> None:
    """Calls counted with a journal attached are read back by the next process, per day."""
    wall = Wall("2026-11-27T12:00:00+00:00")
    journal = Journal(tmp_path / "j.db")
    quota = DailyQuota(100, wall=wall)
    quota.attach(journal)
    for _ in range(7):
        quota.spend()
    journal.close()
    again = Journal(tmp_path / "j.db")
    restarted = DailyQuota(100, wall=wall)
    restarted.attach(again)
    assert restarted.used == 7 and again.calls_on("2026-11-27") == 7 and again.calls_on("2026-11-28") == 0
    wall.now += 86400
    assert restarted.used == 0
    restarted.spend()
    assert again.calls_on("2026-11-28") == 1 and again.calls_on("2026-11-27") == 7
    again.close()


def test_safety_commands() -> None:
    """Manual stop, exit_remote_control and system_switch off may use the reserve; nothing else."""
    assert is_safety(Manual(action="stop")) and is_safety(ExitRemoteControl()) and is_safety(SystemSwitch(on=False))
    assert not is_safety(Manual(action="force_discharge")) and not is_safety(SystemSwitch(on=True))
    assert not is_safety(PowerControl(active_power=0, duration=1, timeout=1))


def test_utc_is_available_without_a_time_zone_database() -> None:
    """ "UTC" needs no tz database (slim containers may have none)."""
    assert zone("utc") is UTC


async def test_a_granted_call_is_on_disk_before_it_may_leave(tmp_path: Path) -> None:
    """With the journal's commit as after_grant, acquire() returns only once the new count is on disk."""
    import sqlite3

    from semookii_bridge.api.endpoints import Priority
    from semookii_bridge.budget.ratelimit import RateLimiter, TokenBucket

    journal = Journal(tmp_path / "j.db")
    quota = DailyQuota(100)
    quota.attach(journal)
    limiter = RateLimiter(TokenBucket(0, 1, quota=quota))
    limiter.after_grant = journal.durable
    await limiter.acquire(Priority.POLL)
    with sqlite3.connect(tmp_path / "j.db") as db:
        assert db.execute("SELECT used FROM api_calls").fetchall() == [(1,)]
    await limiter.close()
    journal.close()


def test_a_one_call_quota_is_spent_by_one_call() -> None:
    """The smallest quota: after its one call only the (empty) reserve is left."""
    quota = DailyQuota(1, reserve=0)
    assert not quota.reserve_only()
    quota.spend()
    assert quota.reserve_only() and quota.remaining == 0


def test_pacing_spreads_the_quota_evenly_over_the_day() -> None:
    """With pace_quota, 1,000 s into the day a quota of 8,640 allows 100 calls plus 1 % (86.4); the next
    call waits until the allowance reaches it. Without pacing nothing waits."""
    wall = Wall("2026-11-27T00:16:40+00:00")
    paced = DailyQuota(8640, wall=wall, pace=True)
    for _ in range(186):
        paced.spend()
    assert paced.pace_wait() == 0.0
    paced.spend()
    assert paced.pace_wait() == pytest.approx((188 - 86.4) * 10 - 1000)
    wall.now += 20
    assert paced.pace_wait() == 0.0
    unpaced = DailyQuota(8640, wall=wall)
    for _ in range(500):
        unpaced.spend()
    assert unpaced.pace_wait() == 0.0 and not DailyQuota(0, wall=wall, pace=True).pace
