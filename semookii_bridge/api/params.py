"""The one typed model of the control endpoints' parameters, spelled as the API spells them.

single, batch and group control share every parameter except the target; `to_query` renders them
with the document's quirks: `systemSwich` and `systemSwitch` both sent, `proidTime`, `dischargerEndTime1*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

Int16 = Annotated[int, msgspec.Meta(ge=-65535, le=65535)]
NonNeg = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
Hour = Annotated[int, msgspec.Meta(ge=0, le=23)]
Minute = Annotated[int, msgspec.Meta(ge=0, le=59)]
Flag = Literal[0, 1]


class ControlParams(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True, rename="camel"):
    """Parameters of singleControl / batchTempControl / groupControl (target and token excluded)."""

    super_type: Literal[0, 1, 2]
    mode: Literal[0, 1, 2, 3, 10] | None = None
    system_swich: Flag | None = None
    active_power: Int16 | None = None
    reactive_power: Int16 | None = None
    set_type: Literal[1, 2] | None = None
    target_energy: NonNeg | None = None
    target_soc: Percent | None = None
    charger_power: Int16 | None = None
    proid_time: NonNeg | None = None
    timeout: NonNeg | None = None
    charge_from_grid_en: Flag | None = msgspec.field(default=None, name="chargeFromGridEN")
    min_soc: Percent | None = None
    charge_from_grid_upper_soc: Percent | None = msgspec.field(default=None, name="chargeFromGridUpperSoC")
    manual_mode: Literal[0, 1, 2] | None = None
    charge_start_time1_hour: Hour | None = None
    charge_start_time1_minute: Minute | None = None
    charge_end_time1_hour: Hour | None = None
    charge_end_time1_minute: Minute | None = None
    discharge_start_time1_hour: Hour | None = None
    discharge_start_time1_minute: Minute | None = None
    discharger_end_time1_hour: Hour | None = None
    discharger_end_time1_minute: Minute | None = None
    p2_time_set_enable: Flag | None = None
    charge_start_time2_hour: Hour | None = None
    charge_start_time2_minute: Minute | None = None
    charge_end_time2_hour: Hour | None = None
    charge_end_time2_minute: Minute | None = None
    discharge_start_time2_hour: Hour | None = None
    discharge_start_time2_minute: Minute | None = None
    discharge_end_time2_hour: Hour | None = None
    discharge_end_time2_minute: Minute | None = None

    def to_query(self) -> dict[str, str]:
        """Query-string parameters in the API's spelling; unset parameters are left out."""
        query = {k: str(v) for k, v in msgspec.to_builtins(self).items()}
        if "systemSwich" in query:
            # The tables say systemSwich, the examples systemSwitch: send both.
            query["systemSwitch"] = query["systemSwich"]
        return query


API_NAME_ALIASES: dict[str, str] = {"systemSwitch": "systemSwich"}
"""Alternative spellings from the document's examples, mapped to the field name used by ControlParams."""

PERIOD1 = [
    f"{k}1{u}"
    for k in ("chargeStartTime", "chargeEndTime", "dischargeStartTime", "dischargerEndTime")
    for u in ("Hour", "Minute")
]
PERIOD2 = [
    f"{k}2{u}"
    for k in ("chargeStartTime", "chargeEndTime", "dischargeStartTime", "dischargeEndTime")
    for u in ("Hour", "Minute")
]
_SOC_PAIR = ["minSoc", "chargeFromGridUpperSoC"]

REQUIRED: dict[tuple[int, int | None], list[str]] = {
    (0, 0): ["timeout"],
    (0, 1): ["activePower", "reactivePower", "setType", "proidTime", "timeout"],
    (0, 2): ["setType", "targetEnergy", "chargerPower", "timeout"],
    (0, 3): ["setType", "targetSoc", "chargerPower", "timeout"],
    (1, None): ["systemSwich"],
    (2, 0): ["chargeFromGridEN", *_SOC_PAIR],
    (2, 1): _SOC_PAIR,
    (2, 2): _SOC_PAIR,
    (2, 3): ["manualMode"],
    (2, 10): PERIOD1,
}
"""The document's "Required if" column: the parameters each superType/mode needs (1: no mode). Shared by
the bridge, which refuses a vendor-name command missing one, and the simulator, which refuses the call."""


class ParamsProblem(ValueError):
    """A rule of the document that a set of control parameters breaks: `kind` is missing, invalid or
    switch (a field given without the switch it needs); `field` names the parameter."""

    def __init__(self, message: str, field: str, kind: str) -> None:
        super().__init__(message)
        self.field = field
        self.kind = kind


def check_required(given: Mapping[str, object]) -> None:
    """Apply the document's rules to parameters in the API's spelling (aliases already mapped): every
    parameter required for the superType/mode is present, and period 2 only with p2TimeSetEnable = 1."""
    super_type = _int(given.get("superType"))
    mode = None if super_type == 1 else _int(given.get("mode"))
    if super_type != 1 and mode is None:
        raise ParamsProblem("Required parameter 'mode' is not present", "mode", "missing")
    required = REQUIRED.get((super_type if super_type is not None else -1, mode))
    if required is None:
        raise ParamsProblem(f"mode {mode} is not valid for superType {super_type}", "mode", "invalid")
    switched = str(given.get("p2TimeSetEnable", "0")) == "1"
    if (super_type, mode) == (2, 10) and switched:
        required = required + PERIOD2
    missing = [name for name in required if name not in given]
    if missing:
        raise ParamsProblem(f"Required parameter '{missing[0]}' is not present", missing[0], "missing")
    stray = [name for name in PERIOD2 if name in given and not switched]
    if stray:
        raise ParamsProblem(f"'{stray[0]}' needs p2TimeSetEnable = 1", stray[0], "switch")


def spelling_conflict(given: Mapping[str, object]) -> str | None:
    """An alternative spelling given beside the table's name with a different value (which to believe?)."""
    for alias, name in API_NAME_ALIASES.items():
        if alias in given and name in given and str(given[alias]) != str(given[name]):
            return alias
    return None


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None
