"""The daily API call quota: counted before each call goes out, kept across restarts, with a safety reserve.

Vendors stop a token that overruns its daily allowance, so the count must never be low: each granted call
is written to the journal (`Ledger`) before it leaves, and a restart reads the day's count back. The last
`reserve` calls of the day are kept for commands that reduce risk (stop, leave remote control, switch off);
every other call is refused once only the reserve is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo


class QuotaExhausted(Exception):
    """The daily quota (or all of it but the safety reserve) is used up until the next day."""

    code = "quota_exhausted"


class Ledger(Protocol):
    """Where the day's count is kept (the journal)."""

    def calls_on(self, day: str) -> int: ...

    def record_calls(self, day: str, used: int) -> None: ...

    def latest_day(self) -> str | None: ...


def zone(name: str) -> tzinfo:
    """The time zone whose midnight starts a new quota day; raises ValueError for an unknown name."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def default_reserve(limit: int, percent: float = 2.0) -> int:
    """The calls kept for safety commands: `percent` of the quota, at least 1, never the whole quota (so 0
    for a quota under 2). The one rule, used by `rate_limit.quota_reserve = "<n>%"` and by default."""
    if limit < 2:
        return 0
    return min(max(1, int(limit * percent / 100)), limit - 1)


class DailyQuota:
    """Counts calls per day in `tz`; `limit <= 0` means no quota (calls are still counted)."""

    def __init__(
        self,
        limit: int = 0,
        *,
        reserve: int | None = None,
        tz: tzinfo = UTC,
        wall: Callable[[], float] = time.time,
        pace: bool = False,
    ) -> None:
        self.limit = limit
        self.pace = pace and limit > 0
        self.reserve = default_reserve(limit) if reserve is None else max(0, min(reserve, limit))
        self.tz = tz
        self._wall = wall
        self._ledger: Ledger | None = None
        self._day, self._day_ends = self._day_at(self._wall())
        self._used = 0

    def _day_at(self, now: float) -> tuple[str, float]:
        """The quota day at `now` and when it ends (the next midnight in the quota's time zone)."""
        local = datetime.fromtimestamp(now, self.tz)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), self.tz)
        return local.date().isoformat(), midnight.timestamp()

    def today(self) -> str:
        """The current quota day, `YYYY-MM-DD` in the quota's time zone."""
        return self._day_at(self._wall())[0]

    def use_wall(self, wall: Callable[[], float]) -> None:
        """Read the day from `wall` from now on (the shared journal's timeline: the database's clock, so hosts
        whose clocks disagree count one quota day, not two)."""
        self._wall = wall
        self._day, self._day_ends = self._day_at(wall())

    def attach(self, ledger: Ledger) -> None:
        """Keep the count in `ledger` from now on, starting from what it holds for today, or for a later day
        it has counted (the wall clock was stepped back since): a quota day is never lived twice."""
        self._ledger = ledger
        self._day, self._day_ends = self._day_at(self._wall())
        latest = ledger.latest_day()
        if latest is not None and latest > self._day:
            self._day, self._day_ends = latest, self._end_of(latest)
        self._used = ledger.calls_on(self._day)

    def _end_of(self, day: str) -> float:
        """When quota day `day` (`YYYY-MM-DD`) ends: the next midnight in the quota's time zone."""
        return datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time(), self.tz).timestamp()

    def _roll(self) -> None:
        """Start a new count at midnight (a float comparison per call; the date is computed once a day). The
        day only moves forward: after a step back the count goes on for the day already counted until the
        wall clock passes its end again (a fresh count for a day already spent could overrun the vendor's)."""
        now = self._wall()
        if now >= self._day_ends:
            day, ends = self._day_at(now)
            if day > self._day:
                self._day, self._day_ends = day, ends
                self._used = self._ledger.calls_on(day) if self._ledger is not None else 0

    @property
    def day(self) -> str:
        self._roll()
        return self._day

    @property
    def used(self) -> int:
        """Calls counted today."""
        self._roll()
        return self._used

    @property
    def remaining(self) -> int | None:
        """Calls left today, the reserve included; None without a quota."""
        return None if self.limit <= 0 else max(0, self.limit - self.used)

    def reserve_only(self) -> bool:
        """True when only the safety reserve (or nothing) is left."""
        return self.limit > 0 and self.used >= self.limit - self.reserve

    def pace_wait(self) -> float:
        """With pacing, seconds until one more call stays within an even spread of the day's quota (0: now).

        The allowance grows linearly from midnight to the whole quota at the next midnight, plus 1 % (at
        least one call) so that a quiet start is not punished; calls not spent earlier stay available.
        """
        if not self.pace:
            return 0.0
        used, now = self.used, self._wall()
        day = 86400.0
        elapsed = min(day, max(0.0, now - (self._day_ends - day)))
        slack = max(1.0, self.limit / 100)
        allowed = self.limit * elapsed / day + slack
        if used < allowed:
            return 0.0
        return (used + 1 - slack) * day / self.limit - elapsed

    def check(self, *, reserve_ok: bool = False) -> None:
        """Raise QuotaExhausted if a call may not be made now; `reserve_ok` for safety commands."""
        if self.limit <= 0:
            return
        used = self.used
        if used >= self.limit:
            raise QuotaExhausted(f"daily quota of {self.limit} API calls used up for {self._day}")
        if not reserve_ok and used >= self.limit - self.reserve:
            raise QuotaExhausted(
                f"daily quota of {self.limit} API calls used up for {self._day} but for the {self.reserve} "
                "kept for safety commands (manual stop, exit_remote_control, system_switch off)"
            )

    def spend(self) -> None:
        """Count one call (before it goes out)."""
        self._roll()
        self._used += 1
        self._save()

    def refund(self) -> None:
        """Uncount a call that was granted but not made."""
        self._roll()
        self._used = max(0, self._used - 1)
        self._save()

    def _save(self) -> None:
        if self._ledger is not None:
            self._ledger.record_calls(self._day, self._used)
