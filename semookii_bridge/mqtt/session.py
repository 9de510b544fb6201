"""A plain MQTT session for clients beside the bridge's own link (the Sparkplug edge node): a clean session,
a will that is chosen afresh before every CONNECT, paho's own network thread, and messages handed to the
event loop as the project's frozen `Incoming` type."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ..config import MqttConfig
from ..interface.payloads import Incoming
from .client import Will, credentials, incoming_of

log = logging.getLogger(__name__)


class MqttSession:
    """One clean MQTT session; `will()` is asked for the will before each connection attempt.

    Callbacks run on the event loop: `on_connect()` after each CONNACK that accepted us, `on_message`
    for each message. Reconnects are paho's, with the link's backoff limits.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        *,
        will: Callable[[], Will],
        on_connect: Callable[[], None],
        on_message: Callable[[Incoming], None],
    ) -> None:
        self.cfg, self.client_id = cfg, client_id
        self._will, self._on_connect, self._on_message = will, on_connect, on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self.connected = False

    def _new_client(self) -> paho.Client:
        """A paho client set up for a clean session (MQTT 3.1.1 clean session, or MQTT 5 clean start with no
        session expiry, as Sparkplug requires)."""
        v5 = self.cfg.protocol == 5
        kwargs: dict[str, Any] = {} if v5 else {"clean_session": True}
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            **kwargs,
        )
        credentials(client, self.cfg)
        client.reconnect_delay_set(max(1, int(self.cfg.reconnect_min)), max(1, int(self.cfg.reconnect_max)))
        client.on_pre_connect = self._paho_pre_connect
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        return client

    def start(self) -> None:
        """Connect in paho's thread (retrying until stopped)."""
        self._loop = asyncio.get_running_loop()
        self._client = self._new_client()
        kwargs: dict[str, Any] = {"clean_start": True} if self.cfg.protocol == 5 else {}
        self._client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive, **kwargs)
        self._client.loop_start()

    async def stop(self, last: tuple[str, bytes] | None = None) -> None:
        """Disconnect; `last` (topic, payload) is published with QoS 1 first and waited for (up to 2 s), since
        a DISCONNECT makes the broker drop the will."""
        client, self._client = self._client, None
        if client is None:
            return
        if last is not None and self.connected:
            info = client.publish(last[0], last[1], qos=1)
            await asyncio.get_running_loop().run_in_executor(None, info.wait_for_publish, 2.0)
        self.connected = False
        client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, client.loop_stop)

    async def restart(self, last: tuple[str, bytes] | None = None) -> None:
        """End this connection (publishing `last` first) and open a new one, with a new will."""
        await self.stop(last)
        self.start()

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Publish (paho queues it while disconnected only for QoS > 0)."""
        if self._client is not None:
            self._client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, filters: list[str], qos: int = 1) -> None:
        """Subscribe to each filter (again after every reconnect: the session is clean)."""
        if self._client is not None and filters:
            self._client.subscribe([(f, qos) for f in filters])

    # ---- paho callbacks (paho's thread): convert, hand to the loop --------------------------------------

    def _paho_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        will = self._will()
        client.will_set(will.topic, will.payload, qos=1, retain=will.retain)

    def _paho_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("mqtt_session_refused client_id=%s reason=%s", self.client_id, reason)
        elif self._loop is not None and client is self._client:
            self._loop.call_soon_threadsafe(self._connected_in_loop)

    def _paho_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._loop is not None and client is self._client:
            self._loop.call_soon_threadsafe(self._disconnected_in_loop, str(reason))

    def _paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        incoming = incoming_of(message)
        if self._loop is not None and client is self._client:
            self._loop.call_soon_threadsafe(self._on_message, incoming)

    def _connected_in_loop(self) -> None:
        self.connected = True
        log.info("mqtt_session_connected client_id=%s", self.client_id)
        self._on_connect()

    def _disconnected_in_loop(self, reason: str) -> None:
        self.connected = False
        log.warning("mqtt_session_lost client_id=%s reason=%s", self.client_id, reason)
