"""Dispatch plans, the rules without a broker: validation refuses a plan whole naming the interval at fault, the
device-side period bridges adjacent intervals, and the runner issues each step at its start, never early, never
late, once (docs/plans.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from semookii_bridge.config import BridgeConfig
from semookii_bridge.control.commands import Command, EnergyControl, PowerControl
from semookii_bridge.control.plan_runner import PlanRunner
from semookii_bridge.control.plans import PlanRefused, held, parse_plan, steps_of, validate_plan
from semookii_bridge.errors import BridgeError, ErrorInfo
from semookii_bridge.interface.payloads import PlanState
from semookii_bridge.interface.topics import Target
from semookii_bridge.journal.sqlite import Journal

T0 = 1_800_000_000.0
GROUP = Target("group", "42")
POWER = {"type": "power_control", "active_power": -3000}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def payload(*windows: tuple[float, float, dict[str, Any]], plan_id: str = "p1") -> bytes:
    """A plan message with intervals from (start, end, command) in seconds after T0."""
    intervals = [{"start": iso(T0 + a), "end": iso(T0 + b), "command": c} for a, b, c in windows]
    return json.dumps({"plan_id": plan_id, "intervals": intervals}).encode()


def allow_all(_command: Command) -> None:
    """An admission that lets everything through."""


def validated(raw: bytes, *, now: float = T0 - 1, config: BridgeConfig | None = None, check: Any = allow_all) -> Any:
    return validate_plan(parse_plan(raw), config or BridgeConfig(), now, check)


def refusal(raw: bytes, **kwargs: Any) -> PlanRefused:
    with pytest.raises(PlanRefused) as caught:
        validated(raw, **kwargs)
    return caught.value


def test_a_valid_plan_keeps_its_intervals_in_epoch_seconds() -> None:
    """RFC 3339 with any offset becomes epoch seconds; the commands decode as ordinary commands."""
    raw = json.dumps({"plan_id": "da", "intervals": [
        {"start": "2027-01-15T09:00:00+01:00", "end": "2027-01-15T08:15:00.5Z", "command": POWER}]}).encode()
    plan = validate_plan(parse_plan(raw), BridgeConfig(), T0 - 3600, allow_all)
    assert plan.intervals[0].end - plan.intervals[0].start == pytest.approx(15 * 60 + 0.5)
    assert isinstance(plan.intervals[0].command, PowerControl)


@pytest.mark.parametrize(
    ("windows", "index", "fragment"),
    [
        (((0, 10, POWER), (5, 20, POWER)), 1, "starts before the previous interval ends"),
        (((10, 20, POWER), (0, 5, POWER)), 1, "starts before the previous interval ends"),
        (((0, 10, POWER), (10, 10, POWER)), 1, "end is not after its start"),
        (((0, 10, {"type": "exit_remote_control"}),), 0, "holds no window"),
        (((0, 10, {**POWER, "duration": 60}),), 0, "`duration` is set by the bridge"),
        (((0, 10, {**POWER, "request_id": "x"}),), 0, "`request_id` is set by the bridge"),
        (((0, 10, {**POWER, "ttl": 5}),), 0, "`ttl` is set by the bridge"),
        (((0, 10, POWER), (10, 20, {"type": "power_control"})), 1, "active_power"),
    ],
)
def test_a_faulty_interval_refuses_the_whole_plan_naming_it(windows: Any, index: int, fragment: str) -> None:
    """Overlap, disorder, an empty interval, a command that holds no window, a field the bridge sets, a bad
    command: refused whole, the message names the interval."""
    refused = refusal(payload(*windows))
    assert refused.index == index and refused.message.startswith(f"interval {index}: ") and fragment in refused.message


def test_an_interval_ending_in_the_past_is_refused() -> None:
    """No interval may end at or before now."""
    assert refusal(payload((0, 10, POWER), (10, 20, POWER)), now=T0 + 15).index == 0


def test_the_horizon_and_the_count_are_bounded() -> None:
    """plans.max_horizon and plans.max_intervals refuse a plan that reaches too far or holds too many."""
    config = msgspec.convert({"plans": {"max_horizon": 100, "max_intervals": 2}}, BridgeConfig)
    assert "plans.max_horizon" in refusal(payload((0, 10, POWER), (90, 200, POWER)), config=config).message
    three = payload((0, 1, POWER), (1, 2, POWER), (2, 3, POWER))
    assert "plans.max_intervals" in refusal(three, config=config).message


def test_admission_judges_each_command_as_it_will_be_sent() -> None:
    """The check sees the command with its device-side period: a window longer than commands.max_duration is
    refused as an ordinary command with that duration would be."""
    def ceiling(command: Command) -> None:
        if isinstance(command, PowerControl) and command.duration > 3600:
            raise BridgeError("not_allowed", "duration exceeds commands.max_duration")

    refused = refusal(payload((0, 600, POWER), (600, 4600, POWER)), check=ceiling)
    assert (refused.code, refused.index) == ("not_allowed", 1)


def test_malformed_json_and_shapes_are_refused_with_their_class() -> None:
    """Not JSON: invalid_json; a missing field or an unknown one: validation_error."""
    with pytest.raises(PlanRefused, match="not JSON") as caught:
        parse_plan(b"{")
    assert caught.value.code == "invalid_json"
    for bad in (b'{"intervals": []}', b'{"plan_id": "a/b", "intervals": []}', b'{"plan_id": "p", "intervals": [], "x": 1}'):
        with pytest.raises(PlanRefused) as caught:
            parse_plan(bad)
        assert caught.value.code == "validation_error"


def test_adjacent_intervals_are_bridged_and_the_last_is_held_no_longer_than_its_deadline() -> None:
    """Power control holds its interval plus the next interval's deadline when they touch (grace 60 s, next
    interval 30 s long: 30 s), its own deadline before a gap or at the end; energy control keeps remote control
    as long, capped at commands.max_timeout."""
    energy = {"type": "energy_control", "target_energy": 500, "charge_power": 1000}
    plan = validated(payload((0, 900, POWER), (900, 930, POWER), (1000, 1900, energy), (1900, 9900, energy)))
    steps, config = steps_of(plan), BridgeConfig()
    first, second = held(steps, 0, config), held(steps, 1, config)
    assert isinstance(first, PowerControl) and (first.duration, first.timeout) == (930, 0)
    assert isinstance(second, PowerControl) and second.duration == 30 + 30
    third, fourth = held(steps, 2, config), held(steps, 3, config)
    assert isinstance(third, EnergyControl) and third.timeout == 960
    assert isinstance(fourth, EnergyControl) and fourth.timeout == config.commands.max_timeout
    assert [held(steps, k, config).request_id for k in range(4)] == ["p1/0", "p1/1", "p1/2", "p1/3"]


class Recorder:
    """The bridge's side of the runner: issued commands with their deadlines and targets, announced plan states
    (and whether retained), and the interval outcomes the metrics are told."""

    def __init__(self) -> None:
        self.issued: list[tuple[str, float, float]] = []
        self.targets: list[Target] = []
        self.states: list[PlanState] = []
        self.retained: list[bool] = []
        self.outcomes: list[str] = []
        self.now = T0 - 5

    def issue(self, target: Target, command: Command, deadline: float) -> None:
        self.issued.append((command.request_id or "", self.now, deadline))
        self.targets.append(target)

    def announce(self, target: Target, state: PlanState, retain: bool) -> None:
        self.states.append(state)
        self.retained.append(retain)


def runner_on(journal: Journal, recorder: Recorder, config: BridgeConfig | None = None) -> PlanRunner:
    runner = PlanRunner(journal, config or BridgeConfig(), lambda: recorder.now, recorder.issue, recorder.announce)
    runner.on_interval = recorder.outcomes.append
    return runner


def test_each_step_is_issued_at_its_start_and_not_before(tmp_path: Path) -> None:
    """Nothing before the first start; each step once, at its start, due within min(grace, its length)."""
    recorder, journal = Recorder(), Journal(tmp_path / "j.db")
    runner = runner_on(journal, recorder)
    runner.start(GROUP, validated(payload((0, 30, POWER), (30, 40, POWER))))
    runner.step()
    assert recorder.issued == []
    for now in (T0 - 0.001, T0, T0 + 1, T0 + 29.9, T0 + 30, T0 + 35):
        recorder.now = now
        runner.step()
    assert recorder.issued == [("p1/0", T0, T0 + 30), ("p1/1", T0 + 30, T0 + 40)]
    assert recorder.states[-1].status == "active" and recorder.states[-1].sent == 2
    recorder.now = T0 + 40
    runner.step()
    assert recorder.states[-1].status == "finished" and journal.plans()[0].status == "finished"


def test_a_step_past_its_deadline_is_missed_never_sent(tmp_path: Path) -> None:
    """The runner wakes after the first step's deadline: it is counted missed and the second goes at its start."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    runner.start(GROUP, validated(payload((0, 100, POWER), (100, 200, POWER))))
    recorder.now = T0 + 61
    runner.step()
    recorder.now = T0 + 100
    runner.step()
    assert [rid for rid, _, _ in recorder.issued] == ["p1/1"]
    assert (recorder.states[-1].sent, recorder.states[-1].missed) == (1, 1)


def test_a_restart_goes_on_from_the_journal(tmp_path: Path) -> None:
    """A new runner on the same journal issues the next step, not the one already issued."""
    recorder, path = Recorder(), tmp_path / "j.db"
    journal = Journal(path)
    runner = runner_on(journal, recorder)
    runner.start(GROUP, validated(payload((0, 10, POWER), (10, 20, POWER))))
    recorder.now = T0 + 1
    runner.step()
    journal.commit()
    journal.close()
    again = runner_on(Journal(path), recorder)
    again.load()
    again.step()
    recorder.now = T0 + 10
    again.step()
    assert [rid for rid, _, _ in recorder.issued] == ["p1/0", "p1/1"]


def test_a_new_plan_replaces_the_old_from_its_first_interval(tmp_path: Path) -> None:
    """The old plan's steps before the new plan's first start still run; it says `replaced` at once, and
    cancelling says `cancelled`."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    runner.start(GROUP, validated(payload((0, 10, POWER), (10, 20, POWER), (20, 30, POWER), plan_id="old")))
    runner.start(GROUP, validated(payload((20, 30, POWER), (30, 40, POWER), plan_id="new")))
    assert [s.status for s in recorder.states] == ["active", "replaced", "active"]
    for now in (T0, T0 + 10, T0 + 20, T0 + 30):
        recorder.now = now
        runner.step()
    assert [rid for rid, _, _ in recorder.issued] == ["old/0", "old/1", "new/0", "new/1"]
    assert (recorder.states[-1].plan_id, recorder.states[-1].sent) == ("new", 2)  # the old plan's steps are not its own
    runner.start(GROUP, validate_plan(parse_plan(b'{"plan_id": "new", "intervals": []}'), BridgeConfig(), T0, allow_all))
    assert recorder.states[-1].status == "cancelled"


def test_a_safety_stop_suspends_the_plans_it_covers(tmp_path: Path) -> None:
    """Suspended plans issue nothing more; a plan the stop does not cover goes on."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    other = Target("group", "7")
    runner.start(GROUP, validated(payload((0, 10, POWER), (10, 20, POWER))))
    runner.start(other, validated(payload((0, 10, POWER), (10, 20, POWER), plan_id="p2")))
    runner.suspend(lambda target: target == GROUP, ErrorInfo(code="suspended", message="stop"))
    recorder.now = T0 + 10
    runner.step()
    assert [rid for rid, _, _ in recorder.issued] == ["p2/1"]  # p2/0's deadline passed at T0 + 10: missed
    suspended = [s for s in recorder.states if s.status == "suspended"]
    assert suspended and suspended[0].plan_id == "p1" and suspended[0].error is not None


def test_a_step_that_expired_in_the_queue_counts_as_missed(tmp_path: Path) -> None:
    """Issued, then dropped `expired` (no token by its deadline): one missed, none sent."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    runner.start(GROUP, validated(payload((0, 10, POWER), (10, 20, POWER))))
    recorder.now = T0
    runner.step()
    runner.dropped("p1/0", "superseded")
    assert (recorder.states[-1].sent, recorder.states[-1].missed) == (1, 0)
    runner.dropped("p1/0", "expired")
    assert (recorder.states[-1].sent, recorder.states[-1].missed) == (0, 1)


def test_boundary_calls_count_groups_and_merge_alike_inverter_setpoints() -> None:
    """Each group's step is a call; alike inverter setpoints at one instant share batch calls of batch_max."""
    from semookii_bridge.control.plan_budget import boundary_calls, lateness

    plan = validated(payload((0, 10, POWER), (10, 20, POWER)))
    other = validated(payload((0, 10, {**POWER, "active_power": -1})))
    held_plans = [(Target("group", str(g)), steps_of(plan)) for g in range(3)]
    held_plans += [(Target("inverter", f"S{n}"), steps_of(plan)) for n in range(5)]
    held_plans += [(Target("inverter", "X"), steps_of(other))]
    calls = boundary_calls(held_plans, batch_max=2)
    assert calls == {T0: 3 + 3 + 1, T0 + 10: 3 + 3}
    assert lateness(7, rate=2.0, burst=3) == 2.0 and lateness(3, rate=2.0, burst=3) == 0.0 and lateness(9, 0, 1) == 0


def test_a_plan_whose_boundary_cannot_be_served_in_time_is_accepted_with_a_warning(tmp_path: Path) -> None:
    """Forty groups' plans start together at 1 call/s (burst 5): the last call would leave 35 s late, past the
    10 s intervals' deadline: the plan that makes it so carries a warning naming the boundary and the lateness."""
    recorder = Recorder()
    config = msgspec.convert({"rate_limit": {"rate": 1.0, "burst": 5}, "commands": {"merge": False}}, BridgeConfig)
    runner = PlanRunner(Journal(tmp_path / "j.db"), config, lambda: recorder.now, recorder.issue, recorder.announce)
    for g in range(40):
        runner.start(Target("group", str(g)), validated(payload((0, 10, POWER), plan_id=f"g{g}"), config=config))
    first, last = recorder.states[0], recorder.states[-1]
    assert first.warning is None and last.warning is not None
    assert (last.warning.at, last.warning.calls, last.warning.expected_lateness) == (T0, 40, 35.0)
    assert runner.calls_within(3600) == 40


def test_planned_calls_count_the_steps_starting_within_the_window_only(tmp_path: Path) -> None:
    """The budget's planned calls: steps from now (inclusive) to now + window (exclusive), not those due or
    issued already, nor those past the window."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    runner.start(GROUP, validated(payload((0, 10, POWER), (10, 20, POWER), (20, 30, POWER), (30, 40, POWER))))
    recorder.now = T0
    assert runner.calls_within(20) == 2 and runner.calls_within(20.001) == 3
    runner.step()
    recorder.now = T0 + 5
    assert runner.calls_within(15) == 1 and runner.calls_within(100) == 3
    recorder.now = T0 + 10
    assert runner.calls_within(100) == 3  # due but not issued yet: still planned
    recorder.now = T0 + 10.5
    assert runner.calls_within(100) == 2


def test_a_stop_covers_its_target_a_batch_naming_an_inverter_and_a_group_listing_it(tmp_path: Path) -> None:
    """The desk suspends the stopped target's plan, an inverter's plan under a batch stop naming it or a group
    stop for a group it is listed in, and leaves other plans (a group's plan under an inverter's stop) alone."""
    from semookii_bridge.control.admission import Admission
    from semookii_bridge.control.commands import Manual
    from semookii_bridge.control.plan_desk import PlanDesk
    from semookii_bridge.interface.topics import Topics

    config = BridgeConfig()
    published: list[tuple[str, bytes]] = []

    class Publisher:
        def publish(self, topic: str, payload: bytes, **_: Any) -> None:
            published.append((topic, payload))

    recorder = Recorder()
    desk = PlanDesk(config, Admission(config, lambda: T0), Publisher(), Topics("vpp"), lambda sn: {"42"} if sn == "A" else set())
    desk.runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    targets = [GROUP, Target("group", "7"), Target("inverter", "A"), Target("inverter", "B"), Target("inverter", "C")]
    for n, target in enumerate(targets):
        desk.runner.start(target, validated(payload((0, 10, POWER), plan_id=f"p{n}")))

    def suspended() -> set[str]:
        return {s.plan_id for s in recorder.states if s.status == "suspended"}

    desk.stopped(Target("inverter", "C"), Manual(action="stop"))
    assert suspended() == {"p4"}
    desk.stopped(Target("batch"), Manual(action="stop", sns=["B"]))
    assert suspended() == {"p4", "p3"}
    desk.stopped(GROUP, Manual(action="stop"))
    assert suspended() == {"p4", "p3", "p0", "p2"}


def test_the_plan_state_names_the_interval_in_progress_and_the_next_start_to_the_millisecond(tmp_path: Path) -> None:
    """Before the first start: interval 0 and its start; during an interval: it and the next one's start; in the
    last: no next start; finished: neither. Every state is retained; the status page's rows say the same."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    runner.start(GROUP, validated(payload((1.25, 11.25, POWER), (11.25, 20, POWER))))
    seen = [(recorder.states[-1].interval, recorder.states[-1].next_start)]
    for now in (T0 + 1.25, T0 + 11.25, T0 + 20):
        recorder.now = now
        runner.step()
        seen.append((recorder.states[-1].interval, recorder.states[-1].next_start))
    assert seen == [(0, "2027-01-15T08:00:01.250Z"), (0, "2027-01-15T08:00:11.250Z"), (1, None), (None, None)]
    assert recorder.states[-1].status == "finished" and all(recorder.retained)
    assert recorder.outcomes == ["issued", "issued"] and recorder.targets == [GROUP, GROUP]


def test_the_status_pages_rows_list_the_active_plans_by_target(tmp_path: Path) -> None:
    """One row per active plan, sorted by target, with the plan state's fields."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    for target in (Target("inverter", "S1"), GROUP):
        runner.start(target, validated(payload((0, 10, POWER), plan_id=f"p-{target.id}")))
    rows = runner.rows()
    assert [(r["target"], r["plan_id"], r["interval"], r["status"]) for r in rows] == [
        ("group:42", "p-42", 0, "active"), ("inverter:S1", "p-S1", 0, "active")]


def test_statuses_count_each_targets_last_plan(tmp_path: Path) -> None:
    """The metrics' plans by status: each target counted once, in its last plan's status."""
    runner = runner_on(Journal(tmp_path / "j.db"), Recorder())
    for g in ("1", "2", "3"):
        runner.start(Target("group", g), validated(payload((0, 10, POWER), plan_id=f"g{g}")))
    runner.start(Target("group", "3"), validated(json.dumps({"plan_id": "stop", "intervals": []}).encode()))
    assert runner.statuses() == {"active": 2, "cancelled": 1}


def test_steps_past_their_deadlines_are_each_counted_missed(tmp_path: Path) -> None:
    """Woken late, the runner counts every step whose deadline passed as missed (two here), and issues the one
    still within its deadline."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    runner.start(GROUP, validated(payload((0, 1, POWER), (1, 2, POWER), (2, 30, POWER))))
    recorder.now = T0 + 2.5
    runner.step()
    assert (recorder.states[-1].missed, recorder.states[-1].sent) == (2, 1)
    assert recorder.outcomes == ["missed", "missed", "issued"] and [i[0] for i in recorder.issued] == ["p1/2"]


def test_a_plan_ends_at_its_last_intervals_end_and_says_nothing_before(tmp_path: Path) -> None:
    """After the last step is issued the plan stays active, silent, until its last interval ends."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    runner.start(GROUP, validated(payload((0, 10, POWER), (10, 20, POWER))))
    for now in (T0, T0 + 10):
        recorder.now = now
        runner.step()
    announced = len(recorder.states)
    recorder.now = T0 + 15
    runner.step()
    assert len(recorder.states) == announced
    recorder.now = T0 + 20
    runner.step()
    assert recorder.states[-1].status == "finished" and len(recorder.states) == announced + 1


def test_an_expired_step_counts_against_its_own_plan_and_the_plan_goes_on(tmp_path: Path) -> None:
    """With two plans held, a step of the second expiring counts missed in that plan only; its start is not
    kept; the plan issues its next step as usual."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    runner.start(Target("group", "1"), validated(payload((0, 10, POWER), (10, 20, POWER), plan_id="a")))
    runner.start(Target("group", "2"), validated(payload((0, 10, POWER), (10, 20, POWER), plan_id="b")))
    recorder.now = T0
    runner.step()
    runner.dropped("b/0", "expired")
    by_plan = {s.plan_id: (s.sent, s.missed) for s in recorder.states}
    assert by_plan == {"a": (1, 0), "b": (0, 1)}
    assert runner._starts == {"a/0": T0}  # internal, but the leak this guards against is too
    recorder.now = T0 + 10
    runner.step()
    assert [i[0] for i in recorder.issued] == ["a/0", "b/0", "a/1", "b/1"]
    assert recorder.outcomes == ["issued", "issued", "expired", "issued", "issued"]


@pytest.mark.parametrize(("merge", "calls"), [(True, 3), (False, 5)])
def test_the_budget_warning_counts_alike_inverter_setpoints_merged_only_when_merging(
    tmp_path: Path, merge: bool, calls: int
) -> None:
    """Five inverters' alike setpoints at one boundary: three batch calls of two with merging, five without."""
    recorder = Recorder()
    config = msgspec.convert({"rate_limit": {"rate": 1.0, "burst": 1},
                              "commands": {"merge": merge, "batch_max_sns": 2}}, BridgeConfig)  # fmt: skip
    runner = runner_on(Journal(tmp_path / "j.db"), recorder, config)
    for n in range(5):
        runner.start(Target("inverter", f"S{n}"), validated(payload((0, 1, POWER), plan_id=f"i{n}"), config=config))
    warning = recorder.states[-1].warning
    assert warning is not None and warning.calls == calls


def test_a_replaced_plans_last_state_names_no_interval_and_no_next_start(tmp_path: Path) -> None:
    """A plan ended before its start (replaced, then cancelled) says no interval and no next start: nothing of
    it is still to come."""
    recorder = Recorder()
    runner = runner_on(Journal(tmp_path / "j.db"), recorder)
    runner.start(GROUP, validated(payload((0, 10, POWER), (10, 20, POWER))))
    runner.start(GROUP, validated(payload((30, 40, POWER), plan_id="p2")))
    runner.start(GROUP, validated(json.dumps({"plan_id": "none", "intervals": []}).encode()))
    ended = [s for s in recorder.states if s.status in ("replaced", "cancelled")]
    assert [(s.plan_id, s.status, s.interval, s.next_start, s.warning) for s in ended] == [
        ("p1", "replaced", None, None, None), ("p2", "cancelled", None, None, None)]
