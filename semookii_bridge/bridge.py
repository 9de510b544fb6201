"""The bridge's core: turns incoming MQTT messages into journaled, scheduled commands and answers.

`handle()` is called for every delivered message and returns once the message is safely journaled (or
answered), so the MQTT edge acknowledges it only then. Transport stays outside: this module sees
`Incoming` messages and a `Publisher`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import msgspec

from .budget.breaker import Breaker
from .budget.ratelimit import QuotaExhausted, RateLimiter
from .budget.report import BridgeSample, BudgetReporter, CallLog
from .common.clock import steady
from .config import BridgeConfig
from .control.admission import Admission, delivery_hash, guess_request_id
from .control.commands import Command, is_safety
from .control.dispatcher import Dispatcher
from .control.duplicates import publish_repeat, recall_repeat
from .control.inventory import Inventory
from .control.inventory_learning import Learner
from .control.jobs import Job, entry_from_job
from .control.lane import SafetyLane
from .control.lifecycle import ControlApi, Lifecycle, Publisher, StatusObserver
from .control.merging import MergePolicy
from .control.plan_desk import PlanDesk
from .control.plan_runner import PlanRunner
from .control.recovery import Recovery, prune_forever
from .control.statuses import Status
from .errors import BridgeError, ErrorInfo
from .interface.payloads import ApiState, BridgeInfo, Incoming, describe
from .interface.topics import ControlRoute, PlanRoute, RequestRoute, Target, Topics
from .journal.protocol import CommandJournal, DuplicateRequest, JournalError
from .management.answer import Answerer
from .management.guard import Guard
from .management.ops import Scope, scope_of
from .management.requests import ManagementApi

log = logging.getLogger(__name__)


class BridgeApi(ControlApi, ManagementApi, Protocol):
    """Everything the bridge asks of the Cloud API client (the concrete one is `api.CloudClient`)."""

    @property
    def base_url(self) -> str: ...


class Bridge:
    """Everything between the MQTT edge and the Cloud API client."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        api: BridgeApi,
        publisher: Publisher,
        journal: CommandJournal,
        limiter: RateLimiter,
        clock: Callable[[], float] = steady,
        wall: Callable[[], float] = time.time,
        clock_doubt: float = 0.0,
        observer: StatusObserver | None = None,
        age_observer: Callable[[float], None] | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.config, self.api, self.publisher, self.journal = config, api, publisher, journal
        self.limiter, self.clock, self.wall, self.clock_doubt = limiter, clock, wall, clock_doubt
        """`clock_doubt`: how far `clock` may run ahead of real time (after a reboot): dedup windows grow by it."""
        self.topics = topics_for(config)
        self.inventory = Inventory(clock)
        self.lifecycle = self._lifecycle(observer, age_observer)
        self._merging = config.commands.merge and not config.commands.dry_run
        self.lane, self.breaker = SafetyLane(), breaker or Breaker()
        self.dispatcher = self._dispatcher()
        self.learner = Learner(
            self.inventory, api, self.dispatcher.submit, clock=clock, forget_after=config.commands.inventory_refresh
        )
        self.calls = CallLog()
        limiter.on_grant = self.calls.record
        self.budget = self._budget_reporter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.api_state: Callable[[], ApiState] = lambda: "unknown"  # the token's standing (authorization.py)
        self.admission = Admission(config, wall)
        self.answers = self._answerer()
        self.desk = PlanDesk(config, self.admission, publisher, self.topics, self.inventory.groups_of)
        self.plans = self.desk.runner = PlanRunner(journal, config, clock, self.issue, self.desk.announce)

    def _lifecycle(self, observer: StatusObserver | None, age_observer: Callable[[float], None] | None) -> Lifecycle:
        """Sending once, then tracking results; the device behind an inverter from the inventory."""
        return Lifecycle(
            api=self.api,
            journal=self.journal,
            publisher=self.publisher,
            topics=self.topics,
            config=self.config.commands,
            clock=self.clock,
            observer=observer,
            tokens=self.limiter,
            dongle_of=self.inventory.dongle,
            age_observer=age_observer,
        )

    def _answerer(self) -> Answerer:
        """The management topics under the command topics' rules (allow-lists, read-only mode, a dry run's no
        calls); a fleet change made through them is learnt by the inventory when merging."""
        guard = Guard(
            allow_groups=self.admission.allow_groups,
            allow_inverters=self.admission.allow_inverters,
            read_only=self.config.management.read_only,
            dry_run=self.config.commands.dry_run,
            inverter_of=self.inventory.inverter_of,
            call_scope=self._call_scope,
        )
        answers = Answerer(
            self.api,
            guard,
            self.publisher,
            self.topics.response,
            max_pending=self.config.management.max_pending,
            max_payload=self.config.mqtt.max_payload,
            spawn=self._spawn,
        )
        if self._merging:
            answers.after_ok = self.learner.after_management
        return answers

    def _budget_reporter(self) -> BudgetReporter:
        """The retained budget topic, saying the token's standing too."""
        budget = BudgetReporter(
            limiter=self.limiter,
            calls=self.calls,
            queue=self.dispatcher,
            tracking=lambda: self.lifecycle.tracking,
            publish=self.publisher.publish,
            topic=self.topics.bridge_budget,
        )
        budget.api_state = lambda: self.api_state()
        budget.planned = lambda: self.plans.calls_within(3600.0)
        return budget

    def _dispatcher(self) -> Dispatcher:
        """The latest-wins queue in front of the limiter, merging alike setpoints when `commands.merge`."""
        cmd = self.config.commands
        merge = MergePolicy(self.inventory.known, cmd.batch_max_sns) if self._merging else None
        in_flight = self.config.rate_limit.max_in_flight
        send = self.lane.sending(self.lifecycle.send_all)
        self.lifecycle.recorded = self._recorded
        self.lifecycle.polls.held = lambda: self.breaker.open  # no polls pile up while the API is silent either
        return Dispatcher(
            self.limiter,
            send,
            self._dropped,
            max_in_flight=in_flight,
            clock=self.clock,
            merge=merge,
            breaker=self.breaker,
        )

    def _recorded(self, jobs: Sequence[Job]) -> None:
        """The jobs' `sending` writes are on record, just before their call: the safety lane lets go of the
        intake, and a plan step's lateness is measured."""
        self.lane.release(jobs)
        self.plans.leaving([job.request_id for job in jobs])

    # ---- start / stop ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume what the journal holds and start dispatching."""
        self.plans.load()  # first: a plan's step expired in the journal's queue is counted missed
        self.recover()
        self._spawn(self.plans.run())
        self._spawn(self.dispatcher.run())
        self._spawn(self.lifecycle.run_tracking())
        self._spawn(self._pruning())
        self._spawn(self.budget.run())
        cmd = self.config.commands
        if (self._merging or cmd.allow_groups or cmd.allow_inverters) and not cmd.dry_run:
            self._spawn(self.inventory.run(self.api, cmd.inventory_refresh))

    async def stop(self, drain_timeout: float = 1.0) -> None:
        """Let calls in flight finish (bounded, so SIGTERM ends the bridge within 2 s), then stop; queued commands
        stay journaled, and a call still unanswered is reported `ambiguous` after a restart, never resent."""
        self.learner.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dispatcher.drain(drain_timeout)
        self.dispatcher.close()
        await self.lifecycle.close()
        await self.limiter.close()

    def _pruning(self) -> Coroutine[Any, Any, None]:
        """Forget finished commands past the dedup window, grown by how far the clock may run ahead."""
        return prune_forever(self.journal, self.clock, self.config.commands.dedup_window, self.clock_doubt)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def sample(self, *, with_budget: bool = False) -> BridgeSample:
        """The queue and the calls made, now; `with_budget`: the budget report too."""
        return BridgeSample(
            queued=self.dispatcher.queued,
            in_flight=self.dispatcher.in_flight,
            tracking=self.lifecycle.tracking,
            oldest_queued=self.dispatcher.oldest_age() or 0.0,
            calls_by_kind=self.calls.by_kind(),
            plans=self.plans.statuses(),
            budget=self.budget.snapshot() if with_budget else None,
            plan_rows=self.plans.rows() if with_budget else None,
        )

    def info(self) -> BridgeInfo:
        """What `<prefix>/bridge/info` says (never the token)."""
        reserve = self.limiter.bucket.quota.reserve
        return describe(self.config, self.topics.prefix, reserve, self.api.base_url, self.api_state())

    # ---- intake ----------------------------------------------------------------------------------------

    async def handle(self, msg: Incoming) -> None:
        """Process one delivered message; when this returns, the message may be acknowledged."""
        route = self.topics.parse(msg.topic)
        if route is None:
            log.debug("ignored_topic topic=%s", msg.topic)
            return
        if msg.response_topic is not None and not self.topics.reply_allowed(msg.response_topic):
            log.warning("response_topic_refused topic=%s response_topic=%s", msg.topic, msg.response_topic)
            msg = msgspec.structs.replace(msg, response_topic=None)
        if isinstance(route, RequestRoute):
            self.answers.request(route.op, msg)
        elif isinstance(route, PlanRoute):
            self.desk.receive(route.target, msg, self.clock())
        else:
            self._intake(route, msg)

    def refuse_overloaded(self, msg: Incoming) -> None:
        """A QoS 0 message that arrived while the inbox was full (QoS 0 has no flow control): refused loudly,
        `rejected`/`overloaded` for a command and `busy` for a request, never dropped without a word."""
        route = self.topics.parse(msg.topic)
        message = "the bridge's inbox is full; the message was not taken, send it again later"
        if isinstance(route, RequestRoute):
            self.answers.refuse(route.op, msg)
        elif isinstance(route, PlanRoute):
            self.desk.reject(route.target, msg, ErrorInfo(code="overloaded", message=message))
        elif route is not None and not msg.retain:
            self._reject(route.target, msg, ErrorInfo(code="overloaded", message=message))

    def _intake(self, route: ControlRoute, msg: Incoming) -> None:
        """Validate, journal and queue one control message; refusals and duplicates are answered at once."""
        target = route.target
        if msg.retain and not msg.payload:
            return  # a user clearing a retained message: nothing to do
        now = self.clock()
        try:
            command = self.admission.validate(target, msg, safety=route.safety)
        except BridgeError as exc:
            self._reject(target, msg, exc.info())
            return
        delivery, legacy = delivery_hash(msg)
        if msg.dup and self.journal.delivered(delivery, legacy):
            log.info("redelivery_ignored topic=%s mid=%d", msg.topic, msg.mid)
            return
        job = self._job(target, command, msg, now)
        if self._journaled(job, delivery, msg):
            self._queue(job, now, lane=route.safety)
            if route.safety:
                self.desk.stopped(target, command)

    def issue(self, target: Target, command: Command, deadline: float) -> None:
        """A plan's step as an ordinary command (its request_id set); one already journaled (before a restart or
        a takeover) is not issued again."""
        now = self.clock()
        sns = tuple(command.sns) if command.sns else None
        job = Job(command.request_id or uuid.uuid4().hex, target, command, sns, received_at=now, deadline=deadline)
        if self._journaled(job, None, None):
            self._queue(job, now)

    def _journaled(self, job: Job, delivery: str | None, msg: Incoming | None) -> bool:
        """Journal a new job and say `queued`; a repeated request_id is answered (a message's) or passed over (a
        plan's step that went before a restart)."""
        try:
            self.journal.insert(entry_from_job(job, "queued", delivery))
        except DuplicateRequest:
            if msg is not None:
                self._repeat(job.request_id, job.target, msg)
            return False
        except JournalError as exc:
            # Not journaled means not accepted: say so rather than acknowledge a command nobody keeps.
            log.exception("journal_insert_failed request_id=%s", job.request_id)
            message = f"the bridge could not record this command ({exc}); it was not sent"
            if msg is not None:
                error = ErrorInfo(code="internal_error", message=message)
                self._reject(job.target, msg, error, request_id=job.request_id)
            return False
        self.lifecycle.publish_job(job, "queued")
        return True

    def _job(self, target: Target, command: Command, msg: Incoming, now: float) -> Job:
        """The job for a validated command (a request_id is made up when the command has none)."""
        return Job(
            request_id=command.request_id or uuid.uuid4().hex,
            target=target,
            command=command,
            sns=tuple(command.sns) if command.sns else None,
            received_at=now,
            deadline=self.admission.deadline(command, msg, now),
            response_topic=msg.response_topic,
            correlation=msg.correlation_data,
        )

    def _queue(self, job: Job, now: float, *, lane: bool = False) -> None:
        """Hand a journaled job to the dispatcher, or end it now: dry run, expired on arrival, no quota.
        `lane`: it came on the safety lane, which holds the ordinary intake until it leaves the queue."""
        if self.config.commands.dry_run:
            error = ErrorInfo(code="dry_run", message="dry run: validated and not sent to the API")
            self.lifecycle.finish(job, "completed", error=error)
        elif job.deadline <= now:
            self._dropped(job, "expired", ErrorInfo(code="expired", message="the command had expired on arrival"))
        elif (refusal := self._quota_refusal(job.command)) is not None:
            self._dropped(job, "failed", refusal)
        elif lane:
            self.lane.entered(job.request_id)
            self.dispatcher.submit(job)
        elif not (self._merging and self.learner.take(job)):  # held briefly while unknown inverters are looked up
            self.dispatcher.submit(job)

    def _repeat(self, request_id: str, target: Target, msg: Incoming) -> None:
        """A request_id seen within the dedup window: nothing is sent and no second lifecycle starts; the
        command's latest state is published again (read from the journal's store first when a new leader holds
        that finished command only as a key)."""
        reject = functools.partial(self._reject, target, msg, request_id=request_id)
        entry = self.journal.get(request_id)
        if entry is not None:
            publish_repeat(self.lifecycle, request_id, entry, target, msg, reject)
        else:
            self._spawn(recall_repeat(self.journal, self.lifecycle, request_id, target, msg, reject))

    async def _call_scope(self, command_id: str | None, task_id: str | None) -> Scope | None:
        """What one control call of this bridge touched (for the allow-lists of a management query)."""
        return scope_of(await self.journal.recall_call(command_id=command_id, task_id=task_id))

    def _quota_refusal(self, command: Command) -> ErrorInfo | None:
        """Why the day's quota cannot carry this command (fail it now rather than queue it); None if it can."""
        try:
            self.limiter.bucket.quota.check(reserve_ok=is_safety(command))
        except QuotaExhausted as exc:
            return ErrorInfo(code=QuotaExhausted.code, message=str(exc))
        return None

    def _reject(self, target: Target, msg: Incoming, error: ErrorInfo, *, request_id: str | None = None) -> None:
        rid = request_id or guess_request_id(msg.payload) or uuid.uuid4().hex
        log.info("rejected request_id=%s topic=%s code=%s", rid, msg.topic, error.code)
        self.lifecycle.publish_state(
            target,
            rid,
            "rejected",
            error=error,
            response_topic=msg.response_topic,
            correlation=msg.correlation_data,
        )

    def _dropped(self, job: Job, status: Status, error: ErrorInfo | None) -> None:
        """A queued job left the queue without being sent: superseded, expired, or out of quota."""
        self.lane.left(job.request_id)
        self.lifecycle.finish(job, status, error=error)
        self.plans.dropped(job.request_id, status)

    # ---- recovery ---------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Resume journaled commands (`recovery.py`): queue `queued`, report `sending` ambiguous, track the
        accepted, and announce again the terminal states the broker never acknowledged."""
        Recovery(
            journal=self.journal,
            lifecycle=self.lifecycle,
            dispatcher=self.dispatcher,
            admission=self.admission,
            clock=self.clock,
            drop=self._dropped,
            wire_bound=self.config.ha.wire_bound if self.config.ha.enabled else None,
        ).run()


def topics_for(config: BridgeConfig) -> Topics:
    """The bridge's topics."""
    return Topics(config.mqtt.prefix)
