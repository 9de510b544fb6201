"""The plan topics' desk: a plan message checked (retain flag, size, target, every rule of `plans.py`) and
handed to the runner, or rejected whole with its error on the target's `plan/state` (not retained); and the
safety lane's stops, which suspend the plans they cover."""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from ..config import BridgeConfig
from ..errors import BridgeError, ErrorInfo
from ..interface import wire
from ..interface.payloads import Incoming, PlanState
from ..interface.topics import Target, Topics
from .admission import Admission
from .commands import Command
from .lifecycle import Publisher
from .plan_runner import PlanRunner
from .plans import PlanMessage, parse_plan, validate_plan

log = logging.getLogger(__name__)


class PlanDesk:
    """Takes plan messages for one bridge: `receive` a message, `stopped` for a stop on the safety lane."""

    def __init__(
        self,
        config: BridgeConfig,
        admission: Admission,
        publisher: Publisher,
        topics: Topics,
        groups_of: Callable[[str], set[str]],
    ) -> None:
        self.config, self.admission, self.publisher, self.topics = config, admission, publisher, topics
        self.runner: PlanRunner
        """Set by the bridge (the runner announces through this desk)."""
        self.groups_of = groups_of
        """The groups an inverter serial is listed in (the fleet inventory): a group's stop covers them."""

    def receive(self, target: Target, msg: Incoming, now: float) -> None:
        """Start, replace or cancel the target's plan, or reject the message whole (nothing changes)."""
        if msg.retain and not msg.payload:
            return  # a user clearing a retained message
        try:
            plan = validate_plan(self._parsed(target, msg), self.config, now, lambda c: self._admit(target, c))
        except BridgeError as exc:
            self.reject(target, msg, exc.info())
            return
        log.info("plan_received target=%s plan_id=%s intervals=%d", target.key, plan.plan_id, len(plan.intervals))
        self.runner.start(target, plan)

    def _parsed(self, target: Target, msg: Incoming) -> PlanMessage:
        """The plan's shape, after the checks every control message gets."""
        self.admission.check_message(target, msg, "plans must not be retained; it was not taken")
        return parse_plan(msg.payload)

    def _admit(self, target: Target, command: Command) -> None:
        """Today's admission for one interval's command as it will be sent: allow-lists and ceilings."""
        self.admission.check_targets(target, command)
        self.admission.check_ceilings(command)

    def announce(self, target: Target, state: PlanState, retain: bool) -> None:
        """A plan's state on the target's `plan/state` topic (retained unless it is a rejection)."""
        self.publisher.publish(self.topics.plan_state(target), wire.encode(state), retain=retain)

    def reject(self, target: Target, msg: Incoming, error: ErrorInfo) -> None:
        """Say `rejected` with the error on the target's plan/state, not retained: the plan in force stays."""
        plan_id = _plan_id_of(msg.payload)
        log.info("plan_rejected target=%s plan_id=%s code=%s", target.key, plan_id, error.code)
        self.announce(target, PlanState(plan_id=plan_id, status="rejected", error=error), False)

    def stopped(self, target: Target, command: Command) -> None:
        """A stop on the safety lane for `target`: suspend the plans it covers (its own; with a batch, its
        inverters'; with a group, the plans of the inverters listed in it)."""
        sns = set(command.sns or ())

        def covered(planned: Target) -> bool:
            if planned == target:
                return True
            if planned.kind != "inverter" or planned.id is None:
                return False
            return planned.id in sns or (target.kind == "group" and target.id in self.groups_of(planned.id))

        reason = ErrorInfo(code="suspended", message=f"a stop on the safety lane for {target.key} suspended the plan")
        self.runner.suspend(covered, reason)


def _plan_id_of(payload: bytes) -> str:
    """The plan_id a refused payload names, if it names one as a string (else empty)."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return ""
    value = doc.get("plan_id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else ""
