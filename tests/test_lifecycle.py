"""A command's life in isolation: what is on disk before the control call, each state, and the polling rules."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from semookii_bridge.api import ApiRejected
from semookii_bridge.api.errors import HttpStatusError
from semookii_bridge.control.commands import Manual, PowerControl, to_params
from semookii_bridge.control.jobs import Job
from semookii_bridge.errors import ErrorInfo
from semookii_bridge.interface.topics import Target

from .support.doubles import COMMAND_ID, World


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    w = World(tmp_path)
    yield w
    await w.life.close()
    w.journal.close()


# ---- sending ---------------------------------------------------------------------------------------


async def test_sending_is_on_disk_before_the_control_call(world: World) -> None:
    """When the control call starts, the journal file already says `sending` (a crash then reports ambiguous)."""
    job = world.job()
    await asyncio.sleep(0)
    await world.life.send(job)
    assert world.api.status_on_disk == ["sending"]


@pytest.mark.parametrize(
    ("target", "call"),
    [(Target("group", "42"), ("group", "42")), (Target("inverter", "H1"), ("single", "H1")),
     (Target("batch", None), ("batch", ["A", "B"]))],
)  # fmt: skip
async def test_each_target_kind_uses_its_endpoint(world: World, target: Target, call: tuple[Any, ...]) -> None:
    """Group, inverter and batch commands go to groupControl, singleControl and batchTempControl, prepaid."""
    job = world.job(target)
    await world.life.send(job)
    assert world.api.calls == [(*call, to_params(job.command), True)]


async def test_accepted_is_journaled_with_its_tracking_window(world: World) -> None:
    """After the call, the journal holds `accepted`, the command id and the end of the tracking window."""
    await world.life.send(world.job())
    await asyncio.sleep(0)
    row = world.row()
    assert (row.status, row.command_id, row.track_until) == ("accepted", COMMAND_ID, world.clock.now + 100.0)
    assert world.publisher.statuses() == ["accepted"] and world.life.tracking == 1


async def test_an_api_refusal_ends_failed_with_the_apis_words(world: World) -> None:
    """`success: false` ends the command `failed` with the API's code and message, journaled and not tracked."""
    world.api.control = [ApiRejected("device offline", endpoint="group_control")]
    await world.life.send(world.job())
    await asyncio.sleep(0)
    error = {"code": "api_error", "message": "device offline"}
    assert world.publisher.last()["status"] == "failed" and world.publisher.last()["error"] == error
    assert world.row().status == "failed" and json.loads(world.row().error or b"") == error
    assert world.life.tracking == 0


async def test_an_unexpected_failure_during_the_call_is_ambiguous(world: World) -> None:
    """A bug or unknown exception while sending may have reached the API: `failed`/`ambiguous`, never retried."""
    world.api.control = [RuntimeError("boom")]
    await world.life.send(world.job())
    await asyncio.sleep(0)
    error = world.publisher.last()["error"]
    assert world.publisher.last()["status"] == "failed" and error["code"] == "ambiguous"
    assert "RuntimeError" in error["message"] and "may have reached the API" in error["message"]
    assert len(world.api.calls) == 1 and world.row().status == "failed"


# ---- publishing ------------------------------------------------------------------------------------


async def test_states_are_retained_on_the_target_topic_and_answered_on_the_response_topic(world: World) -> None:
    """Each state goes to the retained state topic and, without retain, to the MQTT 5 response topic."""
    job = world.job(response_topic="client/1/reply", correlation=b"c-9")
    world.life.publish_job(job, "queued")
    await asyncio.sleep(0)
    state, reply = world.publisher.messages
    assert (state.topic, state.retain, state.correlation) == ("vpp/group/42/state", True, None)
    assert (reply.topic, reply.retain, reply.correlation) == ("client/1/reply", False, b"c-9")
    assert state.payload == reply.payload and state.payload["status"] == "queued"
    assert state.payload["request_id"] == "r-1" and state.payload["target"] == {"kind": "group", "id": "42"}
    assert state.payload["command"] == {"type": "manual", "action": "stop"}
    assert world.observed == [("group", "queued")]


async def test_a_state_waits_for_the_commit_that_records_it(world: World) -> None:
    """Nothing is announced before the journal's transaction that holds it is committed."""
    job = world.job()
    world.life.publish_job(job, "queued")
    assert world.publisher.messages == []
    await asyncio.sleep(0)
    assert world.publisher.statuses() == ["queued"]


async def test_finish_journals_results_and_marks_the_state_announced(world: World) -> None:
    """A terminal state is journaled with its results and error, and marked announced once the broker has it."""
    job = world.job()
    error = ErrorInfo(code="x", message="y")
    world.life.finish(job, "unknown", error=error, results={"D": "1"})
    await asyncio.sleep(0)
    row = world.row()
    assert (row.status, row.announced) == ("unknown", 1)
    assert json.loads(row.results or b"") == {"D": "1"} and json.loads(row.error or b"") == {
        "code": "x",
        "message": "y",
    }
    assert world.publisher.last()["results"] == {"D": "1"} and world.publisher.last()["error"] == {"code": "x",
                                                                                                   "message": "y"}  # fmt: skip


async def test_finish_without_results_or_error_journals_neither(world: World) -> None:
    """A plain terminal state leaves the results and error columns empty."""
    world.life.finish(world.job(), "superseded")
    await asyncio.sleep(0)
    assert (world.row().results, world.row().error) == (None, None)
    assert world.publisher.last()["results"] is None and world.publisher.last()["error"] is None


# ---- polling ---------------------------------------------------------------------------------------


async def accepted(world: World) -> None:
    await world.life.send(world.job())
    await asyncio.sleep(0)


async def test_a_poll_finds_the_task_then_the_results(world: World) -> None:
    """One poll step asks for the task id, journals `dispatched`, then asks for results and ends `completed`."""
    await accepted(world)
    assert await world.step(1.0) is None
    await asyncio.sleep(0)
    assert world.api.calls[1:] == [("query", COMMAND_ID), ("result", "7654321")]
    assert world.publisher.statuses() == ["accepted", "dispatched", "completed"]
    assert world.row().status == "completed" and world.row().task_id == "7654321"
    assert world.publisher.last()["results"] == {"DONGLE1": "success"}


async def test_ids_are_json_strings_in_every_state(world: World) -> None:
    """`command_id` and `task_id` are JSON strings from the state that first carries them (`accepted`) on."""
    await accepted(world)
    await world.step(1.0)
    await asyncio.sleep(0)
    by_status = {m.payload["status"]: m.payload for m in world.publisher.messages}
    assert all(by_status[s]["command_id"] == COMMAND_ID for s in ("accepted", "dispatched", "completed"))
    assert by_status["accepted"]["task_id"] is None
    assert by_status["dispatched"]["task_id"] == "7654321" and by_status["completed"]["task_id"] == "7654321"


async def test_no_task_yet_backs_off_doubling_up_to_poll_max(world: World) -> None:
    """While there is no task id, the next poll comes after twice the last wait, capped at poll_max."""
    world.api.tasks = [None]
    await accepted(world)
    assert await world.step(1.0) == (2.0, 2.0)
    assert await world.step(2.0) == (4.0, 4.0)
    assert await world.step(4.0) == (8.0, 8.0)
    assert await world.step(8.0) == (8.0, 8.0)
    assert world.publisher.statuses() == ["accepted"] and world.row().status == "accepted"


async def test_dispatched_without_results_polls_results_only(world: World) -> None:
    """Once the task id is known, later polls ask only for results."""
    world.api.results = [None, {"D": "ok"}]
    await accepted(world)
    assert await world.step(1.0) == (2.0, 2.0)
    assert world.row().status == "dispatched"
    assert await world.step(2.0) is None
    assert [c[0] for c in world.api.calls] == ["group", "query", "result", "result"]


async def test_the_last_wait_ends_at_the_tracking_window(world: World) -> None:
    """The next poll is never scheduled past track_until."""
    world.api.tasks = [None]
    await accepted(world)
    world.clock.now += 97.0
    assert await world.step(4.0) == (3.0, 8.0)


async def test_no_results_within_the_window_ends_unknown(world: World) -> None:
    """A poll at or after track_until that finds nothing ends `unknown`/`no_results`, and tracking stops."""
    world.api.tasks = [None]
    await accepted(world)
    world.clock.now += 100.0
    assert await world.step(1.0) is None
    await asyncio.sleep(0)
    error = world.publisher.last()["error"]
    assert world.publisher.last()["status"] == "unknown" and error == {"code": "no_results",
                                                                       "message": "no results within 100 s"}  # fmt: skip
    assert world.row().status == "unknown"


async def test_poll_errors_are_retried_and_the_last_one_reported(world: World) -> None:
    """A failing poll is retried with backoff; if the window closes, `unknown` names the last poll error."""
    world.api.tasks = [HttpStatusError("HTTP 502", endpoint="query_command")]
    await accepted(world)
    assert await world.step(1.0) == (2.0, 2.0)
    world.clock.now += 100.0
    assert await world.step(2.0) is None
    await asyncio.sleep(0)
    message = world.publisher.last()["error"]["message"]
    assert message == "no results within 100 s; last poll error: http_error: HTTP 502"


async def test_a_poll_error_is_forgotten_once_results_come(world: World) -> None:
    """An earlier poll error does not outlive the command: after `completed` nothing of it is kept."""
    world.api.tasks = [HttpStatusError("HTTP 502", endpoint="query_command"), "7"]
    await accepted(world)
    await world.step(1.0)
    assert world.life.polls.errors
    assert await world.step(2.0) is None
    assert world.life.polls.errors == {}


async def test_a_command_no_longer_tracked_is_not_polled(world: World) -> None:
    """A poll step for a command that ended meanwhile (e.g. by restart recovery) calls nothing and forgets it."""
    world.api.tasks = [HttpStatusError("HTTP 502", endpoint="query_command")]
    await accepted(world)
    await world.step(1.0)
    world.journal.update("r-1", "failed")
    assert await world.step(2.0) is None
    assert [c[0] for c in world.api.calls] == ["group", "query"] and world.life.polls.errors == {}


async def test_first_poll_comes_after_poll_initial(world: World) -> None:
    """A tracked command is first polled after poll_initial, or at the end of a shorter remaining window."""
    job = world.job(command_id=COMMAND_ID, track_until=world.clock.now + 0.5)
    world.life.track([job])
    ((due, call, backoff),) = world.life.polls.schedule._heap
    assert (due, call, backoff) == (world.clock.now + 0.5, COMMAND_ID, 1.0)


async def test_tracking_runs_polls_until_completed(tmp_path: Path) -> None:
    """With the schedule running on the real clock, a tracked command reaches `completed` by itself."""
    w = World(tmp_path, poll_initial=0.01, poll_max=0.02)
    w.life.clock = w.life.polls.clock = time.time
    w.life.polls.schedule._clock = time.time
    w.api.tasks = [None, "9"]
    runner = asyncio.create_task(w.life.run_tracking())
    await w.life.send(w.job(command=PowerControl(active_power=1, duration=1, timeout=1)))
    for _ in range(300):
        if "completed" in w.publisher.statuses():
            break
        await asyncio.sleep(0.01)
    runner.cancel()
    await w.life.close()
    w.journal.close()
    assert w.publisher.statuses() == ["accepted", "dispatched", "completed"]


# ---- spending the budget on what still matters ----------------------------------------------------


async def test_a_newer_command_sent_to_the_target_replaces_the_tracked_one(world: World) -> None:
    """Once a newer command for the same target is accepted, the older one ends `superseded`/`replaced`,
    keeps its command_id, and is never polled again."""
    world.api.control = ["111", "222"]
    await world.life.send(world.job(rid="old"))
    await world.life.send(world.job(rid="new"))
    await asyncio.sleep(0)
    old = [m.payload for m in world.publisher.messages if m.payload["request_id"] == "old"]
    assert [s["status"] for s in old] == ["accepted", "superseded"]
    assert old[-1]["command_id"] == "111" and old[-1]["error"]["code"] == "replaced"
    assert "'new'" in old[-1]["error"]["message"] and world.row("old").status == "superseded"
    assert await world.step(1.0, "old") is None
    assert await world.step(1.0, "new") is None
    assert [c[:2] for c in world.api.calls if c[0] == "query"] == [("query", "222")]


async def test_commands_for_other_targets_are_not_replaced(world: World) -> None:
    """Replacement is per target: a command for another group keeps being tracked."""
    await world.life.send(world.job(rid="a"))
    await world.life.send(world.job(Target("group", "43"), rid="b"))
    await asyncio.sleep(0)
    assert "superseded" not in world.publisher.statuses() and world.life.tracking == 2


async def test_track_accepted_ends_completed_after_the_control_call(world: World) -> None:
    """`"track": "accepted"` ends the command `completed` (no results, no error) after one call, unpolled."""
    await world.life.send(world.job(command=Manual(action="stop", track="accepted")))
    await asyncio.sleep(0)
    assert world.publisher.statuses() == ["accepted", "completed"]
    assert world.publisher.last()["results"] is None and world.publisher.last()["error"] is None
    assert world.life.tracking == 0 and world.row().status == "completed" and len(world.api.calls) == 1


async def test_track_accepted_can_be_the_default(tmp_path: Path) -> None:
    """commands.track = "accepted" applies to commands that do not say; `"track": "results"` overrides it."""
    w = World(tmp_path, track="accepted")
    await w.life.send(w.job(rid="quick"))
    await w.life.send(w.job(Target("group", "9"), command=Manual(action="stop", track="results"), rid="full"))
    await asyncio.sleep(0)
    assert w.row("quick").status == "completed" and w.row("full").status == "accepted"
    await w.life.close()
    w.journal.close()


async def test_a_closed_window_ends_unknown_without_a_call(world: World) -> None:
    """A poll due after the window closed (the loop was busy, or the bridge was down) calls nothing."""
    await accepted(world)
    world.clock.now += 100.0
    assert await world.step(1.0) is None
    await asyncio.sleep(0)
    assert world.publisher.last()["status"] == "unknown" and [c[0] for c in world.api.calls] == ["group"]


class Tokens:
    """A rate limiter stand-in: grants after `delay` seconds, counts grants and refunds."""

    def __init__(self, delay: float = 0.0, error: Exception | None = None) -> None:
        self.delay, self.error = delay, error
        self.granted = self.refunded = 0
        self.urgent: list[bool] = []

    async def acquire(self, priority: int, *, urgent: bool = False) -> None:
        self.urgent.append(urgent)
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.granted += 1

    def refund(self) -> None:
        self.refunded += 1


async def test_polls_take_their_token_before_the_call(tmp_path: Path) -> None:
    """With a limiter, each call of a poll step is paid for before it leaves; the result query that follows
    a task id asks for an urgent token (served before other polls)."""
    tokens = Tokens()
    w = World(tmp_path, tokens=tokens)
    await w.life.send(w.job())
    assert await w.step(1.0) is None
    assert tokens.granted == 2 and w.api.prepaid == [True, True] and tokens.urgent == [False, True]
    await w.life.close()
    w.journal.close()


async def test_a_window_that_closes_while_waiting_for_a_token_ends_unknown(tmp_path: Path) -> None:
    """If the poll's token would come after the window, the command ends `unknown` and no call is made."""
    tokens = Tokens(delay=5.0)
    w = World(tmp_path, tokens=tokens, track_results_for=0.05)
    w.life.clock = w.life.polls.clock = time.time
    await w.life.send(w.job())
    await asyncio.wait_for(w.step(1.0), 1.0)
    await asyncio.sleep(0)
    assert w.publisher.last()["status"] == "unknown" and [c[0] for c in w.api.calls] == ["group"]
    assert tokens.granted == 0 and tokens.refunded == 0, "no token was taken, so none is given back"
    await w.life.close()
    w.journal.close()


async def test_a_command_replaced_while_its_poll_waited_gives_the_token_back(tmp_path: Path) -> None:
    """A poll whose command ended while it waited for its token makes no call and refunds the token."""
    tokens = Tokens(delay=0.05)
    w = World(tmp_path, tokens=tokens)
    w.api.control = ["111", "222"]
    await w.life.send(w.job(rid="old"))
    poll = asyncio.create_task(w.step(1.0, "old"))
    await asyncio.sleep(0.01)
    await w.life.send(w.job(rid="new"))
    assert await poll is None
    assert tokens.refunded == 1 and not [c for c in w.api.calls if c[0] == "query"]
    await w.life.close()
    w.journal.close()


async def test_a_spent_quota_skips_the_poll_and_keeps_tracking(tmp_path: Path) -> None:
    """With the daily quota spent, the poll is skipped (no call), noted, and tried again later."""
    from semookii_bridge.budget.ratelimit import QuotaExhausted

    tokens = Tokens(error=QuotaExhausted("daily quota of 5 API calls used up"))
    w = World(tmp_path, tokens=tokens)
    await w.life.send(w.job())
    assert await w.step(1.0) == (2.0, 2.0)
    assert [c[0] for c in w.api.calls] == ["group"] and "daily quota" in w.life.polls.errors[COMMAND_ID]
    await w.life.close()
    w.journal.close()


async def test_results_that_arrive_after_the_command_was_replaced_do_not_end_it_twice(world: World) -> None:
    """A poll on the wire when a newer command replaces its command does not publish a second final state."""
    world.api.control = ["111", "222"]
    await world.life.send(world.job(rid="old"))
    gate = asyncio.Event()
    answer = world.api.get_query_result

    async def slow_results(task_id: str, *, prepaid: bool = False) -> dict[str, str] | None:
        await gate.wait()
        return await answer(task_id, prepaid=prepaid)

    world.api.get_query_result = slow_results  # type: ignore[method-assign]
    poll = asyncio.create_task(world.step(1.0, "old"))
    await asyncio.sleep(0.01)
    await world.life.send(world.job(rid="new"))
    gate.set()
    assert await poll is None
    await asyncio.sleep(0)
    old = [m.payload["status"] for m in world.publisher.messages if m.payload["request_id"] == "old"]
    assert old == ["accepted", "dispatched", "superseded"] and world.row("old").status == "superseded"


async def test_a_window_that_closes_during_a_failing_poll_ends_unknown(world: World) -> None:
    """A poll that fails after the window closed ends the command `unknown` naming that failure."""
    await accepted(world)
    query = world.api.query_command

    async def late_failure(command_id: str, *, prepaid: bool = False) -> str | None:
        world.clock.now += 200.0
        await query(command_id, prepaid=prepaid)
        raise HttpStatusError("HTTP 500", endpoint="query_command")

    world.api.query_command = late_failure  # type: ignore[method-assign]
    assert await world.step(1.0) is None
    await asyncio.sleep(0)
    assert world.publisher.last()["status"] == "unknown"
    assert world.publisher.last()["error"]["message"].endswith("last poll error: http_error: HTTP 500")


# ---- merged calls ------------------------------------------------------------------------------------

DONGLES = {"SN1": "SW1", "SN2": "SW2", "SN3": "SW3"}


def merged_jobs(world: World, *sns: str) -> list[Job]:
    """One power setpoint per inverter, as the dispatcher hands a merge to `send_all`."""
    power = PowerControl(active_power=100, duration=60, timeout=1)
    return [world.job(Target("inverter", sn), command=power, rid=f"r-{sn}") for sn in sns]


async def test_a_merge_is_one_batch_call_and_each_command_is_accepted_with_its_id(world: World) -> None:
    """Merged commands go out as one batchTempControl with every serial; each is journaled `sending` before it,
    then `accepted` with the shared command_id on its own state topic."""
    jobs = merged_jobs(world, "SN1", "SN2")
    await world.life.send_all(jobs)
    await asyncio.sleep(0)
    ((kind, sns, _, prepaid),) = world.api.calls
    assert (kind, list(sns), prepaid) == ("batch", ["SN1", "SN2"], True)
    assert world.api.status_on_disk == ["sending", "sending"]
    for sn in ("SN1", "SN2"):
        assert world.row(f"r-{sn}").status == "accepted" and world.row(f"r-{sn}").command_id == COMMAND_ID
        assert world.publisher.statuses(f"vpp/inverter/{sn}/state") == ["accepted"]


async def test_a_refused_merge_fails_every_command_in_it(world: World) -> None:
    """When the API refuses the batch call, each merged command ends `failed` with the API's error."""
    world.api.control = [ApiRejected("Device offline", endpoint="batch_control")]
    await world.life.send_all(merged_jobs(world, "SN1", "SN2"))
    await asyncio.sleep(0)
    assert [world.row(f"r-{sn}").status for sn in ("SN1", "SN2")] == ["failed", "failed"]
    assert len(world.api.calls) == 1


async def test_a_merged_call_is_polled_once_and_each_command_gets_its_own_results(world: World) -> None:
    """One queryCommand and one getQueryResult for the whole call; each `completed` carries only its own
    dongle's entry of the per-device map."""
    world.life.polls.dongle_of = DONGLES.get
    world.api.results = [{"SW1": "success", "SW2": "0"}]
    await world.life.send_all(merged_jobs(world, "SN1", "SN2"))
    assert world.life.tracking == 1
    assert await world.step(1.0, "r-SN1") is None
    await asyncio.sleep(0)
    assert [c[0] for c in world.api.calls] == ["batch", "query", "result"]
    done = {m.payload["request_id"]: m.payload for m in world.publisher.messages if m.payload["status"] == "completed"}
    assert done["r-SN1"]["results"] == {"SW1": "success"} and done["r-SN2"]["results"] == {"SW2": "0"}
    assert done["r-SN1"]["task_id"] == done["r-SN2"]["task_id"] == "7654321"


async def test_results_stay_whole_when_the_inventory_cannot_name_the_devices(world: World) -> None:
    """Without a dongle for the command's inverter, its `completed` carries the map as the API gave it."""
    world.api.results = [{"SW9": "success", "SW8": "success"}]
    await world.life.send(world.job(Target("inverter", "SN9"), command=PowerControl(active_power=1, duration=1,
                                                                                    timeout=1)))  # fmt: skip
    assert await world.step(1.0) is None
    await asyncio.sleep(0)
    assert world.publisher.last()["results"] == {"SW9": "success", "SW8": "success"}


async def test_one_replaced_member_leaves_the_rest_of_the_call_tracked(world: World) -> None:
    """A newer command for one inverter of a merged call replaces only that command; the call is still polled
    for the others, which complete."""
    world.life.polls.dongle_of = DONGLES.get
    world.api.control = [COMMAND_ID, "999"]
    world.api.results = [{"SW1": "success", "SW2": "success"}]
    await world.life.send_all(merged_jobs(world, "SN1", "SN2"))
    newer = world.job(Target("inverter", "SN1"), command=PowerControl(active_power=5, duration=60, timeout=1),
                      rid="newer")  # fmt: skip
    await world.life.send(newer)
    await asyncio.sleep(0)
    assert world.row("r-SN1").status == "superseded"
    assert await world.step(1.0, "r-SN2") is None
    await asyncio.sleep(0)
    assert world.row("r-SN2").status == "completed" and world.row("r-SN1").status == "superseded"
    assert [c[1] for c in world.api.calls if c[0] == "query"] == [COMMAND_ID]


async def test_a_window_closing_while_the_result_query_waits_costs_no_call(tmp_path: Path) -> None:
    """When the task id came but the window closes before the result query gets its token, no result query
    is made and the next step ends the command `unknown`."""
    tokens = Tokens()
    w = World(tmp_path, tokens=tokens, track_results_for=0.3)
    await w.life.send(w.job())
    real_acquire = tokens.acquire

    async def slow_result(priority: int, *, urgent: bool = False) -> None:
        if urgent:
            w.clock.now += 10
            await asyncio.sleep(10)
        await real_acquire(priority, urgent=urgent)

    tokens.acquire = slow_result  # type: ignore[method-assign]
    assert await w.step(1.0) is None
    await asyncio.sleep(0)
    assert [c[0] for c in w.api.calls] == ["group", "query"]
    assert w.row().status == "unknown"
    await w.life.close()
    w.journal.close()


async def test_a_command_replaced_while_its_result_query_waits_costs_no_result_call(tmp_path: Path) -> None:
    """The task id came, then a newer command replaced this one while its result query waited for a token:
    the token is given back and no getQueryResult is made."""
    tokens = Tokens()
    w = World(tmp_path, tokens=tokens)
    w.api.control = ["111", "222"]
    await w.life.send(w.job(rid="old"))
    real_acquire = tokens.acquire

    async def replaced_meanwhile(priority: int, *, urgent: bool = False) -> None:
        if urgent:
            await w.life.send(w.job(rid="new"))
        await real_acquire(priority, urgent=urgent)

    tokens.acquire = replaced_meanwhile  # type: ignore[method-assign]
    assert await w.step(1.0, "old") is None
    await asyncio.sleep(0)
    assert [c[0] for c in w.api.calls] == ["group", "query", "group"]
    assert w.row("old").status == "superseded" and tokens.refunded == 1
    await w.life.close()
    w.journal.close()


# ---- per-device outcome ------------------------------------------------------------------------------


async def test_a_silent_device_keeps_the_command_polled_and_it_ends_partial(world: World) -> None:
    """While a device answers "null" the command is polled again; at the window's end it is `partial` with the
    device named in `no_answer`, the results as the API gave them, and `devices_no_answer`."""
    world.api.results = [{"SW1": "success", "SW2": "null"}]
    await world.life.send(world.job())
    delay = await world.step(1.0)
    assert delay is not None and world.row().status == "dispatched"
    world.clock.now += 101
    assert await world.step(2.0) is None
    await asyncio.sleep(0)
    last = world.publisher.last()
    assert last["status"] == "partial" and last["no_answer"] == ["SW2"]
    assert last["results"] == {"SW1": "success", "SW2": "null"} and last["error"]["code"] == "devices_no_answer"
    assert world.row().status == "partial"


async def test_a_device_that_answers_later_completes_the_command(world: World) -> None:
    """A device silent at the first result query and answering at the next: `completed`, nothing missing."""
    world.api.results = [{"SW1": "success", "SW2": "null"}, {"SW1": "success", "SW2": "1"}]
    await world.life.send(world.job())
    assert await world.step(1.0) is not None
    assert await world.step(2.0) is None
    await asyncio.sleep(0)
    last = world.publisher.last()
    assert last["status"] == "completed" and last["results"] == {"SW1": "success", "SW2": "1"}
    assert last["no_answer"] is None and last["error"] is None


async def test_no_device_answering_is_partial_with_every_device_named(world: World) -> None:
    """A results map in which no device answered ends `partial` naming all of them (not `completed`)."""
    world.api.results = [{"SW1": "null", "SW2": ""}]
    await world.life.send(world.job())
    assert await world.step(1.0) is not None
    world.clock.now += 101
    assert await world.step(2.0) is None
    await asyncio.sleep(0)
    assert world.publisher.last()["status"] == "partial" and world.publisher.last()["no_answer"] == ["SW1", "SW2"]


async def test_an_empty_results_map_for_a_group_without_devices_is_completed(world: World) -> None:
    """A group with no inverters answers `{}`: nobody is silent, so the command is `completed` at once."""
    world.api.results = [{}]
    await world.life.send(world.job())
    assert await world.step(1.0) is None
    await asyncio.sleep(0)
    assert world.publisher.last()["status"] == "completed" and world.publisher.last()["results"] == {}


async def test_a_merged_inverter_missing_from_the_results_has_not_answered(world: World) -> None:
    """In a merged call, an inverter whose dongle is absent from the results map is still waited for."""
    world.life.polls.dongle_of = DONGLES.get
    world.api.results = [{"SW1": "success"}]
    await world.life.send_all(merged_jobs(world, "SN1", "SN2"))
    assert await world.step(1.0, "r-SN1") is not None
    assert world.row("r-SN1").status == "completed" and world.row("r-SN2").status == "dispatched"
