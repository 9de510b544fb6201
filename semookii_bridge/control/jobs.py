"""A control command on its way through the bridge, and where its lifecycle states go."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import BridgeError
from ..interface import wire
from ..interface.topics import Target
from ..journal.protocol import Entry
from .commands import Command, decode_command
from .statuses import Status

log = logging.getLogger(__name__)


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
    merge_sig: bytes | None = None

    @property
    def inverters(self) -> tuple[str, ...]:
        """The inverter serials the command names (none for a group: the API resolves its members)."""
        if self.target.kind == "inverter":
            return (str(self.target.id),)
        return self.sns or ()

    @property
    def key(self) -> str:
        """Latest-wins key: one per group, inverter, or exact set of batch serial numbers."""
        if self.target.kind == "batch":
            return "batch:" + ",".join(sorted(self.sns or ()))
        return self.target.key


def job_from_entry(entry: Entry) -> Job | None:
    """The job a journal row describes (at restart, and for each result poll); None if it is unreadable."""
    try:
        command = decode_command(entry.command)
    except BridgeError:
        log.error("journal_entry_unreadable request_id=%s", entry.request_id)
        return None
    return Job(
        request_id=entry.request_id,
        target=Target(entry.target_kind, entry.target_id),
        command=command,
        sns=tuple(command.sns) if command.sns else None,
        received_at=entry.received_at,
        deadline=entry.deadline,
        response_topic=entry.response_topic,
        correlation=entry.correlation,
        command_id=entry.command_id,
        task_id=entry.task_id,
        track_until=entry.track_until,
    )


def entry_from_job(job: Job, status: Status, delivery: str | None) -> Entry:
    """The journal row of a newly accepted job (the other direction of `job_from_entry`)."""
    return Entry(
        request_id=job.request_id,
        target_kind=job.target.kind,
        target_id=job.target.id,
        command=wire.encode(job.command),
        status=status,
        received_at=job.received_at,
        deadline=job.deadline,
        delivery_hash=delivery,
        response_topic=job.response_topic,
        correlation=job.correlation,
    )
