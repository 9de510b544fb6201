"""Control commands in isolation: the rules of each field, both input forms, and the exact API parameters."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from semookii_bridge.control.commands import (
    COMMAND_TYPES,
    MAX_BATCH,
    Command,
    Manual,
    decode_command,
    echo,
    max_power,
    to_params,
)
from semookii_bridge.errors import BridgeError

PERIOD1 = {"charge": ["01:02", "03:04"], "discharge": ["05:06", "07:08"]}
PERIOD2 = {"charge": ["11:12", "13:14"], "discharge": ["15:16", "17:18"]}

# Each typed command and the exact query parameters the API gets for it.
EXPECTED: list[tuple[dict[str, Any], dict[str, str]]] = [
    ({"type": "power_control", "active_power": -3000, "reactive_power": 200, "duration": 600, "timeout": 10},
     {"superType": "0", "mode": "1", "setType": "1", "activePower": "-3000", "reactivePower": "200",
      "proidTime": "600", "timeout": "10"}),
    ({"type": "power_control", "active_power": 5, "duration": 0, "timeout": 0},
     {"superType": "0", "mode": "1", "setType": "1", "activePower": "5", "reactivePower": "0", "proidTime": "0",
      "timeout": "0"}),
    ({"type": "energy_control", "target_energy": 5000, "charge_power": 2000, "timeout": 10},
     {"superType": "0", "mode": "2", "setType": "1", "targetEnergy": "5000", "chargerPower": "2000", "timeout": "10"}),
    ({"type": "energy_control", "target_energy": 1, "charge_power": -2, "timeout": 3, "update": True},
     {"superType": "0", "mode": "2", "setType": "2", "targetEnergy": "1", "chargerPower": "-2", "timeout": "3"}),
    ({"type": "soc_control", "target_soc": 80, "charge_power": 3000, "timeout": 10},
     {"superType": "0", "mode": "3", "setType": "1", "targetSoc": "80", "chargerPower": "3000", "timeout": "10"}),
    ({"type": "soc_control", "target_soc": 0, "charge_power": -1, "timeout": 2, "update": True},
     {"superType": "0", "mode": "3", "setType": "2", "targetSoc": "0", "chargerPower": "-1", "timeout": "2"}),
    ({"type": "exit_remote_control"}, {"superType": "0", "mode": "0", "timeout": "0"}),
    ({"type": "exit_remote_control", "timeout": 30}, {"superType": "0", "mode": "0", "timeout": "30"}),
    ({"type": "system_switch", "on": True}, {"superType": "1", "systemSwich": "1", "systemSwitch": "1"}),
    ({"type": "system_switch", "on": False}, {"superType": "1", "systemSwich": "0", "systemSwitch": "0"}),
    ({"type": "self_use", "min_soc": 10, "charge_upper_soc": 90, "charge_from_grid": True},
     {"superType": "2", "mode": "0", "minSoc": "10", "chargeFromGridUpperSoC": "90", "chargeFromGridEN": "1"}),
    ({"type": "self_use", "min_soc": 11, "charge_upper_soc": 91, "charge_from_grid": False},
     {"superType": "2", "mode": "0", "minSoc": "11", "chargeFromGridUpperSoC": "91", "chargeFromGridEN": "0"}),
    ({"type": "feed_in_priority", "min_soc": 15, "charge_upper_soc": 95},
     {"superType": "2", "mode": "1", "minSoc": "15", "chargeFromGridUpperSoC": "95"}),
    ({"type": "backup", "min_soc": 30, "charge_upper_soc": 100},
     {"superType": "2", "mode": "2", "minSoc": "30", "chargeFromGridUpperSoC": "100"}),
    ({"type": "manual", "action": "stop"}, {"superType": "2", "mode": "3", "manualMode": "0"}),
    ({"type": "manual", "action": "force_charge"}, {"superType": "2", "mode": "3", "manualMode": "1"}),
    ({"type": "manual", "action": "force_discharge"}, {"superType": "2", "mode": "3", "manualMode": "2"}),
    ({"type": "schedule", "period1": PERIOD1},
     {"superType": "2", "mode": "10", "p2TimeSetEnable": "0",
      "chargeStartTime1Hour": "1", "chargeStartTime1Minute": "2", "chargeEndTime1Hour": "3",
      "chargeEndTime1Minute": "4", "dischargeStartTime1Hour": "5", "dischargeStartTime1Minute": "6",
      "dischargerEndTime1Hour": "7", "dischargerEndTime1Minute": "8"}),
    ({"type": "schedule", "period1": PERIOD1, "period2": PERIOD2},
     {"superType": "2", "mode": "10", "p2TimeSetEnable": "1",
      "chargeStartTime1Hour": "1", "chargeStartTime1Minute": "2", "chargeEndTime1Hour": "3",
      "chargeEndTime1Minute": "4", "dischargeStartTime1Hour": "5", "dischargeStartTime1Minute": "6",
      "dischargerEndTime1Hour": "7", "dischargerEndTime1Minute": "8",
      "chargeStartTime2Hour": "11", "chargeStartTime2Minute": "12", "chargeEndTime2Hour": "13",
      "chargeEndTime2Minute": "14", "dischargeStartTime2Hour": "15", "dischargeStartTime2Minute": "16",
      "dischargeEndTime2Hour": "17", "dischargeEndTime2Minute": "18"}),
]  # fmt: skip


def decode(doc: dict[str, Any]) -> Command:
    return decode_command(json.dumps(doc).encode())


def refusal(doc: dict[str, Any] | bytes) -> BridgeError:
    with pytest.raises(BridgeError) as info:
        decode_command(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return info.value


def api_form(query: dict[str, str]) -> dict[str, Any]:
    """The API-name payload an operator would write for these parameters (numbers, not strings)."""
    return {k: int(v) for k, v in query.items() if k != "systemSwitch"}


def test_every_command_type_has_an_expected_mapping() -> None:
    """The table below covers every command type."""
    assert {doc["type"] for doc, _ in EXPECTED} == set(COMMAND_TYPES)


@pytest.mark.parametrize(("doc", "query"), EXPECTED)
def test_typed_command_maps_to_the_exact_api_parameters(doc: dict[str, Any], query: dict[str, str]) -> None:
    """Each typed command becomes exactly the parameters of the vendor's document, nothing more."""
    assert to_params(decode(doc)).to_query() == query


@pytest.mark.parametrize(("doc", "query"), EXPECTED)
def test_api_name_form_decodes_to_the_same_command(doc: dict[str, Any], query: dict[str, str]) -> None:
    """The vendor's own parameter names describe the same command as the typed form."""
    assert decode(api_form(query)) == decode(doc)


def test_api_name_form_keeps_the_envelope() -> None:
    """request_id, ttl and expires_at travel beside the API names."""
    command = decode({"superType": 2, "mode": 3, "manualMode": 0, "request_id": "r", "ttl": 5})
    assert command == Manual(action="stop", request_id="r", ttl=5)


def test_api_name_form_takes_either_system_switch_spelling() -> None:
    """`systemSwitch` (the examples' spelling) is read like `systemSwich` (the tables')."""
    assert decode({"superType": 1, "systemSwitch": 1}) == decode({"type": "system_switch", "on": True})
    assert decode({"superType": 1, "systemSwich": 0}) == decode({"type": "system_switch", "on": False})


@pytest.mark.parametrize(
    ("doc", "missing"),
    [({"superType": 1}, "systemSwich"), ({"superType": 0}, "mode"),
     ({"superType": 0, "mode": 1, "activePower": 1, "reactivePower": 0, "setType": 1, "proidTime": 5}, "timeout"),
     ({"superType": 0, "mode": 1, "reactivePower": 0, "proidTime": 5, "timeout": 1}, "activePower"),
     ({"superType": 0, "mode": 2, "setType": 1, "chargerPower": 1, "timeout": 1}, "targetEnergy"),
     ({"superType": 0, "mode": 3, "setType": 1, "targetSoc": 1, "timeout": 1}, "chargerPower"),
     ({"superType": 2, "mode": 0, "minSoc": 1, "chargeFromGridUpperSoC": 2}, "chargeFromGridEN"),
     ({"superType": 2, "mode": 1, "chargeFromGridUpperSoC": 2}, "minSoc"),
     ({"superType": 2, "mode": 3}, "manualMode"),
     ({**api_form(EXPECTED[-1][1]), "dischargeEndTime2Minute": None}, "dischargeEndTime2Minute"),
     ({**api_form(EXPECTED[-2][1]), "dischargerEndTime1Hour": None}, "dischargerEndTime1Hour")],
)  # fmt: skip
def test_api_name_form_names_the_first_missing_field(doc: dict[str, Any], missing: str) -> None:
    """A required API parameter left out is refused with its API name."""
    error = refusal({k: v for k, v in doc.items() if v is not None})
    assert error.code == "validation_error" and f"`{missing}`" in error.message


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [({"superType": 0, "mode": 10}, "mode 10 is not valid for superType 0 - at `$.mode`"),
     ({"superType": 0}, "Object missing required field `mode`"),
     ({"superType": 2, "mode": 4}, "$.mode"), ({"superType": 3}, "superType"),
     ({"superType": 0, "mode": 1, "setType": 2, "activePower": 1, "reactivePower": 0, "proidTime": 5, "timeout": 1},
      "setType must be 1 in power control - at `$.setType`"),
     ({"superType": 0, "mode": 1, "activePower": 70000, "reactivePower": 0, "proidTime": 5, "timeout": 1},
      "activePower"),
     ({"superType": 1, "systemSwich": 1, "colour": 3}, "colour")],
)  # fmt: skip
def test_api_name_form_refuses_what_the_document_does_not_allow(doc: dict[str, Any], fragment: str) -> None:
    """Invalid modes, power-control setType 2, out-of-range and unknown parameters are refused."""
    error = refusal(doc)
    assert error.code == "validation_error" and fragment in error.message


def test_api_name_form_refuses_period2_fields_without_their_switch() -> None:
    """Period-2 times with p2TimeSetEnable = 0 (or absent) are refused, naming the first such field."""
    for switch in ("0", None):
        query = {k: v for k, v in dict(EXPECTED[-1][1], p2TimeSetEnable=switch).items() if v is not None}
        error = refusal(api_form(query))
        assert error.code == "validation_error" and "`chargeStartTime2Hour`" in error.message


def test_energy_control_update_comes_from_set_type_two() -> None:
    """In the API-name form, setType 2 is `update: true` and setType 1 false; without setType (required for
    mode 2 by the document) it is refused rather than defaulted."""
    base = {"superType": 0, "mode": 2, "targetEnergy": 1, "chargerPower": 1, "timeout": 1}
    assert decode({**base, "setType": 2}) == decode({"type": "energy_control", "target_energy": 1, "charge_power": 1,
                                                     "timeout": 1, "update": True})  # fmt: skip
    assert decode({**base, "setType": 1}) == decode({"type": "energy_control", "target_energy": 1,
                                                     "charge_power": 1, "timeout": 1})  # fmt: skip
    assert "`setType`" in refusal(base).message


# ---- field rules -----------------------------------------------------------------------------------

POWER = {"type": "power_control", "active_power": 0, "duration": 1, "timeout": 1}


@pytest.mark.parametrize(
    "fields",
    [{"active_power": 65535}, {"active_power": -65535}, {"reactive_power": 65535}, {"duration": 2**31 - 1},
     {"timeout": 0}, {"request_id": "r" * 128}, {"request_id": "~!"}, {"ttl": 7 * 86400}, {"ttl": 0.001},
     {"expires_at": "2030-01-01T00:00:00+01:00"}],
)  # fmt: skip
def test_edge_values_are_accepted(fields: dict[str, Any]) -> None:
    """The largest and smallest valid values pass."""
    decode({**POWER, **fields})


@pytest.mark.parametrize(
    ("fields", "path"),
    [({"active_power": 65536}, "$.active_power"), ({"active_power": -65536}, "$.active_power"),
     ({"reactive_power": 65536}, "$.reactive_power"), ({"duration": 2**31}, "$.duration"),
     ({"timeout": -1}, "$.timeout"), ({"request_id": "r" * 129}, "$.request_id"),
     ({"request_id": ""}, "$.request_id"), ({"request_id": "a b"}, "$.request_id"),
     ({"ttl": 0}, "$.ttl"), ({"ttl": 7 * 86400 + 1}, "$.ttl"), ({"expires_at": "2030-01-01T00:00:00"}, "$.expires_at"),
     ({"active_power": 1.5}, "$.active_power"), ({"active_power": True}, "$.active_power")],
)  # fmt: skip
def test_values_past_the_edges_are_refused(fields: dict[str, Any], path: str) -> None:
    """One step past each edge is refused, naming the field."""
    error = refusal({**POWER, **fields})
    assert error.code == "validation_error" and path in error.message


@pytest.mark.parametrize(
    ("doc", "path"),
    [({"type": "soc_control", "target_soc": 101, "charge_power": 1, "timeout": 1}, "$.target_soc"),
     ({"type": "soc_control", "target_soc": -1, "charge_power": 1, "timeout": 1}, "$.target_soc"),
     ({"type": "energy_control", "target_energy": -1, "charge_power": 1, "timeout": 1}, "$.target_energy"),
     ({"type": "self_use", "min_soc": 0, "charge_upper_soc": 101, "charge_from_grid": True}, "$.charge_upper_soc"),
     ({"type": "manual", "action": "jump"}, "$.action"),
     ({"type": "schedule", "period1": {"charge": ["24:00", "01:00"], "discharge": ["02:00", "03:00"]}},
      "$.period1.charge[0]"),
     ({"type": "schedule", "period1": {"charge": ["23:60", "01:00"], "discharge": ["02:00", "03:00"]}},
      "$.period1.charge[0]"),
     ({"type": "schedule", "period1": {"charge": ["1:00", "01:00"], "discharge": ["02:00", "03:00"]}},
      "$.period1.charge[0]"),
     ({"type": "schedule", "period1": {"charge": ["01:00"], "discharge": ["02:00", "03:00"]}}, "$.period1.charge"),
     ({"type": "manual", "action": "stop", "sns": []}, "$.sns"),
     ({"type": "manual", "action": "stop", "sns": ["H 1"]}, "$.sns[0]"),
     ({"type": "manual", "action": "stop", "sns": ["H" * 65]}, "$.sns[0]")],
)  # fmt: skip
def test_command_fields_are_checked(doc: dict[str, Any], path: str) -> None:
    """Ranges, clock times, actions and serial numbers are checked with the field path named."""
    error = refusal(doc)
    assert error.code == "validation_error" and path in error.message


def test_schedule_accepts_the_day_edges() -> None:
    """00:00 and 23:59 are valid clock times."""
    decode({"type": "schedule", "period1": {"charge": ["00:00", "23:59"], "discharge": ["19:09", "20:50"]}})


def test_batch_size_limit() -> None:
    """A batch holds at most MAX_BATCH serial numbers."""
    sns = [f"H{i}" for i in range(MAX_BATCH)]
    assert decode({"type": "manual", "action": "stop", "sns": sns}).sns == sns
    assert refusal({"type": "manual", "action": "stop", "sns": [*sns, "X"]}).code == "validation_error"


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [(b"{", "invalid_json", "not valid JSON"), (b"[]", "validation_error", "JSON object"),
     (b'{"action":"stop"}', "validation_error",
      "missing `type` (one of: power_control, energy_control, soc_control, exit_remote_control, system_switch, "
      "self_use, feed_in_priority, backup, manual, schedule)"),
     (b'{"type":"warp"}', "unknown_command", "unknown command type 'warp'; known: power_control, energy_control, "),
     (b'{"type":7}', "unknown_command", "known: power_control"),
     (b'{"type":"manual","action":"stop","x":1}', "validation_error", "x")],
)  # fmt: skip
def test_each_class_of_bad_payload_has_its_code(payload: bytes, code: str, fragment: str) -> None:
    """Not JSON, not an object, no type, unknown type, unknown field: each has its own code."""
    error = refusal(payload)
    assert error.code == code and fragment in error.message


# ---- what the bridge reads from a command ----------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "power"),
    [({"type": "power_control", "active_power": -3000, "reactive_power": 100, "duration": 1, "timeout": 1}, 3000),
     ({"type": "power_control", "active_power": 10, "reactive_power": -4000, "duration": 1, "timeout": 1}, 4000),
     ({"type": "energy_control", "target_energy": 9999, "charge_power": -2500, "timeout": 1}, 2500),
     ({"type": "soc_control", "target_soc": 90, "charge_power": 2600, "timeout": 1}, 2600),
     ({"type": "manual", "action": "force_discharge"}, 0), ({"type": "system_switch", "on": True}, 0)],
)  # fmt: skip
def test_max_power_is_the_largest_absolute_power_field(doc: dict[str, Any], power: int) -> None:
    """The ceiling check reads active, reactive and charge power, as absolute values."""
    assert max_power(decode(doc)) == power


def test_echo_is_the_command_without_its_envelope() -> None:
    """State messages echo type and parameters, defaults included, without request_id, ttl or expires_at; a
    batch's sns are echoed (they tell one batch from another on the one batch state topic)."""
    command = decode({**POWER, "request_id": "r", "ttl": 5, "expires_at": "2030-01-01T00:00:00Z", "sns": ["A"]})
    assert echo(command) == {"type": "power_control", "active_power": 0, "reactive_power": 0, "duration": 1,
                             "timeout": 1, "sns": ["A"]}  # fmt: skip
    assert "sns" not in echo(decode({**POWER, "request_id": "r"}))


def test_typed_commands_round_trip_through_the_journal_encoding() -> None:
    """A command encoded for the journal decodes to the same command."""
    for doc, _ in EXPECTED:
        command = decode(doc)
        assert decode_command(msgspec.json.encode(command)) == command


@pytest.mark.parametrize(
    ("doc", "field"),
    [({"superType": 0, "mode": 1, "activePower": 1, "reactivePower": 0, "setType": 1, "proidTime": 5}, "timeout"),
     ({"superType": 0, "mode": 1, "activePower": 1, "reactivePower": 0, "proidTime": 5, "timeout": 1}, "setType"),
     ({"superType": 0, "mode": 0}, "timeout"),
     ({"superType": 0, "mode": 3, "targetSoc": 1, "chargerPower": 1, "timeout": 1}, "setType")],
)  # fmt: skip
def test_api_name_form_fills_in_no_required_field(doc: dict[str, Any], field: str) -> None:
    """Each field the document marks required for the superType/mode must be given: none is defaulted."""
    error = refusal(doc)
    assert error.code == "validation_error" and f"`{field}`" in error.message


def test_api_name_form_refuses_two_spellings_that_disagree() -> None:
    """`systemSwich: 1` with `systemSwitch: 0` is refused (which one did the sender mean?); agreeing is fine."""
    error = refusal({"superType": 1, "systemSwich": 1, "systemSwitch": 0})
    assert error.code == "validation_error" and "`systemSwitch`" in error.message
    assert decode({"superType": 1, "systemSwich": 1, "systemSwitch": 1}) == decode(
        {"type": "system_switch", "on": True}
    )


def test_the_simulator_and_the_bridge_apply_one_table() -> None:
    """A vendor-name command the bridge refuses for a missing field, the simulator refuses for the same field."""
    from semookii_bridge.simulator.validation import InvalidParams, parse_control

    doc = {"superType": 0, "mode": 1, "activePower": 1, "reactivePower": 0, "proidTime": 5, "timeout": 1}
    assert "`setType`" in refusal(dict(doc)).message
    with pytest.raises(InvalidParams, match="setType"):
        parse_control({k: str(v) for k, v in doc.items()})


def test_every_command_type_has_a_parameter_builder() -> None:
    """Each type of the Command union has its own builder in to_params' table (a new type without one fails)."""
    import typing

    from semookii_bridge.control import commands

    assert set(typing.get_args(commands.Command)) == set(commands._TO_PARAMS)
