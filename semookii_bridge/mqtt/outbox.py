"""Outgoing QoS 1 publishes, in order and never dropped: paho holds what it can, the outbox the rest.

paho refuses a publish when OUT_LIMIT are held or the next packet id is still in use; such publishes wait
here and go out, oldest first, as PUBACKs free room. Above INTAKE_PAUSE unacknowledged publishes `room` is
cleared, and the link stops taking commands until they fall below half of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

INTAKE_PAUSE = 40_000
"""Unacknowledged publishes above which the intake stops taking commands (the broker keeps them unacked)."""


class Outbox:
    """Publishes through one paho client; `on_sent` callbacks run when the broker acknowledged the message."""

    def __init__(self, client: paho.Client, *, v5: bool, flush: Callable[[], None]) -> None:
        self._client = client
        self._v5 = v5
        self._flush = flush
        self._on_sent: dict[int, Callable[[], None]] = {}
        self._overflow: deque[_Outgoing] = deque()
        self.room = asyncio.Event()
        self.room.set()

    @property
    def unacknowledged(self) -> int:
        """Publishes the broker has not acknowledged yet (paho's and the outbox's own overflow)."""
        return len(self._client._out_messages) + len(self._overflow)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        on_sent: Callable[[], None] | None = None,
        response_topic: str | None = None,
        message_expiry: int | None = None,
    ) -> None:
        """Publish with QoS 1 (kept by paho while disconnected); `on_sent` runs when the broker acks it.

        Never dropped: what paho cannot take now (OUT_LIMIT, or its packet id still in use) waits here, in
        order, and goes out as acknowledgements free room.
        """
        properties = None
        if self._v5 and (correlation_data is not None or response_topic or message_expiry is not None):
            properties = Properties(PacketTypes.PUBLISH)
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
            if response_topic:
                properties.ResponseTopic = response_topic
            if message_expiry is not None:
                properties.MessageExpiryInterval = message_expiry
        message = _Outgoing(topic, payload, retain, properties, on_sent)
        if self._overflow or not self._hand_to_paho(message):
            self._overflow.append(message)
            self._watch_acks()
        if self.unacknowledged > INTAKE_PAUSE:
            self.room.clear()
            self._watch_acks()

    def _hand_to_paho(self, message: _Outgoing) -> bool:
        """Give paho one publish; False when it refused it (no room or its packet id is in use)."""
        info = self._client.publish(message.topic, message.payload, qos=1, retain=message.retain,
                                    properties=message.properties)  # fmt: skip
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            return False
        if message.on_sent is not None:
            self._on_sent[info.mid] = message.on_sent
            self._watch_acks()
        if self._client.want_write():
            self._flush()  # paho could not take it to the socket now (its callback lock was held)
        return True

    def _watch_acks(self) -> None:
        """Be told of each PUBACK (paho builds a reason code and properties for every callback: only while
        a callback waits, publishes are held back, or the intake is paused)."""
        self._client.on_publish = self._paho_published

    def _paho_published(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # On the loop thread, inside paho's callback lock: defer, so that publishing again is safe.
        asyncio.get_running_loop().call_soon(self.acknowledged, mid)

    def acknowledged(self, mid: int) -> None:
        """The broker acknowledged publish `mid`: let held-back publishes go, then run its `on_sent`."""
        callback = self._on_sent.pop(mid, None)
        self.drain()
        if not self._on_sent and self.room.is_set():
            self._client.on_publish = None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("on_sent_failed mid=%d", mid)

    def drain(self) -> None:
        """Hand held-back publishes to paho, oldest first, while it takes them; reopen the intake below half."""
        overflow = self._overflow
        while overflow and self._hand_to_paho(overflow[0]):
            overflow.popleft()
        if not self.room.is_set() and self.unacknowledged <= INTAKE_PAUSE // 2:
            self.room.set()


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A publish the outbox holds until paho has room for it."""

    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None
    on_sent: Callable[[], None] | None
