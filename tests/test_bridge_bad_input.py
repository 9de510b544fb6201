"""Every class of bad input on control topics is `rejected` with a stable code, and the bridge carries on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.broker import Mosquitto, Probe

VALID = {"type": "manual", "action": "stop"}


def group_id(sim: RunningSimulator) -> str:
    return sim.simulator.state.list_groups()[0].id


async def still_works(probe: Probe, gid: str, rid: str) -> None:
    probe.publish(f"vpp/group/{gid}/set", {**VALID, "request_id": rid})
    await probe.wait_status(f"vpp/group/{gid}/state", rid, "completed")


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"{not json", "invalid_json", "JSON"),
        (b"", "invalid_json", "JSON"),
        (b"\xff\xfe\x00", "invalid_json", "JSON"),
        (b'"just a string"', "validation_error", "object"),
        ({"action": "stop"}, "validation_error", "type"),
        ({"type": "warp_drive"}, "unknown_command", "warp_drive"),
        ({"type": 5}, "unknown_command", "5"),
        ({"type": "power_control", "active_power": "lots", "duration": 1, "timeout": 1}, "validation_error", "$.active_power"),
        ({"type": "power_control", "active_power": 70000, "duration": 1, "timeout": 1}, "validation_error", "$.active_power"),
        ({"type": "power_control", "active_power": 1, "duration": -1, "timeout": 1}, "validation_error", "$.duration"),
        ({"type": "soc_control", "target_soc": 101, "charge_power": 1, "timeout": 1}, "validation_error", "$.target_soc"),
        ({"type": "schedule", "period1": {"charge": ["24:00", "01:00"], "discharge": ["02:00", "03:00"]}},
         "validation_error", "$.period1.charge[0]"),
        ({"type": "power_control", "active_power": 1, "duration": 1}, "validation_error", "timeout"),
        ({"type": "manual", "action": "stop", "actoin": "x"}, "validation_error", "actoin"),
        ({"type": "manual", "action": "stop", "sns": ["H1"]}, "validation_error", "$.sns"),
        ({"superType": 0, "mode": 1, "activePower": 5}, "validation_error", "reactivePower"),
        ({"superType": 9}, "validation_error", "superType"),
        ({"type": "manual", "action": "stop", "request_id": "x" * 200}, "validation_error", "$.request_id"),
        ({"type": "manual", "action": "stop", "expires_at": "tomorrow"}, "validation_error", "$.expires_at"),
    ],
)  # fmt: skip
async def test_bad_payload_is_rejected(
    payload: Any, code: str, fragment: str, bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Invalid JSON, wrong types, out-of-range values, unknown fields or types: rejected, field path named."""
    gid = group_id(sim)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid}/set", payload)
        (rejected,) = await probe.wait_for(
            lambda: [s for s in probe.states(f"vpp/group/{gid}/state") if s["status"] == "rejected"]
        )
        assert rejected["error"]["code"] == code and fragment in rejected["error"]["message"]
        await still_works(probe, gid, "after-bad")
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) == 1


async def test_rejection_echoes_a_readable_request_id(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A payload that fails validation but has a request_id is rejected under that request_id."""
    gid = group_id(sim)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid}/set", {"type": "manual", "action": "jump", "request_id": "mine-1"})
        rejected = await probe.wait_status(f"vpp/group/{gid}/state", "mine-1", "rejected")
    assert rejected["error"]["code"] == "validation_error"


async def test_oversized_payload_is_rejected(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """A payload above mqtt.max_payload is rejected as payload_too_large without being parsed."""
    gid = group_id(sim)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid}/set", b'{"type":"manual","action":"stop","pad":"' + b"x" * 70000 + b'"}')
        (rejected,) = await probe.wait_for(lambda: probe.states(f"vpp/group/{gid}/state"))
        assert rejected["status"] == "rejected" and rejected["error"]["code"] == "payload_too_large"
        await still_works(probe, gid, "after-big")


@pytest.mark.parametrize(("topic", "state_topic"), [
    ("vpp/group/not-digits/set", "vpp/group/not-digits/state"),
    ("vpp/inverter/bad sn!/set", "vpp/inverter/bad sn!/state"),
])  # fmt: skip
async def test_bad_target_in_topic_is_rejected(
    topic: str, state_topic: str, bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A group id that is not digits, or an invalid serial number, is rejected on that target's state topic."""
    with Probe(broker.port) as probe:
        probe.publish(topic, VALID)
        (rejected,) = await probe.wait_for(lambda: probe.states(state_topic))
        assert rejected["error"]["code"] == "validation_error"
        await still_works(probe, group_id(sim), "after-topic")


async def test_unknown_topics_are_ignored(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """Topics outside the contract get no answer and do not disturb the bridge."""
    with Probe(broker.port) as probe:
        for topic in ("vpp/group/1/get", "vpp/unknown/set", "other/group/1/set"):
            probe.publish(topic, VALID)
        await still_works(probe, group_id(sim), "after-unknown")
        assert not [m for m in probe.messages if m.topic.endswith("/state") and "after-unknown" not in m.payload.decode()
                    and not m.topic.startswith("vpp/bridge/")]  # fmt: skip


async def test_batch_without_sns_is_rejected(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """The batch topic needs `sns`."""
    with Probe(broker.port) as probe:
        probe.publish("vpp/batch/set", {**VALID, "request_id": "nosns"})
        rejected = await probe.wait_status("vpp/batch/state", "nosns", "rejected")
    assert "$.sns" in rejected["error"]["message"]


async def test_retained_command_is_refused(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """A retained setpoint is never sent (it would replay on every reconnect): rejected, retained_command."""
    gid = group_id(sim)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid}/set", {**VALID, "request_id": "kept"}, retain=True)
        rejected = await probe.wait_status(f"vpp/group/{gid}/state", "kept", "rejected")
        assert rejected["error"]["code"] == "retained_command"
        probe.publish(f"vpp/group/{gid}/set", b"", retain=True)
        await still_works(probe, gid, "after-retained")
        assert [s["status"] for s in probe.states(f"vpp/group/{gid}/state") if s["request_id"] != "after-retained"] == [
            "rejected"
        ]
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) == 1


async def test_a_duplicate_request_id_repeats_the_commands_state_and_sends_nothing(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A repeated request_id, before and after completion and after a restart, is not sent again: the command's
    latest state is published again with `duplicate: true`, not retained; the retained state stays the
    original's."""
    gid = group_id(sim)
    topic = f"vpp/group/{gid}/state"
    service = await make_bridge()
    with Probe(broker.port, subscribe=topic) as probe:
        await still_works(probe, gid, "same")
        probe.publish(f"vpp/group/{gid}/set", {**VALID, "request_id": "same"})
        repeat = await probe.wait_for(lambda: [s for s in probe.states(topic, "same") if s["duplicate"]])
        assert repeat[0]["status"] == "completed" and repeat[0]["command_id"]
    await service.stop()
    await make_bridge()
    with Probe(broker.port, subscribe=topic) as probe:
        probe.publish(f"vpp/group/{gid}/set", {**VALID, "request_id": "same"})
        repeat = await probe.wait_for(lambda: [s for s in probe.states(topic, "same") if s["duplicate"]])
        assert repeat[0]["status"] == "completed"
    with Probe(broker.port, subscribe=topic) as late:
        (retained,) = await late.wait_for(lambda: late.on(topic))
    assert retained.retain and retained.json()["request_id"] == "same" and not retained.json()["duplicate"]
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) == 1


async def test_a_duplicate_of_a_queued_command_is_not_a_second_lifecycle(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A request_id repeated while the command waits for a token: `queued` again with `duplicate: true`, then
    the original's lifecycle goes on, one call in all."""
    gid = group_id(sim)
    topic = f"vpp/group/{gid}/state"
    service = await make_bridge(rate_limit={"rate": 1, "burst": 1})
    await service.limiter.acquire(0)
    with Probe(broker.port, subscribe=topic) as probe:
        probe.publish(f"vpp/group/{gid}/set", {**VALID, "request_id": "twice"})
        probe.publish(f"vpp/group/{gid}/set", {**VALID, "request_id": "twice"})
        await probe.wait_status(topic, "twice", "completed")
        states = probe.states(topic, "twice")
    assert [(s["status"], s["duplicate"]) for s in states][:2] == [("queued", False), ("queued", True)]
    assert [s["status"] for s in states if not s["duplicate"]][-1] == "completed"
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) == 1


@pytest.mark.parametrize("envelope", [{"expires_at": "2020-01-01T00:00:00Z"}, {"ttl": 0.000001}])
async def test_stale_commands_expire_unsent(
    envelope: dict[str, Any], bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """A command past its expires_at (or ttl) is `expired` and never sent."""
    gid = group_id(sim)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid}/set", {**VALID, "request_id": "old", **envelope})
        expired = await probe.wait_status(f"vpp/group/{gid}/state", "old", "expired")
    assert expired["error"]["code"] == "expired" and not sim.simulator.calls_to("/commandapi/groupControl")


async def test_not_allowed_outside_allow_lists_and_power_ceiling(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Groups and inverters outside the allow-lists, and power above the ceiling, are `not_allowed`."""
    groups = sim.simulator.state.list_groups()
    allowed, other = groups[0].id, groups[1].id
    sn = sim.simulator.state.group_members(other)[0].inverter_sn
    await make_bridge(commands={"allow_groups": [allowed], "allow_inverters": ["H0"], "max_abs_power": 5000})
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{other}/set", {**VALID, "request_id": "g"})
        probe.publish(f"vpp/inverter/{sn}/set", {**VALID, "request_id": "i"})
        probe.publish("vpp/batch/set", {**VALID, "sns": ["H0", sn], "request_id": "b"})
        over_ceiling = {
            "p": {"type": "power_control", "active_power": -6000, "duration": 60, "timeout": 1},
            "q": {"type": "power_control", "active_power": 0, "reactive_power": 5001, "duration": 60, "timeout": 1},
            "s": {"type": "soc_control", "target_soc": 80, "charge_power": 5001, "timeout": 1},
            "e": {"type": "energy_control", "target_energy": 100, "charge_power": -6000, "timeout": 1},
        }
        for rid, command in over_ceiling.items():
            probe.publish(f"vpp/group/{allowed}/set", {**command, "request_id": rid})
        targets = [(f"vpp/group/{other}", "g"), (f"vpp/inverter/{sn}", "i"), ("vpp/batch", "b")]
        for topic, rid in targets + [(f"vpp/group/{allowed}", rid) for rid in over_ceiling]:
            rejected = await probe.wait_status(f"{topic}/state", rid, "rejected")
            assert rejected["error"]["code"] == "not_allowed", rid
        await still_works(probe, allowed, "allowed")


async def test_a_setpoint_may_not_outlive_its_controller(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """`duration` above commands.max_duration and `timeout` above commands.max_timeout are `not_allowed`
    before any call, in our field names and in the vendor's (`proidTime`); the limits are named."""
    group = sim.simulator.state.list_groups()[0].id
    await make_bridge(commands={"max_duration": 3600, "max_timeout": 600})
    too_long = {
        "d": {"type": "power_control", "active_power": 100, "duration": 3601, "timeout": 10},
        "t": {"type": "soc_control", "target_soc": 50, "charge_power": 100, "timeout": 601},
        "v": {"superType": 0, "mode": 1, "activePower": 100, "reactivePower": 0, "setType": 1,
              "proidTime": 2**31 - 1, "timeout": 10},
    }  # fmt: skip
    with Probe(broker.port) as probe:
        for rid, command in too_long.items():
            probe.publish(f"vpp/group/{group}/set", {**command, "request_id": rid})
        for rid, limit in (("d", "max_duration"), ("t", "max_timeout"), ("v", "max_duration")):
            rejected = await probe.wait_status(f"vpp/group/{group}/state", rid, "rejected")
            assert rejected["error"]["code"] == "not_allowed" and limit in rejected["error"]["message"], rid
        await still_works(probe, group, "fine")
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) == 1  # only the valid command after them


async def test_dry_run_validates_and_calls_nothing(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """In dry run a valid command is published queued then completed with code dry_run, a management request is
    answered `dry_run`, and the API is not called at all: not for the token check at start, nor the inventory
    that allow-lists and merging would read."""
    gid = group_id(sim)
    await make_bridge(commands={"dry_run": True, "merge": True, "allow_groups": [gid]}, api={"check_token": True})
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{gid}/set", {**VALID, "request_id": "dry"})
        done = await probe.wait_status(f"vpp/group/{gid}/state", "dry", "completed")
        assert [s["status"] for s in probe.states(f"vpp/group/{gid}/state", "dry")] == ["queued", "completed"]
        probe.publish("vpp/bridge/request/group/list", {"transaction": "dry-list"})
        answer = await probe.wait_for(lambda: next((m.json() for m in probe.on("vpp/bridge/response/group/list")
                                                    if m.payload), None))  # fmt: skip
    assert answer["status"] == "error" and answer["error"]["code"] == "dry_run" and answer["transaction"] == "dry-list"
    assert done["error"]["code"] == "dry_run" and not sim.simulator.calls


@pytest.mark.parametrize(("envelope", "expiry"), [({"ttl": 1}, None), ({}, 1)], ids=["ttl", "mqtt5-expiry"])
async def test_queued_command_expires_at_its_ttl_while_waiting_for_a_token(
    envelope: dict[str, Any],
    expiry: int | None,
    make_bridge: Callable[..., Awaitable[Service]],
    broker: Mosquitto,
    sim: RunningSimulator,
) -> None:
    """A command stuck behind the rate limit is `expired` when its ttl or MQTT 5 expiry passes, not sent late."""
    await make_bridge(rate_limit={"rate": 0.1, "burst": 1})
    first, second = (g.id for g in sim.simulator.state.list_groups()[:2])
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{first}/set", {**VALID, "request_id": "takes-the-token"})
        await probe.wait_status(f"vpp/group/{first}/state", "takes-the-token", "accepted")
        probe.publish(f"vpp/group/{second}/set", {**VALID, "request_id": "waits", **envelope}, expiry=expiry)
        expired = await probe.wait_status(f"vpp/group/{second}/state", "waits", "expired", timeout=5)
    assert expired["error"]["code"] == "expired"
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) == 1


async def test_ids_are_ascii_and_unreadable_payloads_are_answered_under_their_request_id(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Arabic-Indic digits in a group id are refused (nothing journaled or sent); a payload nested 5,000 deep
    and one with `ttl: 1e999` are each rejected once, under the request_id they carry."""
    gid = group_id(sim)
    arabic = "".join(chr(0x0660 + int(d)) for d in gid)
    deep = b'{"request_id":"deep","type":"manual","action":"stop","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{arabic}/set", {**VALID, "request_id": "arabic"})
        probe.publish(f"vpp/group/{gid}/set", deep)
        probe.publish(f"vpp/group/{gid}/set", b'{"request_id":"huge-ttl","type":"manual","action":"stop","ttl":1e999}')
        refused = await probe.wait_status(f"vpp/group/{arabic}/state", "arabic", "rejected")
        nested = await probe.wait_status(f"vpp/group/{gid}/state", "deep", "rejected")
        huge = await probe.wait_status(f"vpp/group/{gid}/state", "huge-ttl", "rejected")
        await still_works(probe, gid, "after-odd-input")
        answers = [s for s in probe.states(f"vpp/group/{gid}/state") if s["request_id"] in ("deep", "huge-ttl")]
    assert refused["error"]["code"] == "validation_error" and "digits" in refused["error"]["message"]
    assert nested["error"]["code"] == "validation_error" and huge["error"]["code"] == "invalid_json"
    assert len(answers) == 2
    assert bridge.journal is not None and bridge.journal.get("arabic") is None
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) == 1
