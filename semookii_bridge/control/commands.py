"""Control commands as operators send them: a msgspec tagged union, validated, mapped to API parameters.

Two input forms are accepted: the typed form (`{"type": "power_control", "active_power": -3000, ...}`)
and the API's own names (`{"superType": 0, "mode": 1, "activePower": ...}`), which is converted to the
typed form so that both pass the same rules. `to_params` is the pure mapping to `ControlParams`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from ..api.params import ControlParams
from ..errors import BridgeError
from ..interface import wire
from .api_names import ENVELOPE_FIELDS, typed_from_api_names

Power = Annotated[int, msgspec.Meta(ge=-65535, le=65535, description="W or var; positive charges")]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Energy = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Soc = Annotated[int, msgspec.Meta(ge=0, le=100)]
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM")]
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
SerialNumber = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Ttl = Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)]

MAX_BATCH = 500


class _Command(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    """Fields every command may carry besides its own parameters."""

    request_id: RequestId | None = None
    ttl: Ttl | None = None
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    sns: Annotated[list[SerialNumber], msgspec.Meta(min_length=1, max_length=MAX_BATCH)] | None = None
    track: Literal["results", "accepted"] | None = None


class PowerControl(_Command, frozen=True, kw_only=True, tag="power_control"):
    """Hold an active (and reactive) power setpoint for `duration` seconds."""

    active_power: Power
    reactive_power: Power = 0
    duration: Seconds
    timeout: Seconds


class EnergyControl(_Command, frozen=True, kw_only=True, tag="energy_control"):
    """Charge or discharge `target_energy` Wh at `charge_power` W."""

    target_energy: Energy
    charge_power: Power
    timeout: Seconds
    update: bool = False


class SocControl(_Command, frozen=True, kw_only=True, tag="soc_control"):
    """Charge or discharge to `target_soc` % at `charge_power` W."""

    target_soc: Soc
    charge_power: Power
    timeout: Seconds
    update: bool = False


class ExitRemoteControl(_Command, frozen=True, kw_only=True, tag="exit_remote_control"):
    """Leave remote control mode (superType 0, mode 0: Forbid)."""

    timeout: Seconds = 0


class SystemSwitch(_Command, frozen=True, kw_only=True, tag="system_switch"):
    """Switch the system on or off."""

    on: bool


class SelfUse(_Command, frozen=True, kw_only=True, tag="self_use"):
    """Self-use work mode."""

    min_soc: Soc
    charge_upper_soc: Soc
    charge_from_grid: bool


class FeedInPriority(_Command, frozen=True, kw_only=True, tag="feed_in_priority"):
    """Feed-in priority work mode."""

    min_soc: Soc
    charge_upper_soc: Soc


class Backup(_Command, frozen=True, kw_only=True, tag="backup"):
    """Backup work mode."""

    min_soc: Soc
    charge_upper_soc: Soc


class Manual(_Command, frozen=True, kw_only=True, tag="manual"):
    """Manual mode: stop, force charge or force discharge."""

    action: Literal["stop", "force_charge", "force_discharge"]


class Period(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One charge window and one discharge window, each `["HH:MM", "HH:MM"]`."""

    charge: tuple[ClockTime, ClockTime]
    discharge: tuple[ClockTime, ClockTime]


class Schedule(_Command, frozen=True, kw_only=True, tag="schedule"):
    """Charge and discharge time setting; `period2` enables the second period."""

    period1: Period
    period2: Period | None = None


Command = (
    PowerControl
    | EnergyControl
    | SocControl
    | ExitRemoteControl
    | SystemSwitch
    | SelfUse
    | FeedInPriority
    | Backup
    | Manual
    | Schedule
)
COMMAND_TYPES: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in Command.__args__)
_MANUAL_MODE: dict[str, Literal[0, 1, 2]] = {"stop": 0, "force_charge": 1, "force_discharge": 2}


_TYPED = wire.decoder(Command)


def decode_command(payload: bytes) -> Command:
    """Parse and validate a control payload in either form; raises BridgeError with the input's class as code.

    A valid typed command decodes in one pass; anything else takes the slower path that tells which
    class of bad input it is, or converts the API-name form.
    """
    try:
        command: Command = _TYPED.decode(payload)
        return command
    except (msgspec.MsgspecError, RecursionError):
        pass
    doc = wire.json_object(payload)
    if "type" in doc:
        return _convert(doc)
    if "superType" in doc:
        return _convert(typed_from_api_names(doc))
    raise BridgeError("validation_error", "missing `type` (one of: " + ", ".join(COMMAND_TYPES) + ")")


def _convert(doc: dict[str, Any]) -> Command:
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in COMMAND_TYPES:
        raise BridgeError("unknown_command", f"unknown command type {kind!r}; known: {', '.join(COMMAND_TYPES)}")
    try:
        command: Command = wire.convert(doc, Command)  # type: ignore[arg-type]
        return command
    except msgspec.ValidationError as exc:
        raise BridgeError("validation_error", _field_message(exc)) from None


def _field_message(exc: msgspec.ValidationError) -> str:
    """msgspec says `... - at `$.period1.charge[0]``; keep it, it names the field path."""
    return str(exc)


# ---- typed command -> API parameters -----------------------------------------------------------------


def _split_time(text: str) -> tuple[int, int]:
    hour, minute = text.split(":")
    return int(hour), int(minute)


def _period_params(period: Period, n: int) -> dict[str, int]:
    d_end = "discharger_end_time1" if n == 1 else "discharge_end_time2"  # the API's own spelling
    names = (f"charge_start_time{n}", f"charge_end_time{n}", f"discharge_start_time{n}", d_end)
    out: dict[str, int] = {}
    for name, text in zip(names, (*period.charge, *period.discharge), strict=True):
        out[f"{name}_hour"], out[f"{name}_minute"] = _split_time(text)
    return out


def to_params(command: Command) -> ControlParams:
    """The API parameters for a command, with the document's quirks (activePower always sent, etc.)."""
    return _TO_PARAMS[type(command)](command)


def _remote(mode: Literal[1, 2, 3], set_type: Literal[1, 2], timeout: int, **fields: Any) -> ControlParams:
    """superType 0 (remote control) in `mode`; `set_type` 2 updates a target already running."""
    return ControlParams(super_type=0, mode=mode, set_type=set_type, timeout=timeout, **fields)


def _power_params(c: PowerControl) -> ControlParams:
    return _remote(1, 1, c.timeout, active_power=c.active_power, reactive_power=c.reactive_power, proid_time=c.duration)


def _energy_params(c: EnergyControl) -> ControlParams:
    return _remote(2, 2 if c.update else 1, c.timeout, target_energy=c.target_energy, charger_power=c.charge_power)


def _soc_params(c: SocControl) -> ControlParams:
    return _remote(3, 2 if c.update else 1, c.timeout, target_soc=c.target_soc, charger_power=c.charge_power)


def _self_use_params(c: SelfUse) -> ControlParams:
    return ControlParams(
        super_type=2,
        mode=0,
        min_soc=c.min_soc,
        charge_from_grid_upper_soc=c.charge_upper_soc,
        charge_from_grid_en=1 if c.charge_from_grid else 0,
    )


def _reserve_params(c: FeedInPriority | Backup) -> ControlParams:
    """Feed-in priority (mode 1) and backup (mode 2): a minimum SOC and the grid-charging ceiling."""
    return ControlParams(
        super_type=2,
        mode=1 if isinstance(c, FeedInPriority) else 2,
        min_soc=c.min_soc,
        charge_from_grid_upper_soc=c.charge_upper_soc,
    )


def _schedule_params(c: Schedule) -> ControlParams:
    """Period 1 always; period 2 only with `p2TimeSetEnable = 1` (0 tells the API to ignore its fields)."""
    fields: dict[str, Any] = _period_params(c.period1, 1)
    fields["p2_time_set_enable"] = 0
    if c.period2 is not None:
        fields.update(_period_params(c.period2, 2))
        fields["p2_time_set_enable"] = 1
    return ControlParams(super_type=2, mode=10, **fields)


_TO_PARAMS: dict[type[Any], Callable[[Any], ControlParams]] = {
    PowerControl: _power_params,
    EnergyControl: _energy_params,
    SocControl: _soc_params,
    ExitRemoteControl: lambda c: ControlParams(super_type=0, mode=0, timeout=c.timeout),
    SystemSwitch: lambda c: ControlParams(super_type=1, system_swich=1 if c.on else 0),
    SelfUse: _self_use_params,
    FeedInPriority: _reserve_params,
    Backup: _reserve_params,
    Manual: lambda c: ControlParams(super_type=2, mode=3, manual_mode=_MANUAL_MODE[c.action]),
    Schedule: _schedule_params,
}
"""One builder per command type; a test checks that every type of the `Command` union has one."""


def is_safety(command: Command) -> bool:
    """Commands that reduce risk and may use the quota's reserve: manual stop, leaving remote control,
    switching the system off."""
    match command:
        case Manual(action="stop") | ExitRemoteControl() | SystemSwitch(on=False):
            return True
    return False


def max_power(command: Command) -> int:
    """The largest absolute power (W or var) the command asks for, for the configured ceiling."""
    match command:
        case PowerControl():
            return max(abs(command.active_power), abs(command.reactive_power))
        case EnergyControl() | SocControl():
            return abs(command.charge_power)
    return 0


def echo(command: Command) -> dict[str, Any]:
    """The command as echoed in state messages: its type and parameters (defaults included), no envelope but
    a batch's `sns` (on `<prefix>/batch/state` they are what tells one batch from another)."""
    doc: dict[str, Any] = msgspec.to_builtins(command)
    for name in ENVELOPE_FIELDS:
        if name != "sns" or not doc.get("sns"):
            doc.pop(name, None)
    return doc
