"""Dispatch plans as operators send them (docs/plans.md): intervals with a start, an end and a window command,
validated whole before anything is kept. The model is OpenADR 3's event: an interval period and a payload.

A plan's commands are ordinary commands; the bridge sets their device-side period (`duration`, `timeout`) so
that a device holds the interval and the next interval's deadline, never falls back between two adjacent
intervals, and is not held past the last `end` by more than that deadline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import msgspec

from ..config import BridgeConfig
from ..errors import BridgeError
from ..interface import wire
from .commands import Command, EnergyControl, PowerControl, SocControl, decode_command

PlanId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[\x21-\x2e\x30-\x7e]+$")]
"""Printable ASCII without `/`: each interval's request_id is `<plan_id>/<index>`."""
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
WINDOW_TYPES = (
    "power_control",
    "energy_control",
    "soc_control",
    "self_use",
    "feed_in_priority",
    "backup",
    "manual",
    "schedule",
    "system_switch",
)
"""The command types a plan's interval may carry (exit_remote_control ends control, it holds no window)."""
BRIDGE_SETS = ("duration", "timeout", "ttl", "expires_at", "request_id")
"""Fields of a command the bridge sets for each interval, refused inside a plan."""
_PLACEHOLDERS: dict[str, dict[str, int]] = {
    "power_control": {"duration": 0, "timeout": 0},
    "energy_control": {"timeout": 0},
    "soc_control": {"timeout": 0},
}
"""The bridge's own fields, 0 until `held` sets them, so that a window command decodes."""
Check = Callable[[Command], None]
"""Today's admission for one command of a plan's target: allow-lists and ceilings (raises BridgeError)."""


class PlanInterval(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One interval as sent: RFC 3339 `start` and `end` (any offset) and the command to hold between them."""

    start: Instant
    end: Instant
    command: dict[str, Any]


class PlanMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A plan as sent on `<prefix>/<group|inverter>/<id>/plan/set`; no intervals cancels the target's plan."""

    plan_id: PlanId
    intervals: Annotated[list[PlanInterval], msgspec.Meta(max_length=100_000)]


class Interval(msgspec.Struct, frozen=True):
    """A validated interval: epoch seconds and the command as operators wrote it (the bridge's fields unset)."""

    start: float
    end: float
    command: Command


class Plan(msgspec.Struct, frozen=True):
    """A validated plan; `intervals` sorted, not overlapping, none ending in the past."""

    plan_id: str
    intervals: tuple[Interval, ...]


class PlanRefused(BridgeError):
    """A plan that fails validation: refused whole, naming the interval (`index`) where one is at fault."""

    def __init__(self, code: str, message: str, index: int | None = None) -> None:
        super().__init__(code, message if index is None else f"interval {index}: {message}")
        self.index = index


def parse_plan(payload: bytes) -> PlanMessage:
    """The plan's shape, or `validation_error` naming the field."""
    try:
        plan: PlanMessage = wire.decode(payload, PlanMessage)
    except msgspec.ValidationError as exc:
        raise PlanRefused("validation_error", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise PlanRefused("invalid_json", f"the payload is not JSON: {exc}") from None
    return plan


def validate_plan(plan: PlanMessage, config: BridgeConfig, now: float, check: Check) -> Plan:
    """Every rule of a plan (sorted, no overlap, horizon, count, nothing ending in the past, each command a
    window command that passes `check` as it will be sent); the first fault refuses the whole plan."""
    cfg = config.plans
    if len(plan.intervals) > cfg.max_intervals:
        message = f"{len(plan.intervals)} intervals exceed plans.max_intervals {cfg.max_intervals}"
        raise PlanRefused("validation_error", message)
    validated = Plan(plan.plan_id, tuple(_interval(i, raw) for i, raw in enumerate(plan.intervals)))
    steps = steps_of(validated)
    for i, interval in enumerate(validated.intervals):
        if interval.end <= now:
            raise PlanRefused("validation_error", "it ends in the past", i)
        if i and interval.start < validated.intervals[i - 1].end:
            raise PlanRefused("validation_error", "it starts before the previous interval ends", i)
        if interval.end - now > cfg.max_horizon:
            raise PlanRefused("validation_error", f"it ends beyond plans.max_horizon ({cfg.max_horizon:g} s)", i)
        try:
            check(held(steps, i, config))
        except BridgeError as exc:
            raise PlanRefused(exc.code, exc.message, i) from None
    return validated


def _interval(index: int, raw: PlanInterval) -> Interval:
    """One interval's times and command, decoded as any command is (its bridge-set fields refused)."""
    start, end = raw.start.timestamp(), raw.end.timestamp()
    if end <= start:
        raise PlanRefused("validation_error", "its end is not after its start", index)
    kind = raw.command.get("type")
    if kind not in WINDOW_TYPES:
        message = f"command type {kind!r} holds no window; one of: {', '.join(WINDOW_TYPES)}"
        raise PlanRefused("validation_error", message, index)
    taken = [name for name in BRIDGE_SETS if name in raw.command]
    if taken:
        raise PlanRefused("validation_error", f"`{taken[0]}` is set by the bridge for each interval", index)
    try:
        command = decode_command(wire.encode({**raw.command, **_PLACEHOLDERS.get(str(kind), {})}))
    except BridgeError as exc:
        raise PlanRefused(exc.code, exc.message, index) from None
    return Interval(start, end, command)


class Step(msgspec.Struct, frozen=True):
    """One interval as the runner carries it out: its request_id (`<plan_id>/<index>`), its interval, and its index
    in the plan whose state counts it (None: a step of the plan this one replaced, still carried out before it)."""

    request_id: str
    interval: Interval
    index: int | None


def steps_of(plan: Plan, lead_in: tuple[Step, ...] = ()) -> tuple[Step, ...]:
    """What the runner carries out for `plan`: the replaced plan's steps that start before the plan's first
    interval, then the plan's intervals."""
    first = plan.intervals[0].start if plan.intervals else float("inf")
    kept = tuple(msgspec.structs.replace(step, index=None) for step in lead_in if step.interval.start < first)
    own = tuple(Step(f"{plan.plan_id}/{i}", interval, i) for i, interval in enumerate(plan.intervals))
    return kept + own


def bridge_seconds(steps: tuple[Step, ...], k: int, grace: float) -> float:
    """How long past its end step `k` holds the device: the next step's deadline when it starts at this one's
    end (so the device does not fall back before the next call arrives), else the same bound of its own."""
    this = steps[k].interval
    if k + 1 < len(steps) and steps[k + 1].interval.start <= this.end:
        following = steps[k + 1].interval
        return min(grace, following.end - following.start)
    return min(grace, this.end - this.start)


def held(steps: tuple[Step, ...], k: int, config: BridgeConfig) -> Command:
    """Step `k`'s command with its request_id and device-side period set: power control for the interval plus
    the bridge to the next one; energy and SoC control kept in remote control as long, up to
    `commands.max_timeout`."""
    step = steps[k]
    hold = round(step.interval.end - step.interval.start + bridge_seconds(steps, k, config.plans.start_grace))
    command = msgspec.structs.replace(step.interval.command, request_id=step.request_id)
    if isinstance(command, PowerControl):
        return msgspec.structs.replace(command, duration=hold, timeout=0)
    if isinstance(command, EnergyControl | SocControl):
        return msgspec.structs.replace(command, timeout=min(hold, config.commands.max_timeout))
    return command


def deadline(step: Step, grace: float) -> float:
    """The last instant a step's call may leave: its start plus `min(grace, its length)`."""
    return step.interval.start + min(grace, step.interval.end - step.interval.start)
