"""A TCP relay the test controls, between a bridge and one of its peers (PostgreSQL, the simulator, the broker):
the way a flaky network, a paused VM or a middlebox behaves, on loopback.

`freeze()` cuts the path without closing anything (bytes are neither forwarded nor refused, new connections
hang), `hold()` keeps the client's bytes until `release()` (a middlebox that acknowledges and holds them),
and `on(pattern, callback)` runs `callback` when the client sends bytes containing `pattern`, before they
are forwarded (a hook at an exact point of a protocol, e.g. inside PostgreSQL's fence transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Hook:
    """`callback` once, on the first chunk containing `pattern` in its direction, on a connection where `after`
    fired on an earlier chunk (if set)."""

    pattern: bytes
    downstream: bool
    callback: Callable[[], None]
    after: _Hook | None = None
    fired_on: int | None = None
    """The connection it fired on."""

    @property
    def fired(self) -> bool:
        return self.fired_on is not None

    def ready(self, downstream: bool, connection: int) -> bool:
        """Whether this chunk may fire it."""
        return (not self.fired and downstream == self.downstream
                and (self.after is None or self.after.fired_on == connection))  # fmt: skip

    def see(self, data: bytes, connection: int) -> None:
        if self.pattern in data:
            self.fired_on = connection
            self.callback()


class Relay:
    """Relays 127.0.0.1:`port` to 127.0.0.1:`target` (start with `await start()`, end with `await close()`)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.frozen = False
        self._resets = 0
        self.holding = False
        self.connections = 0
        self.delay = 0.0
        """Seconds each chunk waits before it is forwarded (a slow path)."""
        self._held: list[tuple[asyncio.StreamWriter, bytes]] = []
        self._hooks: list[_Hook] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thawed = asyncio.Event()
        self._thawed.set()

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def on(
        self, pattern: bytes, callback: Callable[[], None] = lambda: None, *, downstream: bool = False,
        after: _Hook | None = None,
    ) -> _Hook:
        """Run `callback` once, the first time a client (or, `downstream`, a server) sends bytes containing
        `pattern` (after the hook `after` fired on an earlier chunk), before they are forwarded."""
        hook = _Hook(pattern, downstream, callback, after=after)
        self._hooks.append(hook)
        return hook

    def after(self, pattern: bytes, callback: Callable[[], None], *, skip: int = 0) -> None:
        """Run `callback` once, when a client sends its next bytes (`skip` more messages later) after bytes
        containing `pattern`, on the same connection (so the server has answered them: inside a transaction, once
        a lock is granted), before they are forwarded."""
        hook = self.on(pattern)
        for _ in range(skip):
            hook = self.on(b"", after=hook)
        self.on(b"", callback, after=hook)

    def freeze(self) -> None:
        """Cut the path silently: nothing is forwarded either way, nothing is closed, new connections hang."""
        self.frozen = True
        self._thawed.clear()

    def thaw(self) -> None:
        """End a freeze: what waited goes on, new connections are relayed again."""
        self.frozen = False
        self._thawed.set()

    def reset(self) -> None:
        """End a freeze the way a network that dropped the packets does: every connection it held is closed
        (nothing it held is delivered), new connections are relayed again."""
        self._resets += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self.thaw()

    def hold(self) -> None:
        """Keep what clients send from now on (acknowledged by this host's TCP, not forwarded) until release()."""
        self.holding = True

    def release(self) -> None:
        """Forward every held byte, in order, and stop holding."""
        self.holding = False
        for writer, data in self._held:
            if not writer.is_closing():
                writer.write(data)
        self._held.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        resets = self._resets
        await self._thawed.wait()
        if self._resets != resets:  # accepted during a freeze a reset ended: that connection never got through
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, server_w))
        number = self.connections
        await asyncio.gather(self._pipe(client_r, server_w, number, upstream=True),
                             self._pipe(server_r, client_w, number), return_exceptions=True)  # fmt: skip
        for writer in (client_w, server_w):
            self._writers.discard(writer)
            writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int, *, upstream: bool = False
    ) -> None:
        while data := await reader.read(65536):
            for hook in [h for h in self._hooks if h.ready(not upstream, connection)]:
                hook.see(data, connection)
            await self._thawed.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if upstream and self.holding:
                self._held.append((writer, data))
                continue
            writer.write(data)
            await writer.drain()
        if upstream and self.holding:
            return  # a held request outlives its sender, as it would in a middlebox
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def close(self) -> None:
        self._thawed.set()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
