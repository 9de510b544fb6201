"""The API client's sockets under the hot standby: no byte leaves unless this bridge still leads, and no byte
stays on the wire unacknowledged for longer than a bound.

The vendor API cannot check a fencing token, so the fence is kept as close to the wire as this process can:
every write of a request (TLS or not, asyncio or uvloop) asks `may_send()` first, in the same synchronous step
that hands the bytes to the kernel; a refusal aborts the connection, so a half-written request is reset, not
completed. `TCP_USER_TIMEOUT` makes the kernel drop a connection whose data stays unacknowledged longer than
`wire_bound` seconds, even while this process is paused: bytes that were written in time cannot arrive later
than that. What a middlebox that acknowledges and holds bytes does is beyond any client; see
docs/high-availability.md.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from yarl import URL

MaySend = Callable[[], bool]
WRITE_REFUSED = "this bridge no longer holds the lease; the request was not sent"


class WriteRefused(ConnectionError):
    """A request's bytes were not written: this process no longer holds the lease."""


class GuardedTransport:
    """A transport whose `write`/`writelines` first ask `may_send()`; everything else is the wrapped one's."""

    def __init__(self, transport: Any, may_send: MaySend) -> None:
        self._transport, self._may_send = transport, may_send

    def _check(self) -> None:
        if not self._may_send():
            self._transport.abort()
            raise WriteRefused(WRITE_REFUSED)

    def write(self, data: Any) -> None:
        self._check()
        self._transport.write(data)

    def writelines(self, chunks: Iterable[Any]) -> None:
        self._check()
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, with every new connection's transport guarded by `may_send` (the protocol writes
    through `protocol.transport`, so the guard sits in front of every request on a pooled connection too)."""

    def __init__(self, may_send: MaySend, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._may_send = may_send

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> Any:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        protocol.transport = GuardedTransport(protocol.transport, self._may_send)  # type: ignore[assignment]
        return transport, protocol


def bounded_socket_factory(wire_bound: float) -> Callable[[Any], socket.socket]:
    """aiohttp's `socket_factory`: a socket whose unacknowledged data the kernel gives up on after `wire_bound` s
    (`TCP_USER_TIMEOUT`, Linux), so no request written in time can be delivered later than that."""

    def make(addr_info: Any) -> socket.socket:
        family, kind, proto, _name, _address = addr_info
        sock = socket.socket(family=family, type=kind, proto=proto)
        sock.setblocking(False)
        user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
        if user_timeout is not None and family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, max(1, int(wire_bound * 1000)))
        return sock

    return make


def connector(*, may_send: MaySend | None, wire_bound: float | None, **kwargs: Any) -> aiohttp.TCPConnector:
    """A plain connector, or (under the hot standby) one that is fenced and bounded on the wire."""
    if wire_bound is not None:
        kwargs["socket_factory"] = bounded_socket_factory(wire_bound)
    if may_send is None:
        return aiohttp.TCPConnector(**kwargs)
    return GuardedConnector(may_send, **kwargs)


def refused_write(exc: BaseException) -> bool:
    """Whether the guard refused a request's bytes (aiohttp wraps the refusal in its own error)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, WriteRefused):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def cannot_connect(base_url: str, connect_timeout: float, exc: Exception) -> str:
    """'cannot connect to host:port: <OS reason>', the way an operator can check it."""
    url = URL(base_url)
    where = f"{url.host}:{url.port}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        reason = os.strerror(error.errno) if error.errno else str(error) or type(error).__name__
        return f"cannot connect to {where}: {reason}"
    return f"cannot connect to {where}: no connection within {connect_timeout:g} s"
