"""The journal's timeline: the clock of every journaled instant, continuous across restarts, deaf to steps.

Deadlines, tracking windows, dedup windows and the rate limiter's state are kept in the journal as instants
on one timeline, so they mean the same after a restart however the wall clock was stepped meanwhile. The
rule: the timeline is `CLOCK_BOOTTIME + offset`, with one offset per boot kept in the journal. A restart in
the same boot takes the offset back, so the timeline has advanced by exactly the real time elapsed (a SIGKILL,
a stop of any length, a wall-clock step by hours: none moves it). After a reboot the elapsed time cannot be
measured: the timeline goes on from the latest instant written plus the time since boot, or from the wall
clock if that is later, so deadlines expire early rather than late; `doubt` is how far it may then run ahead
of real time, and the dedup window and the rate limiter give that much back (they err the other way).
A new journal starts its timeline at the wall clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import msgspec

log = logging.getLogger(__name__)

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
SKEW_WARNING = 2.0
"""Seconds of difference between a host's wall clock and the database's that are logged as a warning."""


class Anchor(msgspec.Struct, frozen=True):
    """Where the timeline stood: the boot it was measured in, its offset from that boot's clock, and the
    latest instant it reached (checkpointed while running)."""

    boot_id: str | None
    offset: float
    high: float


class AnchorStore(Protocol):
    """Where the anchor is kept (the journal)."""

    def clock_anchor(self) -> Anchor | None: ...

    def save_clock_anchor(self, anchor: Anchor) -> None: ...

    def latest_instant(self) -> float | None: ...


def boot_id() -> str | None:
    """This boot's id (Linux), None where there is none: every start then counts as after a reboot."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def since_boot() -> float:
    """Seconds since boot, suspend included (CLOCK_BOOTTIME); the monotonic clock where that is missing."""
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock_id) if clock_id is not None else time.monotonic()


class Timeline:
    """`since_boot() + offset`: callable as a clock; `doubt` is 0 unless the journal was written before a reboot."""

    def __init__(
        self, offset: float, *, boot: str | None, doubt: float = 0.0, elapsed: Callable[[], float] = since_boot
    ) -> None:
        self.offset, self.boot, self.doubt = offset, boot, doubt
        self._elapsed = elapsed
        self.skew = 0.0
        """Seconds the host's wall clock was ahead of the database's at takeover (shared journal only)."""

    def __call__(self) -> float:
        return self._elapsed() + self.offset

    def anchor(self) -> Anchor:
        """What to journal so that a restart in this boot resumes the timeline exactly."""
        return Anchor(boot_id=self.boot, offset=self.offset, high=self())


class RebootStore(AnchorStore, Protocol):
    """The single host's journal, which also knows the latest deadline of a command not yet sent."""

    def latest_deadline(self) -> float | None: ...


def resume(
    store: RebootStore,
    *,
    wall: Callable[[], float] = time.time,
    elapsed: Callable[[], float] = since_boot,
    boot: str | None = None,
) -> Timeline:
    """The journal's timeline for this process, its anchor saved; `boot` defaults to this boot's id."""
    boot = boot_id() if boot is None else boot
    anchor = store.clock_anchor()
    if anchor is not None and boot is not None and anchor.boot_id == boot:
        timeline = Timeline(anchor.offset, boot=boot, elapsed=elapsed)
    else:
        timeline = _after_reboot(store, anchor, wall(), elapsed, boot)
    store.save_clock_anchor(timeline.anchor())
    return timeline


def _after_reboot(
    store: RebootStore, anchor: Anchor | None, wall_now: float, elapsed: Callable[[], float], boot: str | None
) -> Timeline:
    """A timeline that cannot measure the downtime: at least the time since boot has passed since the latest
    instant written; the wall clock is believed when it says more (deadlines then expire sooner). A wall clock
    behind the latest instant written is not set yet (a board without a real-time clock, before time sync): the
    downtime is unknown, so the timeline starts past every queued command's deadline (none goes out late)."""
    highs = [x for x in (anchor.high if anchor else None, store.latest_instant()) if x is not None]
    up = elapsed()
    if not highs:
        return Timeline(wall_now - up, boot=boot, elapsed=elapsed)
    lower = max(highs) + up
    start = max(wall_now, lower)
    if wall_now < max(highs):
        start = max(start, store.latest_deadline() or start)
        effect = "commands queued before the reboot expire; on a board without a real-time clock enable time sync"
        behind = max(highs) - wall_now
        log.warning("clock_unset after=reboot wall_behind_journal_seconds=%.0f effect=%s", behind, effect)
    if start > lower:
        log.warning("clock_doubt after=reboot doubt_seconds=%.0f since_boot_seconds=%.0f", start - lower, up)
    return Timeline(start - up, boot=boot, doubt=start - lower, elapsed=elapsed)


def resume_shared(
    store: AnchorStore,
    now: float,
    *,
    elapsed: Callable[[], float] = since_boot,
    wall: Callable[[], float] = time.time,
    read_at: float | None = None,
) -> Timeline:
    """The timeline of a journal shared by several hosts (PostgreSQL): no boot clock is common to them, so it
    goes on from the database's clock (`now`, read at takeover; plus the time since it was read, `read_at` on
    the boot clock, so a slow load does not leave the timeline behind), never from before the latest instant
    written; its anchor saved."""
    anchor = store.clock_anchor()
    highs = [x for x in (anchor.high if anchor else None, store.latest_instant()) if x is not None]
    now += max(0.0, elapsed() - read_at) if read_at is not None else 0.0
    start = max([now, *highs])
    timeline = Timeline(start - elapsed(), boot=None, elapsed=elapsed)
    store.save_clock_anchor(timeline.anchor())
    skew = wall() - now
    timeline.skew = skew
    if abs(skew) > SKEW_WARNING:
        action = "fix this host's time sync; deadlines, expires_at and the quota day follow the database's clock"
        log.warning("clock_skew host_minus_database_seconds=%.1f action=%s", skew, action)
    return timeline
