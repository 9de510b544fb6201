"""The one typed model of the control endpoints' parameters, spelled as the API spells them.

single, batch and group control share every parameter except the target; `to_query` renders them
with the document's quirks: `systemSwich` and `systemSwitch` both sent, `proidTime`, `dischargerEndTime1*`.
"""

from __future__ import annotations

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
