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
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from . import wire
from .config import MqttConfig
from .messages import Incoming
from .states import TERMINAL
from .topics import Topics

log = logging.getLogger(__name__)


def _presence(state: str, instance: int | None) -> bytes:
    """`{"state": ...}`, naming the instance when several run (its will says which one went away)."""
    return wire.encode({"state": state} if instance is None else {"state": state, "instance": instance})


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
        self._on_sent: dict[int, Callable[[], None]] = {}
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
        client.will_set(self.topics.bridge_state, _presence("offline", self.topics.instance), qos=1, retain=True)
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
        client.on_publish = self._paho_published
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
            offline = _presence("offline", self.topics.instance)
            info = self._client.publish(self.topics.bridge_state, offline, qos=1, retain=True)
            await asyncio.get_running_loop().run_in_executor(None, _wait_published, info)
        self._client.disconnect()
        self._client.loop_stop()

    # ---- paho callbacks (paho's thread): convert and hand over, nothing else ---------------------------

    def _paho_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        _no_delay(client)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._connected_in_loop, not reason.is_failure, str(reason))

    def _paho_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._loop is not None:
            expected = not reason.is_failure and reason.value == 0
            self._loop.call_soon_threadsafe(self._disconnected_in_loop, str(reason), expected)

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

    def _paho_published(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._published_in_loop, mid)

    # ---- in the asyncio loop ------------------------------------------------------------------------------

    def _connected_in_loop(self, ok: bool, reason: str) -> None:
        if not ok:
            log.error("mqtt_connect_refused reason=%s", reason)
            return
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._subscribe()
        self.publish(self.topics.bridge_state, _presence("online", self.topics.instance), retain=True)
        if self._info is not None:
            self.publish(self.topics.bridge_info, wire.encode(self._info()), retain=True)
        self._connected.set()
        log.info("mqtt_connected host=%s port=%d protocol=%d", self.config.host, self.config.port, self.config.protocol)

    def _published_in_loop(self, mid: int) -> None:
        callback = self._on_sent.pop(mid, None)
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("on_sent_failed mid=%d", mid)

    def _disconnected_in_loop(self, reason: str, expected: bool) -> None:
        self._connected.clear()
        log.log(logging.INFO if expected else logging.WARNING, "mqtt_disconnected reason=%s", reason)

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
            # Let HTTP sends and timers run between messages: during a flood the inbox is never empty,
            # and without this the intake held the loop while sends that had their tokens waited.
            await asyncio.sleep(0)

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
        """Publish with QoS 1 (paho queues it while disconnected); `on_sent` runs when the broker acks it.

        Called on the loop thread; paho's ack callback is handed back to the loop, so it runs after this.
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
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if on_sent is not None:
            self._on_sent[info.mid] = on_sent


def _no_delay(client: paho.Client) -> None:
    """Disable Nagle's algorithm: the bridge trades small packets both ways (commands, PUBACKs, states), and
    Nagle plus delayed ACKs held them for up to 40 ms (bench/latency.py)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _wait_published(info: paho.MQTTMessageInfo) -> None:
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout=2.0)


class StateFollower:
    """An operator-side client: publish a command, then follow its lifecycle on the state topics.

    Used by `semookii-bridge send` and the demo; it sees the same topics and payloads a Node-RED flow does.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        prefix: str = "vpp",
        username: str = "",
        password: str = "",
        client_id: str = "",
    ) -> None:
        self.topics = Topics(prefix)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._states: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._host, self._port = host, port
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if username:
            self._client.username_pw_set(username, password or None)
        self._client.on_connect = self._paho_connect
        self._client.on_message = self._paho_message
        self._client.on_subscribe = self._paho_subscribed

    async def __aenter__(self) -> StateFollower:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port)
        self._client.loop_start()
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _paho_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("operator_connect_refused reason=%s", reason)
            return
        prefix = self.topics.prefix
        client.subscribe(
            [(f"{prefix}/group/+/state", 1), (f"{prefix}/inverter/+/state", 1), (f"{prefix}/batch/state", 1)]
        )

    def _paho_subscribed(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._ready.set)

    def _paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if not message.payload or self._loop is None:
            return
        try:
            doc = wire.decode(bytes(message.payload), dict[str, Any])
        except ValueError:
            return
        self._loop.call_soon_threadsafe(self._states.put_nowait, doc)

    def send(self, topic: str, payload: bytes) -> None:
        """Publish a command (QoS 1, not retained)."""
        self._client.publish(topic, payload, qos=1)

    async def follow(self, request_id: str, wait_seconds: float) -> AsyncIterator[dict[str, Any]]:
        """Yield the command's state messages until a terminal one, or stop after `wait_seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                doc = await asyncio.wait_for(self._states.get(), remaining)
            except TimeoutError:
                return
            if doc.get("request_id") != request_id:
                continue
            yield doc
            if doc.get("status") in TERMINAL:
                return
