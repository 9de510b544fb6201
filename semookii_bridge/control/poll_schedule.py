"""Result polling schedule: one heap of due times and a bounded number of polls at once.

A sleeping task per tracked command cost a few kilobytes each, and a Job object per command about a
kilobyte (bench/throughput.py): the heap holds only (due time, request_id, backoff). What a poll asks,
and the command it asks about (read back from the journal), stay in `polling.ResultPolls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable

from ..common.clock import steady

log = logging.getLogger(__name__)

PollStep = Callable[[str, float], Awaitable[tuple[float, float] | None]]
"""Polls one request_id given its current backoff; returns (seconds until the next poll, next backoff),
or None when the command is finished."""


class PollSchedule:
    """Runs `step` for each request_id when it is due, at most `concurrency` at a time."""

    def __init__(self, step: PollStep, *, concurrency: int = 32, clock: Callable[[], float] = steady) -> None:
        self._step = step
        self._clock = clock
        self._heap: list[tuple[float, str, float]] = []
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._active: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Commands being tracked: waiting for their next poll or polling now."""
        return len(self._heap) + len(self._active)

    def add(self, request_id: str, delay: float, backoff: float) -> None:
        """Poll `request_id` in `delay` seconds; `backoff` is handed to its step."""
        heapq.heappush(self._heap, (self._clock() + max(0.0, delay), request_id, backoff))
        self._wake.set()

    async def run(self) -> None:
        """Poll due commands forever (cancel to stop; the journal keeps tracked commands)."""
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
            _, request_id, backoff = heapq.heappop(self._heap)
            task = asyncio.get_running_loop().create_task(self._poll(request_id, backoff))
            self._active.add(task)
            task.add_done_callback(self._active.discard)

    async def _poll(self, request_id: str, backoff: float) -> None:
        try:
            following = await self._step(request_id, backoff)
        except Exception:
            log.exception("poll_crashed request_id=%s", request_id)
            following = None
        finally:
            self._slots.release()
        if following is not None:
            self.add(request_id, *following)

    async def close(self) -> None:
        """Cancel polls in flight."""
        for task in self._active:
            task.cancel()
        await asyncio.gather(*self._active, return_exceptions=True)
