"""Scheduling rules in isolation: latest wins, expiry, one call in flight per target, concurrency cap."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence

from semookii_bridge.budget.ratelimit import RateLimiter, TokenBucket
from semookii_bridge.control.commands import Manual, PowerControl
from semookii_bridge.control.dispatcher import Dispatcher
from semookii_bridge.control.jobs import Job
from semookii_bridge.control.merging import MergePolicy
from semookii_bridge.errors import ErrorInfo
from semookii_bridge.interface.topics import Target


def job(rid: str, target: str = "1", ttl: float = 60.0) -> Job:
    command = Manual(action="stop")
    return Job(request_id=rid, target=Target("group", target), command=command, sns=None,
               received_at=time.time(), deadline=time.time() + ttl)  # fmt: skip


class Recorder:
    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.sent: list[str] = []
        self.dropped: list[tuple[str, str]] = []
        self.active = 0
        self.peak = 0
        self.hold = hold

    async def send(self, jobs: Sequence[Job]) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.sent.extend(j.request_id for j in jobs)
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(0.01)
        self.active -= 1

    def drop(self, j: Job, status: str, error: ErrorInfo | None) -> None:
        self.dropped.append((j.request_id, status))


async def run_until(dispatcher: Dispatcher, condition: object, seconds: float = 3.0) -> None:
    task = asyncio.create_task(dispatcher.run())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():  # type: ignore[operator]
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_latest_wins_while_waiting_for_a_token() -> None:
    """Three setpoints for one group queued behind the rate limit: only the newest is sent."""
    bucket = TokenBucket(5, 1)
    bucket.try_take()
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop)
    for rid in ("a", "b", "c"):
        dispatcher.submit(job(rid))
    await run_until(dispatcher, lambda: rec.sent)
    assert rec.sent == ["c"] and rec.dropped == [("a", "superseded"), ("b", "superseded")]


async def test_a_newer_command_arriving_while_the_older_waits_for_its_token_replaces_it() -> None:
    """The dispatcher already waits for a token for `a` (next one in 0.3 s) when `b` arrives for the same
    group: `b` is sent and `a` is superseded, never sent."""
    bucket = TokenBucket(1 / 0.3, 1)
    bucket.try_take()
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop)
    dispatcher.submit(job("a"))
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(0.1)
    assert rec.sent == [] and dispatcher.queued == 1
    dispatcher.submit(job("b"))
    deadline = time.monotonic() + 3
    while not rec.sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.4)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rec.sent == ["b"] and rec.dropped == [("a", "superseded")]


async def test_different_targets_do_not_supersede_each_other() -> None:
    """Latest-wins is per target: commands for two groups are both sent."""
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), rec.send, rec.drop)
    dispatcher.submit(job("a", "1"))
    dispatcher.submit(job("b", "2"))
    await run_until(dispatcher, lambda: len(rec.sent) == 2)
    assert sorted(rec.sent) == ["a", "b"] and not rec.dropped


async def test_queued_command_expires_at_its_deadline() -> None:
    """A command that cannot be sent before its ttl is `expired` on time, not sent late."""
    bucket = TokenBucket(0.1, 1)
    bucket.try_take()
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop)
    dispatcher.submit(job("late", ttl=0.1))
    await run_until(dispatcher, lambda: rec.dropped, seconds=1)
    assert rec.dropped == [("late", "expired")] and rec.sent == []


async def test_one_call_in_flight_per_target() -> None:
    """A newer command for a target waits until the call for the older one has returned."""
    hold = asyncio.Event()
    rec = Recorder(hold)
    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), rec.send, rec.drop)
    task = asyncio.create_task(dispatcher.run())
    dispatcher.submit(job("first"))
    await asyncio.sleep(0.05)
    dispatcher.submit(job("second"))
    await asyncio.sleep(0.05)
    assert rec.sent == ["first"]
    hold.set()
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rec.sent == ["first", "second"] and rec.peak == 1


async def test_concurrency_cap() -> None:
    """No more than max_in_flight control calls at once."""
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), rec.send, rec.drop, max_in_flight=3)
    for i in range(20):
        dispatcher.submit(job(str(i), target=str(i)))
    await run_until(dispatcher, lambda: len(rec.sent) == 20)
    assert len(rec.sent) == 20 and rec.peak == 3


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_superseded_command_does_not_also_expire() -> None:
    """The older command is reported once, `superseded`; its expiry timer is cancelled with it."""
    bucket = TokenBucket(0.1, 1)
    bucket.try_take()
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop)
    dispatcher.submit(job("old", ttl=0.05))
    dispatcher.submit(job("new", ttl=60))
    await asyncio.sleep(0.15)
    assert rec.dropped == [("old", "superseded")] and dispatcher.queued == 1
    dispatcher.close()


async def test_expiry_reports_the_expired_code() -> None:
    """A command whose ttl passes in the queue is dropped `expired` with error code `expired`."""
    bucket = TokenBucket(0.1, 1)
    bucket.try_take()
    errors: list[ErrorInfo | None] = []
    dispatcher = Dispatcher(RateLimiter(bucket), Recorder().send, lambda j, s, e: errors.append(e))
    dispatcher.submit(job("late", ttl=0.02))
    await asyncio.sleep(0.1)
    assert [e.code if e else None for e in errors] == ["expired"] and dispatcher.queued == 0


async def test_a_command_past_its_deadline_when_the_token_comes_is_not_sent() -> None:
    """If the deadline has passed by the time the token is granted, the command expires and the token is refunded."""
    clock = Clock()
    rec = Recorder()
    bucket = TokenBucket(0, 1)
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop, clock=clock)
    dispatcher.submit(job("stale", ttl=60))
    clock.now += 61
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(0.05)
    assert rec.sent == [] and rec.dropped == [("stale", "expired")]
    dispatcher.submit(job("fresh", target="2", ttl=120))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rec.sent == ["fresh"], "the slot of the expired command must be released"
    assert bucket.quota.used == 1, "the expired command's token is given back"


async def test_quota_exhausted_fails_the_command_and_frees_the_slot() -> None:
    """With the daily quota spent, the command ends `failed`/`quota_exhausted` and later commands are still handled."""
    bucket = TokenBucket(0, 1, daily_quota=1)
    bucket.try_take()
    dropped: list[tuple[str, str, str]] = []
    dispatcher = Dispatcher(RateLimiter(bucket), Recorder().send,
                            lambda j, s, e: dropped.append((j.request_id, s, e.code if e else "")), max_in_flight=1)  # fmt: skip
    task = asyncio.create_task(dispatcher.run())
    dispatcher.submit(job("a", target="1"))
    dispatcher.submit(job("b", target="2"))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert dropped == [("a", "failed", "quota_exhausted"), ("b", "failed", "quota_exhausted")]
    assert dispatcher.queued == 0


async def test_a_crashing_send_frees_its_target_and_slot() -> None:
    """If `send` raises, the target is no longer in flight and a newer command for it is sent."""
    sent: list[str] = []

    async def send(jobs: Sequence[Job]) -> None:
        sent.append(jobs[0].request_id)
        if jobs[0].request_id == "boom":
            raise RuntimeError("bug")

    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), send, Recorder().drop, max_in_flight=1)
    task = asyncio.create_task(dispatcher.run())
    dispatcher.submit(job("boom"))
    await asyncio.sleep(0.02)
    dispatcher.submit(job("next"))
    await asyncio.sleep(0.05)
    assert sent == ["boom", "next"] and dispatcher.in_flight == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_command_queued_during_a_call_is_sent_after_it() -> None:
    """A newer command that arrived while its target's call was in flight is sent when that call returns."""
    hold = asyncio.Event()
    rec = Recorder(hold)
    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), rec.send, rec.drop)
    task = asyncio.create_task(dispatcher.run())
    dispatcher.submit(job("first"))
    await asyncio.sleep(0.02)
    assert dispatcher.in_flight == 1
    dispatcher.submit(job("second"))
    dispatcher.submit(job("third"))
    assert dispatcher.queued == 1
    hold.set()
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rec.sent == ["first", "third"] and rec.dropped == [("second", "superseded")]


async def test_drain_waits_for_calls_in_flight_up_to_its_limit() -> None:
    """drain() returns when calls in flight finish, or after its timeout if they do not."""
    hold = asyncio.Event()
    rec = Recorder(hold)
    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), rec.send, rec.drop)
    task = asyncio.create_task(dispatcher.run())
    dispatcher.submit(job("slow"))
    await asyncio.sleep(0.02)
    started = time.monotonic()
    await dispatcher.drain(0.1)
    assert 0.08 <= time.monotonic() - started < 1 and rec.active == 1
    hold.set()
    await dispatcher.drain(1)
    assert rec.active == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_close_cancels_timers_and_calls_in_flight() -> None:
    """After close(), queued commands neither expire nor send, and calls in flight are cancelled."""
    hold = asyncio.Event()
    rec = Recorder(hold)
    bucket = TokenBucket(0.1, 1)
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop)
    task = asyncio.create_task(dispatcher.run())
    dispatcher.submit(job("in-flight", target="1"))
    await asyncio.sleep(0.02)
    dispatcher.submit(job("queued", target="2", ttl=0.05))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    dispatcher.close()
    await asyncio.sleep(0.1)
    assert rec.dropped == [] and rec.sent == ["in-flight"]
    assert all(t.cancelled() for t in dispatcher._tasks) or not dispatcher._tasks


async def test_oldest_age_is_the_longest_wait() -> None:
    """oldest_age() is how long the longest-waiting queued command has waited, None when none waits."""
    bucket = TokenBucket(0.1, 1)
    bucket.try_take()
    clock = Clock()
    dispatcher = Dispatcher(RateLimiter(bucket), Recorder().send, Recorder().drop, clock=clock)
    assert dispatcher.oldest_age() is None
    first, second = job("a", target="1"), job("b", target="2")
    first.received_at, second.received_at = clock.now - 10, clock.now - 50
    dispatcher.submit(first)
    dispatcher.submit(second)
    assert dispatcher.oldest_age() == 50.0
    dispatcher.close()


async def test_a_safety_command_may_use_the_quota_reserve() -> None:
    """In the quota's reserve a manual stop is still sent; a force-charge fails quota_exhausted, saying why."""
    from semookii_bridge.budget.quota import DailyQuota

    bucket = TokenBucket(0, 1, quota=DailyQuota(3, reserve=2))
    bucket.try_take()
    rec = Recorder()
    errors: list[str] = []
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send,
                            lambda j, s, e: errors.append(f"{j.request_id} {s} {e.code if e else ''} {e.message if e else ''}"))  # fmt: skip
    task = asyncio.create_task(dispatcher.run())
    forced = job("charge", target="1")
    forced.command = Manual(action="force_charge")
    dispatcher.submit(forced)
    dispatcher.submit(job("stop", target="2"))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rec.sent == ["stop"] and len(errors) == 1
    assert errors[0].startswith("charge failed quota_exhausted daily quota of 3 API calls used up")


# ---- merging -----------------------------------------------------------------------------------------


def inverter_job(rid: str, sn: str, power: int = 100, ttl: float = 60.0, sns: list[str] | None = None) -> Job:
    """A power setpoint for one inverter, or for the batch `sns`."""
    command = PowerControl(active_power=power, duration=60, timeout=1, sns=sns)
    target = Target("batch", None) if sns else Target("inverter", sn)
    return Job(request_id=rid, target=target, command=command, sns=tuple(sns) if sns else None,
               received_at=time.time(), deadline=time.time() + ttl)  # fmt: skip


class Calls(Recorder):
    """Records each call as the list of its request_ids."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        super().__init__(hold)
        self.calls: list[list[str]] = []

    async def send(self, jobs: Sequence[Job]) -> None:
        self.calls.append([j.request_id for j in jobs])
        await super().send(jobs)


def merging(rec: Calls, *, known: set[str] | None = None, max_sns: int = 100) -> Dispatcher:
    """A dispatcher whose one token is spent: what is submitted now waits and can merge."""
    bucket = TokenBucket(20, 1)
    bucket.try_take()
    policy = MergePolicy(lambda sn: known is None or sn in known, max_sns)
    return Dispatcher(RateLimiter(bucket), rec.send, rec.drop, merge=policy)


async def test_queued_setpoints_with_equal_parameters_share_one_call() -> None:
    """Identical setpoints for three inverters, queued behind the limit, go out in one call, oldest first."""
    rec = Calls()
    dispatcher = merging(rec)
    for n in range(3):
        dispatcher.submit(inverter_job(f"r{n}", f"SN{n}"))
    await run_until(dispatcher, lambda: rec.sent)
    assert rec.calls == [["r0", "r1", "r2"]]


async def test_different_parameters_never_merge() -> None:
    """A setpoint with another power value gets its own call."""
    rec = Calls()
    dispatcher = merging(rec)
    dispatcher.submit(inverter_job("a", "SN1"))
    dispatcher.submit(inverter_job("b", "SN2", power=200))
    dispatcher.submit(inverter_job("c", "SN3"))
    await run_until(dispatcher, lambda: len(rec.sent) == 3)
    assert rec.calls == [["a", "c"], ["b"]]


async def test_group_commands_never_merge() -> None:
    """Group commands are sent one call each (the API resolves a group's members itself)."""
    rec = Calls()
    dispatcher = merging(rec)
    dispatcher.submit(job("g1", "1"))
    dispatcher.submit(job("g2", "2"))
    await run_until(dispatcher, lambda: len(rec.sent) == 2)
    assert rec.calls == [["g1"], ["g2"]]


async def test_unknown_inverters_are_sent_alone() -> None:
    """An inverter the inventory does not list neither leads nor joins a merge."""
    rec = Calls()
    dispatcher = merging(rec, known={"SN1", "SN3"})
    dispatcher.submit(inverter_job("unknown-lead", "SN2"))
    dispatcher.submit(inverter_job("a", "SN1"))
    dispatcher.submit(inverter_job("unknown", "SN4"))
    dispatcher.submit(inverter_job("b", "SN3"))
    await run_until(dispatcher, lambda: len(rec.sent) == 4)
    assert rec.calls == [["unknown-lead"], ["a", "b"], ["unknown"]]


async def test_a_merge_never_names_an_inverter_twice_and_respects_the_size_limit() -> None:
    """A batch command overlapping the lead's inverters stays queued, and no call exceeds batch_max_sns."""
    rec = Calls()
    dispatcher = merging(rec, max_sns=3)
    dispatcher.submit(inverter_job("lead", "SN1"))
    dispatcher.submit(inverter_job("overlap", "", sns=["SN1", "SN2"]))
    dispatcher.submit(inverter_job("pair", "", sns=["SN3", "SN4"]))
    dispatcher.submit(inverter_job("too-many", "SN5"))
    await run_until(dispatcher, lambda: len(rec.sent) == 4)
    assert rec.calls == [["lead", "pair"], ["overlap", "too-many"]]


async def test_a_target_on_the_wire_is_not_merged_into_another_call() -> None:
    """A queued setpoint whose inverter has a call in flight waits for it, even when a merge could take it."""
    hold = asyncio.Event()
    rec = Calls(hold)
    dispatcher = Dispatcher(RateLimiter(TokenBucket(0, 1)), rec.send, rec.drop,
                            merge=MergePolicy(lambda sn: True, 100))  # fmt: skip
    task = asyncio.create_task(dispatcher.run())
    dispatcher.submit(inverter_job("first", "SN1"))
    await asyncio.sleep(0.05)
    dispatcher.submit(inverter_job("again", "SN1"))
    dispatcher.submit(inverter_job("other", "SN2"))
    await asyncio.sleep(0.05)
    hold.set()
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rec.calls == [["first"], ["other"], ["again"]]


async def test_an_expired_setpoint_does_not_join_a_merge() -> None:
    """A queued setpoint whose deadline has passed (by the clock, before its timer fired) is not taken into a
    call; it is reported expired instead."""
    rec = Calls()
    clock = Clock()
    bucket = TokenBucket(20, 1)
    bucket.try_take()
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop, clock=clock,
                            merge=MergePolicy(lambda sn: True, 100))  # fmt: skip
    dispatcher.submit(inverter_job("lead", "SN1", ttl=60))
    dispatcher.submit(inverter_job("stale", "SN2", ttl=30))
    clock.now += 40
    await run_until(dispatcher, lambda: rec.sent and rec.dropped)
    assert rec.calls == [["lead"]] and rec.dropped == [("stale", "expired")]


async def test_a_superseded_setpoint_leaves_the_merge_index() -> None:
    """A newer setpoint with other parameters replaces a queued one: the old parameters merge nothing for it."""
    rec = Calls()
    dispatcher = merging(rec)
    dispatcher.submit(inverter_job("old", "SN1"))
    dispatcher.submit(inverter_job("new", "SN1", power=300))
    dispatcher.submit(inverter_job("peer", "SN2"))
    await run_until(dispatcher, lambda: len(rec.sent) == 2)
    assert sorted(rec.calls) == [["new"], ["peer"]] and rec.dropped == [("old", "superseded")]
    assert dispatcher._alike == {}


async def test_mass_expiry_is_reported_in_slices_that_yield_to_the_loop() -> None:
    """2,000 commands expiring together are reported EXPIRY_SLICE per loop turn, not in one long turn."""
    from semookii_bridge.control.dispatcher import EXPIRY_SLICE

    bucket = TokenBucket(0.001, 1)
    bucket.try_take()
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop)
    for n in range(2000):
        dispatcher.submit(job(str(n), target=str(n), ttl=0.05))
    turns: list[int] = []

    async def count_turns() -> None:
        while len(rec.dropped) < 2000:
            turns.append(len(rec.dropped))
            await asyncio.sleep(0)

    await asyncio.wait_for(count_turns(), 5)
    steps = [b - a for a, b in itertools.pairwise(turns) if b > a]
    assert max(steps) <= EXPIRY_SLICE and len(steps) >= 2000 // EXPIRY_SLICE - 1
    assert {status for _, status in rec.dropped} == {"expired"} and dispatcher.queued == 0
    dispatcher.close()


async def test_a_safety_command_goes_before_queued_setpoints() -> None:
    """A manual stop queued behind setpoints for other targets is sent first (arrival order otherwise)."""
    bucket = TokenBucket(50, 1)
    bucket.try_take()
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(bucket), rec.send, rec.drop)
    for n in range(3):
        setpoint = job(f"p{n}", target=str(n))
        setpoint.command = Manual(action="force_charge")
        dispatcher.submit(setpoint)
    dispatcher.submit(job("stop", target="9"))
    await run_until(dispatcher, lambda: len(rec.sent) == 4)
    assert rec.sent == ["stop", "p0", "p1", "p2"]


async def test_targets_held_after_a_takeover_wait_and_others_do_not() -> None:
    """After a takeover, a group the old leader had a call in flight for is held until the wire bound has
    passed (in the dispatcher's clock); another group goes at once; inverter commands wait behind a held group
    (membership unknown)."""
    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(TokenBucket(1000, 100)), rec.send, rec.drop, clock=time.monotonic)
    dispatcher.holdback.hold(job("old", "held"), time.monotonic() + 0.4)
    inverter = Job(request_id="inv", target=Target("inverter", "SN1"), command=Manual(action="stop"), sns=None,
                   received_at=time.time(), deadline=time.time() + 60)  # fmt: skip
    for each in (job("new", "held"), job("free", "other"), inverter):
        dispatcher.submit(each)
    started = time.monotonic()
    await run_until(dispatcher, lambda: "free" in rec.sent, 1.0)
    assert rec.sent == ["free"] and time.monotonic() - started < 0.3
    await run_until(dispatcher, lambda: len(rec.sent) == 3, 2.0)
    assert sorted(rec.sent[1:]) == ["inv", "new"] and time.monotonic() - started >= 0.4


async def test_while_the_breaker_is_open_only_safety_commands_go() -> None:
    """After a control call timed out (breaker open) a setpoint waits and a stop goes; once the API answers
    the setpoint goes too."""
    from semookii_bridge.api.endpoints import GROUP_CONTROL, GROUP_FIND_ALL

    rec = Recorder()
    dispatcher = Dispatcher(RateLimiter(TokenBucket(1000, 100)), rec.send, rec.drop)
    dispatcher.breaker.observe(GROUP_CONTROL, "timeout")
    setpoint = Job(request_id="set", target=Target("group", "1"), command=PowerControl(active_power=5, duration=60, timeout=10),
                   sns=None, received_at=time.time(), deadline=time.time() + 60)  # fmt: skip
    dispatcher.submit(setpoint)
    dispatcher.submit(job("stop", "2"))
    await run_until(dispatcher, lambda: False, 0.3)
    assert rec.sent == ["stop"]
    dispatcher.breaker.observe(GROUP_FIND_ALL, "ok")
    await run_until(dispatcher, lambda: "set" in rec.sent, 1.0)
    assert rec.sent == ["stop", "set"]
