"""The safety lane's claim on the event loop: while a stop that came on the lane has not left the queue, the
ordinary topics' intake takes one message per loop turn instead of a batch, so the steps that send the stop
are not each queued behind a storm's batches (ordinary commands still flow, and may supersede it as usual)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from .jobs import Job


class SafetyLane:
    """Request ids of lane commands still queued; `pending()` while there are any."""

    def __init__(self) -> None:
        self.waiting: set[str] = set()

    def entered(self, request_id: str) -> None:
        """A lane command was queued: the ordinary intake goes one message per turn."""
        self.waiting.add(request_id)

    def left(self, request_id: str) -> None:
        """A queued command left the queue (sent, superseded, expired, failed)."""
        self.waiting.discard(request_id)

    def pending(self) -> bool:
        """Whether a lane command is still queued."""
        return bool(self.waiting)

    def sending(self, send: Callable[[Sequence[Job]], Awaitable[None]]) -> Callable[[Sequence[Job]], Awaitable[None]]:
        """`send`, marking its jobs as having left the queue before the call starts."""

        async def send_and_release(jobs: Sequence[Job]) -> None:
            for job in jobs:
                self.left(job.request_id)
            await send(jobs)

        return send_and_release
