"""Result polling schedule: one heap of due times and a bounded number of polls at once.

A sleeping task per tracked command cost a few kilobytes each and grew with the tracking window
(bench/throughput.py); a heap entry costs a tuple. What a poll asks and publishes stays in `Lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

from .jobs import Job

log = logging.getLogger(__name__)

PollStep = Callable[[Job], Awaitable[float | None]]
"""Polls a job once; returns seconds until the next poll, or None when the job is finished."""


class PollSchedule:
    """Runs `step` for each job when it is due, at most `concurrency` at a time."""

    def __init__(self, step: PollStep, *, concurrency: int = 32, clock: Callable[[], float] = time.time) -> None:
        self._step = step
        self._clock = clock
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._active: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Jobs being tracked: waiting for their next poll or polling now."""
        return len(self._heap) + len(self._active)

    def add(self, job: Job, delay: float) -> None:
        """Poll `job` in `delay` seconds."""
        heapq.heappush(self._heap, (self._clock() + max(0.0, delay), next(self._seq), job))
        self._wake.set()

    async def run(self) -> None:
        """Poll due jobs forever (cancel to stop; the journal keeps tracked commands)."""
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._heap[0][0] - self._clock()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            await self._slots.acquire()
            _, _, job = heapq.heappop(self._heap)
            task = asyncio.get_running_loop().create_task(self._poll(job))
            self._active.add(task)
            task.add_done_callback(self._active.discard)

    async def _poll(self, job: Job) -> None:
        try:
            following = await self._step(job)
        except Exception:
            log.exception("poll_crashed request_id=%s", job.request_id)
            following = None
        finally:
            self._slots.release()
        if following is not None:
            self.add(job, following)

    async def close(self) -> None:
        """Cancel polls in flight."""
        for task in self._active:
            task.cancel()
        await asyncio.gather(*self._active, return_exceptions=True)
