"""paho's socket driven by the asyncio loop, not by paho's thread: a reader, a writer only while bytes wait, and
every packet of one loop turn sent in one write. While a stop on the safety lane is on its way the ordinary socket
is read a little at a time, so the stop's own steps go first."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from .client import READ_PACKETS, BufferedClient

URGENT_PAUSE, URGENT_PACKETS = 0.01, 16
"""While a stop on the safety lane is on its way, the ordinary socket is read this many packets at a time, with
this many seconds between: ordinary commands still flow (and may supersede the stop), a storm does not."""


class SocketWatch:
    """Watches exactly paho's current socket on the loop (`loop`, set at start) and sends what is pending."""

    client: BufferedClient
    """Set once the client is built (the client is built with this watch's `schedule_flush`)."""

    def __init__(self, urgent: Callable[[], bool] | None) -> None:
        self._urgent = urgent
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread = 0
        self._sock: Any = None
        self._fd = -1
        self._writing = self._flush_scheduled = False

    def socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Called from the executor thread that runs reconnect(): let the loop look at paho's socket.
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.sync)

    def socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # On the loop thread when the connection drops (loop_read): stop watching before it is closed.
        # On the executor thread in reconnect(): the loop looks again when it can.
        if self.loop is None:
            return
        if threading.get_ident() == self.loop_thread:
            self.sync()
        else:
            self.loop.call_soon_threadsafe(self.sync)

    def sync(self) -> None:
        """Watch exactly paho's current socket. The open/close callbacks can arrive late and out of order
        (a connection attempt may fail before the loop hears of it), so the only truth is client.socket()."""
        sock = self.client.socket()
        fd = sock.fileno() if sock is not None else -1
        if sock is self._sock and fd == self._fd:
            return
        self.detach()
        if fd < 0 or self.loop is None:
            return
        self.loop.add_reader(fd, self.readable)
        self._sock, self._fd = sock, fd
        self.flush()

    def detach(self) -> None:
        """Stop watching the socket we watched (by the fd number it had: a closed socket reports -1)."""
        if self._sock is None:
            return
        if self.loop is not None:
            self.loop.remove_reader(self._fd)
            if self._writing:
                self.loop.remove_writer(self._fd)
        self._writing = False
        self._sock, self._fd = None, -1

    def readable(self) -> None:
        urgent = self._urgent is not None and self._urgent() and self.loop is not None
        self.client.loop_read(URGENT_PACKETS if urgent else READ_PACKETS)
        self.flush()
        if urgent and self.loop is not None:
            self.detach()  # a stop is on its way: its steps go before this socket's storm; a little at a time
            self.loop.call_later(URGENT_PAUSE, self.resume_reading)
        elif self.client.has_unread() and self.loop is not None:
            self.loop.call_soon(self.readable)  # stopped at READ_PACKETS; the rest is in our buffer

    def resume_reading(self) -> None:
        """Watch the socket again; what is already buffered is read at the next turn (the socket will not wake us
        for it, and a PINGRESP left there would end the connection at the keepalive)."""
        self.sync()
        if self.client.has_unread() and self.loop is not None:
            self.loop.call_soon(self.readable)

    def writable(self) -> None:
        self.client.loop_write()
        self.flush()

    def schedule_flush(self) -> None:
        """Packets are pending: send them at the end of this loop turn, together with any that follow."""
        if not self._flush_scheduled and self.loop is not None:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what is pending; watch for writability only while bytes are left that could not be written."""
        self._flush_scheduled = False
        if self._sock is not self.client.socket():
            self.sync()
            return
        if self._sock is None or self.loop is None:
            return
        self.client.send_pending()
        wants = self.client.want_write() or bool(self.client.pending)
        if wants and not self._writing:
            self.loop.add_writer(self._fd, self.writable)
            self._writing = True
        elif not wants and self._writing:
            self.loop.remove_writer(self._fd)
            self._writing = False
