"""The safety lane's claim on the event loop: from a stop's arrival on the lane until its `sending` write is on
record (or it leaves the queue unsent), the ordinary topics' intake takes one message per loop turn instead of a
batch, so the steps that send the stop, the journal's flushes among them, are not each queued behind a storm's
batches (ordinary commands still flow, and may supersede it as usual)."""

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

    def release(self, jobs: Sequence[Job]) -> None:
        """These jobs left the queue: their `sending` write is on record (or their send ended)."""
        for job in jobs:
            self.left(job.request_id)

    def sending(self, send: Callable[[Sequence[Job]], Awaitable[None]]) -> Callable[[Sequence[Job]], Awaitable[None]]:
        """`send`, holding the claim until `release` (called when the `sending` write is on record: that write
        joins the next flush, which a storm read at full speed would fill) or until the send ends."""

        async def send_and_release(jobs: Sequence[Job]) -> None:
            try:
                await send(jobs)
            finally:
                self.release(jobs)

        return send_and_release
