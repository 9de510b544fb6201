"""A command whose request_id the journal already holds: nothing is sent and no second lifecycle starts; its
latest state is published again, not retained, with `duplicate: true`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..errors import ErrorInfo
from ..interface.payloads import Incoming
from ..interface.topics import Target
from ..journal.protocol import CommandJournal, Entry
from ..journal.store import StoreUnavailable
from .commands import echo
from .jobs import job_from_entry
from .lifecycle import Lifecycle
from .polling import outcome
from .statuses import Status

log = logging.getLogger(__name__)

Reject = Callable[[ErrorInfo], None]
"""Refuse the repeated message with this error (on the topic it came on)."""


def publish_repeat(
    lifecycle: Lifecycle, request_id: str, entry: Entry | None, target: Target, msg: Incoming, reject: Reject
) -> None:
    """Publish the journaled command's last state again; a row that cannot be read is refused as `duplicate`."""
    job = job_from_entry(entry) if entry is not None else None
    if entry is None or job is None:
        reject(ErrorInfo(code="duplicate", message=f"request_id {request_id!r} was already received"))
        return
    status: Status = "queued" if entry.status == "sending" else entry.status  # its last published state
    log.info("duplicate request_id=%s status=%s", entry.request_id, status)
    lifecycle.publish_state(
        job.target,
        entry.request_id,
        status,
        command=echo(job.command),
        command_id=job.command_id,
        task_id=job.task_id,
        **outcome(entry),
        duplicate=True,
        topic_target=target,
        response_topic=msg.response_topic,
        correlation=msg.correlation_data,
    )


async def recall_repeat(
    journal: CommandJournal, lifecycle: Lifecycle, request_id: str, target: Target, msg: Incoming, reject: Reject
) -> None:
    """The same for a finished command the journal holds only as a key: its row is read from the store first."""
    try:
        entry = await journal.recall(request_id)
    except StoreUnavailable as exc:
        log.warning("duplicate_state_unavailable request_id=%s error=%s", request_id, exc)
        entry = None
    publish_repeat(lifecycle, request_id, entry, target, msg, reject)
