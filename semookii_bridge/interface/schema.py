"""The MQTT interface as machine-readable documents, generated from the code's own msgspec types.

`json_schemas()` gives a JSON Schema per payload (commands, states, management requests and responses, the
budget); `asyncapi()` an AsyncAPI 3.0 document that places them on their topics. `semookii-bridge schema`
prints them; `docs/asyncapi.yaml` is the committed output, which a test keeps equal to the code.
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml

from ..budget.report import Budget
from ..control.commands import Command
from ..control.plans import BRIDGE_SETS, WINDOW_TYPES, PlanMessage
from ..control.statuses import TERMINAL
from ..management.ops import OPS
from .payloads import INTERFACE_VERSION, BridgeInfo, PlanState, Response, StateMessage
from .wire import Id

REF = "#/components/schemas/{name}"

_PRESENCE: dict[str, Any] = {
    "title": "BridgePresence",
    "description": "Retained; `offline` is the leader's MQTT will (with a hot standby, delayed by `2 x lease + 2` s "
    "and cancelled when a standby takes the session over in time).",
    "type": "object",
    "properties": {"state": {"enum": ["online", "offline"]}},
    "required": ["state"],
}
_INSTANCE: dict[str, Any] = {
    "title": "InstanceState",
    "description": "Retained, one per bridge (`single` without `[ha]`); `offline` is its MQTT will.",
    "type": "object",
    "properties": {
        "role": {"enum": ["leader", "standby", "offline", "single"]},
        "epoch": {"type": ["integer", "null"], "description": "The lease's epoch while leading."},
        "since": {"type": "string", "format": "date-time"},
    },
    "required": ["role", "epoch", "since"],
}


def _schema_hook(type_: type) -> dict[str, Any]:
    """Schemas for the project's own scalar types."""
    if type_ is Id:
        return {
            "anyOf": [{"type": "string", "pattern": "^[0-9]{1,64}$"}, {"type": "integer", "minimum": 0}],
            "description": "An id: ASCII digits, as a string (19-digit ids exceed JSON's safe integers), "
            "or as an integer on input.",
        }
    raise NotImplementedError(type_)


def _request_name(op: str) -> str:
    return "Request" + "".join(part.capitalize() for part in op.replace("/", "_").split("_"))


def json_schemas() -> dict[str, Any]:
    """Every payload's JSON Schema, keyed by name (references point into the same map)."""
    requests = [spec.request for spec in OPS.values()]
    (command, *_), components = msgspec.json.schema_components(
        [Command, StateMessage, Response, Budget, BridgeInfo, PlanMessage, PlanState, *requests],
        ref_template=REF,
        schema_hook=_schema_hook,
    )
    schemas: dict[str, Any] = {
        **components,
        "Command": command,
        "BridgePresence": _PRESENCE,
        "InstanceState": _INSTANCE,
    }
    schemas["StateMessage"]["properties"]["command"] = {
        "anyOf": [{"$ref": REF.format(name="Command")}, {"type": "null"}],
        "description": "The command as understood: its type and parameters, without request_id, ttl, expires_at "
        "and track (a batch's sns kept); null on a rejection that could not be decoded.",
    }
    schemas["PlanInterval"]["properties"]["command"] = {
        "$ref": REF.format(name="Command"),
        "description": f"A command of type {', '.join(WINDOW_TYPES)}, without {', '.join(BRIDGE_SETS)} (the bridge "
        "sets them for each interval).",
    }
    for op, spec in OPS.items():
        schemas[_request_name(op)] = {**components[spec.request.__name__], "title": _request_name(op)}
    return {name: _asyncapi_schema(value) for name, value in sorted(schemas.items())}


def _asyncapi_schema(node: Any) -> Any:
    """msgspec writes OpenAPI's `discriminator` object; AsyncAPI's schema object takes the property name."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def _channel(address: str, message: str, description: str, **parameters: str | dict[str, Any]) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": address,
        "description": description,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
    }
    if parameters:
        channel["parameters"] = {
            name: text if isinstance(text, dict) else {"description": text} for name, text in parameters.items()
        }
    return channel


def _message(schema: str, summary: str) -> dict[str, Any]:
    return {
        "name": schema,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": REF.format(name=schema)},
    }


def asyncapi(prefix: str = "vpp") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the bridge's MQTT interface (from the bridge's side: it receives
    commands and requests, and sends states, responses and its own status)."""
    channels = _channels(prefix)
    receives: tuple[str, ...] = ("groupCommand", "inverterCommand", "batchCommand", "groupSafety", "inverterSafety")
    receives += ("batchSafety",)
    receives += ("groupPlan", "inverterPlan", "request")
    operations = {
        f"{'receive' if name in receives else 'send'}{name[0].upper()}{name[1:]}": {
            "action": "receive" if name in receives else "send",
            "channel": {"$ref": f"#/channels/{name}"},
        }
        for name in channels
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "semookii-bridge MQTT interface",
            "version": INTERFACE_VERSION,
            "description": "Generated by `semookii-bridge schema asyncapi` from the bridge's own types; "
            "docs/mqtt-interface.md explains each topic and status.",
        },
        "defaultContentType": "application/json",
        "servers": {"broker": {"host": "localhost:1883", "protocol": "mqtt", "protocolVersion": "5.0.0"}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": json_schemas(), "messages": _messages()},
    }


PLAN = "Dispatch plans for the target: intervals the bridge carries out at their starts (docs/plans.md)."
PLAN_STATE = "The target's plan: active, finished, cancelled, replaced, suspended (retained) or rejected (not)."
SAFETY = (
    "The safety lane: only manual stop, exit_remote_control and system_switch off (others are `rejected` "
    "with `not_allowed`), read on an MQTT session of its own and sent at the next token; states on the "
    "target's ordinary state topic."
)


def _channels(prefix: str) -> dict[str, Any]:
    """Every topic of the interface, with its parameters and the message it carries."""
    group, sn = {"groupId": "A Cloud API group id (ASCII digits)."}, {"sn": "An inverter serial number."}
    state = "Lifecycle states (the last one retained)."
    return {
        "groupCommand": _channel(f"{prefix}/group/{{groupId}}/set", "command", "Commands for a group.", **group),
        "inverterCommand": _channel(f"{prefix}/inverter/{{sn}}/set", "command", "Commands for an inverter.", **sn),
        "batchCommand": _channel(f"{prefix}/batch/set", "command", "Commands for the inverters in `sns`."),
        "groupSafety": _channel(f"{prefix}/safety/group/{{groupId}}/set", "command", SAFETY, **group),
        "inverterSafety": _channel(f"{prefix}/safety/inverter/{{sn}}/set", "command", SAFETY, **sn),
        "batchSafety": _channel(f"{prefix}/safety/batch/set", "command", SAFETY),
        "groupState": _channel(f"{prefix}/group/{{groupId}}/state", "state", state, **group),
        "inverterState": _channel(f"{prefix}/inverter/{{sn}}/state", "state", state, **sn),
        "batchState": _channel(f"{prefix}/batch/state", "state", "Lifecycle states of batch commands."),
        "groupPlan": _channel(f"{prefix}/group/{{groupId}}/plan/set", "plan", PLAN, **group),
        "inverterPlan": _channel(f"{prefix}/inverter/{{sn}}/plan/set", "plan", PLAN, **sn),
        "groupPlanState": _channel(f"{prefix}/group/{{groupId}}/plan/state", "planState", PLAN_STATE, **group),
        "inverterPlanState": _channel(f"{prefix}/inverter/{{sn}}/plan/state", "planState", PLAN_STATE, **sn),
        "request": _channel(
            f"{prefix}/bridge/request/{{resource}}/{{action}}",
            "request",
            "Management requests: one op per resource and action (" + ", ".join(OPS) + ").",
            **_op_levels(),
        ),
        "response": _channel(
            f"{prefix}/bridge/response/{{resource}}/{{action}}",
            "response",
            "Management answers, on the request's resource and action.",
            **_op_levels(),
        ),
        "bridgeState": _channel(f"{prefix}/bridge/state", "presence", "Retained presence; the MQTT will."),
        "bridgeInfo": _channel(f"{prefix}/bridge/info", "info", "Retained description of the running bridge."),
        "bridgeBudget": _channel(f"{prefix}/bridge/budget", "budget", "Retained API budget, at most once a second."),
        "instanceState": _channel(
            f"{prefix}/bridge/instance/{{name}}/state",
            "instance",
            "Retained role of each bridge (a second copy without `[ha]` finds the first here).",
            name="The instance's `ha.name` (`<host>-<pid>` when unset).",
        ),
    }


def _op_levels() -> dict[str, dict[str, Any]]:
    """A management op's two topic levels, each a parameter of its own (an MQTT parameter is one level)."""
    resources = sorted({op.split("/")[0] for op in OPS})
    actions = sorted({op.split("/")[1] for op in OPS})
    return {
        "resource": {"enum": resources, "description": "What the op acts on (the op's first level)."},
        "action": {
            "enum": actions,
            "description": "What it does (the second level); the pairs are the ops: " + ", ".join(OPS) + ".",
        },
    }


def _messages() -> dict[str, Any]:
    """One message per payload kind, each pointing at its JSON Schema."""
    return {
        "command": _message("Command", "A control command (QoS 1, not retained)."),
        "state": _message("StateMessage", "One lifecycle step; terminal: " + ", ".join(sorted(TERMINAL)) + "."),
        "request": {
            "name": "Request",
            "summary": "A management request; its fields depend on the op.",
            "contentType": "application/json",
            "payload": {"oneOf": [{"$ref": REF.format(name=_request_name(o))} for o in OPS]},
        },
        "response": _message("Response", "`{status, data, error, transaction}`."),
        "plan": _message("PlanMessage", "A dispatch plan (QoS 1, not retained); no intervals cancels."),
        "planState": _message("PlanState", "How the target's plan goes (retained; a rejection is not)."),
        "presence": _message("BridgePresence", "online / offline."),
        "info": _message("BridgeInfo", "Versions and limits."),
        "budget": _message("Budget", "Calls used and left, by kind."),
        "instance": _message(
            "InstanceState", "leader / standby / offline (hot standby, with the lease's epoch) or single (no `[ha]`)."
        ),
    }


def asyncapi_yaml(prefix: str = "vpp") -> str:
    """The AsyncAPI document as YAML, keys in the order written."""
    return yaml.safe_dump(asyncapi(prefix), sort_keys=False, allow_unicode=True, width=110)
