"""Outgoing QoS 1 publishes, in order and never dropped: paho holds what it can, the outbox the rest.

paho refuses a publish when OUT_LIMIT are held or the next packet id is still in use; such publishes wait
here and go out, oldest first, as PUBACKs free room. Above INTAKE_PAUSE unacknowledged publishes `room` is
cleared, and the link stops taking commands until they fall below half of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

INTAKE_PAUSE = 40_000
"""Unacknowledged publishes above which the intake stops taking commands (the broker keeps them unacked)."""
SAMPLE_EVERY = 1.0
"""Seconds between publishes whose acknowledgement is read for a refusal (MQTT 5 PUBACK reason codes): paho
builds a reason object per watched ack, so only a sample is watched; a broker whose ACL refuses the bridge's
publishes refuses every one."""
REFUSAL_SHOWN = 60.0
"""Seconds a refusal stays in `/readyz` and between two log lines about refusals."""


class Refusal(NamedTuple):
    """The broker refused a publish: on which topic, its reason, and when (monotonic)."""

    topic: str
    reason: str
    at: float


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
        self._sampled: set[int] = set()
        self._next_sample = 0.0
        self.refused = 0
        """Publishes the broker refused (counted among the watched ones)."""
        self.last_refusal: Refusal | None = None

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
        info = self._client.publish(
            message.topic, message.payload, qos=1, retain=message.retain, properties=message.properties
        )
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            return False
        if message.on_sent is not None:
            self._on_sent[info.mid] = message.on_sent
            self._watch_acks()
        if self._v5 and time.monotonic() >= self._next_sample:
            self._sampled.add(info.mid)
            self._next_sample = time.monotonic() + SAMPLE_EVERY
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
        refusal = None
        if getattr(reason, "is_failure", False):
            sent = client._out_messages.get(mid)  # paho drops it only after this callback
            refusal = (sent.topic if sent is not None else "?", str(reason))
        asyncio.get_running_loop().call_soon(self.acknowledged, mid, refusal)

    def acknowledged(self, mid: int, refusal: tuple[str, str] | None = None) -> None:
        """The broker acknowledged publish `mid` (or refused it: topic, reason): let held-back publishes go,
        then run its `on_sent` (the broker has answered either way)."""
        self._sampled.discard(mid)
        if refusal is not None:
            self._refused(*refusal)
        callback = self._on_sent.pop(mid, None)
        self.drain()
        if not self._on_sent and not self._sampled and self.room.is_set():
            self._client.on_publish = None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("on_sent_failed mid=%d", mid)

    def _refused(self, topic: str, reason: str) -> None:
        """Count a refused publish; log it once per REFUSAL_SHOWN: subscribers never get what the broker drops."""
        now = time.monotonic()
        quiet = self.last_refusal is None or now - self.last_refusal.at > REFUSAL_SHOWN
        self.refused += 1
        self.last_refusal = Refusal(topic, reason, now)
        if quiet:
            action = "the broker drops what the bridge publishes there: allow the bridge's user to publish it"
            log.error("mqtt_publish_refused topic=%s reason=%s action=%s", topic, reason, action)

    def refusing(self) -> Refusal | None:
        """The latest refusal, while it is recent (REFUSAL_SHOWN)."""
        last = self.last_refusal
        return last if last is not None and time.monotonic() - last.at <= REFUSAL_SHOWN else None

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
