"""A command's life after it was queued: send it once, then poll for its task and results, publishing
and journaling every step. Nothing here knows MQTT or HTTP; it sees a publisher and an API facade."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import wire
from .api.errors import ApiError
from .api.params import ControlParams
from .clock import steady
from .commands import echo, to_params
from .config import CommandsConfig
from .errors import ErrorInfo
from .jobs import Job, job_from_entry
from .journal import Journal
from .payloads import StateMessage, Status
from .ratelimit import Priority, QuotaExhausted
from .topics import Target, Topics
from .tracker import PollSchedule

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


class ControlApi(Protocol):
    """The part of the Cloud API client a command's lifecycle uses."""

    async def group_control(self, group_id: str, params: ControlParams, *, prepaid: bool = False) -> str: ...

    async def single_control(self, sn: str, params: ControlParams, *, prepaid: bool = False) -> str: ...

    async def batch_control(self, sns: Sequence[str], params: ControlParams, *, prepaid: bool = False) -> str: ...

    async def query_command(self, command_id: str, *, prepaid: bool = False) -> str | None: ...

    async def get_query_result(self, task_id: str, *, prepaid: bool = False) -> dict[str, str] | None: ...


class Tokens(Protocol):
    """The shared rate limiter, as result polling uses it: take a token before a poll, give back an unused one."""

    async def acquire(self, priority: int, *, urgent: bool = False) -> None: ...

    def refund(self) -> None: ...


NO_ANSWER = frozenset({"null", ""})
"""A device's result that means it has not answered (the API sends the string "null"; JSON null becomes it)."""


def silent(results: dict[str, str]) -> list[str]:
    """The devices (dongle serials) in a results map that have not answered."""
    return [device for device, answer in results.items() if answer.strip() in NO_ANSWER]


TRACKED = ("accepted", "dispatched")
"""Journal statuses of a command whose results are being polled."""

StatusObserver = Callable[[str, str], None]
"""Told (target kind, status) for every state published; used for metrics."""


class Lifecycle:
    """Publishes states, sends commands once, tracks their results."""

    def __init__(
        self,
        *,
        api: ControlApi,
        journal: Journal,
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
        self.api = api
        self.tokens = tokens
        self.journal = journal
        self.publisher = publisher
        self.topics = topics
        self.config = config
        self.clock = clock
        self.observer = observer
        self.dongle_of = dongle_of
        self.age_observer = age_observer
        self._schedule = PollSchedule(self._poll_step, concurrency=poll_concurrency, clock=clock)
        self._poll_errors: dict[str, str] = {}
        self._answers: dict[str, dict[str, str]] = {}
        """A call's last results while some device has not answered (kept for `partial` at the window's end)."""
        self._newest: dict[str, str] = {}

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
        **fields: Any,
    ) -> None:
        """One lifecycle message on the target's state topic (retained), and on the MQTT 5 response topic.

        `on_sent` runs once the broker has acknowledged the state-topic message. A repeat for a duplicate
        request_id (`duplicate=True`) is not retained, so it never replaces the command's own last state;
        it goes to the topic where the duplicate arrived (`topic_target`).
        """
        message = StateMessage(request_id=request_id, status=status, target=target, command=command, **fields)
        payload = wire.encode(message)
        topic = self.topics.state(topic_target or target)
        retain = not message.duplicate

        def publish() -> None:
            self.publisher.publish(topic, payload, retain=retain, on_sent=on_sent)
            if response_topic:
                self.publisher.publish(response_topic, payload, correlation_data=correlation)

        # Announce only what the journal holds: the state goes out after the commit that records it.
        self.journal.after_commit(publish)
        if self.observer is not None and retain:
            self.observer(target.kind, status)
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
            **fields,
        )

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
        self.journal.update(job.request_id, "accepted", command_id=command_id, track_until=track_until)
        self.publish_job(job, "accepted")
        if (job.command.track or self.config.track) == "results":
            return True
        self._replace_older(job)
        self.finish(job, "completed")
        return False

    async def _call(self, jobs: Sequence[Job], params: ControlParams) -> str:
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
        remaining = (lead.track_until or self.clock()) - self.clock()
        initial = self.config.poll_initial
        self._schedule.add(str(lead.command_id), min(initial, max(0.0, remaining)), initial)

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
        return len(self._schedule)

    async def run_tracking(self) -> None:
        """Run the polling schedule (until cancelled)."""
        await self._schedule.run()

    async def _poll_step(self, command_id: str, backoff: float) -> tuple[float, float] | None:
        """One poll of a control call; (delay until the next, next backoff), or None once its commands are
        completed, replaced or given up.

        The window is kept by the clock: commands whose window closed, before the poll or while it waited
        for a rate-limit token, end `unknown` without another call.
        """
        jobs = self._tracked_call(command_id)
        if not jobs:
            self._poll_errors.pop(command_id, None)
            return None
        track_until = jobs[0].track_until or self.clock()
        prepaid = await self._poll_token(command_id, track_until)
        if prepaid is None:
            return self._next_poll(command_id, jobs, backoff)
        if self.tokens is not None and not (jobs := self._tracked_call(command_id)):
            self._release(prepaid)
            self._poll_errors.pop(command_id, None)
            return None  # all replaced while the poll waited for its token
        if self.clock() >= track_until:
            self._release(prepaid)
            self._give_up(command_id, jobs)
            return None
        try:
            if await self._poll_once(command_id, jobs, prepaid):
                self._poll_errors.pop(command_id, None)
                return None
        except ApiError as exc:
            self._poll_errors[command_id] = f"{exc.code}: {exc.message}"
            log.warning("poll_failed command_id=%s code=%s", command_id, exc.code)
        return self._next_poll(command_id, jobs, backoff)

    async def _poll_token(self, command_id: str, track_until: float, *, urgent: bool = False) -> bool | None:
        """Take the poll's rate-limit token, waiting at most until the window closes. True: held; False: none
        (no limiter, or the window closed first); None: the daily quota is spent (noted as the poll's error).
        `urgent`: the result query of a dispatched command, served before other polls."""
        wait = track_until - self.clock()
        if self.tokens is None or wait <= 0:
            return False
        try:
            await asyncio.wait_for(self.tokens.acquire(Priority.POLL, urgent=urgent), timeout=wait)
        except TimeoutError:
            return False
        except QuotaExhausted as exc:
            self._poll_errors[command_id] = f"{QuotaExhausted.code}: {exc}"
            return None
        return True

    async def _result_token(self, command_id: str, track_until: float) -> bool | None:
        """The token for the result query that follows a task id in the same step, ahead of other polls:
        True when held, False without a limiter, None when none could be had in the window."""
        if self.tokens is None:
            return False
        held = await self._poll_token(command_id, track_until, urgent=True)
        return True if held else None

    def _release(self, held: bool) -> None:
        """Give back a poll token that will not be used."""
        if held and self.tokens is not None:
            self.tokens.refund()

    def _next_poll(self, command_id: str, jobs: list[Job], backoff: float) -> tuple[float, float] | None:
        """(delay, backoff) of the next poll, doubling up to `poll_max` within the window; None after it."""
        track_until = jobs[0].track_until or self.clock()
        now = self.clock()
        if now >= track_until:
            self._give_up(command_id, jobs)
            return None
        backoff = min(backoff * 2, self.config.poll_max)
        return min(backoff, track_until - now), backoff

    def _give_up(self, command_id: str, jobs: list[Job]) -> None:
        """The tracking window closed: `partial` for a command some of whose devices answered (naming the
        silent ones), else `unknown`, with the last poll error if there was one."""
        last_error = self._poll_errors.pop(command_id, None)
        answers = self._answers.pop(command_id, None)
        message = f"no results within {self.config.track_results_for:g} s"
        if last_error is not None:
            message += f"; last poll error: {last_error}"
        for job in jobs:
            own = self._results_for(job, answers) if answers is not None else {}
            quiet = self._unanswered(job, own)
            if answers is not None and quiet:
                error = ErrorInfo(
                    code="devices_no_answer",
                    message=f"{len(quiet)} of {len(own)} devices did not answer within "
                    f"{self.config.track_results_for:g} s",
                )
                self._end_tracked(job, "partial", error=error, results=own, no_answer=quiet)
            else:
                self._end_tracked(job, "unknown", error=ErrorInfo(code="no_results", message=message))

    def _tracked_call(self, command_id: str) -> list[Job]:
        """The commands of one control call that still wait for results, as the journal holds them."""
        jobs = [job_from_entry(entry) for entry in self.journal.tracked_for_call(command_id)]
        return [job for job in jobs if job is not None]

    def _tracked_job(self, request_id: str) -> Job | None:
        """The tracked command as the journal holds it; None if it no longer waits for results."""
        entry = self.journal.get(request_id)
        if entry is None or entry.status not in TRACKED:
            log.debug("poll_skipped request_id=%s: no longer tracked", request_id)
            return None
        return job_from_entry(entry)

    async def _poll_once(self, command_id: str, jobs: list[Job], prepaid: bool = False) -> bool:
        """One poll step for a control call; True when polling is over: `completed`, or all its commands
        ended meanwhile (replaced by newer ones).

        `prepaid`: a rate-limit token is already held for the step's first call.
        """
        task_id = jobs[0].task_id
        if task_id is None:
            task_id = await self.api.query_command(command_id, prepaid=prepaid)
            if task_id is None:
                return False
            jobs = self._tracked_call(command_id)
            if not jobs:
                return True
            for job in jobs:
                job.task_id = task_id
                self.journal.update(job.request_id, "dispatched", task_id=task_id)
                self.publish_job(job, "dispatched")
            held = await self._result_token(command_id, jobs[0].track_until or self.clock())
            if held is None:
                return False  # the quota is spent or the window closed while waiting: the next step says so
            jobs = self._tracked_call(command_id)
            if not jobs:
                self._release(held)
                return True  # all replaced while the result query waited for its token
            prepaid = held
        results = await self.api.get_query_result(task_id, prepaid=prepaid)
        if results is None:
            return False
        waiting = False
        for job in jobs:
            own = self._results_for(job, results)
            if self._unanswered(job, own):
                waiting = True  # some device has not answered yet: poll again, until the window closes
                continue
            self._end_tracked(job, "completed", results=own)
        if waiting:
            self._answers[command_id] = results
            return False
        self._answers.pop(command_id, None)
        return True

    def _unanswered(self, job: Job, own: dict[str, str]) -> list[str]:
        """The command's devices that have not answered: "null" or empty in its results, or (for inverters
        the inventory names) missing from them. An empty map for a group without devices is an answer."""
        expected = [dongle for sn in job.inverters if (dongle := self.dongle_of(sn)) is not None]
        return silent(own) + [dongle for dongle in expected if dongle not in own]

    def _results_for(self, job: Job, results: dict[str, str]) -> dict[str, str]:
        """The command's own devices' entries (the map is keyed by dongle serial, and a merged call's map
        holds every command's devices); the whole map when the inventory cannot name the devices."""
        dongles = [self.dongle_of(sn) for sn in job.inverters]
        if not dongles or None in dongles:
            return results
        return {d: results[d] for d in dongles if d is not None and d in results}

    def _end_tracked(
        self,
        job: Job,
        status: Status,
        *,
        error: ErrorInfo | None = None,
        results: dict[str, str] | None = None,
        no_answer: list[str] | None = None,
    ) -> None:
        """Finish a command that was being polled, unless it ended meanwhile (replaced while a poll was on the
        wire): a command gets one terminal state, whichever step reaches it first."""
        if self._still_tracked(job.request_id):
            self.finish(job, status, error=error, results=results, no_answer=no_answer)

    def _still_tracked(self, request_id: str) -> bool:
        """Whether the command still waits for results (it may have been replaced while a poll was on the wire)."""
        entry = self.journal.get(request_id)
        return entry is not None and entry.status in TRACKED

    async def close(self) -> None:
        """Stop tracking (the journal keeps tracked commands for the next start)."""
        await self._schedule.close()
