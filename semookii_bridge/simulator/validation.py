"""How the simulated server checks control parameters: the document's "Required if" column, enforced.

Types and ranges come from the shared `ControlParams` model (query strings converted leniently, as a Java
server would); which parameters each superType/mode requires is this module's own table.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..api.params import API_NAME_ALIASES, ControlParams

ControlRequest = ControlParams

_PERIOD1 = [
    f"{k}1{u}"
    for k in ("chargeStartTime", "chargeEndTime", "dischargeStartTime", "dischargerEndTime")
    for u in ("Hour", "Minute")
]
_PERIOD2 = [
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
    (2, 10): _PERIOD1,
}

_KNOWN = {f.encode_name for f in msgspec.structs.fields(ControlParams)}


class InvalidParams(Exception):
    """What the server says about a bad request, in its own words."""


def parse_control(query: Mapping[str, str]) -> ControlRequest:
    """Validate the control parameters of a request the way the Cloud API does."""
    raw: dict[str, str] = {}
    for key, value in query.items():
        name = API_NAME_ALIASES.get(key, key)
        if name in _KNOWN and name not in raw:
            raw[name] = value
    if "superType" not in raw:
        raise InvalidParams("Required parameter 'superType' is not present")
    try:
        params = msgspec.convert(raw, ControlParams, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidParams(f"Invalid parameter: {exc}") from None
    mode = None if params.super_type == 1 else params.mode
    if params.super_type != 1 and mode is None:
        raise InvalidParams("Required parameter 'mode' is not present")
    required = REQUIRED.get((params.super_type, mode))
    if required is None:
        raise InvalidParams(f"mode {mode} is not valid for superType {params.super_type}")
    if params.super_type == 2 and mode == 10 and raw.get("p2TimeSetEnable") == "1":
        required = required + _PERIOD2
    missing = [name for name in required if name not in raw]
    if missing:
        raise InvalidParams(f"Required parameter '{missing[0]}' is not present")
    if params.super_type == 0 and mode == 1 and params.set_type != 1:
        raise InvalidParams("setType must be 1 in power control mode")
    return params
