"""The one backoff rule: waits that double from `initial` up to `maximum`, with optional random jitter.

Used by API retries (`api/retry.py`), MQTT reconnects (`mqtt/link.py`) and result polling (`lifecycle.py`),
so the three loops grow their waits the same way and a change to the rule is made once.
"""

from __future__ import annotations

import random

import msgspec


class Backoff(msgspec.Struct, frozen=True):
    """Exponential backoff; `jitter` adds up to that many seconds at random (spreads synchronized retries)."""

    initial: float
    maximum: float
    factor: float = 2.0
    jitter: float = 0.0

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based): initial * factor^(attempt-1)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return base + (random.uniform(0.0, self.jitter) if self.jitter else 0.0)

    def after(self, wait: float) -> float:
        """The wait that follows `wait`, for loops that carry their current wait rather than a count."""
        return min(self.maximum, wait * self.factor)
