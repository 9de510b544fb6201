"""The clock that schedules: wall-clock seconds that never jump.

Deadlines, poll times and tracking windows are journaled as wall-clock times (they must mean something
after a restart), but while the process runs they are kept by the monotonic clock: a board without a
real-time clock that boots at 1970 and jumps when NTP syncs, or an operator stepping the clock by an hour,
neither expires every queued command at once nor stalls polling. The wall clock itself is used only for
`expires_at` (converted to a steady deadline on receipt), the quota day, and timestamps in messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SteadyClock:
    """`time.time()` as it was when created, advanced by `time.monotonic()` since."""

    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._offset = wall() - monotonic()

    def __call__(self) -> float:
        return self._monotonic() + self._offset


steady = SteadyClock()
"""The process's scheduling clock, anchored to the wall clock at start."""
