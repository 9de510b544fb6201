"""The bridge's MQTT connection (paho-mqtt 2.x lives in this package and nowhere else).

The connection is driven by the asyncio loop (the operator tool's by paho's own thread); paho's
callbacks only convert data into the bridge's frozen `Incoming` type and hand it to the loop.
Acknowledgements are manual: a QoS 1 message is acknowledged only after the bridge has journaled (or
answered) it, so a crash before that makes the broker deliver it again (persistent session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..common.aio import completer
from ..common.backoff import Backoff
from ..config import MqttConfig
from ..interface import wire
from ..interface.payloads import Incoming
from ..interface.topics import Topics
from .client import BufferedClient, Will, build_client, incoming_of, no_delay
from .failures import ConnectionWatch
from .outbox import Outbox
from .socket_watch import SocketWatch

log = logging.getLogger(__name__)

ACK_BATCH = 64
"""Messages taken from the inbox per turn; their journal writes share one commit and then are acknowledged."""


def _presence(state: str) -> bytes:
    """`{"state": ...}` for `<prefix>/bridge/state`."""
    return wire.encode({"state": state})


class MqttLink:
    """Connects, subscribes, delivers `Incoming` messages to `on_message` in order, and publishes.

    paho's socket is driven by the asyncio loop (reader, writer when needed, a 1 s timer for keepalive),
    not by paho's own thread: a publish is written at once from the loop, without waking a thread.
    Only the blocking TCP connect runs in the default executor.
    """

    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        on_message: Callable[[Incoming], Awaitable[None]],
        *,
        info: Callable[[], Any] | None = None,
        before_ack: Callable[[], Awaitable[None]] | None = None,
        on_overload: Callable[[Incoming], None] | None = None,
        will_delay: int = 0,
        safety: bool = False,
        urgent: Callable[[], bool] | None = None,
    ) -> None:
        self.config, self.topics, self._on_message, self._info = config, topics, on_message, info
        self._before_ack, self._on_overload = before_ack, on_overload
        self.safety, self._urgent = safety, urgent
        """`safety`: the safety lane's session (its topics only, no presence: no will, no `online`); `urgent()`:
        a stop on that lane is on its way, so read no storm and take one message per turn instead of a batch."""
        self._will_delay = will_delay if config.protocol == 5 else 0
        """With a hot standby: `offline` only if no standby resumes the session within this many seconds."""
        self._v5 = config.protocol == 5
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[Incoming] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._connector: asyncio.Task[None] | None = None
        self._misc: asyncio.TimerHandle | None = None
        self.reconnects = 0
        self._stopping = self._ever_connected = False
        self._watch = SocketWatch(urgent)
        self.watch = ConnectionWatch(config.host, config.port, config.client_id)
        self._client = self._make_client()
        self.outbox = Outbox(self._client, v5=self._v5, flush=self._watch.flush)
        self.publish = self.outbox.publish
        """Publish with QoS 1 through the outbox (in order, never dropped); `on_sent` runs on the broker's ack."""

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def waiting(self) -> bool:
        """Messages arrived that were not handled yet (on the safety lane: a stop on its way)."""
        return not self._inbox.empty()

    # ---- set-up ---------------------------------------------------------------------------------------

    def _make_client(self) -> BufferedClient:
        will = None if self.safety else Will(self.topics.bridge_state, _presence("offline"), delay=self._will_delay)
        client = build_client(
            self.config, will, loop_thread=lambda: self._watch.loop_thread, on_pending=self._watch.schedule_flush
        )
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        client.on_socket_open = self._watch.socket_open
        client.on_socket_close = self._watch.socket_close
        self._watch.client = client
        return client

    async def start(self, wait_seconds: float = 30.0) -> None:
        """Connect (retrying with backoff) and wait for the first connection; messages wait for `deliver()`."""
        self._loop = asyncio.get_running_loop()
        self._watch.loop, self._watch.loop_thread = self._loop, threading.get_ident()
        self._connector = self._loop.create_task(self._keep_connected())
        self._misc = self._loop.call_later(1.0, self._keepalive)
        deadline = self._loop.time() + wait_seconds
        while not self._connected.is_set():  # refused credentials end the wait at once: no retry fixes them
            failure = self.watch.last
            if (failure is not None and failure.kind == "not_authorized") or self._loop.time() >= deadline:
                raise self.watch.error(wait_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), 0.1)

    def deliver(self) -> None:
        """Start handing buffered and new messages to `on_message`, in order."""
        if self._consumer is None:
            self._consumer = asyncio.get_running_loop().create_task(self._consume())

    async def pause(self) -> None:
        """Stop handing over messages; those not yet handled stay unacknowledged and come back later."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)

    async def stop(self) -> None:
        """Publish `offline` (the will covers a crash), disconnect, and let go of the socket."""
        await self.pause()
        self._stopping = True
        if self._connector is not None:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        if self._will_delay or self.safety:
            # A standby may resume the session: leave `offline` to the delayed will, which it then cancels.
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        else:
            await self._say_offline()
            self._client.disconnect()
        self._watch.flush()
        if self._misc is not None:
            self._misc.cancel()
        self._watch.detach()

    async def _say_offline(self) -> None:
        """Publish the retained `offline` and wait (up to 2 s) for the broker to have it."""
        if self._connected.is_set():
            sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            offline = _presence("offline")
            self.publish(self.topics.bridge_state, offline, retain=True, on_sent=completer(sent))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sent, 2.0)

    # ---- the socket, driven by the loop -----------------------------------------------------------------

    async def _keep_connected(self) -> None:
        """Own the connection for the link's whole life: wait while connected; after a loss, reconnect until
        the broker's CONNACK arrives, backing off. paho's reconnect() blocks on the TCP connect, so it runs
        in a thread; it returns before the CONNACK, and the new connection can drop before that."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.config.reconnect_min, self.config.reconnect_max)
        delay = backoff.initial
        while not self._stopping:
            if self._connected.is_set():
                await self._lost.wait()
                continue
            self._lost.clear()
            try:
                await loop.run_in_executor(None, self._client.reconnect)
            except (OSError, ssl.SSLError) as exc:
                self.watch.unreachable(exc)
            else:
                if await self._connack_or_loss(wait=max(5.0, float(self.config.keepalive))):
                    delay = backoff.initial
                    continue
            await asyncio.sleep(delay)
            delay = backoff.after(delay)

    async def _connack_or_loss(self, wait: float) -> bool:
        """After a TCP connect: True once the broker accepted the session, False on loss or silence."""
        connected = asyncio.ensure_future(self._connected.wait())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({connected, lost}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            lost.cancel()
        return self._connected.is_set()

    def _keepalive(self) -> None:
        try:
            if self._client.socket() is not None:
                self._client.loop_misc()
            self._watch.flush()
        finally:
            # Reschedule whatever happened: without loop_misc a dead connection would never be noticed.
            if self._loop is not None and not self._stopping:
                self._misc = self._loop.call_later(1.0, self._keepalive)

    # ---- paho callbacks (now on the loop thread, inside paho's callback lock): convert, defer -----------

    def _paho_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        no_delay(client)
        receive_maximum = getattr(props, "ReceiveMaximum", None) if self._v5 else None
        if receive_maximum:
            self._client.set_window(min(self.config.max_inflight, int(receive_maximum)))
        if self._loop is not None:
            self._loop.call_soon(self._connected_in_loop, not reason.is_failure, str(reason), int(reason.value))

    def _paho_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._loop is not None:
            expected = not reason.is_failure and reason.value == 0
            self._loop.call_soon_threadsafe(self._disconnected_in_loop, str(reason), expected)

    def _paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        incoming = incoming_of(message)
        if incoming.qos == 0 and self._on_overload is not None and self._inbox.qsize() >= self.config.inbox_limit:
            self._on_overload(incoming)  # QoS 0 has no flow control: refused, not queued without bound
            return
        self._inbox.put_nowait(incoming)

    # ---- in the asyncio loop ------------------------------------------------------------------------------

    def _connected_in_loop(self, ok: bool, reason: str, code: int = 0) -> None:
        if not ok:
            self.watch.refused(code, reason)
            return
        self.watch.connected()
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._subscribe()
        if not self.safety:
            self.publish(self.topics.bridge_state, _presence("online"), retain=True)
        self.announce()
        self.outbox.drain()
        self._connected.set()
        c = self.config
        log.info("mqtt_connected host=%s port=%d protocol=%d client_id=%s", c.host, c.port, c.protocol, c.client_id)

    def announce(self) -> None:
        """Publish `<prefix>/bridge/info` (retained): at each connect, and when what it says changed."""
        if self._info is not None:
            self.publish(self.topics.bridge_info, wire.encode(self._info()), retain=True)

    def _disconnected_in_loop(self, reason: str, expected: bool) -> None:
        self._connected.clear()
        level = logging.INFO if expected else logging.WARNING
        log.log(level, "mqtt_disconnected client_id=%s reason=%s", self.config.client_id, reason)
        self.watch.lost(expected)
        self._lost.set()

    def _subscribe(self) -> None:
        filters = self.topics.safety_subscriptions() if self.safety else self.topics.subscriptions()
        if self._v5:
            options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True)
            self._client.subscribe([(f, options) for f in filters])
        else:
            self._client.subscribe([(f, 1) for f in filters])
        self._watch.flush()

    async def _consume(self) -> None:
        """Hand over what has arrived (up to ACK_BATCH messages), wait until it is durable, then ack it all.

        While more than INTAKE_PAUSE publishes await their acknowledgement, no command is taken: its states
        could not be published in order, and unacknowledged QoS 1 commands stay safely with the broker."""
        while True:
            await self.outbox.room.wait()
            batch = [await self._inbox.get()]
            limit = 1 if self._urgent is not None and self._urgent() else ACK_BATCH
            while len(batch) < limit and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            for msg in batch:
                try:
                    await self._on_message(msg)
                except Exception:
                    log.exception("message_handler_failed topic=%s", msg.topic)
            if self._before_ack is not None:
                await self._before_ack()
            for msg in batch:
                if msg.qos > 0:
                    self._client.ack(msg.mid, msg.qos)
            self._watch.flush()
            # Let HTTP sends and timers run between batches: during a flood the inbox is never empty,
            # and without this the intake held the loop while sends that had their tokens waited.
            await asyncio.sleep(0)
