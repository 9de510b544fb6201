"""Sparkplug B payloads as the bridge's own frozen types, encoded and decoded with the protobuf module that
the build generates from Eclipse Tahu's `sparkplug_b.proto`.

Integers: Int8/16/32 and UInt8/16 travel in `int_value` (uint32, negative numbers as two's complement);
Int64, UInt64, DateTime and UInt32 in `long_value` (uint64). UInt32 goes where Eclipse Tahu's Java and
JavaScript implementations (Ignition's MQTT Engine among their users) put and read it; the specification's
table names uint32. Decoding reads whichever of the two fields a peer used, and sign-extends.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import msgspec
from google.protobuf.message import DecodeError

from . import sparkplug_b_pb2 as pb

MetricValue = int | float | bool | str | None


class DataType(enum.IntEnum):
    """The Sparkplug B data types the bridge publishes or accepts (numbers as in the specification)."""

    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14


_BITS = {
    DataType.Int8: 8,
    DataType.Int16: 16,
    DataType.Int32: 32,
    DataType.Int64: 64,
    DataType.UInt8: 8,
    DataType.UInt16: 16,
    DataType.UInt32: 32,
    DataType.UInt64: 64,
}
_SIGNED = frozenset({DataType.Int8, DataType.Int16, DataType.Int32, DataType.Int64})
_LONG = frozenset({DataType.Int64, DataType.UInt64, DataType.DateTime, DataType.UInt32})
_TEXT = frozenset({DataType.String, DataType.Text})


class Metric(msgspec.Struct, frozen=True):
    """One metric: `datatype` None in a command that relies on the birth's (the host may omit it)."""

    name: str
    datatype: DataType | None
    value: MetricValue
    timestamp: int | None = None


class Payload(msgspec.Struct, frozen=True):
    """A decoded Sparkplug B payload (only what the bridge reads)."""

    timestamp: int | None
    seq: int | None
    metrics: tuple[Metric, ...]


class PayloadError(ValueError):
    """Bytes that are not a Sparkplug B payload, or a metric whose value does not fit its data type."""


def encode(metrics: Iterable[Metric], *, timestamp: int, seq: int | None) -> bytes:
    """A payload with these metrics; `seq` None for NDEATH, which carries none."""
    payload = pb.Payload(timestamp=timestamp)
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        _put(payload.metrics.add(), metric)
    return payload.SerializeToString()


def _put(out: pb.Payload.Metric, metric: Metric) -> None:
    """Fill one protobuf metric: name, datatype, timestamp and the value in the field its type uses."""
    out.name = metric.name
    if metric.datatype is None:
        raise PayloadError(f"metric {metric.name!r} has no datatype")
    out.datatype = int(metric.datatype)
    if metric.timestamp is not None:
        out.timestamp = metric.timestamp
    value, kind = metric.value, metric.datatype
    if value is None:
        out.is_null = True
    elif kind == DataType.Boolean:
        out.boolean_value = bool(value)
    elif kind in _TEXT:
        out.string_value = str(value)
    elif kind == DataType.Float:
        out.float_value = float(value)
    elif kind == DataType.Double:
        out.double_value = float(value)
    elif kind in _LONG:
        out.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF
    else:
        out.int_value = int(value) & 0xFFFF_FFFF


def decode(data: bytes) -> Payload:
    """A payload's timestamp, seq and metrics; PayloadError for bytes that are not a Sparkplug B payload."""
    message = pb.Payload()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise PayloadError(f"not a Sparkplug B payload: {exc}") from None
    return Payload(
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        metrics=tuple(_metric(m) for m in message.metrics),
    )


def _metric(m: pb.Payload.Metric) -> Metric:
    """One decoded metric; an unknown datatype number is kept as None (the caller refuses it by name)."""
    datatype = DataType(m.datatype) if m.HasField("datatype") and m.datatype in DataType._value2member_map_ else None
    field = m.WhichOneof("value")
    raw = None if m.is_null or field is None else getattr(m, field)
    if isinstance(raw, int) and not isinstance(raw, bool) and datatype in _SIGNED:
        width = 32 if field == "int_value" else 64
        raw = raw - (1 << width) if raw >= 1 << (width - 1) else raw
    name = m.name if m.HasField("name") else ""
    return Metric(
        name=name,
        datatype=datatype,
        value=raw if not isinstance(raw, bytes) else None,
        timestamp=m.timestamp if m.HasField("timestamp") else None,
    )


def fits(datatype: DataType, value: MetricValue) -> bool:
    """Whether `value` is a value of `datatype` (an integer in its range, a bool, a string, a number)."""
    if datatype == DataType.Boolean:
        return isinstance(value, bool)
    if datatype in _TEXT:
        return isinstance(value, str)
    if datatype in (DataType.Float, DataType.Double):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    if datatype == DataType.DateTime:
        return value >= 0
    bits = _BITS[datatype]
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if datatype in _SIGNED else (0, (1 << bits) - 1)
    return low <= value <= high
