"""The Sparkplug B edge node's logic without a broker: codec, seq and bdSeq, device writes, births."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from semookii_bridge import config as bridge_config
from semookii_bridge.interface.payloads import Incoming
from semookii_bridge.interface.topics import Target
from semookii_bridge.mqtt.client import Will
from semookii_bridge.sparkplug.codec import DataType, Metric, PayloadError, decode, encode, fits
from semookii_bridge.sparkplug.devices import Device, Refusal, target_of
from semookii_bridge.sparkplug.edge import EdgeNode
from semookii_bridge.sparkplug.session import Sequence, Store

GROUP = "1028902640000001234"


# ---- codec ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "value"),
    [(DataType.Int32, -2000), (DataType.Int32, 2**31 - 1), (DataType.Int8, -128), (DataType.Int64, -(2**63)),
     (DataType.UInt32, 2**32 - 1), (DataType.UInt64, 2**64 - 1), (DataType.Boolean, True), (DataType.String, "x"),
     (DataType.DateTime, 1_795_000_000_000), (DataType.Double, -1.5), (DataType.String, None)],
)  # fmt: skip
def test_values_survive_a_round_trip(datatype: DataType, value: Any) -> None:
    """Each data type decodes to the value encoded, negative integers and nulls included."""
    (metric,) = decode(encode([Metric("m", datatype, value)], timestamp=1, seq=3)).metrics
    assert (metric.datatype, metric.value) == (datatype, value)


def test_an_int32_sent_in_long_value_is_read_signed() -> None:
    """A peer that puts a negative Int32 in long_value (64-bit two's complement) is read correctly too."""
    from semookii_bridge.sparkplug import sparkplug_b_pb2 as pb

    payload = pb.Payload(timestamp=1)
    metric = payload.metrics.add(name="Setpoint/ActivePower", datatype=3)
    metric.long_value = (-2000) & 0xFFFF_FFFF_FFFF_FFFF
    assert decode(payload.SerializeToString()).metrics[0].value == -2000


def test_garbage_is_a_payload_error() -> None:
    """Bytes that are not a Sparkplug payload raise PayloadError, not a protobuf exception."""
    with pytest.raises(PayloadError):
        decode(b"\xff\xff\xff\xff")


def test_ndeath_carries_no_seq() -> None:
    """`seq=None` leaves the field out, as NDEATH requires."""
    assert decode(encode([Metric("bdSeq", DataType.Int64, 4)], timestamp=1, seq=None)).seq is None


@pytest.mark.parametrize(
    ("datatype", "value", "ok"),
    [(DataType.Int32, 2**31, False), (DataType.Int32, -(2**31), True), (DataType.UInt32, -1, False),
     (DataType.Int32, True, False), (DataType.Int32, 1.5, False), (DataType.String, 3, False)],
)  # fmt: skip
def test_fits_checks_range_and_kind(datatype: DataType, value: Any, ok: bool) -> None:
    """A value must be of the metric's kind and within its range (a bool is not an integer)."""
    assert fits(datatype, value) is ok


# ---- seq and bdSeq --------------------------------------------------------------------------------------


def test_seq_starts_at_zero_in_the_birth_and_wraps_after_255() -> None:
    """NBIRTH has 0, the next messages 1..255, then 0 again; a new birth starts over."""
    seq = Sequence()
    assert seq.reset() == 0
    taken = [seq.take() for _ in range(256)]
    assert taken[0] == 1 and taken[254] == 255 and taken[255] == 0
    assert seq.reset() == 0 and seq.take() == 1


def test_bd_seq_increases_across_restarts_and_wraps(tmp_path: Path) -> None:
    """Each connect takes the next bdSeq, kept on disk: a new process goes on from the last; 255 -> 0."""
    path = tmp_path / "spb.json"
    assert [Store(path).next_bd_seq() for _ in range(3)] == [0, 1, 2]
    path.write_text(json.dumps({"bd_seq": 255}))
    assert Store(path).next_bd_seq() == 0


def test_an_unreadable_store_starts_afresh(tmp_path: Path) -> None:
    """A corrupt state file is logged and replaced, not a crash."""
    path = tmp_path / "spb.json"
    path.write_text("{not json")
    assert Store(path).next_bd_seq() == 0 and json.loads(path.read_text())["bd_seq"] == 0


# ---- device writes ----------------------------------------------------------------------------------------


def device() -> Device:
    return Device(Target("group", GROUP), {"reactive_power": 0, "duration": 900, "timeout": 60})


def write(dev: Device, *metrics: Metric) -> Any:
    return dev.write(metrics, 1000)


def test_active_power_sends_power_control_with_the_stored_settings() -> None:
    """A setpoint write becomes a power_control on the group's /set topic with ReactivePower, Duration and
    Timeout as last written."""
    dev = device()
    assert write(dev, Metric("Setpoint/Duration", DataType.UInt32, 1800)) != ([], [])
    sends, changed = write(dev, Metric("Setpoint/ActivePower", DataType.Int32, -2000))
    doc = json.loads(sends[0].payload)
    assert sends[0].target == Target("group", GROUP) and doc["type"] == "power_control"
    assert (doc["active_power"], doc["duration"], doc["timeout"], doc["reactive_power"]) == (-2000, 1800, 60, 0)
    assert doc["request_id"].startswith("spb-") and [m.name for m in changed] == ["Setpoint/ActivePower"]


def test_settings_alone_are_stored_and_reported_not_sent() -> None:
    """Writing Duration, Timeout or ReactivePower sends nothing and reports the new values."""
    sends, changed = write(device(), Metric("Setpoint/Timeout", DataType.UInt32, 30))
    assert sends == [] and [(m.name, m.value) for m in changed] == [("Setpoint/Timeout", 30)]


def test_command_sends_the_json_as_written() -> None:
    """A Command write is published on the /set topic byte for byte."""
    text = '{"type":"manual","action":"stop"}'
    sends, _ = write(device(), Metric("Command", DataType.String, text))
    assert sends[0].payload == text.encode()


@pytest.mark.parametrize(
    ("metric", "code"),
    [(Metric("Setpoint/Foo", DataType.Int32, 1), "unknown_metric"),
     (Metric("State/Status", DataType.String, "completed"), "read_only_metric"),
     (Metric("Setpoint/ActivePower", DataType.String, "-2000"), "wrong_datatype"),
     (Metric("Setpoint/ActivePower", DataType.Int64, -2000), "wrong_datatype"),
     (Metric("Setpoint/Duration", DataType.UInt32, None), "wrong_datatype"),
     (Metric("Setpoint/ActivePower", None, "x"), "wrong_datatype")],
)  # fmt: skip
def test_bad_writes_are_refused_whole(metric: Metric, code: str) -> None:
    """Unknown or read-only metrics and wrong datatypes refuse the whole DCMD: nothing is stored or sent."""
    dev = device()
    outcome = write(dev, Metric("Setpoint/Timeout", DataType.UInt32, 5), metric)
    assert isinstance(outcome, Refusal) and outcome.code == code and dev.settings["timeout"] == 60


def test_device_ids_name_groups_and_inverters_only() -> None:
    """group-<digits> and inverter-<sn> are devices; anything else is not."""
    assert target_of(f"group-{GROUP}") == Target("group", GROUP)
    assert target_of("inverter-H475A") == Target("inverter", "H475A")
    assert target_of("group-abc") is None and target_of("batch-x") is None


# ---- the edge node, with a recording session ----------------------------------------------------------------


class Session:
    """Stands in for the MQTT session: records publishes, restarts and subscriptions."""

    def __init__(self) -> None:
        self.connected = True
        self.published: list[tuple[str, bytes, int]] = []
        self.restarts: list[tuple[str, bytes] | None] = []
        self.subscribed: list[str] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload, qos))

    def subscribe(self, filters: list[str], qos: int = 1) -> None:
        self.subscribed.extend(filters)

    async def restart(self, last: tuple[str, bytes] | None = None) -> None:
        self.restarts.append(last)

    def kinds(self) -> list[str]:
        return [topic.split("/")[2] for topic, _, _ in self.published if topic.startswith("spBv1.0/")]


def edge_node(tmp_path: Path, **sparkplug: object) -> tuple[EdgeNode, Session]:
    cfg = msgspec.convert({"journal": {"path": str(tmp_path / "j.db")},
                           "sparkplug": {"enabled": True, "devices": [f"group-{GROUP}"], **sparkplug}},
                          bridge_config.BridgeConfig)  # fmt: skip
    edge, session = EdgeNode(cfg, clock_ms=lambda: 1_000), Session()
    edge.session = session  # type: ignore[assignment]
    edge._set_devices([Target("group", GROUP)])
    edge._will()
    return edge, session


def ncmd(name: str) -> Incoming:
    return Incoming(topic="spBv1.0/vpp/NCMD/semookii-bridge",
                    payload=encode([Metric(name, DataType.Boolean, True)], timestamp=1, seq=None))  # fmt: skip


async def test_connect_births_node_then_devices_with_seq_from_zero(tmp_path: Path) -> None:
    """After CONNACK: NBIRTH (seq 0, the will's bdSeq), then DBIRTH (seq 1)."""
    edge, session = edge_node(tmp_path)
    edge._connected()
    (_, _, _), (dbirth, _, _) = session.published
    node = decode(session.published[0][1])
    assert session.kinds() == ["NBIRTH", "DBIRTH"] and node.seq == 0 and decode(session.published[1][1]).seq == 1
    assert {m.name: m.value for m in node.metrics}["bdSeq"] == edge.bd_seq
    assert dbirth.endswith(f"/group-{GROUP}")


async def test_rebirth_command_repeats_the_births_with_seq_zero(tmp_path: Path) -> None:
    """NCMD Node Control/Rebirth = true: NBIRTH again with seq 0 and the same bdSeq, then every DBIRTH."""
    edge, session = edge_node(tmp_path)
    edge._connected()
    edge._message(ncmd("Node Control/Rebirth"))
    await asyncio.sleep(0.01)
    assert session.kinds() == ["NBIRTH", "DBIRTH", "NBIRTH", "DBIRTH"]
    assert decode(session.published[2][1]).seq == 0 and decode(session.published[3][1]).seq == 1
    edge._connected()  # a reconnect: born again
    assert session.kinds()[-2:] == ["NBIRTH", "DBIRTH"] and decode(session.published[-2][1]).seq == 0


async def test_a_dcmd_publishes_the_command_and_a_refusal_is_ddata(tmp_path: Path) -> None:
    """A valid write goes to vpp/group/<id>/set (QoS 1); a wrong datatype is a DDATA saying rejected."""
    edge, session = edge_node(tmp_path)
    edge._connected()
    topic = f"spBv1.0/vpp/DCMD/semookii-bridge/group-{GROUP}"
    good = encode([Metric("Setpoint/ActivePower", DataType.Int32, -2000)], timestamp=1, seq=None)
    edge._message(Incoming(topic=topic, payload=good))
    sent = [(t, q) for t, _, q in session.published if t.endswith("/set")]
    assert sent == [(f"vpp/group/{GROUP}/set", 1)]
    bad = encode([Metric("Setpoint/ActivePower", DataType.String, "-2000")], timestamp=1, seq=None)
    edge._message(Incoming(topic=topic, payload=bad))
    last = {m.name: m.value for m in decode(session.published[-1][1]).metrics}
    assert (last["State/Status"], last["State/ErrorCode"]) == ("rejected", "wrong_datatype")


async def test_states_of_the_device_become_ddata_and_duplicates_do_not(tmp_path: Path) -> None:
    """A state on the group's state topic is a DDATA of State/*; a `duplicate: true` repeat is not."""
    edge, session = edge_node(tmp_path)
    edge._connected()
    state = {"request_id": "r1", "status": "accepted", "target": {"kind": "group", "id": GROUP},
             "command_id": "77", "ts": "2026-11-27T18:00:00.000Z"}  # fmt: skip
    edge._message(Incoming(topic=f"vpp/group/{GROUP}/state", payload=json.dumps(state).encode()))
    edge._message(Incoming(topic=f"vpp/group/{GROUP}/state",
                           payload=json.dumps({**state, "duplicate": True}).encode()))  # fmt: skip
    assert session.kinds() == ["NBIRTH", "DBIRTH", "DDATA"]
    values = {m.name: m.value for m in decode(session.published[-1][1]).metrics}
    assert (values["State/Status"], values["State/CommandId"], values["State/Updated"]) == (
        "accepted",
        "77",
        1_795_802_400_000,
    )


async def test_settings_survive_a_restart(tmp_path: Path) -> None:
    """A written Duration is in the next process's DBIRTH."""
    edge, _ = edge_node(tmp_path)
    edge._write(f"group-{GROUP}", (Metric("Setpoint/Duration", DataType.UInt32, 1234),))
    again, session = edge_node(tmp_path)
    again._connected()
    values = {m.name: m.value for m in decode(session.published[1][1]).metrics}
    assert values["Setpoint/Duration"] == 1234


async def test_births_wait_for_the_primary_host_and_offline_ends_the_session(tmp_path: Path) -> None:
    """With primary_host_id: no birth until STATE online; an offline STATE (not older) publishes NDEATH and
    reconnects; an older offline STATE is ignored."""
    edge, session = edge_node(tmp_path, primary_host_id="scada")
    edge._connected()
    assert session.kinds() == [] and "spBv1.0/STATE/scada" in session.subscribed
    edge._message(Incoming(topic="spBv1.0/STATE/scada", payload=b'{"online": true, "timestamp": 50}'))
    assert session.kinds() == ["NBIRTH", "DBIRTH"]
    edge._message(Incoming(topic="spBv1.0/STATE/scada", payload=b'{"online": false, "timestamp": 10}'))
    edge._message(Incoming(topic="spBv1.0/STATE/scada", payload=b'{"online": false, "timestamp": 60}'))
    await asyncio.gather(*edge._tasks)
    assert len(session.restarts) == 1 and session.restarts[0] is not None
    assert session.restarts[0][0] == "spBv1.0/vpp/NDEATH/semookii-bridge"


def test_the_will_is_an_ndeath_with_the_next_bd_seq(tmp_path: Path) -> None:
    """Each connection's will names the bdSeq its NBIRTH will carry."""
    edge, _ = edge_node(tmp_path)
    will = edge._will()
    assert isinstance(will, Will) and will.topic == "spBv1.0/vpp/NDEATH/semookii-bridge" and not will.retain
    assert [(m.name, m.value) for m in decode(will.payload).metrics] == [("bdSeq", edge.bd_seq)]


async def test_refresh_reads_the_lists_and_births_and_deaths_what_changed(tmp_path: Path) -> None:
    """Node Control/Refresh asks group/list and inverter/list on the management topics (transactions
    `sparkplug-<n>`), then DDEATHs devices gone and DBIRTHs new ones."""
    edge, session = edge_node(tmp_path, devices=[])
    edge._connected()
    edge._message(ncmd("Node Control/Refresh"))
    answers = [{"total": 1, "items": [{"id": "555"}]}, {"total": 1, "items": [{"id": "9", "inverter_sn": "H475Z"}]}]
    for number, data in enumerate(answers, start=1):
        op = "group/list" if number == 1 else "inverter/list"
        for _ in range(50):
            await asyncio.sleep(0)
            sent = [p for t, p, _ in session.published if t == f"vpp/bridge/request/{op}"]
            if sent:
                break
        request = json.loads(sent[0])
        assert request["transaction"] == f"sparkplug-{number}" and request["all"] is True
        response = {"status": "ok", "data": data, "transaction": request["transaction"]}
        edge._message(Incoming(topic=f"vpp/bridge/response/{op}", payload=json.dumps(response).encode()))
    assert edge._refreshes._task is not None
    await edge._refreshes._task
    births = [t.rsplit("/", 1)[1] for t, _, _ in session.published if "/DBIRTH/" in t or "/DDEATH/" in t]
    assert births == [f"group-{GROUP}", f"group-{GROUP}", "group-555", "inverter-H475Z"]
    assert session.kinds()[-3:] == ["DDEATH", "DBIRTH", "DBIRTH"] and set(edge.devices) == {
        "group-555",
        "inverter-H475Z",
    }


async def test_undecodable_and_stray_commands_never_break_the_node(tmp_path: Path) -> None:
    """A DCMD that is not a Sparkplug payload is a `rejected` DDATA with `invalid_payload`; garbage NCMDs,
    DCMDs to unknown devices, empty DCMDs and unknown message types are ignored, and the node goes on."""
    edge, session = edge_node(tmp_path)
    edge._connected()
    base = "spBv1.0/vpp/{}/semookii-bridge"
    edge._message(Incoming(topic=base.format("DCMD") + f"/group-{GROUP}", payload=b"\xff\xff\xff"))
    last = {m.name: m.value for m in decode(session.published[-1][1]).metrics}
    assert (last["State/Status"], last["State/ErrorCode"]) == ("rejected", "invalid_payload")
    count = len(session.published)
    for topic, payload in [(base.format("NCMD"), b"\xff\xff"), (base.format("DCMD") + "/group-999", b""),
                           (base.format("NDATA"), b""), (base.format("DCMD"), b""),
                           ("spBv1.0/vpp/DCMD/other-node/group-1", b"")]:  # fmt: skip
        edge._message(Incoming(topic=topic, payload=payload))
    empty = encode([], timestamp=1, seq=None)
    edge._message(Incoming(topic=base.format("DCMD") + f"/group-{GROUP}", payload=empty))
    codes = [
        {m.name: m.value for m in decode(p).metrics}.get("State/ErrorCode") for _, p, _ in session.published[count:]
    ]
    assert codes == ["validation_error"]
    edge._message(ncmd("Node Control/Rebirth"))
    await asyncio.sleep(0.01)
    assert session.kinds()[-2:] == ["NBIRTH", "DBIRTH"]


def test_a_connect_attempt_that_got_no_connack_does_not_use_up_a_bd_seq(tmp_path: Path) -> None:
    """Attempts while the broker is down reuse the bdSeq (no will was left behind); the one after an accepted
    session takes the next, so the host sees it grow by exactly one per session."""
    edge, _ = edge_node(tmp_path)
    first = edge.bd_seq
    edge._will()
    edge._will()
    assert edge.bd_seq == first
    edge._connected()
    edge._will()
    assert edge.bd_seq == (first + 1) % 256


def test_each_session_s_will_carries_that_session_s_bd_seq(tmp_path: Path) -> None:
    """Three sessions in a row: each will (the NDEATH the broker sends if the node dies) names the bdSeq of
    the NBIRTH of the same session, never the previous session's; the bdSeq grows by one per session."""
    edge, session = edge_node(tmp_path)
    seen: list[int] = []
    for _ in range(3):
        will = edge._will()
        edge._connected()
        nbirth = [payload for topic, payload, _ in session.published if "/NBIRTH/" in topic][-1]
        birth_seq = {m.name: m.value for m in decode(nbirth).metrics}["bdSeq"]
        assert [(m.name, m.value) for m in decode(will.payload).metrics] == [("bdSeq", birth_seq)]
        assert [(m.name, m.value) for m in decode(edge._death()).metrics] == [("bdSeq", birth_seq)]
        seen.append(int(birth_seq))  # type: ignore[arg-type]
    assert seen == [seen[0], seen[0] + 1, seen[0] + 2]


async def test_a_thousand_rebirth_and_refresh_commands_do_not_amplify(tmp_path: Path) -> None:
    """1,000 Rebirth and 1,000 Refresh NCMDs at once: one rebirth and one refresh, the rest merged into them
    and counted; one more asked for after that waits for the interval's end."""
    edge, session = edge_node(tmp_path, devices=[f"group-{GROUP}"], rebirth_interval=0.3, refresh_interval=0.3)
    edge._connected()
    births = session.kinds().count("NBIRTH")
    for _ in range(1000):
        edge._message(ncmd("Node Control/Rebirth"))
        edge._message(ncmd("Node Control/Refresh"))
    await asyncio.sleep(0.1)
    # With configured devices a refresh is a rebirth too: one of each kind of request, so two.
    assert session.kinds().count("NBIRTH") - births == 2
    assert edge.limited["rebirth_coalesced"] == 999 and edge.limited["refresh_coalesced"] == 999
    edge._message(ncmd("Node Control/Rebirth"))
    await asyncio.sleep(0.05)
    assert session.kinds().count("NBIRTH") - births == 2
    await asyncio.sleep(0.4)
    assert session.kinds().count("NBIRTH") - births == 3


@pytest.mark.parametrize(("metrics", "code"), [
    ([Metric("Setpoint/ActivePower", DataType.Int32, n) for n in range(20000)], "too_many_metrics"),
    ([Metric("Setpoint/ActivePower", DataType.Int32, 1), Metric("Setpoint/ActivePower", DataType.Int32, 2)],
     "duplicate_metric"),
])  # fmt: skip
async def test_a_dcmd_writes_each_metric_once_and_no_more_than_a_device_has(
    tmp_path: Path, metrics: list[Metric], code: str
) -> None:
    """20,000 setpoints in one DCMD, or one metric written twice: refused whole with a code, nothing sent."""
    edge, session = edge_node(tmp_path)
    edge._connected()
    topic = f"spBv1.0/vpp/DCMD/semookii-bridge/group-{GROUP}"
    edge._message(Incoming(topic=topic, payload=encode(metrics, timestamp=1, seq=None)))
    assert not [t for t, _, _ in session.published if t.endswith("/set")]
    last = {m.name: m.value for m in decode(session.published[-1][1]).metrics}
    assert (last["State/Status"], last["State/ErrorCode"]) == ("rejected", code)
    assert edge.limited[f"dcmd_{code}"] == 1


def test_with_a_hot_standby_the_bd_seq_comes_from_the_shared_counter(tmp_path: Path) -> None:
    """A new leader's bdSeq follows the last one any leader used (the database's counter, wrapped at 256);
    with the database away it falls back to the local count rather than failing the CONNECT."""
    counter = iter([41, 42, 256])
    store = Store(tmp_path / "s.json", shared_counter=lambda: next(counter))
    assert [store.next_bd_seq() for _ in range(3)] == [41, 42, 0]

    def away() -> int:
        raise OSError("database away")

    fallback = Store(tmp_path / "s.json", shared_counter=away)
    assert fallback.next_bd_seq() == 1


async def test_the_nbirth_names_every_node_metric_with_its_type_and_value(tmp_path: Path) -> None:
    """NBIRTH: bdSeq (Int64, this session's), both node controls (Boolean false), Bridge/Version (String), and
    the budget's used and remaining (Int64) as last published on the budget topic; seq 0."""
    from semookii_bridge import __version__

    edge, session = edge_node(tmp_path)
    budget = {"day": "2026-11-29", "used": 12, "quota": 10000, "remaining": 9988, "reserve": 200, "exhausts_at": None,
              "rate": 0.16, "burst": 2, "calls_last_minute": {}, "queued": 0, "oldest_queued_age": None,
              "tracking": 0, "paused_until": None, "ts": "2026-11-29T12:00:00.000Z"}  # fmt: skip
    edge._message(Incoming(topic="vpp/bridge/budget", payload=json.dumps(budget).encode()))
    edge._connected()
    nbirth = decode([p for t, p, _ in session.published if "/NBIRTH/" in t][-1])
    assert nbirth.seq == 0
    assert [(m.name, m.datatype, m.value) for m in nbirth.metrics] == [
        ("bdSeq", DataType.Int64, edge.bd_seq),
        ("Node Control/Rebirth", DataType.Boolean, False),
        ("Node Control/Refresh", DataType.Boolean, False),
        ("Bridge/Version", DataType.String, __version__),
        ("Budget/Used", DataType.Int64, 12),
        ("Budget/Remaining", DataType.Int64, 9988),
    ]


def test_the_edge_node_has_a_session_and_namespace_of_its_own(tmp_path: Path) -> None:
    """Its client id is `<mqtt.client_id>-sparkplug`, its topics are under spBv1.0/<group_id>/.../<edge_node_id>,
    and with `sparkplug.username` it logs in as that user (else as the bridge)."""
    cfg = msgspec.convert({"mqtt": {"client_id": "br", "username": "bridge", "password": "b"},
                           "journal": {"path": str(tmp_path / "j.db")},
                           "sparkplug": {"enabled": True, "group_id": "site", "edge_node_id": "edge-1",
                                         "username": "sparkplug", "password": "s"}},
                          bridge_config.BridgeConfig)  # fmt: skip
    edge = EdgeNode(cfg)
    assert edge.session.client_id == "br-sparkplug"
    assert edge.ns.node("NBIRTH") == "spBv1.0/site/NBIRTH/edge-1"
    assert (edge.session.cfg.username, edge.session.cfg.password) == ("sparkplug", "s")
    plain = EdgeNode(msgspec.structs.replace(cfg, sparkplug=msgspec.structs.replace(cfg.sparkplug, username="")))
    assert (plain.session.cfg.username, plain.session.cfg.password) == ("bridge", "b")


async def test_a_command_write_of_a_safety_type_takes_the_safety_lane(tmp_path: Path) -> None:
    """Writing Command = a stop publishes on `vpp/safety/group/<id>/set`; any other command on `/set`."""
    edge, session = edge_node(tmp_path)
    edge._connected()
    topic = f"spBv1.0/vpp/DCMD/semookii-bridge/group-{GROUP}"
    for body in ('{"type":"manual","action":"stop"}', '{"type":"manual","action":"force_charge"}'):
        edge._message(Incoming(topic=topic, payload=encode([Metric("Command", DataType.String, body)], timestamp=1,
                                                           seq=None)))  # fmt: skip
    sent = [t for t, _, _ in session.published if t.endswith("/set")]
    assert sent == [f"vpp/safety/group/{GROUP}/set", f"vpp/group/{GROUP}/set"]


def budget_message(used: int, remaining: int | None) -> Incoming:
    doc = {"day": "2026-11-29", "used": used, "quota": 10000, "remaining": remaining, "reserve": 200,
           "exhausts_at": None, "rate": 0.16, "burst": 2, "calls_last_minute": {}, "queued": 0,
           "oldest_queued_age": None, "tracking": 0, "paused_until": None, "ts": "2026-11-29T12:00:00.000Z"}  # fmt: skip
    return Incoming(topic="vpp/bridge/budget", payload=json.dumps(doc).encode())


async def test_a_budget_change_is_an_ndata_and_a_repeat_or_garbage_is_not(tmp_path: Path) -> None:
    """After birth, a new budget is one NDATA with Budget/Used and Budget/Remaining (Int64, stamped, next seq);
    the same budget again, or an unreadable one, publishes nothing."""
    edge, session = edge_node(tmp_path)
    edge._connected()
    count = len(session.published)
    edge._message(budget_message(40, 9960))
    edge._message(budget_message(40, 9960))
    edge._message(Incoming(topic="vpp/bridge/budget", payload=b"{not json"))
    new = session.published[count:]
    assert [t for t, _, _ in new] == ["spBv1.0/vpp/NDATA/semookii-bridge"]
    payload = decode(new[0][1])
    assert payload.seq == 2 and payload.timestamp == 1_000
    assert [(m.name, m.datatype, m.value, m.timestamp) for m in payload.metrics] == [
        ("Budget/Used", DataType.Int64, 40, 1_000), ("Budget/Remaining", DataType.Int64, 9960, 1_000)]  # fmt: skip


def test_births_are_stamped_and_the_state_file_defaults_beside_the_journal(tmp_path: Path) -> None:
    """Every NBIRTH metric carries the birth's timestamp; without `state_file` the bdSeq and settings live in
    `<journal>.sparkplug.json`; list requests for discovery go out with QoS 1."""
    edge, session = edge_node(tmp_path)
    edge._connected()
    nbirth = decode([p for t, p, _ in session.published if "/NBIRTH/" in t][-1])
    assert {m.timestamp for m in nbirth.metrics} == {1_000} and nbirth.timestamp == 1_000
    assert edge.store.path == tmp_path / "j.sparkplug.json"
    edge.requests._publish("vpp/bridge/request/group/list", b"{}")
    assert session.published[-1] == ("vpp/bridge/request/group/list", b"{}", 1)
