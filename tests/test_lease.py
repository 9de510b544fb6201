"""The leader lease in isolation (`ha.Leadership`): its starting state, how long each attempt may take, when it
stops believing the lease, and what it says when it loses it. The database's side is in test_shared_journal.py."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import pytest

from semookii_bridge.journal.lease import Leadership

LEASE = 0.6


class Store:
    """A lease row whose answers the test scripts: each call pops the next behaviour (a value, an exception to
    raise, or `hang`), the last one repeating."""

    def __init__(self, acquire: list[object], renew: list[object] | None = None, release: object = None) -> None:
        self.acquires, self.renews, self.release_answer = acquire, renew or [True], release
        self.released: list[tuple[int, str]] = []

    @staticmethod
    async def _answer(queue: list[object]) -> object:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if answer == "hang":
            await asyncio.Event().wait()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def acquire(self, holder: str, lease: float) -> int | None:
        answer = await self._answer(self.acquires)
        assert answer is None or isinstance(answer, int)
        return answer

    async def renew(self, epoch: int, holder: str, lease: float) -> bool:
        return bool(await self._answer(self.renews))

    async def release(self, epoch: int, holder: str) -> None:
        self.released.append((epoch, holder))
        await self._answer([self.release_answer])


class Clock:
    """The boot clock, which the test can step forward (a process stopped, a VM suspended)."""

    def __init__(self) -> None:
        self.jump = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.jump


def leadership(store: Store, lease: float = LEASE, lost: list[str] | None = None, clock: Clock | None = None) -> Leadership:
    return Leadership(store, "a", lease, on_lost=(lost if lost is not None else []).append, clock=clock or Clock())


async def timed(call: Callable[[], Awaitable[object]], bound: float = 2.0) -> float:
    """Seconds `call` took (it must end within `bound`)."""
    start = time.monotonic()
    await asyncio.wait_for(call(), bound)
    return time.monotonic() - start


def test_a_new_candidate_is_a_standby_that_holds_nothing() -> None:
    """Before acquire: a standby, no epoch, no lease, never led, not valid."""
    lead = leadership(Store([1]))
    assert (lead.role, lead.epoch, lead.valid_until, lead.since, lead.takeovers) == ("standby", None, 0.0, None, 0)
    assert not lead.valid()


@pytest.mark.parametrize(("lease", "margin"), [(6.0, 0.5), (1.2, 0.2)])
def test_the_margin_is_a_sixth_of_the_lease_at_most_half_a_second(lease: float, margin: float) -> None:
    """A leader stops believing its lease this long before the lease's end."""
    assert leadership(Store([1]), lease).margin == pytest.approx(margin)


def test_a_lease_is_not_believed_at_its_margin() -> None:
    """At exactly `valid_until - margin` the leader no longer acts."""
    clock = Clock()
    lead = leadership(Store([1]), clock=clock)
    lead.role, lead.valid_until = "leader", clock() + lead.margin + 3600
    assert lead.valid()
    clock.jump = 3600
    lead.valid_until = clock() + lead.margin
    clock.jump += 1e-3
    assert not lead.valid()


async def test_a_hanging_attempt_is_given_up_after_a_third_of_the_lease_and_tried_again() -> None:
    """The database does not answer: the attempt ends after lease/3, the next one comes lease/3 later."""
    lead = leadership(Store(["hang", 7]))
    took = await timed(lead.acquire)
    assert lead.epoch == 7 and lead.role == "leader" and 2 * LEASE / 3 - 0.01 <= took < 1.5
    await lead.release()


async def test_a_refused_attempt_is_tried_again_a_third_of_the_lease_later() -> None:
    """The lease is held by another: the next attempt comes after lease/3, not later."""
    lead = leadership(Store([None, 7]))
    took = await timed(lead.acquire)
    assert LEASE / 3 - 0.01 <= took < 1.0
    await lead.release()


async def test_each_takeover_is_counted() -> None:
    """Two acquisitions by one process: two takeovers."""
    lead = leadership(Store([1, 2]))
    await lead.acquire()
    await lead.release()
    await lead.acquire()
    assert lead.takeovers == 2
    await lead.release()


async def test_release_stops_renewing_and_gives_the_lease_back() -> None:
    """After release the renewer has ended, the row was released with the epoch, and the role is offline."""
    store = Store([5])
    lead = leadership(store)
    await lead.acquire()
    renewer = lead._renewer
    await lead.release()
    assert renewer is not None and renewer.done() and store.released == [(5, "a")] and lead.role == "offline"


async def test_a_failing_release_is_quiet() -> None:
    """The database refuses the release: the process still stops (the lease runs out by itself)."""
    lead = leadership(Store([5], release=ConnectionError("gone")))
    await lead.acquire()
    await lead.release()
    assert lead.role == "offline"


async def test_a_hanging_release_is_given_up_after_a_third_of_the_lease() -> None:
    """The database does not answer the release: the stop waits lease/3 for it, not longer."""
    lead = leadership(Store([5], release="hang"))
    await lead.acquire()
    took = await timed(lead.release)
    assert LEASE / 3 - 0.01 <= took < 1.0 and lead.role == "offline"


async def test_a_lease_that_cannot_be_renewed_is_lost_with_its_length_in_the_reason() -> None:
    """Every renewal fails: the leader gives up, saying it could not renew within the lease (no stall named)."""
    lost: list[str] = []
    lead = leadership(Store([5], renew=[ConnectionError("gone")]), lost=lost)
    await lead.acquire()
    await asyncio.wait_for(_until(lambda: bool(lost)), 2.0)
    assert lost == ["could not renew the lease within 0.6 s"] and lead.role == "offline"


async def test_a_stalled_process_says_how_long_it_was_stalled() -> None:
    """The boot clock moved 0.8 s while the loop did not run (SIGSTOP): the reason says about 0.6 s of stall
    beyond the renewal's due time."""
    lost: list[str] = []
    clock = Clock()
    lead = leadership(Store([5]), lost=lost, clock=clock)
    await lead.acquire()
    clock.jump = 0.8
    await asyncio.wait_for(_until(lambda: bool(lost)), 2.0)
    (reason,) = lost
    assert re.fullmatch(r"could not renew the lease within 0\.6 s \(this process was stalled 0\.[67] s\)", reason)


async def _until(done: Callable[[], bool]) -> None:
    while not done():
        await asyncio.sleep(0.01)
