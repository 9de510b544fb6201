"""Result polling: after a control call was accepted, ask for its task id, then for its devices' results,
until every command of the call ended or its tracking window closed. Each step reads the call's commands
back from the journal, so only the schedule (a heap) stays in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypedDict

from ..api.errors import ApiError
from ..budget.ratelimit import Priority, QuotaExhausted
from ..common.backoff import Backoff
from ..config import CommandsConfig
from ..errors import ErrorInfo
from ..interface import wire
from ..journal.protocol import CommandJournal, Entry
from .jobs import Job, job_from_entry
from .poll_schedule import PollSchedule
from .statuses import TRACKED, Status

log = logging.getLogger(__name__)

NO_ANSWER = frozenset({"null", ""})
"""A device's result that means it has not answered (the API sends the string "null"; JSON null becomes it)."""


def silent(results: dict[str, str]) -> list[str]:
    """The devices (dongle serials) in a results map that have not answered."""
    return [device for device, answer in results.items() if answer.strip() in NO_ANSWER]


class QueryApi(Protocol):
    """The part of the Cloud API client polling uses."""

    async def query_command(self, command_id: str, *, prepaid: bool = False) -> str | None: ...

    async def get_query_result(self, task_id: str, *, prepaid: bool = False) -> dict[str, str] | None: ...


class Tokens(Protocol):
    """The shared rate limiter, as result polling uses it: take a token before a poll, give back an unused one."""

    async def acquire(self, priority: int, *, urgent: bool = False) -> None: ...

    def refund(self) -> None: ...


class Reporter(Protocol):
    """Where polling reports a command's steps: the lifecycle, which journals and publishes them."""

    def advance(self, job: Job, status: Status, **learned: Any) -> None: ...

    def finish(
        self,
        job: Job,
        status: Status,
        *,
        error: ErrorInfo | None = None,
        results: dict[str, str] | None = None,
        no_answer: list[str] | None = None,
    ) -> None: ...


class ResultPolls:
    """Polls accepted control calls, keyed by command id, at most `concurrency` at once."""

    def __init__(
        self,
        *,
        api: QueryApi,
        journal: CommandJournal,
        report: Reporter,
        config: CommandsConfig,
        clock: Callable[[], float],
        tokens: Tokens | None,
        dongle_of: Callable[[str], str | None],
        concurrency: int,
    ) -> None:
        self.api, self.journal, self.report, self.config = api, journal, report, config
        self.clock, self.tokens, self.dongle_of = clock, tokens, dongle_of
        self.backoff = Backoff(config.poll_initial, config.poll_max)
        self.schedule = PollSchedule(self.step, concurrency=concurrency, clock=clock)
        self.errors: dict[str, str] = {}
        """A call's last poll error, reported if its window closes without results."""
        self._answers: dict[str, dict[str, str]] = {}
        """A call's last results while some device has not answered (kept for `partial` at the window's end)."""
        self.held: Callable[[], bool] = lambda: False
        """True while the API is not answering (`breaker.py`): a poll then would only join the pile of late
        calls a holding middlebox may deliver at once, so it waits for its next turn."""

    def add(self, command_id: str, remaining: float) -> None:
        """Poll a newly accepted call after `poll_initial` (sooner if its window closes first)."""
        initial = self.backoff.initial
        self.schedule.add(command_id, min(initial, max(0.0, remaining)), initial)

    def __len__(self) -> int:
        """Control calls whose results are being polled."""
        return len(self.schedule)

    async def run(self) -> None:
        """Run the polling schedule (until cancelled)."""
        await self.schedule.run()

    async def step(self, command_id: str, backoff: float) -> tuple[float, float] | None:
        """One poll of a control call; (delay until the next, next backoff), or None once its commands are
        completed, replaced or given up.

        The window is kept by the clock: commands whose window closed, before the poll or while it waited
        for a rate-limit token, end `unknown` without another call.
        """
        jobs = self._tracked_call(command_id)
        if not jobs:
            self.errors.pop(command_id, None)
            return None
        if self.held():
            return self._next_poll(command_id, jobs, backoff)
        track_until = jobs[0].track_until or self.clock()
        prepaid = await self._poll_token(command_id, track_until)
        if prepaid is None:
            return self._next_poll(command_id, jobs, backoff)
        if self.tokens is not None and not (jobs := self._tracked_call(command_id)):
            self._release(prepaid)
            self.errors.pop(command_id, None)
            return None  # all replaced while the poll waited for its token
        # No token under a limiter means the window closed while waiting, whatever the clock reads now (a
        # timer may fire a little early, as uvloop's do): never call without a token, it would wait unbounded.
        if self.clock() >= track_until or (self.tokens is not None and not prepaid):
            self._release(prepaid)
            self._give_up(command_id, jobs)
            return None
        try:
            if await asyncio.wait_for(self._poll_once(command_id, jobs, prepaid), track_until - self.clock()):
                self.errors.pop(command_id, None)
                return None
        except TimeoutError:  # the window closed during the poll (a hanging call and its retries): it ends now
            if left := self._tracked_call(command_id):
                self._give_up(command_id, left)
            return None
        except ApiError as exc:
            self.errors[command_id] = f"{exc.code}: {exc.message}"
            log.warning("poll_failed command_id=%s code=%s", command_id, exc.code)
        return self._next_poll(command_id, jobs, backoff)

    async def _poll_token(self, command_id: str, track_until: float, *, urgent: bool = False) -> bool | None:
        """Take the poll's rate-limit token, waiting at most until the window closes. True: held; False: none
        (no limiter, or the window closed first); None: the daily quota is spent (noted as the poll's error).
        `urgent`: the result query of a dispatched command, served before other polls."""
        wait = track_until - self.clock()
        if self.tokens is None or wait <= 0:
            return False
        acquiring = asyncio.ensure_future(self.tokens.acquire(Priority.POLL, urgent=urgent))
        try:
            await asyncio.wait_for(asyncio.shield(acquiring), timeout=wait)
        except TimeoutError:
            return await _too_late(acquiring)
        except QuotaExhausted as exc:
            self.errors[command_id] = f"{QuotaExhausted.code}: {exc}"
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
        backoff = self.backoff.after(backoff)
        return min(backoff, track_until - now), backoff

    def _give_up(self, command_id: str, jobs: list[Job]) -> None:
        """The tracking window closed: `partial` for a command some of whose devices answered (naming the
        silent ones), else `unknown`, with the last poll error if there was one."""
        last_error = self.errors.pop(command_id, None)
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
            dispatched = await self._dispatched(command_id, task_id)
            if dispatched is None:
                return False  # the quota is spent or the window closed while waiting: the next step says so
            jobs, prepaid = dispatched
            if not jobs:
                return True
        results = await self.api.get_query_result(task_id, prepaid=prepaid)
        if results is None:
            return False
        return self._answered(command_id, jobs, results)

    async def _dispatched(self, command_id: str, task_id: str) -> tuple[list[Job], bool] | None:
        """Record and announce the task id, then take the token for the result query at once: (the call's
        commands still tracked, token held), no commands when all were replaced meanwhile, None when no
        token could be had."""
        jobs = self._tracked_call(command_id)
        for job in jobs:
            job.task_id = task_id
            self.report.advance(job, "dispatched", task_id=task_id)
        if not jobs:
            return [], False
        held = await self._result_token(command_id, jobs[0].track_until or self.clock())
        if held is None:
            return None
        jobs = self._tracked_call(command_id)
        if not jobs:
            self._release(held)  # all replaced while the result query waited for its token
        return jobs, held

    def _answered(self, command_id: str, jobs: list[Job], results: dict[str, str]) -> bool:
        """Complete each command all of whose devices answered; True when none is left waiting."""
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

    def _end_tracked(self, job: Job, status: Status, **outcome: Any) -> None:
        """Finish a command that was being polled, unless it ended meanwhile (replaced while a poll was on the
        wire): a command gets one terminal state, whichever step reaches it first."""
        if self._still_tracked(job.request_id):
            self.report.finish(job, status, **outcome)

    def _still_tracked(self, request_id: str) -> bool:
        """Whether the command still waits for results (it may have been replaced while a poll was on the wire)."""
        entry = self.journal.get(request_id)
        return entry is not None and entry.status in TRACKED

    async def close(self) -> None:
        """Stop polling (the journal keeps tracked commands for the next start)."""
        await self.schedule.close()


async def _too_late(acquiring: asyncio.Future[None]) -> bool:
    """The window closed while a poll waited for its token: stop waiting (the limiter gives back a token
    granted just as the wait ended)."""
    acquiring.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await acquiring
    return False


class Outcome(TypedDict):
    results: dict[str, str] | None
    no_answer: list[str] | None
    error: ErrorInfo | None


def outcome(entry: Entry) -> Outcome:
    """What a journaled command's state says besides its status: results, silent devices, error."""
    results = wire.decode(entry.results, dict[str, str]) if entry.results else None
    return {
        "results": results,
        "no_answer": silent(results) if entry.status == "partial" and results else None,
        "error": wire.decode(entry.error, ErrorInfo) if entry.error else None,
    }
