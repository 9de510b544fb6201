"""The bridge's own frozen type for an MQTT message; nothing past the MQTT edge sees a paho object."""

from __future__ import annotations

import msgspec


class Incoming(msgspec.Struct, frozen=True, kw_only=True):
    """A message delivered by the broker, with the MQTT 5 properties the bridge honours."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    dup: bool = False
    mid: int = 0
    response_topic: str | None = None
    correlation_data: bytes | None = None
    message_expiry: int | None = None
