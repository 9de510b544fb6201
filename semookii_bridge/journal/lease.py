"""Hot standby: which bridge leads, by a lease in the shared database with an epoch as fencing token.

A candidate takes the lease once it has expired by the database's clock (bumping the epoch), renews it every
third of its length, and believes it only until `lease` seconds after it *asked* for the last renewal, by its
own monotonic clock: so it gives up before the database would let anyone else take over, even when paused
(SIGSTOP) or cut off. Losing the lease is fatal to the process (fail-stop): a supervisor starts it again as
a candidate. The journal's writes check the epoch as well (`shared.py`), so a leader that missed all
of this still cannot put `sending` on record, hence cannot call the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

log = logging.getLogger(__name__)

Role = Literal["leader", "standby", "offline", "single"]
"""A hot standby's roles; `single`: a bridge without `[ha]` (its presence tells a second copy it runs)."""


def boottime() -> float:
    """Seconds since boot, counting time the machine or VM was suspended (CLOCK_BOOTTIME), which the monotonic
    clock does not: a leader resumed from a suspend must see that its lease has run out."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


class LeaseStore(Protocol):
    """The lease row (`postgres.Postgres`)."""

    async def acquire(self, holder: str, lease: float) -> int | None: ...

    async def renew(self, epoch: int, holder: str, lease: float) -> bool: ...

    async def release(self, epoch: int, holder: str) -> None: ...


class Leadership:
    """`await acquire()` waits as a standby until this process leads; `on_lost(reason)` when it stops leading."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        lease: float,
        *,
        on_lost: Callable[[str], None],
        on_role: Callable[[Role, int | None], None] | None = None,
        clock: Callable[[], float] = boottime,
    ) -> None:
        self.store, self.name, self.lease = store, name, lease
        self.on_lost, self.on_role, self.clock = on_lost, on_role, clock
        self.margin = min(0.5, lease / 6)
        """Seconds before the lease's end at which this process stops leading."""
        self.role: Role = "standby"
        self.epoch: int | None = None
        self.valid_until = 0.0
        self.takeovers = 0
        self.since: float | None = None
        """When this process took the lease (its clock)."""
        self._renewer: asyncio.Task[None] | None = None

    def _set_role(self, role: Role) -> None:
        self.role = role
        if self.on_role is not None:
            self.on_role(role, self.epoch)

    async def acquire(self) -> int:
        """Try every third of the lease until the lease is ours; the epoch (the fencing token)."""
        self._set_role("standby")
        while True:
            asked = self.clock()
            try:
                epoch = await asyncio.wait_for(self.store.acquire(self.name, self.lease), self.lease / 3)
            except Exception as exc:  # the database away: stay a candidate
                log.warning("ha_acquire_failed name=%s error=%s", self.name, type(exc).__name__)
                epoch = None
            if epoch is not None:
                self.epoch, self.valid_until, self.since = epoch, asked + self.lease, asked
                self.takeovers += 1
                log.info("ha_leader name=%s epoch=%d", self.name, epoch)
                self._set_role("leader")
                self._renewer = asyncio.get_running_loop().create_task(self._keep())
                return epoch
            await asyncio.sleep(self.lease / 3)

    def valid(self) -> bool:
        """Whether this process may still act as the leader (by its own clock)."""
        return self.role == "leader" and self.clock() < self.valid_until - self.margin

    async def _keep(self) -> None:
        """Renew every third of the lease, counted from when the last renewal was asked (a slow answer does not
        push the next one later); give up (on_lost) when renewing fails past the lease's end."""
        asked = self.valid_until - self.lease
        while True:
            wake = min(asked + self.lease / 3, self.valid_until - self.margin)
            await asyncio.sleep(max(0.0, wake - self.clock()))
            if not self.valid():
                late = self.clock() - wake
                stalled = f" (this process was stalled {late:.1f} s)" if late >= 0.1 else ""
                return self._lose(f"could not renew the lease within {self.lease:g} s{stalled}")
            asked = self.clock()
            try:
                held = await asyncio.wait_for(self._renew(), max(0.05, self.valid_until - self.margin - asked))
            except Exception as exc:
                log.warning("ha_renew_failed name=%s error=%s", self.name, type(exc).__name__)
                continue
            if not held:
                return self._lose("the lease was taken over")
            self.valid_until = asked + self.lease

    async def _renew(self) -> bool:
        assert self.epoch is not None
        return await self.store.renew(self.epoch, self.name, self.lease)

    def _lose(self, reason: str) -> None:
        log.critical("ha_lost name=%s epoch=%s reason=%s", self.name, self.epoch, reason)
        self._set_role("offline")
        self.on_lost(reason)

    async def release(self) -> None:
        """Stop renewing and give the lease up, so a standby takes over at once (a graceful stop)."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if self.role == "leader" and self.epoch is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release(self.epoch, self.name), self.lease / 3)
        self._set_role("offline")
