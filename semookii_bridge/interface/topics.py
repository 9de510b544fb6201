"""Topic names under the configured prefix: what the bridge subscribes to, parses and publishes."""

from __future__ import annotations

import re
from typing import Literal

import msgspec

TargetKind = Literal["group", "inverter", "batch"]
_GROUP_ID = re.compile(r"[0-9]{1,25}")  # ASCII digits only: `\d` also takes Arabic-Indic and other digits
_SN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class Target(msgspec.Struct, frozen=True):
    """What a control command addresses: a group id, an inverter serial number, or the batch topic."""

    kind: TargetKind
    id: str | None = None

    @property
    def key(self) -> str:
        """Latest-wins key; batch commands are keyed by their sns at enqueue time."""
        return f"{self.kind}:{self.id}" if self.id is not None else self.kind

    def problem(self) -> str | None:
        """Why the id in the topic is not a valid id for its kind, or None."""
        if self.kind == "group" and not _GROUP_ID.fullmatch(self.id or ""):
            return f"group id {self.id!r} in the topic must be digits"
        if self.kind == "inverter" and not _SN.fullmatch(self.id or ""):
            return f"inverter serial number {self.id!r} in the topic is not valid"
        return None


class ControlRoute(msgspec.Struct, frozen=True):
    """A message on a `.../set` topic, or on the safety lane's `<prefix>/safety/.../set`."""

    target: Target
    safety: bool = False


class RequestRoute(msgspec.Struct, frozen=True):
    """A message on `<prefix>/bridge/request/<op>`."""

    op: str


class PlanRoute(msgspec.Struct, frozen=True):
    """A message on `<prefix>/<group|inverter>/<id>/plan/set`: a dispatch plan for that target."""

    target: Target


Route = ControlRoute | RequestRoute | PlanRoute


class Topics:
    """Builds and parses the contract's topics for one prefix."""

    def __init__(self, prefix: str = "vpp") -> None:
        self.prefix = prefix.strip("/")
        self._parts = len(self.prefix.split("/"))
        self.bridge_state = f"{self.prefix}/bridge/state"
        self.bridge_info = f"{self.prefix}/bridge/info"
        self.bridge_budget = f"{self.prefix}/bridge/budget"

    def instance_state(self, name: str) -> str:
        """Where a bridge of a hot standby says its role (leader, standby, offline)."""
        return f"{self.prefix}/bridge/instance/{name}/state"

    def subscriptions(self) -> list[str]:
        """Filters the bridge subscribes to."""
        return [
            f"{self.prefix}/group/+/set",
            f"{self.prefix}/inverter/+/set",
            f"{self.prefix}/batch/set",
            f"{self.prefix}/group/+/plan/set",
            f"{self.prefix}/inverter/+/plan/set",
            f"{self.prefix}/bridge/request/#",
        ]

    def safety_subscriptions(self) -> list[str]:
        """The safety lane's filters, read on an MQTT session of their own."""
        return [
            f"{self.prefix}/safety/group/+/set",
            f"{self.prefix}/safety/inverter/+/set",
            f"{self.prefix}/safety/batch/set",
        ]

    def parse(self, topic: str) -> Route | None:
        """The route of an incoming topic, or None when it is not one of ours."""
        if not topic.startswith(self.prefix + "/"):
            return None
        rest = topic[len(self.prefix) + 1 :].split("/")
        match rest:
            case ["group" | "inverter" as kind, ident, "set"]:
                return ControlRoute(Target(kind, ident))
            case ["batch", "set"]:
                return ControlRoute(Target("batch"))
            case ["group" | "inverter" as kind, ident, "plan", "set"]:
                return PlanRoute(Target(kind, ident))
            case ["bridge", "request", *op] if op and all(op):
                return RequestRoute("/".join(op))
            case ["safety", "group" | "inverter" as kind, ident, "set"]:
                return ControlRoute(Target(kind, ident), safety=True)
            case ["safety", "batch", "set"]:
                return ControlRoute(Target("batch"), safety=True)
        return None

    def reply_allowed(self, topic: str) -> bool:
        """Whether an MQTT 5 response topic may be used: no wildcards, and not inside the bridge's own
        namespace (a client could otherwise make the bridge publish onto state or bridge topics)."""
        return bool(topic) and "+" not in topic and "#" not in topic and not topic.startswith(self.prefix + "/")

    def command(self, target: Target, *, safety: bool = False) -> str:
        """Where commands for `target` are published (by operators); `safety`: on the safety lane."""
        lane = f"{self.prefix}/safety" if safety else self.prefix
        if target.kind == "batch":
            return f"{lane}/batch/set"
        return f"{lane}/{target.kind}/{target.id}/set"

    def state_filters(self) -> list[str]:
        """Subscriptions that see every command's states."""
        return [f"{self.prefix}/group/+/state", f"{self.prefix}/inverter/+/state", f"{self.prefix}/batch/state"]

    def plan_state_filters(self) -> list[str]:
        """Subscriptions that see every plan's states."""
        return [f"{self.prefix}/group/+/plan/state", f"{self.prefix}/inverter/+/plan/state"]

    def parse_state(self, topic: str) -> Target | None:
        """The group or inverter whose state topic this is; None for any other topic."""
        if not topic.startswith(self.prefix + "/"):
            return None
        match topic[len(self.prefix) + 1 :].split("/"):
            case ["group" | "inverter" as kind, ident, "state"] if ident:
                return Target(kind, ident)
        return None

    def state(self, target: Target) -> str:
        """Where lifecycle states of commands for `target` are published."""
        if target.kind == "batch":
            return f"{self.prefix}/batch/state"
        return f"{self.prefix}/{target.kind}/{target.id}/state"

    def plan(self, target: Target) -> str:
        """Where plans for a group or an inverter are published (by operators)."""
        return f"{self.prefix}/{target.kind}/{target.id}/plan/set"

    def plan_state(self, target: Target) -> str:
        """Where a target's plan says how it goes (retained)."""
        return f"{self.prefix}/{target.kind}/{target.id}/plan/state"

    def request(self, op: str) -> str:
        """Where a management request is published (by operators)."""
        return f"{self.prefix}/bridge/request/{op}"

    def response(self, op: str) -> str:
        """Where the answer to a management request is published (unless MQTT 5 names another)."""
        return f"{self.prefix}/bridge/response/{op}"
