"""How the simulated server checks control parameters: the document's "Required if" column, enforced.

Types and ranges come from the shared `ControlParams` model (query strings converted leniently, as a Java
server would); which parameters each superType/mode requires is the table in `api/params.py`, which the
bridge applies to vendor-name commands too.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ..api.params import API_NAME_ALIASES, ControlParams, ParamsProblem, check_required

ControlRequest = ControlParams

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
    try:
        check_required(raw)
    except ParamsProblem as exc:
        raise InvalidParams(str(exc)) from None
    if params.super_type == 0 and params.mode == 1 and params.set_type != 1:
        raise InvalidParams("setType must be 1 in power control mode")
    return params
