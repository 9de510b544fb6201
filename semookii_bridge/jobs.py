"""A control command on its way through the bridge, and where its lifecycle states go."""

from __future__ import annotations

from dataclasses import dataclass

from .commands import Command
from .topics import Target


@dataclass(eq=False, slots=True)
class Job:
    """One accepted control command: what to send, to whom, until when, and what is known so far."""

    request_id: str
    target: Target
    command: Command
    sns: tuple[str, ...] | None
    received_at: float
    deadline: float
    response_topic: str | None = None
    correlation: bytes | None = None
    command_id: str | None = None
    task_id: str | None = None
    track_until: float | None = None
    poll_delay: float = 0.0
    last_poll_error: str | None = None

    @property
    def key(self) -> str:
        """Latest-wins key: one per group, inverter, or exact set of batch serial numbers."""
        if self.target.kind == "batch":
            return "batch:" + ",".join(sorted(self.sns or ()))
        return self.target.key
