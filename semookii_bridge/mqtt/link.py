"""The MQTT edge: paho-mqtt 2.x lives here and nowhere else.

The bridge's connection is driven by the asyncio loop (the operator tool's by paho's own thread); paho's
callbacks only convert data into the bridge's frozen `Incoming` type and hand it to the loop.
Acknowledgements are manual: a QoS 1 message is acknowledged only after the bridge has journaled (or
answered) it, so a crash before that makes the broker deliver it again (persistent session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .. import wire
from ..aio import completer
from ..backoff import Backoff
from ..config import MqttConfig
from ..payloads import Incoming
from ..topics import Topics

log = logging.getLogger(__name__)

ACK_BATCH = 64
OUT_LIMIT = 50_000
"""Publishes paho may hold unacknowledged: packet ids are 16 bits, and past 65,535 paho refuses a publish
whose id is still in use (MQTT_ERR_QUEUE_SIZE). Beyond this the link keeps them itself, in order."""
INTAKE_PAUSE = 40_000
"""Unacknowledged publishes above which the intake stops taking commands (the broker keeps them unacked)."""
"""Messages taken from the inbox per turn; their journal writes share one commit and then are acknowledged."""
_DISCONNECT = 0xE0
READ_SIZE = 65536
READ_PACKETS = 256
"""Packets handled per read callback; the rest wait for the next loop turn (the socket stays readable)."""


class _BufferedClient(paho.Client):
    """paho's client, with buffered socket reads and the packets of one event-loop turn joined in one send().

    paho sends each packet (a PUBACK, a state message) with its own send() call, and reads each packet
    with three or more recv() calls (the first byte, the length byte by byte, the body); at full rate that
    was about nine system calls per command (bench/throughput.py). On the loop thread, packets now go into
    `pending`, which MqttLink sends once per turn, and reads are served from one large recv(). Elsewhere
    (reconnect() runs in an executor thread) paho reads and writes directly, as before.
    """

    def __init__(self, *args: Any, loop_thread: Callable[[], int], on_pending: Callable[[], None],
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.pending = bytearray()
        self.pending_sock: Any = None
        self._read: bytes = b""
        self._read_pos = 0
        self._read_sock: Any = None
        self._loop_thread = loop_thread
        self._on_pending = on_pending

    def _sock_send(self, buf: bytes | bytearray) -> int:
        sock = self._sock
        if sock is None or threading.get_ident() != self._loop_thread():
            return int(super()._sock_send(buf))
        if sock is not self.pending_sock:
            self.pending.clear()  # left over from a connection that is gone
            self.pending_sock = sock
        first = not self.pending
        self.pending += buf
        if buf and buf[0] & 0xF0 == _DISCONNECT:
            self.send_pending()  # paho closes the socket right after a DISCONNECT: it cannot wait for the turn
        elif first:
            self._on_pending()
        return len(buf)

    def _sock_recv(self, bufsize: int) -> bytes:
        sock = self._sock
        if sock is None or threading.get_ident() != self._loop_thread():
            return bytes(super()._sock_recv(bufsize))
        if sock is not self._read_sock:
            self._read, self._read_pos, self._read_sock = b"", 0, sock
        if self._read_pos >= len(self._read):
            data = bytes(super()._sock_recv(READ_SIZE))  # BlockingIOError when nothing is there, b"" at EOF
            if not data:
                return data
            self._read, self._read_pos = data, 0
        start = self._read_pos
        self._read_pos = start + bufsize
        return self._read[start : self._read_pos]

    def set_window(self, in_flight: int) -> None:
        """How many QoS 1 publishes may await their PUBACK at once. paho's default of 20 queued the state
        messages of a busy bridge in memory (RSS grew by kilobytes per command, bench/throughput.py); paho
        does not read the broker's Receive Maximum itself, so MqttLink sets it from the CONNACK."""
        self._max_inflight_messages = in_flight

    def _update_inflight(self) -> MQTTErrorCode:
        """paho's, skipped when no publish waits for room: it scanned every message in flight on each PUBACK.
        Waiting publishes are always the newest (paho queues one only while the window is full)."""
        out = self._out_messages
        if not out or out[next(reversed(out))].state != paho.mqtt_ms_queued:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._update_inflight()

    def loop_read(self, max_packets: int = READ_PACKETS) -> MQTTErrorCode:
        """Read at most `max_packets` packets, then give the loop back. paho's own reads as many packets as
        messages are in flight (it ignores the argument): with 50,000 publishes outstanding during a flood,
        one call handled a whole backlog and held the loop for seconds (bench/overload.py)."""
        for _ in range(max_packets):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def has_unread(self) -> bool:
        """Bytes were read from the socket that paho has not asked for yet (the socket will not wake us)."""
        return self._read_sock is not None and self._read_sock is self._sock and self._read_pos < len(self._read)

    def send_pending(self) -> None:
        """Write what is pending (as much as the socket takes now); an error is left for paho's read to find."""
        sock, pending = self._sock, self.pending
        if not pending:
            return
        if sock is None or sock is not self.pending_sock:
            pending.clear()
            return
        try:
            sent = sock.send(pending)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except OSError:
            pending.clear()  # the connection broke: paho notices on its next read and reconnects
            return
        del pending[:sent]


def _presence(state: str, instance: int | None) -> bytes:
    """`{"state": ...}`, naming the instance when several run (its will says which one went away)."""
    return wire.encode({"state": state} if instance is None else {"state": state, "instance": instance})


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
        info: Callable[[], dict[str, Any]] | None = None,
        before_ack: Callable[[], Awaitable[None]] | None = None,
        on_overload: Callable[[Incoming], None] | None = None,
    ) -> None:
        self.config = config
        self.topics = topics
        self._on_message = on_message
        self._info = info
        self._before_ack = before_ack
        self._on_overload = on_overload
        self._v5 = config.protocol == 5
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[Incoming] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._connector: asyncio.Task[None] | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._sock: Any = None
        self._fd = -1
        self._loop_thread = 0
        self._writing = False
        self._stopping = False
        self.reconnects = 0
        self._ever_connected = False
        self._on_sent: dict[int, Callable[[], None]] = {}
        self._overflow: deque[_Outgoing] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._flush_scheduled = False
        self._client = self._make_client()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ---- set-up ---------------------------------------------------------------------------------------

    def _make_client(self) -> _BufferedClient:
        cfg = self.config
        protocol = paho.MQTTv5 if self._v5 else paho.MQTTv311
        kwargs: dict[str, Any] = {} if self._v5 else {"clean_session": False}
        client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=protocol,
            loop_thread=lambda: self._loop_thread,
            on_pending=self._schedule_flush,
            **kwargs,
        )
        client.manual_ack_set(True)
        client.max_queued_messages_set(OUT_LIMIT)
        client.set_window(cfg.max_inflight)
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
        client.on_socket_open = self._paho_socket_open
        client.on_socket_close = self._paho_socket_close
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = cfg.session_expiry
            properties.ReceiveMaximum = cfg.receive_maximum  # QoS 1 commands the broker sends before our acks
        connect_kwargs: dict[str, Any] = {"clean_start": False, "properties": properties} if self._v5 else {}
        client.connect_async(cfg.host, cfg.port, cfg.keepalive, **connect_kwargs)
        return client

    async def start(self, wait_seconds: float = 30.0) -> None:
        """Connect (retrying with backoff) and wait until the first connection is up.

        Messages are buffered, not handled, until `deliver()`: the bridge recovers its journal first.
        """
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connector = self._loop.create_task(self._keep_connected())
        self._misc = self._loop.call_later(1.0, self._keepalive)
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
        """Publish `offline` (the will covers a crash), disconnect, and let go of the socket."""
        await self.pause()
        self._stopping = True
        if self._connector is not None:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        if self._connected.is_set():
            sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            offline = _presence("offline", self.topics.instance)
            self.publish(self.topics.bridge_state, offline, retain=True, on_sent=completer(sent))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sent, 2.0)
        self._client.disconnect()
        self._flush()
        if self._misc is not None:
            self._misc.cancel()
        self._detach()

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
                log.warning("mqtt_connect_failed host=%s port=%d error=%s", self.config.host, self.config.port,
                            type(exc).__name__)  # fmt: skip
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

    def _paho_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Called from the executor thread that runs reconnect(): let the loop look at paho's socket.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._sync_socket)

    def _paho_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # On the loop thread when the connection drops (loop_read): stop watching before it is closed.
        # On the executor thread in reconnect(): the loop looks again when it can.
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._sync_socket()
        else:
            self._loop.call_soon_threadsafe(self._sync_socket)

    def _sync_socket(self) -> None:
        """Watch exactly paho's current socket. The open/close callbacks can arrive late and out of order
        (a connection attempt may fail before the loop hears of it), so the only truth is client.socket()."""
        sock = self._client.socket()
        fd = sock.fileno() if sock is not None else -1
        if sock is self._sock and fd == self._fd:
            return
        self._detach()
        if fd < 0 or self._loop is None:
            return
        self._loop.add_reader(fd, self._readable)
        self._sock, self._fd = sock, fd
        self._flush()

    def _detach(self) -> None:
        """Stop watching the socket we watched (by the fd number it had: a closed socket reports -1)."""
        if self._sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            if self._writing:
                self._loop.remove_writer(self._fd)
        self._writing = False
        self._sock, self._fd = None, -1

    def _readable(self) -> None:
        self._client.loop_read()
        if self._client.has_unread() and self._loop is not None:
            self._loop.call_soon(self._readable)  # stopped at READ_PACKETS; the rest is in our buffer
        self._flush()

    def _writable(self) -> None:
        self._client.loop_write()
        self._flush()

    def _schedule_flush(self) -> None:
        """Packets are pending: send them at the end of this loop turn, together with any that follow."""
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send what is pending; watch for writability only while bytes are left that could not be written."""
        self._flush_scheduled = False
        if self._sock is not self._client.socket():
            self._sync_socket()
            return
        if self._sock is None or self._loop is None:
            return
        self._client.send_pending()
        wants = self._client.want_write() or bool(self._client.pending)
        if wants and not self._writing:
            self._loop.add_writer(self._fd, self._writable)
            self._writing = True
        elif not wants and self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _keepalive(self) -> None:
        try:
            if self._client.socket() is not None:
                self._client.loop_misc()
            self._flush()
        finally:
            # Reschedule whatever happened: without loop_misc a dead connection would never be noticed.
            if self._loop is not None and not self._stopping:
                self._misc = self._loop.call_later(1.0, self._keepalive)

    # ---- paho callbacks (now on the loop thread, inside paho's callback lock): convert, defer -----------

    def _paho_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        _no_delay(client)
        receive_maximum = getattr(props, "ReceiveMaximum", None) if self._v5 else None
        if receive_maximum:
            self._client.set_window(min(self.config.max_inflight, int(receive_maximum)))
        if self._loop is not None:
            self._loop.call_soon(self._connected_in_loop, not reason.is_failure, str(reason))

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
        if incoming.qos == 0 and self._on_overload is not None and self._inbox.qsize() >= self.config.inbox_limit:
            self._on_overload(incoming)  # QoS 0 has no flow control: refused, not queued without bound
            return
        self._inbox.put_nowait(incoming)

    def _paho_published(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon(self._published_in_loop, mid)

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
        self._drain_overflow()
        self._connected.set()
        log.info("mqtt_connected host=%s port=%d protocol=%d", self.config.host, self.config.port, self.config.protocol)

    def _published_in_loop(self, mid: int) -> None:
        callback = self._on_sent.pop(mid, None)
        self._drain_overflow()
        if not self._on_sent and self._room.is_set():
            self._client.on_publish = None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("on_sent_failed mid=%d", mid)

    def _disconnected_in_loop(self, reason: str, expected: bool) -> None:
        self._connected.clear()
        log.log(logging.INFO if expected else logging.WARNING, "mqtt_disconnected reason=%s", reason)
        self._lost.set()

    def _subscribe(self) -> None:
        filters = self.topics.subscriptions()
        if self._v5:
            options = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True)
            self._client.subscribe([(f, options) for f in filters])
        else:
            self._client.subscribe([(f, 1) for f in filters])
        self._flush()

    @property
    def unacknowledged(self) -> int:
        """Publishes the broker has not acknowledged yet (paho's and the link's own overflow)."""
        return len(self._client._out_messages) + len(self._overflow)

    async def _consume(self) -> None:
        """Hand over what has arrived (up to ACK_BATCH messages), wait until it is durable, then ack it all.

        While more than INTAKE_PAUSE publishes await their acknowledgement, no command is taken: its states
        could not be published in order, and unacknowledged QoS 1 commands stay safely with the broker."""
        while True:
            await self._room.wait()
            batch = [await self._inbox.get()]
            while len(batch) < ACK_BATCH and not self._inbox.empty():
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
            self._flush()
            # Let HTTP sends and timers run between batches: during a flood the inbox is never empty,
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
            self._room.clear()
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

    def _drain_overflow(self) -> None:
        """Hand held-back publishes to paho, oldest first, while it takes them; reopen the intake below half."""
        overflow = self._overflow
        while overflow and self._hand_to_paho(overflow[0]):
            overflow.popleft()
        if not self._room.is_set() and self.unacknowledged <= INTAKE_PAUSE // 2:
            self._room.set()


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A publish the link holds until paho has room for it."""

    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None
    on_sent: Callable[[], None] | None


def _no_delay(client: paho.Client) -> None:
    """Disable Nagle's algorithm: the bridge trades small packets both ways (commands, PUBACKs, states), and
    Nagle plus delayed ACKs held them for up to 40 ms (bench/latency.py)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
