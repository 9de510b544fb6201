"""The second input form: a command in the API's own names (`{"superType": 0, "mode": 1, "activePower": ...}`),
read back into the typed form (`commands.py`) so that both forms pass the same rules."""

from __future__ import annotations

from typing import Any

import msgspec

from ..api.params import API_NAME_ALIASES, ControlParams, ParamsProblem, check_required, spelling_conflict
from ..errors import BridgeError

ENVELOPE_FIELDS = ("request_id", "ttl", "expires_at", "sns", "track")
"""Fields of the bridge's own, not the API's: kept as they are."""
_MANUAL = ("stop", "force_charge", "force_discharge")


def typed_from_api_names(doc: dict[str, Any]) -> dict[str, Any]:
    """The typed form (as builtins, with the envelope fields kept) of a command in the vendor's parameter names,
    held to the document's rules: nothing required is filled in, two spellings of one field must agree, and
    period 2 needs its switch. `doc` is consumed."""
    envelope = {k: doc.pop(k) for k in ENVELOPE_FIELDS if k in doc}
    conflict = spelling_conflict(doc)
    if conflict is not None:
        name = API_NAME_ALIASES[conflict]
        raise BridgeError("validation_error", f"`{conflict}` and `{name}` disagree - at `$.{conflict}`")
    for alias, name in API_NAME_ALIASES.items():
        if alias in doc:
            doc.setdefault(name, doc.pop(alias))
    try:
        params = msgspec.convert(doc, ControlParams)
    except msgspec.ValidationError as exc:
        raise BridgeError("validation_error", str(exc)) from None
    try:
        check_required(doc)
    except ParamsProblem as exc:
        raise BridgeError("validation_error", _rule_message(exc)) from None
    return {**_typed_from_params(params), **envelope}


def _rule_message(problem: ParamsProblem) -> str:
    """The bridge's words for a broken document rule, naming the field."""
    field = problem.field
    if problem.kind == "missing":
        return f"Object missing required field `{field}`"
    if problem.kind == "switch":
        return f"`{field}` is only valid with `p2TimeSetEnable` = 1 - at `$.{field}`"
    return f"{problem} - at `$.{field}`"


_API_NAME = {f.name: f.encode_name for f in msgspec.structs.fields(ControlParams)}


def _need(params: ControlParams, *names: str) -> list[Any]:
    values = [getattr(params, n) for n in names]
    missing = [_API_NAME[n] for n, v in zip(names, values, strict=True) if v is None]
    if missing:
        raise BridgeError("validation_error", f"Object missing required field `{missing[0]}`")
    return values


def _hhmm(hour: int, minute: int) -> str:
    return f"{hour:02d}:{minute:02d}"


def _period(p: ControlParams, n: int) -> dict[str, list[str]]:
    d_end = "discharger_end_time1" if n == 1 else "discharge_end_time2"
    names = [f"charge_start_time{n}", f"charge_end_time{n}", f"discharge_start_time{n}", d_end]
    values = _need(p, *[f"{name}_{unit}" for name in names for unit in ("hour", "minute")])
    times = [_hhmm(values[i], values[i + 1]) for i in range(0, 8, 2)]
    return {"charge": times[0:2], "discharge": times[2:4]}


def _typed_from_params(p: ControlParams) -> dict[str, Any]:
    """The typed command (as builtins) that an API-form payload describes."""
    st, mode = p.super_type, p.mode
    if st == 1:
        (switch,) = _need(p, "system_swich")
        return {"type": "system_switch", "on": bool(switch)}
    if mode is None:
        raise BridgeError("validation_error", "Object missing required field `mode`")
    typed = _remote_from_params(p, mode) if st == 0 else _mode_from_params(p, mode) if st == 2 else None
    if typed is None:
        raise BridgeError("validation_error", f"mode {mode} is not valid for superType {st} - at `$.mode`")
    return typed


def _remote_from_params(p: ControlParams, mode: int) -> dict[str, Any] | None:
    """superType 0 (remote control): exit (0), power (1), energy (2) or SOC (3) control; None otherwise."""
    if mode == 0:
        return {"type": "exit_remote_control", "timeout": p.timeout or 0}
    if mode == 1:
        active, reactive, duration, timeout = _need(p, "active_power", "reactive_power", "proid_time", "timeout")
        if p.set_type not in (None, 1):
            raise BridgeError("validation_error", "setType must be 1 in power control - at `$.setType`")
        return {
            "type": "power_control",
            "active_power": active,
            "reactive_power": reactive,
            "duration": duration,
            "timeout": timeout,
        }
    if mode in (2, 3):
        target_name = "target_energy" if mode == 2 else "target_soc"
        target, power, timeout = _need(p, target_name, "charger_power", "timeout")
        kind = "energy_control" if mode == 2 else "soc_control"
        return {"type": kind, target_name: target, "charge_power": power, "timeout": timeout, "update": p.set_type == 2}
    return None


def _mode_from_params(p: ControlParams, mode: int) -> dict[str, Any] | None:
    """superType 2 (working mode): self-use, feed-in priority, backup, manual or schedule; None otherwise."""
    if mode in (0, 1, 2):
        min_soc, upper = _need(p, "min_soc", "charge_from_grid_upper_soc")
        out: dict[str, Any] = {
            "type": ("self_use", "feed_in_priority", "backup")[mode],
            "min_soc": min_soc,
            "charge_upper_soc": upper,
        }
        if mode == 0:
            (grid,) = _need(p, "charge_from_grid_en")
            out["charge_from_grid"] = bool(grid)
        return out
    if mode == 3:
        (manual,) = _need(p, "manual_mode")
        return {"type": "manual", "action": _MANUAL[manual]}
    if mode == 10:
        out = {"type": "schedule", "period1": _period(p, 1)}
        if p.p2_time_set_enable == 1:
            out["period2"] = _period(p, 2)
        return out
    return None
