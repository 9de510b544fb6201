"""What a new leader waits out after a takeover: the targets its predecessor may still have a call on the wire for.

The vendor API cannot check a fencing token, so a request the old leader wrote just before its lease ended
could still arrive after the new leader's newer setpoint for the same devices. Every control call is on record
as `sending` before it leaves, and none leaves after the lease (`api/transport.py`), and none stays on the wire
longer than `ha.wire_bound`: so the new leader holds the targets of the `sending` rows it took over until that
bound has passed since it took the lease. Group membership is not known here, so a held group holds every
inverter and batch command, and a held inverter or batch holds every group command.
"""

from __future__ import annotations

from collections.abc import Callable

from ..control.jobs import Job


class Holdback:
    """Targets held until `until` (the dispatcher's clock); `left(job)` says how long `job` must still wait."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.until = 0.0
        self._keys: set[str] = set()
        self._inverters: set[str] = set()
        self._groups = self._devices = False

    def hold(self, job: Job, until: float) -> None:
        """Hold `job`'s target (and what overlaps it) until `until`."""
        self.until = max(self.until, until)
        self._keys.add(job.key)
        if job.target.kind == "group":
            self._groups = True
        else:
            self._devices = True
            self._inverters.update(job.inverters)

    def left(self, job: Job) -> float:
        """Seconds before `job` may be sent (0.0: now)."""
        left = self.until - self._clock()
        if left <= 0 or not self._keys:
            return 0.0
        if job.key in self._keys:
            return left
        if job.target.kind == "group":
            return left if self._devices else 0.0
        if self._groups or not self._inverters.isdisjoint(job.inverters):
            return left
        return 0.0

    @property
    def held(self) -> int:
        """Targets held now (0 once the bound has passed)."""
        return len(self._keys) if self.until > self._clock() else 0
