"""Sparkplug devices and what a write to one of their metrics means, as plain code: one device per group
(`group-<id>`) and per inverter (`inverter-<sn>`), their birth metrics, a DCMD turned into commands for the
JSON `/set` topics (or stored settings, or a refusal), and a lifecycle state turned into `State/*` metrics."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from ..control.commands import decode_command, is_safety
from ..errors import BridgeError
from ..interface.payloads import StateMessage
from ..interface.topics import Target
from .codec import DataType, Metric, MetricValue, fits

ACTIVE_POWER = "Setpoint/ActivePower"
COMMAND = "Command"
SETTINGS: dict[str, tuple[str, DataType]] = {
    "Setpoint/ReactivePower": ("reactive_power", DataType.Int32),
    "Setpoint/Duration": ("duration", DataType.UInt32),
    "Setpoint/Timeout": ("timeout", DataType.UInt32),
}
WRITABLE: dict[str, DataType] = {
    ACTIVE_POWER: DataType.Int32,
    **{n: t for n, (_, t) in SETTINGS.items()},
    COMMAND: DataType.String,
}
STATE: dict[str, DataType] = {
    "State/Status": DataType.String,
    "State/RequestId": DataType.String,
    "State/CommandId": DataType.String,
    "State/ErrorCode": DataType.String,
    "State/ErrorMessage": DataType.String,
    "State/Updated": DataType.DateTime,
}


def device_id(target: Target) -> str:
    """`group-<id>` or `inverter-<sn>`."""
    return f"{target.kind}-{target.id}"


def target_of(device: str) -> Target | None:
    """The group or inverter a device id names; None for anything else (or an id the topics refuse)."""
    kind, _, ident = device.partition("-")
    if kind not in ("group", "inverter") or not ident:
        return None
    target = Target(kind, ident)  # type: ignore[arg-type]  # kind is checked above
    return None if target.problem() else target


class Send(msgspec.Struct, frozen=True):
    """Publish `payload` on the target's `/set` topic: it then takes the same path as any JSON command."""

    target: Target
    payload: bytes
    safety: bool = False
    """A command that stops or releases devices: it takes the safety lane (`<prefix>/safety/.../set`)."""


class Refusal(msgspec.Struct, frozen=True):
    """A DCMD that was not applied at all, with the reason as an error code and message."""

    code: str
    message: str


class Device:
    """One device's metric values: the settings a power setpoint is sent with, and its last state."""

    def __init__(self, target: Target, settings: dict[str, int]) -> None:
        self.target = target
        self.id = device_id(target)
        self.settings = dict(settings)
        self.active_power: int | None = None
        self.state: dict[str, MetricValue] = dict.fromkeys(STATE)

    def birth(self, now_ms: int) -> list[Metric]:
        """Every metric with its datatype and current value (unset ones as null), for the DBIRTH."""
        values: dict[str, MetricValue] = {ACTIVE_POWER: self.active_power, COMMAND: ""}
        values.update({name: self.settings[key] for name, (key, _) in SETTINGS.items()})
        values.update(self.state)
        kinds = {**WRITABLE, **STATE}
        return [Metric(name, kinds[name], values[name], now_ms) for name in kinds]

    def write(self, metrics: tuple[Metric, ...], now_ms: int) -> tuple[list[Send], list[Metric]] | Refusal:
        """Apply a DCMD: all of its metrics or none. Settings are stored (and reported back); a setpoint or
        a command becomes a Send. Returns (sends, metrics to report) or the refusal."""
        problem = _check(metrics)
        if problem is not None:
            return problem
        changed: list[Metric] = []
        for metric in metrics:
            if metric.name in SETTINGS:
                self.settings[SETTINGS[metric.name][0]] = int(metric.value)  # type: ignore[arg-type]  # checked
                changed.append(Metric(metric.name, WRITABLE[metric.name], metric.value, now_ms))
        sends: list[Send] = []
        for metric in metrics:
            if metric.name == ACTIVE_POWER:
                self.active_power = int(metric.value)  # type: ignore[arg-type]  # checked by _check
                changed.append(Metric(ACTIVE_POWER, DataType.Int32, self.active_power, now_ms))
                sends.append(Send(self.target, self._setpoint(self.active_power)))
            elif metric.name == COMMAND:
                payload = str(metric.value).encode()
                sends.append(Send(self.target, payload, safety=_is_safety(payload)))
        return sends, changed

    def _setpoint(self, active_power: int) -> bytes:
        """The `power_control` command for a new active power, with the device's stored settings."""
        return msgspec.json.encode(
            {
                "type": "power_control",
                "active_power": active_power,
                "request_id": f"spb-{uuid.uuid4().hex}",
                **{key: self.settings[key] for key, _ in SETTINGS.values()},
            }
        )

    def observe(self, state: StateMessage) -> list[Metric]:
        """The `State/*` metrics for a lifecycle state published for this device's target."""
        error = state.error
        values: dict[str, MetricValue] = {
            "State/Status": state.status,
            "State/RequestId": state.request_id,
            "State/CommandId": state.command_id or "",
            "State/ErrorCode": error.code if error is not None else "",
            "State/ErrorMessage": error.message if error is not None else "",
            "State/Updated": _ms(state.ts),
        }
        self.state.update(values)
        return [Metric(name, STATE[name], value, values["State/Updated"]) for name, value in values.items()]  # type: ignore[arg-type]

    def refused(self, refusal: Refusal, now_ms: int) -> list[Metric]:
        """`State/*` metrics saying a write was refused (no command was sent, so no request id)."""
        values: dict[str, MetricValue] = {
            "State/Status": "rejected",
            "State/RequestId": "",
            "State/CommandId": "",
            "State/ErrorCode": refusal.code,
            "State/ErrorMessage": refusal.message,
            "State/Updated": now_ms,
        }
        self.state.update(values)
        return [Metric(name, STATE[name], value, now_ms) for name, value in values.items()]


def _check(metrics: tuple[Metric, ...]) -> Refusal | None:
    """Why a DCMD cannot be applied: a metric that is unknown, read-only, of another datatype, or whose value
    does not fit it; None when every metric is a valid write."""
    if not metrics:
        return Refusal("validation_error", "the DCMD carries no metric")
    if len(metrics) > len(WRITABLE):
        return Refusal(
            "too_many_metrics",
            f"the DCMD carries {len(metrics)} metrics; a device has {len(WRITABLE)} "
            "writable ones and each may be written once per DCMD",
        )
    names = [metric.name for metric in metrics]
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        return Refusal("duplicate_metric", f"{', '.join(twice)} written more than once in one DCMD")
    for metric in metrics:
        expected = WRITABLE.get(metric.name)
        if expected is None:
            code = "read_only_metric" if metric.name in STATE else "unknown_metric"
            return Refusal(code, f"metric {metric.name!r} cannot be written")
        if metric.datatype is not None and metric.datatype != expected:
            given = metric.datatype.name
            return Refusal("wrong_datatype", f"{metric.name} is {expected.name}, the write was {given}")
        if metric.value is None or not fits(expected, metric.value):
            return Refusal("wrong_datatype", f"{metric.value!r} is not a {expected.name} value for {metric.name}")
    return None


def _is_safety(payload: bytes) -> bool:
    """Whether a Command write is one the safety lane takes (one that does not decode is not: the ordinary
    topic refuses it with the bridge's code)."""
    try:
        return is_safety(decode_command(payload))
    except BridgeError:
        return False


def _ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 UTC time (the state message's `ts`)."""
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0
