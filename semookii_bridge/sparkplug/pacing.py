"""Node commands that cannot amplify: a host (or anyone allowed to write NCMD) asking for a rebirth or a
refresh a thousand times gets one now and at most one per interval after, never a thousand."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Paced:
    """Runs `action` at most once per `interval` seconds and never twice at once; requests that arrive in
    between are merged into one run at the interval's end (the last request is still honoured)."""

    def __init__(
        self,
        name: str,
        action: Callable[[], Awaitable[None]],
        interval: float,
        counts: Counter[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.action, self.interval, self.counts = name, action, interval, counts
        self._clock = clock
        self._last = -float("inf")
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        """Ask for a run: now if the interval has passed and none runs, else merged into the next one."""
        if self._task is not None and not self._task.done():
            self.counts[f"{self.name}_coalesced"] += 1
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            wait = self._last + self.interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last = self._clock()
            self._again = False
            try:
                await self.action()
            except Exception:
                log.exception("sparkplug_node_command_failed command=%s", self.name)
            if not self._again:
                return

    async def close(self) -> None:
        """Cancel a run that is waiting or under way."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
