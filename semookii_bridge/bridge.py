"""The bridge's core: turns incoming MQTT messages into journaled, scheduled commands and answers.

`handle()` is called for every delivered message and returns once the message is safely journaled (or
answered), so the MQTT edge acknowledges it only then. Transport stays outside: this module sees
`Incoming` messages and a `Publisher`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypedDict

import msgspec

from . import __version__, wire
from .aio import completer
from .budget import BudgetReporter, CallLog
from .clock import steady
from .commands import Command, decode_command, echo, is_safety, max_power
from .config import BridgeConfig
from .dispatcher import Dispatcher
from .errors import BridgeError, ErrorInfo
from .inventory import FleetApi, Inventory
from .jobs import Job, entry_from_job, job_from_entry
from .journal import DuplicateRequest, Entry, Journal
from .lifecycle import ControlApi, Lifecycle, Publisher, StatusObserver
from .management import Guard, ManagementApi, busy, handle_request
from .merging import MergePolicy
from .payloads import INTERFACE_VERSION, Incoming, Response, Status
from .polling import silent
from .ratelimit import QuotaExhausted, RateLimiter
from .topics import ControlRoute, RequestRoute, Target, Topics, owner_of

log = logging.getLogger(__name__)


class BridgeApi(ControlApi, ManagementApi, FleetApi, Protocol):
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
        journal: Journal,
        limiter: RateLimiter,
        clock: Callable[[], float] = steady,
        wall: Callable[[], float] = time.time,
        observer: StatusObserver | None = None,
        age_observer: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.api = api
        self.publisher = publisher
        self.journal = journal
        self.limiter = limiter
        self.clock = clock
        self.wall = wall
        self.topics = topics_for(config)
        self._cluster = config.cluster
        self.inventory = Inventory(clock)
        self.lifecycle = Lifecycle(
            api=api,
            journal=journal,
            publisher=publisher,
            topics=self.topics,
            config=config.commands,
            clock=clock,
            observer=observer,
            tokens=limiter,
            dongle_of=self.inventory.dongle,
            age_observer=age_observer,
        )
        cmd = config.commands
        self._merging = cmd.merge and not cmd.dry_run
        self.dispatcher = Dispatcher(
            limiter,
            self.lifecycle.send_all,
            self._dropped,
            max_in_flight=config.rate_limit.max_in_flight,
            clock=clock,
            merge=MergePolicy(self.inventory.known, cmd.batch_max_sns) if self._merging else None,
        )
        self.calls = CallLog()
        limiter.on_grant = self.calls.record
        self.budget = BudgetReporter(
            limiter=limiter,
            calls=self.calls,
            queue=self.dispatcher,
            tracking=lambda: self.lifecycle.tracking,
            publish=publisher.publish,
            topic=self.topics.bridge_budget,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._requests_pending = 0
        self._allow_groups = frozenset(config.commands.allow_groups)
        self._allow_inverters = frozenset(config.commands.allow_inverters)
        self._guard = Guard(
            allow_groups=self._allow_groups,
            allow_inverters=self._allow_inverters,
            read_only=config.management.read_only,
            inverter_of=self.inventory.inverter_of,
        )

    # ---- start / stop ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume what the journal holds and start dispatching."""
        self.recover()
        self._spawn(self.dispatcher.run())
        self._spawn(self.lifecycle.run_tracking())
        self._spawn(self._prune_loop())
        self._spawn(self.budget.run())
        cmd = self.config.commands
        if self._merging or cmd.allow_groups or cmd.allow_inverters:
            self._spawn(self.inventory.run(self.api, cmd.inventory_refresh))

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Let calls in flight finish (bounded), then stop; queued commands stay journaled."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dispatcher.drain(drain_timeout)
        self.dispatcher.close()
        await self.lifecycle.close()
        await self.limiter.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def info(self) -> dict[str, Any]:
        """What `<prefix>/bridge/info` says (never the token)."""
        rl, cmd = self.config.rate_limit, self.config.commands
        return {
            "version": __version__,
            "interface": INTERFACE_VERSION,
            "instance": self._cluster.index if self._cluster.clustered else None,
            "instances": self._cluster.instances,
            "prefix": self.topics.prefix,
            "rate_limit": {
                "rate": rl.rate,
                "burst": rl.burst,
                "daily_quota": rl.daily_quota,
                "quota_reserve": self.limiter.bucket.quota.reserve,
                "quota_timezone": rl.quota_timezone,
            },
            "dry_run": cmd.dry_run,
            "merge": cmd.merge,
            "batch_max_sns": cmd.batch_max_sns,
            "default_ttl": cmd.default_ttl,
            "track_results_for": cmd.track_results_for,
            "max_abs_power": cmd.max_abs_power,
            "api_base_url": self.api.base_url,
        }

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
            self._request(route.op, msg)
            return
        if self._cluster.clustered and not route.forwarded and not msg.retain:
            owner = owner_of(route.target, self._cluster.instances)
            if owner != self._cluster.index:
                await self._forward(owner, msg)
                return
        self._intake(route, msg)

    async def _forward(self, owner: int, msg: Incoming) -> None:
        """Hand a command to the instance that owns its target; returns once the broker has it (then ack)."""
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.publisher.publish(
            self.topics.forward(owner, msg.topic),
            msg.payload,
            correlation_data=msg.correlation_data,
            response_topic=msg.response_topic,
            message_expiry=msg.message_expiry,
            on_sent=completer(sent),
        )
        await sent
        log.debug("forwarded topic=%s owner=%d", msg.topic, owner)

    def _request(self, op: str, msg: Incoming) -> None:
        """Answer a management request in its own task, or `busy` at once when too many are waiting."""
        if self._requests_pending >= self.config.management.max_pending:
            self._respond(op, msg, busy(msg.payload, self._requests_pending, max_payload=self.config.mqtt.max_payload))
            return
        self._requests_pending += 1
        self._spawn(self._answer(op, msg))

    async def _answer(self, op: str, msg: Incoming) -> None:
        try:
            response = await handle_request(
                self.api, op, msg.payload, max_payload=self.config.mqtt.max_payload, guard=self._guard
            )
        finally:
            self._requests_pending -= 1
        self._respond(op, msg, response)

    def _respond(self, op: str, msg: Incoming, response: Response) -> None:
        topic = msg.response_topic or self.topics.response(op)
        self.publisher.publish(topic, wire.encode(response), correlation_data=msg.correlation_data)
        log.info("management op=%s status=%s", op, response.status)

    def refuse_overloaded(self, msg: Incoming) -> None:
        """A QoS 0 message that arrived while the inbox was full (QoS 0 has no flow control): refused loudly,
        `rejected`/`overloaded` for a command and `busy` for a request, never dropped without a word."""
        route = self.topics.parse(msg.topic)
        if isinstance(route, RequestRoute):
            self._respond(route.op, msg, busy(msg.payload, self._requests_pending,
                                               max_payload=self.config.mqtt.max_payload))  # fmt: skip
        elif route is not None and not msg.retain:
            message = "the bridge's inbox is full; the command was not accepted, send it again later"
            self._reject(route.target, msg, ErrorInfo(code="overloaded", message=message))

    def _intake(self, route: ControlRoute, msg: Incoming) -> None:
        target = route.target
        if msg.retain and not msg.payload:
            return  # a user clearing a retained message: nothing to do
        now = self.clock()
        try:
            command = self._validate(target, msg)
        except BridgeError as exc:
            self._reject(target, msg, exc.info())
            return
        delivery, legacy = _delivery_hash(msg)
        if msg.dup and self.journal.find_delivery(delivery, legacy) is not None:
            log.info("redelivery_ignored topic=%s mid=%d", msg.topic, msg.mid)
            return
        request_id = command.request_id or uuid.uuid4().hex
        job = Job(
            request_id=request_id,
            target=target,
            command=command,
            sns=tuple(command.sns) if command.sns else None,
            received_at=now,
            deadline=self._deadline(command, msg, now),
            response_topic=msg.response_topic,
            correlation=msg.correlation_data,
        )
        try:
            self.journal.insert(entry_from_job(job, "queued", delivery))
        except DuplicateRequest:
            self._repeat(request_id, target, msg)
            return
        except sqlite3.Error as exc:
            # Not journaled means not accepted: say so rather than acknowledge a command nobody keeps.
            log.exception("journal_insert_failed request_id=%s", request_id)
            message = f"the bridge could not record this command ({exc}); it was not sent"
            self._reject(target, msg, ErrorInfo(code="internal_error", message=message), request_id=request_id)
            return
        self.lifecycle.publish_job(job, "queued")
        if self.config.commands.dry_run:
            error = ErrorInfo(code="dry_run", message="dry run: validated and not sent to the API")
            self.lifecycle.finish(job, "completed", error=error)
        elif job.deadline <= now:
            self._dropped(job, "expired", ErrorInfo(code="expired", message="the command had expired on arrival"))
        elif (refusal := self._quota_refusal(command)) is not None:
            self._dropped(job, "failed", refusal)
        else:
            self.dispatcher.submit(job)

    def _repeat(self, request_id: str, target: Target, msg: Incoming) -> None:
        """A request_id seen within the dedup window: nothing is sent and no second lifecycle starts; the
        command's latest state is published again, not retained, with `duplicate: true`."""
        entry = self.journal.get(request_id)
        job = job_from_entry(entry) if entry is not None else None
        if entry is None or job is None:
            error = ErrorInfo(code="duplicate", message=f"request_id {request_id!r} was already received")
            self._reject(target, msg, error, request_id=request_id)
            return
        status: Status = "queued" if entry.status == "sending" else entry.status  # its last published state
        log.info("duplicate request_id=%s status=%s", request_id, status)
        self.lifecycle.publish_state(
            job.target,
            request_id,
            status,
            command=echo(job.command),
            command_id=job.command_id,
            task_id=job.task_id,
            **_outcome(entry),
            duplicate=True,
            topic_target=target,
            response_topic=msg.response_topic,
            correlation=msg.correlation_data,
        )

    def _quota_refusal(self, command: Command) -> ErrorInfo | None:
        """Why the day's quota cannot carry this command (fail it now rather than queue it); None if it can."""
        try:
            self.limiter.bucket.quota.check(reserve_ok=is_safety(command))
        except QuotaExhausted as exc:
            return ErrorInfo(code=QuotaExhausted.code, message=str(exc))
        return None

    def _validate(self, target: Target, msg: Incoming) -> Command:
        """Decode and check a control message; raises BridgeError with the code for its class of bad input."""
        if msg.retain:
            raise BridgeError("retained_command", "control messages must not be retained; it was not sent")
        if len(msg.payload) > self.config.mqtt.max_payload:
            limit = self.config.mqtt.max_payload
            raise BridgeError("payload_too_large", f"payload of {len(msg.payload)} bytes exceeds {limit}")
        problem = target.problem()
        if problem:
            raise BridgeError("validation_error", problem)
        command = decode_command(msg.payload)
        if target.kind == "batch" and not command.sns:
            raise BridgeError("validation_error", "batch commands need `sns`, a list of serial numbers - at `$.sns`")
        if target.kind != "batch" and command.sns:
            raise BridgeError("validation_error", "`sns` is only valid on the batch topic - at `$.sns`")
        self._check_allowed(target, command)
        return command

    def _check_allowed(self, target: Target, command: Command) -> None:
        cfg = self.config.commands
        if target.kind == "group" and self._allow_groups and target.id not in self._allow_groups:
            raise BridgeError("not_allowed", f"group {target.id} is not in commands.allow_groups")
        sns = [target.id] if target.kind == "inverter" else list(command.sns or ())
        if self._allow_inverters and sns:
            outside = [sn for sn in sns if sn not in self._allow_inverters]
            if outside:
                raise BridgeError("not_allowed", f"inverter(s) {', '.join(map(str, outside))} not in allow_inverters")
        power = max_power(command)
        if power > cfg.max_abs_power:
            raise BridgeError("not_allowed", f"power {power} exceeds commands.max_abs_power {cfg.max_abs_power}")
        duration = getattr(command, "duration", None)
        if duration is not None and duration > cfg.max_duration:
            message = f"duration {duration} s exceeds commands.max_duration {cfg.max_duration} s - at `$.duration`"
            raise BridgeError("not_allowed", message)
        timeout = getattr(command, "timeout", None)
        if timeout is not None and timeout > cfg.max_timeout:
            message = f"timeout {timeout} s exceeds commands.max_timeout {cfg.max_timeout} s - at `$.timeout`"
            raise BridgeError("not_allowed", message)

    def _deadline(self, command: Command, msg: Incoming, now: float) -> float:
        deadline = now + (command.ttl if command.ttl is not None else self.config.commands.default_ttl)
        if command.expires_at is not None:
            deadline = min(deadline, now + command.expires_at.timestamp() - self.wall())
        if msg.message_expiry is not None:
            deadline = min(deadline, now + msg.message_expiry)
        return deadline

    def _reject(self, target: Target, msg: Incoming, error: ErrorInfo, *, request_id: str | None = None) -> None:
        rid = request_id or _guess_request_id(msg.payload) or uuid.uuid4().hex
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
        self.lifecycle.finish(job, status, error=error)

    # ---- recovery ---------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Resume journaled commands: queue `queued`, report `sending` ambiguous, track the accepted,
        and announce again the terminal states the broker never acknowledged."""
        for entry in self.journal.unannounced():
            self._announce_again(entry)
        recovered = self.journal.open_entries()
        calls: dict[str, list[Job]] = {}
        for entry in recovered:
            job = job_from_entry(entry)
            if job is None:
                self.journal.update(entry.request_id, "failed")
                continue
            if entry.status in ("accepted", "dispatched"):
                calls.setdefault(str(job.command_id), []).append(job)
            elif entry.status == "queued":
                if job.deadline <= self.clock():
                    self._dropped(
                        job, "expired", ErrorInfo(code="expired", message="expired while the bridge was down")
                    )
                else:
                    self.dispatcher.submit(job)
            elif entry.status == "sending":
                message = (
                    "the bridge stopped while sending this command; it may have reached the API and is not repeated"
                )
                self.lifecycle.finish(job, "failed", error=ErrorInfo(code="ambiguous", message=message))
        for jobs in calls.values():
            self.lifecycle.track(jobs)
        if recovered:
            log.info("recovered commands=%d", len(recovered))

    def _announce_again(self, entry: Entry) -> None:
        job = job_from_entry(entry)
        if job is None or entry.status == "sending":
            return  # (unannounced() returns terminal states only)
        self.lifecycle.finish(job, entry.status, **_outcome(entry))

    async def _prune_loop(self) -> None:
        window = self.config.commands.dedup_window
        while True:
            removed = self.journal.prune(self.clock() - window)
            if removed:
                log.debug("journal_pruned rows=%d", removed)
            await asyncio.sleep(min(60.0, window / 4))


def topics_for(config: BridgeConfig) -> Topics:
    """The topics of this instance (shared subscriptions and a forward inbox when clustered)."""
    instance = config.cluster.index if config.cluster.clustered else None
    return Topics(config.mqtt.prefix, config.mqtt.shared_group, instance)


class _Outcome(TypedDict):
    results: dict[str, str] | None
    no_answer: list[str] | None
    error: ErrorInfo | None


def _outcome(entry: Entry) -> _Outcome:
    """What a journaled command's state says besides its status: results, silent devices, error."""
    results = wire.decode(entry.results, dict[str, str]) if entry.results else None
    return {
        "results": results,
        "no_answer": silent(results) if entry.status == "partial" and results else None,
        "error": wire.decode(entry.error, ErrorInfo) if entry.error else None,
    }


def _delivery_hash(msg: Incoming) -> tuple[str, str]:
    """Identifies one MQTT delivery (topic, packet id, payload) to recognise a broker redelivery.

    The key starts with the packet id, which counts up: consecutive commands land next to each other in
    the journal's index instead of on a random page each (a third fewer pages written per command). The
    second value is the key earlier versions journaled, so a redelivery across the
    upgrade is still recognised.
    """
    digest = hashlib.sha256(msg.topic.encode() + b"\0" + str(msg.mid).encode() + b"\0" + msg.payload).hexdigest()
    return f"{msg.mid:05d}:{digest[:26]}", digest[:32]


_REQUEST_ID = re.compile(rb'"request_id"\s*:\s*"([\x21\x23-\x5b\x5d-\x7e]{1,128})"')


def _guess_request_id(payload: bytes) -> str | None:
    """The request_id of a payload that failed validation, if one can be read, so the operator can match it:
    from the parsed object (Python's parser also takes numbers like 1e999), else, for a payload no parser
    takes (nested too deeply, cut short), from the first plain `"request_id": "..."` in its bytes."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        found = _REQUEST_ID.search(payload)
        return found.group(1).decode() if found else None
    rid = doc.get("request_id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else None
