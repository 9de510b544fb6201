"""A command's life after it was queued: send it once, then poll for its task and results, publishing
and journaling every step. Nothing here knows MQTT or HTTP; it sees a publisher and an API facade."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..api.errors import ApiError
from ..api.params import ControlParams
from ..budget.authorization import ATTEMPT
from ..common.clock import steady
from ..config import CommandsConfig
from ..errors import ErrorInfo
from ..interface import wire
from ..interface.payloads import StateMessage
from ..interface.topics import Target, Topics
from ..journal.protocol import CommandJournal
from .commands import echo, is_safety, to_params
from .jobs import Job, job_from_entry
from .polling import QueryApi, ResultPolls, Tokens
from .statuses import TRACKED, Status

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where the bridge's messages go (the MQTT edge, or a recorder in tests)."""

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        on_sent: Callable[[], None] | None = None,
        response_topic: str | None = None,
        message_expiry: int | None = None,
    ) -> None: ...


class ControlApi(QueryApi, Protocol):
    """The part of the Cloud API client a command's lifecycle uses: control calls, and the queries polls make."""

    async def group_control(self, group_id: str, params: ControlParams, *, prepaid: bool = False) -> str: ...

    async def single_control(self, sn: str, params: ControlParams, *, prepaid: bool = False) -> str: ...

    async def batch_control(self, sns: Sequence[str], params: ControlParams, *, prepaid: bool = False) -> str: ...


StatusObserver = Callable[[StateMessage, float | None], None]
"""Told every state published but a duplicate's echo, with the command's age when known; for metrics and the
status page."""


class Lifecycle:
    """Publishes states, sends commands once, tracks their results."""

    def __init__(
        self,
        *,
        api: ControlApi,
        journal: CommandJournal,
        publisher: Publisher,
        topics: Topics,
        config: CommandsConfig,
        clock: Callable[[], float] = steady,
        observer: StatusObserver | None = None,
        poll_concurrency: int = 32,
        tokens: Tokens | None = None,
        dongle_of: Callable[[str], str | None] = lambda _sn: None,
        age_observer: Callable[[float], None] | None = None,
    ) -> None:
        self.api, self.journal, self.publisher, self.topics = api, journal, publisher, topics
        self.config, self.clock, self.observer, self.age_observer = config, clock, observer, age_observer
        self.polls = ResultPolls(
            api=api,
            journal=journal,
            report=self,
            config=config,
            clock=clock,
            tokens=tokens,
            dongle_of=dongle_of,
            concurrency=poll_concurrency,
        )
        self._newest: dict[str, str] = {}
        self.recorded: Callable[[Sequence[Job]], None] | None = None
        """Called once the jobs' `sending` write is on record, just before their call (the safety lane's claim
        on the loop ends there, not before: that write must not wait behind a storm's rows)."""

    # ---- publishing ---------------------------------------------------------------------------------

    def publish_state(
        self,
        target: Target,
        request_id: str,
        status: Status,
        *,
        command: Any = None,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        on_sent: Callable[[], None] | None = None,
        topic_target: Target | None = None,
        age: float | None = None,
        **fields: Any,
    ) -> None:
        """One lifecycle message on the target's state topic (retained), and on the MQTT 5 response topic.

        A `rejected` command is published but not retained: the target's retained state stays the latest
        command that was accepted, never junk, and a topic nothing valid reaches keeps no retained message.

        `on_sent` runs once the broker has acknowledged the state-topic message. A repeat for a duplicate
        request_id (`duplicate=True`) is not retained, so it never replaces the command's own last state;
        it goes to the topic where the duplicate arrived (`topic_target`).
        """
        message = StateMessage(request_id=request_id, status=status, target=target, command=command, **fields)
        payload = wire.encode(message)
        topic = self.topics.state(topic_target or target)
        retain = not message.duplicate and status != "rejected"

        def publish() -> None:
            self.publisher.publish(topic, payload, retain=retain, on_sent=on_sent)
            if response_topic:
                self.publisher.publish(response_topic, payload, correlation_data=correlation)

        # Announce only what the journal holds: the state goes out after the commit that records it.
        self.journal.after_commit(publish)
        if self.observer is not None and not message.duplicate:
            self.observer(message, age)
        log.info("command_state request_id=%s target=%s status=%s", request_id, target.key, status)

    def publish_job(
        self, job: Job, status: Status, *, on_sent: Callable[[], None] | None = None, **fields: Any
    ) -> None:
        """A lifecycle message for a job, with what is known about it so far."""
        self.publish_state(
            job.target,
            job.request_id,
            status,
            command=echo(job.command),
            command_id=job.command_id,
            task_id=job.task_id,
            response_topic=job.response_topic,
            correlation=job.correlation,
            on_sent=on_sent,
            age=self.clock() - job.received_at,
            **fields,
        )

    def advance(self, job: Job, status: Status, **learned: Any) -> None:
        """Journal a step that is not the last (with what it learned: command id, task id, window), then
        publish it; the publish waits for the commit, so a state is announced only once the journal has it."""
        self.journal.update(job.request_id, status, **learned)
        self.publish_job(job, status)

    def finish(
        self,
        job: Job,
        status: Status,
        *,
        error: ErrorInfo | None = None,
        results: dict[str, str] | None = None,
        no_answer: list[str] | None = None,
    ) -> None:
        """Journal a terminal state (with what it says), then publish it; the broker's ack is journaled too."""
        self.journal.update(
            job.request_id,
            status,
            results=None if results is None else wire.encode(results),
            error=None if error is None else wire.encode(error),
        )
        rid = job.request_id
        if self._newest.get(job.key) == rid:
            del self._newest[job.key]
        self.publish_job(
            job,
            status,
            error=error,
            results=results,
            no_answer=no_answer,
            on_sent=lambda: self.journal.mark_announced(rid),
        )

    # ---- sending --------------------------------------------------------------------------------------

    async def send(self, job: Job) -> None:
        """Send one command (see `send_all`)."""
        await self.send_all([job])

    async def send_all(self, jobs: Sequence[Job]) -> None:
        """Send once: one command, or several merged into one batch call (same parameters, one command id).

        Journaled as `sending` first: after a crash each is reported ambiguous, not resent.
        """
        for job in jobs:
            self.journal.update(job.request_id, "sending")
        await self.journal.durable()
        if self.recorded is not None:
            self.recorded(jobs)
        if self.age_observer is not None:
            now = self.clock()
            for job in jobs:
                self.age_observer(now - job.received_at)
        try:
            command_id = str(await self._call(jobs, to_params(jobs[0].command)))
        except ApiError as exc:
            for job in jobs:
                self.finish(job, "failed", error=ErrorInfo(code=exc.code, message=exc.message))
            return
        except Exception as exc:
            log.exception("send_failed request_id=%s", jobs[0].request_id)
            message = f"the bridge failed while sending ({type(exc).__name__}); the call may have reached the API"
            for job in jobs:
                self.finish(job, "failed", error=ErrorInfo(code="ambiguous", message=message))
            return
        track_until = self.clock() + self.config.track_results_for
        tracked = [job for job in jobs if self._accepted(job, command_id, track_until)]
        if tracked:
            self.track(tracked)

    def _accepted(self, job: Job, command_id: str, track_until: float) -> bool:
        """Record and announce that the API took the command; True when its results are to be polled."""
        job.command_id = command_id
        job.track_until = track_until
        self.advance(job, "accepted", command_id=command_id, track_until=track_until)
        if (job.command.track or self.config.track) == "results":
            return True
        self._replace_older(job)
        self.finish(job, "completed")
        return False

    async def _call(self, jobs: Sequence[Job], params: ControlParams) -> str:
        """The control call; a safety command's goes out whatever the token's standing (`authorization.py`)."""
        attempt = ATTEMPT.set(all(is_safety(job.command) for job in jobs))
        try:
            return await self._control(jobs, params)
        finally:
            ATTEMPT.reset(attempt)

    async def _control(self, jobs: Sequence[Job], params: ControlParams) -> str:
        if len(jobs) > 1:
            sns = [sn for job in jobs for sn in job.inverters]
            log.info("merged_call commands=%d inverters=%d", len(jobs), len(sns))
            return await self.api.batch_control(sns, params, prepaid=True)
        target = jobs[0].target
        if target.kind == "group":
            return await self.api.group_control(str(target.id), params, prepaid=True)
        if target.kind == "inverter":
            return await self.api.single_control(str(target.id), params, prepaid=True)
        return await self.api.batch_control(list(jobs[0].inverters), params, prepaid=True)

    # ---- tracking -------------------------------------------------------------------------------------

    def track(self, jobs: Sequence[Job]) -> None:
        """Poll for the task id and results of one control call (all `jobs` share its command id), first
        after `poll_initial`, then backing off to `poll_max`.

        Only the schedule stays in memory; each poll reads the call's commands back from the journal, so a
        long tracking window of busy traffic does not grow the process by a Job per command. A command
        tracked for the same target before one of these was replaced by it and is not polled again.
        """
        for job in jobs:
            self._replace_older(job)
            self._newest[job.key] = job.request_id
        lead = jobs[0]
        self.polls.add(str(lead.command_id), (lead.track_until or self.clock()) - self.clock())

    def _replace_older(self, job: Job) -> None:
        """End the target's previously sent, still tracked command `superseded`/`replaced`: polling it
        would spend calls on a setpoint the devices no longer hold."""
        older_id = self._newest.pop(job.key, None)
        if older_id is None or older_id == job.request_id:
            return
        older = self._tracked_job(older_id)
        if older is None:
            return
        message = f"replaced by {job.request_id!r}, sent later to the same target; its results are not polled"
        self.finish(older, "superseded", error=ErrorInfo(code="replaced", message=message))

    @property
    def tracking(self) -> int:
        """Control calls whose results are being polled."""
        return len(self.polls)

    async def run_tracking(self) -> None:
        """Run the result polls (until cancelled)."""
        await self.polls.run()

    def _tracked_job(self, request_id: str) -> Job | None:
        """The tracked command as the journal holds it; None if it no longer waits for results."""
        entry = self.journal.get(request_id)
        if entry is None or entry.status not in TRACKED:
            log.debug("poll_skipped request_id=%s reason=no_longer_tracked", request_id)
            return None
        return job_from_entry(entry)

    async def close(self) -> None:
        """Stop tracking (the journal keeps tracked commands for the next start)."""
        await self.polls.close()
