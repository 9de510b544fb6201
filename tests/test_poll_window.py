"""Result polls end at `track_results_for` on both event loops: a poll that waits for a token gives up at the
deadline and never calls without one, even when the loop's timer fires before the clock reads the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from semookii_bridge.budget.ratelimit import Priority, RateLimiter, TokenBucket
from semookii_bridge.config import CommandsConfig
from semookii_bridge.control.commands import Manual
from semookii_bridge.control.jobs import Job
from semookii_bridge.control.polling import ResultPolls
from semookii_bridge.control.statuses import Status
from semookii_bridge.errors import ErrorInfo
from semookii_bridge.interface import wire
from semookii_bridge.journal.protocol import Entry
from semookii_bridge.journal.sqlite import Journal

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run_on(loop_name: str, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` on a fresh loop of the named kind."""
    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class GatedApi:
    """Answers like the real client: a call made without a prepaid token first waits at the limiter."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.unpaid: list[str] = []

    async def query_command(self, command_id: str, *, prepaid: bool = False) -> str | None:
        if not prepaid:
            self.unpaid.append(command_id)
            await self.limiter.acquire(Priority.POLL)
        return None

    async def get_query_result(self, task_id: str, *, prepaid: bool = False) -> dict[str, str] | None:
        if not prepaid:
            self.unpaid.append(task_id)
            await self.limiter.acquire(Priority.POLL)
        return None


class Ends:
    """The terminal states reported."""

    def __init__(self) -> None:
        self.statuses: list[Status] = []

    def advance(self, job: Job, status: Status, **fields: Any) -> None:
        return None

    def finish(self, job: Job, status: Status, *, error: ErrorInfo | None = None,
               results: dict[str, str] | None = None, no_answer: list[str] | None = None) -> None:  # fmt: skip
        self.statuses.append(status)


def slow_clock() -> Callable[[], float]:
    """A clock running at 99 % of the loop's: the token wait's timer always fires before the clock reads
    the window's end, as uvloop's millisecond timers can."""
    start = time.monotonic()
    return lambda: start + 0.99 * (time.monotonic() - start)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_poll_waiting_for_a_token_ends_at_its_window_without_a_call(tmp_path: Path, loop_name: str) -> None:
    """No token for a minute, a window of 0.5 s: the poll ends `unknown` within the window and no call is
    attempted without a token."""

    async def scenario() -> tuple[list[str], list[Status], float]:
        clock = slow_clock()
        bucket = TokenBucket(1 / 60, 1, clock=clock)
        bucket.try_take()
        limiter = RateLimiter(bucket)
        journal, api, ends = Journal(tmp_path / f"{loop_name}.db"), GatedApi(limiter), Ends()
        journal.insert(Entry(request_id="r", target_kind="group", target_id="1", status="accepted",
                             command=wire.encode(Manual(action="stop")), received_at=clock(), deadline=clock() + 60,
                             command_id="c1", track_until=clock() + 0.5))  # fmt: skip
        polls = ResultPolls(api=api, journal=journal, report=ends, config=CommandsConfig(track_results_for=0.5),
                            clock=clock, tokens=limiter, dongle_of=lambda _sn: None, concurrency=4)  # fmt: skip
        started = time.monotonic()
        outcome = await asyncio.wait_for(polls.step("c1", 0.1), timeout=3)
        took = time.monotonic() - started
        assert outcome is None
        await limiter.close()
        journal.close()
        return api.unpaid, ends.statuses, took

    unpaid, statuses, took = run_on(loop_name, scenario())
    assert unpaid == [] and statuses == ["unknown"] and took < 1.0


class CountingApi:
    """Records every query, paid for or not."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def query_command(self, command_id: str, *, prepaid: bool = False) -> str | None:
        self.calls.append(command_id)
        return None

    async def get_query_result(self, task_id: str, *, prepaid: bool = False) -> dict[str, str] | None:
        self.calls.append(task_id)
        return None


def test_no_poll_is_made_while_the_api_is_not_answering(tmp_path: Path) -> None:
    """While `held` (the breaker open after a control call's timeout) a due poll makes no call and comes back
    later; once its window closes the command ends `unknown`, still without a call."""

    async def scenario() -> tuple[list[str], list[Status], Any]:
        clock = time.monotonic
        limiter = RateLimiter(TokenBucket(100, 10, clock=clock))
        journal, api, ends = Journal(tmp_path / "held.db"), CountingApi(), Ends()
        journal.insert(Entry(request_id="r", target_kind="group", target_id="1", status="accepted",
                             command=wire.encode(Manual(action="stop")), received_at=clock(), deadline=clock() + 60,
                             command_id="c1", track_until=clock() + 0.3))  # fmt: skip
        polls = ResultPolls(api=api, journal=journal, report=ends, config=CommandsConfig(track_results_for=0.3),
                            clock=clock, tokens=limiter, dongle_of=lambda _sn: None, concurrency=4)  # fmt: skip
        polls.held = lambda: True
        first = await polls.step("c1", 0.1)
        await asyncio.sleep(0.35)
        last = await polls.step("c1", 0.1)
        await limiter.close()
        journal.close()
        return api.calls, ends.statuses, (first is not None, last)

    calls, statuses, (rescheduled, last) = asyncio.run(scenario())
    assert calls == [] and rescheduled and last is None and statuses == ["unknown"]


class HangingApi:
    """A query that hangs (as a call retried on timeouts would): it never answers within the window."""

    async def query_command(self, command_id: str, *, prepaid: bool = False) -> str | None:
        await asyncio.sleep(30)
        return None

    async def get_query_result(self, task_id: str, *, prepaid: bool = False) -> dict[str, str] | None:
        await asyncio.sleep(30)
        return None


def test_a_hanging_poll_ends_at_the_window_not_after_its_retries(tmp_path: Path) -> None:
    """A poll whose call hangs past the window: the command ends `unknown` when the window closes, not when
    the call (with its retries) gives up."""

    async def scenario() -> tuple[list[Status], float, Any]:
        clock = time.monotonic
        journal, ends = Journal(tmp_path / "hang.db"), Ends()
        journal.insert(Entry(request_id="r", target_kind="group", target_id="1", status="accepted",
                             command=wire.encode(Manual(action="stop")), received_at=clock(), deadline=clock() + 60,
                             command_id="c1", track_until=clock() + 0.4))  # fmt: skip
        polls = ResultPolls(api=HangingApi(), journal=journal, report=ends, config=CommandsConfig(track_results_for=0.4),
                            clock=clock, tokens=None, dongle_of=lambda _sn: None, concurrency=4)  # fmt: skip
        started = time.monotonic()
        outcome = await asyncio.wait_for(polls.step("c1", 0.1), timeout=5)
        took = time.monotonic() - started
        journal.close()
        return ends.statuses, took, outcome

    statuses, took, outcome = asyncio.run(scenario())
    assert outcome is None and statuses == ["unknown"] and took < 1.0
