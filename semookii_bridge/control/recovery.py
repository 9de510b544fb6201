"""What a start or a takeover resumes from the journal: terminal states the broker never acknowledged are
announced again, `queued` commands are re-admitted and queued (or expire), `sending` ones are reported
`ambiguous` and never repeated, and accepted ones are tracked again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import BridgeError, ErrorInfo
from ..journal.protocol import CommandJournal, Entry
from .admission import Admission
from .dispatcher import Dispatcher
from .jobs import Job, job_from_entry
from .lifecycle import Lifecycle
from .polling import outcome
from .statuses import TRACKED, Status

log = logging.getLogger(__name__)

Drop = Callable[[Job, Status, ErrorInfo | None], None]


class Recovery:
    """Resumes one journal's commands into a bridge's lifecycle and dispatcher, once, at start."""

    def __init__(
        self,
        *,
        journal: CommandJournal,
        lifecycle: Lifecycle,
        dispatcher: Dispatcher,
        admission: Admission,
        clock: Callable[[], float],
        drop: Drop,
        wire_bound: float | None,
    ) -> None:
        """`drop`: how a queued command that cannot be sent ends; `wire_bound`: under the hot standby, how long an
        old leader's request may still arrive (None without `[ha]`)."""
        self.journal, self.lifecycle, self.dispatcher, self.admission = journal, lifecycle, dispatcher, admission
        self.clock, self.drop, self.wire_bound = clock, drop, wire_bound

    def run(self) -> None:
        """Announce, resume, report and track what the journal holds."""
        for entry in self.journal.unannounced():
            self._announce_again(entry)
        recovered = self.journal.open_entries()
        calls: dict[str, list[Job]] = {}
        for entry in recovered:
            job = job_from_entry(entry)
            if job is None:
                self.journal.update(entry.request_id, "failed")
            elif entry.status in TRACKED:
                calls.setdefault(str(job.command_id), []).append(job)
            elif entry.status == "queued":
                self._resume(job)
            elif entry.status == "sending":
                self._in_flight_before(job)
        for jobs in calls.values():
            self.lifecycle.track(jobs)
        if recovered:
            log.info("recovered commands=%d", len(recovered))

    def _resume(self, job: Job) -> None:
        """A queued command: re-admitted, then queued, or expired if its deadline passed while no one ran."""
        if not self._readmitted(job):
            return
        if job.deadline <= self.clock():
            self.drop(job, "expired", ErrorInfo(code="expired", message="expired while the bridge was down"))
        else:
            self.dispatcher.submit(job)

    def _readmitted(self, job: Job) -> bool:
        """A recovered command still passes this bridge's allow-lists and ceilings (its configuration may be
        stricter than the one that accepted it); else it ends `failed` with `not_allowed`, unsent."""
        try:
            self.admission.check_targets(job.target, job.command)
            self.admission.check_ceilings(job.command)
        except BridgeError as exc:
            message = f"{exc.message} (re-checked after a restart or takeover)"
            self.lifecycle.finish(job, "failed", error=ErrorInfo(code=exc.code, message=message))
            return False
        return True

    def _in_flight_before(self, job: Job) -> None:
        """A call that may have left before a crash or takeover: ambiguous, never repeated; under the hot standby
        its target waits until the old leader's request can no longer arrive (`holdback.py`)."""
        if self.wire_bound is not None:
            self.dispatcher.holdback.hold(job, self.clock() + self.wire_bound)
        message = "the bridge stopped while sending this command; it may have reached the API and is not repeated"
        self.lifecycle.finish(job, "failed", error=ErrorInfo(code="ambiguous", message=message))

    def _announce_again(self, entry: Entry) -> None:
        job = job_from_entry(entry)
        if job is None or entry.status == "sending":
            return  # (unannounced() returns terminal states only)
        self.lifecycle.finish(job, entry.status, **outcome(entry))


async def prune_forever(journal: CommandJournal, clock: Callable[[], float], window: float, doubt: float) -> None:
    """Forget finished commands older than the dedup window (grown by how far `clock` may run ahead: `doubt`),
    every quarter window, at least once a minute."""
    while True:
        removed = journal.prune(clock() - window - doubt)
        if removed:
            log.debug("journal_pruned rows=%d", removed)
        await asyncio.sleep(min(60.0, window / 4))
