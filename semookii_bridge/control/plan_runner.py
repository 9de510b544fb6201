"""Carries out the targets' dispatch plans (docs/plans.md): at each step's start its command is issued as an
ordinary command (request_id `<plan_id>/<index>`); a step whose call could not leave within its deadline is
missed, never sent late; nothing is issued before its start. Progress is journaled with the command it issued,
so a restart or a takeover goes on where the plan was: the journal's request ids keep a step from going twice.
Times are the journal's timeline (`clock`), so a wall-clock step fires nothing early or twice."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec

from ..config import BridgeConfig
from ..errors import ErrorInfo
from ..interface import wire
from ..interface.payloads import PlanState, PlanStatus, PlanWarning
from ..interface.topics import Target
from ..journal.protocol import CommandJournal, PlanRecord
from .commands import Command
from .plan_budget import boundary_calls, warning_for
from .plans import Plan, Step, deadline, held, steps_of

log = logging.getLogger(__name__)

MAX_SLEEP = 1.0
"""The runner looks at its plans at least this often (seconds), whatever it expects."""

Issue = Callable[[Target, Command, float], None]
"""Issue one step's command for a target, due by the given deadline (the bridge's intake, minus MQTT)."""
Announce = Callable[[Target, PlanState, bool], None]
"""Publish a plan's state for a target; the flag: retained."""


class Program(msgspec.Struct, frozen=True):
    """A record's body: the target, the plan, and the steps carried out for it (lead-in steps first)."""

    target: Target
    plan_id: str
    steps: tuple[Step, ...]
    warning: PlanWarning | None = None


class PlanRunner:
    """One program per target, run from the journal's records; `start` begins, replaces or cancels one."""

    def __init__(
        self,
        journal: CommandJournal,
        config: BridgeConfig,
        clock: Callable[[], float],
        issue: Issue,
        announce: Announce,
    ) -> None:
        self.journal, self.config, self.clock, self.issue, self.announce = journal, config, clock, issue, announce
        self.grace = config.plans.start_grace
        self._programs: dict[str, tuple[Program, PlanRecord]] = {}
        self._changed = asyncio.Event()
        self._statuses: dict[str, str] = {}
        """Each target's plan status as last saved (the metrics' plans by status)."""
        self._starts: dict[str, float] = {}
        """Issued steps not yet sent: request_id -> the step's start (their calls' lateness)."""
        self.on_interval: Callable[[str], None] = lambda outcome: None
        """Told `issued`, `missed` (past its deadline before it was issued) or `expired` (issued, no call by it)."""
        self.on_lateness: Callable[[float], None] = lambda seconds: None
        """Told how late after its start each step's call left."""

    def load(self) -> None:
        """Take up the journal's active plans (a start or a takeover); what is past its deadline is missed."""
        for record in self.journal.plans():
            self._statuses[record.target] = record.status
            if record.status == "active":
                program = wire.decode(record.body, Program)
                self._programs[program.target.key] = (program, record)
        log.info("plans_loaded active=%d", len(self._programs))

    def statuses(self) -> dict[str, int]:
        """How many targets' plans are in each status (a target keeps its last plan's)."""
        counts: dict[str, int] = {}
        for status in self._statuses.values():
            counts[status] = counts.get(status, 0) + 1
        return counts

    def rows(self) -> list[dict[str, object]]:
        """The active plans as the status page lists them: target, plan, interval, next start, sent, missed."""
        rows = []
        for program, record in self._programs.values():
            state = self.state_of(program, record)
            rows.append({"target": program.target.key, **msgspec.structs.asdict(state)})
        return sorted(rows, key=lambda row: str(row["target"]))

    def leaving(self, request_ids: list[str]) -> None:
        """These commands' calls leave now: how late after its start each plan step's call is."""
        for request_id in request_ids:
            start = self._starts.pop(request_id, None)
            if start is not None:
                self.on_lateness(max(0.0, self.clock() - start))

    # ---- changes from operators -------------------------------------------------------------------

    def start(self, target: Target, plan: Plan) -> None:
        """Run `plan` for `target`: an empty plan cancels the target's plan, another replaces it from the new
        plan's first interval (the old one's steps before that still run; it says `replaced` at once)."""
        previous = self._programs.pop(target.key, None)
        lead_in: tuple[Step, ...] = ()
        if previous is not None:
            old, record = previous
            status: PlanStatus = "cancelled" if not plan.intervals else "replaced"
            self._end(old, record, status)
            lead_in = tuple(step for step in old.steps[record.next_index :])
        if plan.intervals:
            program = self._checked(Program(target, plan.plan_id, steps_of(plan, lead_in)))
            record = PlanRecord(target=target.key, plan_id=plan.plan_id, body=wire.encode(program), status="active")
            self._save(program, record)
            self._programs[target.key] = (program, record)
        self._changed.set()

    def _checked(self, program: Program) -> Program:
        """The program with a warning if one of its boundaries needs more calls, with the plans held, than the
        rate limit lets leave within the deadline."""
        rl, cmd = self.config.rate_limit, self.config.commands
        held_now = [(p.target, p.steps) for p, _ in self._programs.values()] + [(program.target, program.steps)]
        calls = boundary_calls(held_now, cmd.batch_max_sns if cmd.merge else 1)
        warning = warning_for(program.steps, calls, rl.rate, rl.burst, self.grace)
        if warning is not None:
            due, late = warning.calls, warning.expected_lateness
            log.warning(
                "plan_over_budget target=%s plan_id=%s calls=%d lateness=%.1f",
                program.target.key,
                program.plan_id,
                due,
                late,
            )
        return msgspec.structs.replace(program, warning=warning)

    def calls_within(self, seconds: float) -> int:
        """Steps of the plans held that start within the next `seconds` (the budget topic's planned calls)."""
        now = self.clock()
        return sum(
            bisect.bisect_left(p.steps, now + seconds, lo=r.next_index, key=_start)
            - bisect.bisect_left(p.steps, now, lo=r.next_index, key=_start)
            for p, r in self._programs.values()
        )

    def suspend(self, covered: Callable[[Target], bool], reason: ErrorInfo) -> None:
        """A stop on the safety lane: every plan whose target it covers issues nothing more (`suspended`)."""
        for key, (program, record) in list(self._programs.items()):
            if covered(program.target):
                del self._programs[key]
                self._end(program, record, "suspended", reason)
                log.warning("plan_suspended target=%s plan_id=%s", key, program.plan_id)

    def dropped(self, request_id: str, status: str) -> None:
        """A step's command left the queue unsent: `expired` (its call could not leave by its deadline) counts as
        missed, not sent; it never goes late."""
        self._starts.pop(request_id, None)
        if status != "expired":
            return
        plan_id = request_id.rpartition("/")[0]
        for key, (program, record) in list(self._programs.items()):
            if program.plan_id != plan_id:
                continue
            if any(s.request_id == request_id and s.index is not None for s in program.steps):
                record = msgspec.structs.replace(record, sent=record.sent - 1, missed=record.missed + 1)
                self._programs[key] = (program, record)
                self._save(program, record)
                self.on_interval("expired")
                log.warning("plan_interval_missed target=%s request_id=%s reason=expired", key, request_id)

    # ---- the run --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Issue each step at its start, until cancelled."""
        while True:
            self.step()
            wait = min([MAX_SLEEP, *(self._due(p, r) - self.clock() for p, r in self._programs.values())])
            self._changed.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait)

    def step(self) -> None:
        """Issue (or count missed) every step whose start has come."""
        now = self.clock()
        for key, (program, record) in list(self._programs.items()):
            if self._due(program, record) <= now:
                self._advance(key, program, record, now)

    def _due(self, program: Program, record: PlanRecord) -> float:
        """When the program next has something to do: its next step's start, or its last step's end."""
        if record.next_index >= len(program.steps):
            return program.steps[-1].interval.end
        return program.steps[record.next_index].interval.start

    def _advance(self, key: str, program: Program, record: PlanRecord, now: float) -> None:
        """Take every step that started by `now`: issued while within its deadline, missed after it."""
        sent, missed, k = record.sent, record.missed, record.next_index
        while k < len(program.steps) and program.steps[k].interval.start <= now:
            step = program.steps[k]
            if now < deadline(step, self.grace):
                self._starts[step.request_id] = step.interval.start
                self.issue(program.target, held(program.steps, k, self.config), deadline(step, self.grace))
                sent += step.index is not None
                self.on_interval("issued")
            else:
                missed += step.index is not None
                self.on_interval("missed")
                log.warning("plan_interval_missed target=%s request_id=%s", key, step.request_id)
            k += 1
        record = msgspec.structs.replace(record, next_index=k, sent=sent, missed=missed)
        if k >= len(program.steps) and now >= program.steps[-1].interval.end:
            del self._programs[key]
            self._end(program, record, "finished")
            return
        self._programs[key] = (program, record)
        self._save(program, record)

    # ---- records and states ---------------------------------------------------------------------------

    def _end(self, program: Program, record: PlanRecord, status: PlanStatus, error: ErrorInfo | None = None) -> None:
        encoded = wire.encode(error) if error is not None else None
        self._save(program, msgspec.structs.replace(record, status=status, error=encoded))

    def _save(self, program: Program, record: PlanRecord) -> None:
        """Journal the record (with the writes of this loop turn) and say the plan's state."""
        record = msgspec.structs.replace(record, updated_at=self.clock())
        self.journal.save_plan(record)
        self._statuses[record.target] = record.status
        self.announce(program.target, self.state_of(program, record), True)

    def state_of(self, program: Program, record: PlanRecord) -> PlanState:
        """What `plan/state` says of a program: the plan's interval in progress (else the next), the next one's
        start, and the plan's counts (steps of a replaced plan are not its own)."""
        now = self.clock()
        issued = [s for s in program.steps[: record.next_index] if s.index is not None]
        waiting = [s for s in program.steps[record.next_index :] if s.index is not None]
        following = waiting[0] if waiting and record.status == "active" else None
        current = issued[-1] if issued and record.status == "active" and now < issued[-1].interval.end else following
        error = wire.decode(record.error, ErrorInfo) if record.error is not None else None
        return PlanState(
            plan_id=program.plan_id,
            status=record.status,  # type: ignore[arg-type]
            interval=current.index if current is not None else None,
            next_start=_rfc3339(following.interval.start) if following is not None else None,
            sent=record.sent,
            missed=record.missed,
            error=error,
            warning=program.warning if record.status == "active" else None,
        )


def _rfc3339(epoch: float) -> str:
    """An instant as RFC 3339 in UTC, to the millisecond."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


def _start(step: Step) -> float:
    """A step's start: the key the runner's bisections search on (steps are sorted by it)."""
    return step.interval.start
