"""paho's client as the bridge drives it: buffered socket I/O, a bounded read per loop turn, and its set-up
from `MqttConfig` (session, credentials, TLS, MQTT 5 properties)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..config import MqttConfig
from ..interface.payloads import Incoming

OUT_LIMIT = 50_000
"""Publishes paho may hold unacknowledged: packet ids are 16 bits, and past 65,535 paho refuses a publish
whose id is still in use (MQTT_ERR_QUEUE_SIZE). Beyond this the outbox keeps them itself, in order."""
_DISCONNECT = 0xE0
READ_SIZE = 65536
READ_PACKETS = 256
"""Packets handled per read callback; the rest wait for the next loop turn (the socket stays readable)."""


class Will(msgspec.Struct, frozen=True):
    """The message the broker publishes for us when the connection is lost without a DISCONNECT."""

    topic: str
    payload: bytes
    retain: bool = True
    delay: int = 0
    """MQTT 5 Will Delay Interval: the broker waits this long, and sends nothing if the session is resumed
    meanwhile (a standby taking over the same client id)."""


def build_client(
    cfg: MqttConfig, will: Will | None, *, loop_thread: Callable[[], int], on_pending: Callable[[], None]
) -> BufferedClient:
    """A client for the bridge's persistent session (manual acks, the configured window, will, credentials,
    TLS), set to connect when the first reconnect() runs. Callbacks are the caller's to set."""
    v5 = cfg.protocol == 5
    kwargs: dict[str, Any] = {} if v5 else {"clean_session": False}
    client = BufferedClient(
        CallbackAPIVersion.VERSION2,
        client_id=cfg.client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        loop_thread=loop_thread,
        on_pending=on_pending,
        **kwargs,
    )
    client.manual_ack_set(True)
    client.max_queued_messages_set(OUT_LIMIT)
    client.set_window(cfg.max_inflight)
    if will is not None:
        will_properties = None
        if v5 and will.delay:
            will_properties = Properties(PacketTypes.WILLMESSAGE)
            will_properties.WillDelayInterval = will.delay
        client.will_set(will.topic, will.payload, qos=1, retain=will.retain, properties=will_properties)
    credentials(client, cfg)
    connect_kwargs: dict[str, Any] = {}
    if v5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = cfg.session_expiry
        properties.ReceiveMaximum = cfg.receive_maximum  # QoS 1 commands the broker sends before our acks
        connect_kwargs = {"clean_start": False, "properties": properties}
    client.connect_async(cfg.host, cfg.port, cfg.keepalive, **connect_kwargs)
    return client


def credentials(client: paho.Client, cfg: MqttConfig) -> None:
    """Username/password and TLS (CA, client certificate) as configured."""
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


class BufferedClient(paho.Client):
    """paho's client, with buffered socket reads and the packets of one event-loop turn joined in one send().

    paho sends each packet (a PUBACK, a state message) with its own send() call, and reads each packet
    with three or more recv() calls (the first byte, the length byte by byte, the body); at full rate that
    was about nine system calls per command (bench/throughput.py). On the loop thread, packets now go into
    `pending`, which MqttLink sends once per turn, and reads are served from one large recv(). Elsewhere
    (reconnect() runs in an executor thread) paho reads and writes directly, as before.
    """

    def __init__(
        self, *args: Any, loop_thread: Callable[[], int], on_pending: Callable[[], None], **kwargs: Any
    ) -> None:
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


def no_delay(client: paho.Client) -> None:
    """Disable Nagle's algorithm: the bridge trades small packets both ways (commands, PUBACKs, states), and
    Nagle plus delayed ACKs held them for up to 40 ms (bench/latency.py)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def incoming_of(message: paho.MQTTMessage) -> Incoming:
    """paho's message as the project's frozen `Incoming` (MQTT 5 properties included)."""
    props = getattr(message, "properties", None)
    return Incoming(
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
