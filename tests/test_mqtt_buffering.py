"""The bridge's paho client joins the writes of one loop turn and serves reads from one recv(); its publish
window, and what the outbox does with publishes paho cannot take.

These tests drive the client over a socketpair, since they pin how it hooks into paho's private socket
calls: a paho release that renames them fails here rather than slowing or breaking the bridge.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from paho.mqtt.client import MQTTMessage, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from semookii_bridge.mqtt import client as client_module
from semookii_bridge.mqtt import outbox as outbox_module
from semookii_bridge.mqtt.client import BufferedClient
from semookii_bridge.mqtt.outbox import Outbox

PUBACK_1 = b"\x40\x02\x00\x01"


@pytest.fixture
def wired() -> Iterator[tuple[BufferedClient, socket.socket, list[int]]]:
    """A client whose socket is one end of a socketpair (the other end plays the broker)."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    broker.settimeout(1.0)
    loop_thread = threading.get_ident()
    scheduled: list[int] = []
    client = BufferedClient(CallbackAPIVersion.VERSION2, protocol=4, loop_thread=lambda: loop_thread,
                             on_pending=lambda: scheduled.append(1))  # fmt: skip
    client.manual_ack_set(True)
    client._sock = ours
    yield client, broker, scheduled
    ours.close()
    broker.close()


def test_packets_of_one_turn_leave_in_one_write(wired: tuple[BufferedClient, socket.socket, list[int]]) -> None:
    """Three acks are held until send_pending(), which writes them together; the flush is asked for once."""
    client, broker, scheduled = wired
    for mid in (1, 2, 3):
        client.ack(mid, 1)
    broker.setblocking(False)
    with pytest.raises(BlockingIOError):
        broker.recv(100)
    client.send_pending()
    broker.setblocking(True)
    assert broker.recv(100) == PUBACK_1 + b"\x40\x02\x00\x02\x40\x02\x00\x03"
    assert scheduled == [1]


def test_disconnect_goes_out_at_once_with_what_was_pending(
    wired: tuple[BufferedClient, socket.socket, list[int]],
) -> None:
    """paho closes its socket right after DISCONNECT, so it and what preceded it are written immediately."""
    client, broker, _ = wired
    client.ack(1, 1)
    client.disconnect()
    assert broker.recv(100) == PUBACK_1 + b"\xe0\x00"


def test_other_threads_write_directly(wired: tuple[BufferedClient, socket.socket, list[int]]) -> None:
    """reconnect() runs in an executor thread: what paho writes there is not held for the loop."""
    client, broker, scheduled = wired
    worker = threading.Thread(target=client.ack, args=(1, 1))
    worker.start()
    worker.join()
    assert broker.recv(100) == PUBACK_1 and scheduled == []


class CountingSocket:
    """A socket wrapper that records each recv() call."""

    def __init__(self, sock: socket.socket, calls: list[int]) -> None:
        self._sock, self._calls = sock, calls

    def recv(self, size: int) -> bytes:
        self._calls.append(size)
        return self._sock.recv(size)

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def test_reads_are_served_from_one_recv(wired: tuple[BufferedClient, socket.socket, list[int]]) -> None:
    """Two messages arrive in one segment: both are read, from one recv() (paho asks byte by byte)."""
    client, broker, _ = wired
    received: list[bytes] = []
    recvs: list[int] = []

    def on_message(c: object, userdata: object, message: MQTTMessage) -> None:
        received.append(message.payload)

    client.on_message = on_message
    sock = client._sock
    client._sock = CountingSocket(sock, recvs)
    publish = b"\x30\x05\x00\x01tab"  # QoS 0 PUBLISH, topic "t", payload "ab"
    broker.sendall(publish + publish.replace(b"ab", b"cd"))
    client.loop_read()
    assert received == [b"ab", b"cd"] and not client.has_unread()
    assert len(recvs) == 2  # the segment, then the empty read that ends the call
    client._sock = sock


def test_a_new_socket_drops_what_was_pending_for_the_old_one(
    wired: tuple[BufferedClient, socket.socket, list[int]],
) -> None:
    """Bytes meant for a connection that is gone never reach the next one."""
    client, broker, _ = wired
    client.ack(1, 1)
    fresh, peer = socket.socketpair()
    fresh.setblocking(False)
    peer.settimeout(1.0)
    client._sock = fresh
    client.ack(2, 1)
    client.send_pending()
    assert peer.recv(100) == b"\x40\x02\x00\x02"
    broker.setblocking(False)
    with pytest.raises(BlockingIOError):
        broker.recv(100)
    fresh.close()
    peer.close()


def connected(client: BufferedClient) -> None:
    """Mark the wired client connected, as after a CONNACK, so publishes go out."""
    from paho.mqtt.client import _ConnectionState

    client._state = _ConnectionState.MQTT_CS_CONNECTED


def test_the_window_holds_publishes_beyond_it_until_a_puback(
    wired: tuple[BufferedClient, socket.socket, list[int]],
) -> None:
    """With a window of 2, a third QoS 1 publish waits in paho and leaves when the first PUBACK comes back."""
    client, broker, _ = wired
    connected(client)
    client.set_window(2)
    for payload in (b"a", b"b", b"c"):
        client.publish("t", payload, qos=1)
    client.send_pending()
    sent = broker.recv(100)
    assert sent.count(b"\x32") == 2 and b"c" not in sent
    broker.sendall(PUBACK_1)
    client.loop_read()
    client.send_pending()
    assert broker.recv(100).endswith(b"c")


def test_a_puback_with_nothing_waiting_sends_nothing(
    wired: tuple[BufferedClient, socket.socket, list[int]],
) -> None:
    """The shortcut for an empty wait list: a PUBACK frees its message and writes nothing."""
    client, broker, _ = wired
    connected(client)
    client.set_window(5)
    client.publish("t", b"a", qos=1)
    client.send_pending()
    broker.recv(100)
    broker.sendall(PUBACK_1)
    client.loop_read()
    client.send_pending()
    assert not client._out_messages and client._inflight_messages == 0
    broker.setblocking(False)
    with pytest.raises(BlockingIOError):
        broker.recv(100)


class RefusingPaho:
    """Stands in for paho's client: refuses publishes (MQTT_ERR_QUEUE_SIZE) while `full`, like paho with
    OUT_LIMIT messages held or a packet id still in use; records the ones it takes."""

    def __init__(self) -> None:
        self.full = False
        self.taken: list[bytes] = []
        self._out_messages: dict[int, bytes] = {}
        self.on_publish: object = None
        self._mid = 0

    def publish(self, topic: str, payload: bytes, **_: object) -> MQTTMessageInfo:
        self._mid += 1
        info = MQTTMessageInfo(self._mid)
        if self.full:
            info.rc = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
            return info
        self.taken.append(payload)
        self._out_messages[self._mid] = payload
        return info

    def want_write(self) -> bool:
        return False


def outbox_with(fake: RefusingPaho) -> Outbox:
    return Outbox(fake, v5=False, flush=lambda: None)  # type: ignore[arg-type]


def test_a_refused_publish_is_held_and_sent_in_order_after_a_puback() -> None:
    """What paho refuses is neither dropped nor filed under a packet id it does not own: it goes out, in
    order, once a PUBACK frees room, and its on_sent runs for its own acknowledgement only."""
    fake = RefusingPaho()
    outbox = outbox_with(fake)
    sent: list[str] = []
    outbox.publish("t", b"first", on_sent=lambda: sent.append("first"))
    fake.full = True
    outbox.publish("t", b"second", on_sent=lambda: sent.append("second"))
    outbox.publish("t", b"third")
    assert fake.taken == [b"first"] and outbox.unacknowledged == 3 and outbox._on_sent.keys() == {1}
    fake.full = False
    del fake._out_messages[1]
    outbox.acknowledged(1)
    assert fake.taken == [b"first", b"second", b"third"] and sent == ["first"]
    second_mid = next(mid for mid, payload in fake._out_messages.items() if payload == b"second")
    outbox.acknowledged(second_mid)
    assert sent == ["first", "second"]


def test_the_intake_pauses_while_too_many_publishes_await_their_ack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above INTAKE_PAUSE unacknowledged publishes the intake stops taking commands, and resumes below half."""
    monkeypatch.setattr(outbox_module, "INTAKE_PAUSE", 4)
    fake = RefusingPaho()
    outbox = outbox_with(fake)
    for n in range(5):
        outbox.publish("t", b"%d" % n)
    assert not outbox.room.is_set() and fake.on_publish is not None
    for mid in (1, 2, 3):
        del fake._out_messages[mid]
        outbox.acknowledged(mid)
    assert outbox.room.is_set()


def test_one_read_handles_a_bounded_number_of_packets(wired: tuple[BufferedClient, socket.socket, list[int]]) -> None:
    """A burst of 300 messages is handled READ_PACKETS per call, the rest at the next turn: paho's own
    loop_read handled as many packets as messages were in flight, holding the loop during a flood."""
    client, broker, _ = wired
    received: list[bytes] = []
    client.on_message = lambda c, u, m: received.append(m.payload)
    broker.sendall(b"\x30\x05\x00\x01tab" * 300)
    client.loop_read()
    assert len(received) == client_module.READ_PACKETS and client.has_unread()
    client.loop_read()
    assert len(received) == 300
