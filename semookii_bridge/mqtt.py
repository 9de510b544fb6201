"""The MQTT edge: paho-mqtt 2.x lives here and nowhere else.

paho runs its network loop in its own thread; its callbacks only convert data into the bridge's frozen
`Incoming` type and hand it to the asyncio loop (`call_soon_threadsafe`). Acknowledgements are manual:
a QoS 1 message is acknowledged only after the bridge has journaled (or answered) it, so a crash before
that makes the broker deliver it again (persistent session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from . import wire
from .config import MqttConfig
from .messages import Incoming
from .topics import Topics

log = logging.getLogger(__name__)

ONLINE = wire.encode({"state": "online"})
OFFLINE = wire.encode({"state": "offline"})


class MqttLink:
    """Connects, subscribes, delivers `Incoming` messages to `on_message` in order, and publishes."""

    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        on_message: Callable[[Incoming], Awaitable[None]],
        *,
        info: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.config = config
        self.topics = topics
        self._on_message = on_message
        self._info = info
        self._v5 = config.protocol == 5
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[Incoming] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self.reconnects = 0
        self._ever_connected = False
        self._client = self._make_client()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- set-up ---------------------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        cfg = self.config
        protocol = paho.MQTTv5 if self._v5 else paho.MQTTv311
        kwargs: dict[str, Any] = {} if self._v5 else {"clean_session": False}
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=protocol, **kwargs)
        client.manual_ack_set(True)
        client.reconnect_delay_set(
            min_delay=max(1, round(cfg.reconnect_min)), max_delay=max(1, round(cfg.reconnect_max))
        )
        client.will_set(self.topics.bridge_state, OFFLINE, qos=1, retain=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password_secret().reveal() or None)
        if cfg.tls_ca or cfg.tls_cert:
            client.tls_set(
                ca_certs=cfg.tls_ca or None,
                certfile=cfg.tls_cert or None,
                keyfile=cfg.tls_key or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(cfg.tls_insecure)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        return client

    async def start(self, wait_seconds: float = 30.0) -> None:
        """Connect (retrying in the background) and wait until the first connection is up.

        Messages are buffered, not handled, until `deliver()`: the bridge recovers its journal first.
        """
        self._loop = asyncio.get_running_loop()
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.config.session_expiry
        connect_kwargs: dict[str, Any] = {"clean_start": False, "properties": properties} if self._v5 else {}
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive, **connect_kwargs)
        self._client.loop_start()
        await asyncio.wait_for(self._connected.wait(), wait_seconds)

    def deliver(self) -> None:
        """Start handing buffered and new messages to `on_message`, in order."""
        if self._consumer is None:
            self._consumer = asyncio.get_running_loop().create_task(self._consume())

    async def pause(self) -> None:
        """Stop handing over messages; those not yet handled stay unacknowledged and come back later."""
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
            self._consumer = None

    async def stop(self) -> None:
        """Publish `offline` (the will covers a crash), disconnect and stop paho's thread."""
        await self.pause()
        if self._connected.is_set():
            info = self._client.publish(self.topics.bridge_state, OFFLINE, qos=1, retain=True)
            await asyncio.get_running_loop().run_in_executor(None, _wait_published, info)
        self._client.disconnect()
        self._client.loop_stop()

    # ---- paho callbacks (paho's thread): convert and hand over, nothing else ---------------------------

    def _paho_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._connected_in_loop, not reason.is_failure, str(reason))

    def _paho_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._disconnected_in_loop, str(reason))

    def _paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        incoming = Incoming(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            dup=bool(message.dup),
            mid=message.mid,
            response_topic=getattr(props, "ResponseTopic", None) or None,
            correlation_data=getattr(props, "CorrelationData", None),
            message_expiry=getattr(props, "MessageExpiryInterval", None),
        )
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, incoming)

    # ---- in the asyncio loop ------------------------------------------------------------------------------

    def _connected_in_loop(self, ok: bool, reason: str) -> None:
        if not ok:
            log.error("mqtt_connect_refused reason=%s", reason)
            return
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._subscribe()
        self.publish(self.topics.bridge_state, ONLINE, retain=True)
        if self._info is not None:
            self.publish(self.topics.bridge_info, wire.encode(self._info()), retain=True)
        self._connected.set()
        log.info("mqtt_connected host=%s port=%d protocol=%d", self.config.host, self.config.port, self.config.protocol)

    def _disconnected_in_loop(self, reason: str) -> None:
        self._connected.clear()
        log.warning("mqtt_disconnected reason=%s", reason)

    def _subscribe(self) -> None:
        filters = self.topics.subscriptions()
        if self._v5:
            options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True)
            self._client.subscribe([(f, options) for f in filters])
        else:
            self._client.subscribe([(f, 1) for f in filters])

    async def _consume(self) -> None:
        while True:
            msg = await self._inbox.get()
            try:
                await self._on_message(msg)
            except Exception:
                log.exception("message_handler_failed topic=%s", msg.topic)
            if msg.qos > 0:
                self._client.ack(msg.mid, msg.qos)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, correlation_data: bytes | None = None
    ) -> None:
        """Publish with QoS 1 (paho queues it while disconnected and sends it on reconnect)."""
        properties = None
        if self._v5 and correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation_data
        self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)


def _wait_published(info: paho.MQTTMessageInfo) -> None:
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout=2.0)
