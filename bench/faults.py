"""The hot standby's fault cases for bench/failover.py: a relay per bridge (tests/support/relay.py) on an event loop of
its own thread, and how each fault is made and undone.

- `stall-cut` / `stall-stop`: once the leader's fence transaction holds the lease row's lock, its path to
  PostgreSQL goes silent, or the leader is stopped (SIGSTOP).
- `broker-cut` / `api-cut`: the leader's path to the broker, or to the API, goes silent (after the tenure a
  leader must have before it hands over).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from harness import ROOT

sys.path.insert(0, str(ROOT))
from tests.support.relay import Relay

FAULTS = ("kill", "stall-cut", "stall-stop", "broker-cut", "api-cut")
PEER = {"stall-cut": "db", "stall-stop": "db", "broker-cut": "broker", "api-cut": "api"}
"""The link each fault cuts, so the bridges reach that peer through their relays."""


class Relays:
    """One relay per bridge to `target`, on a loop in a thread of its own (the benches are not asyncio)."""

    def __init__(self, target: int, names: tuple[str, ...]) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.relays = {n: self._run(Relay(target).start()) for n in names}

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def port(self, name: str) -> int:
        return int(self.relays[name].port)

    def call(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        for relay in self.relays.values():
            self._run(relay.close())
        self.loop.call_soon_threadsafe(self.loop.stop)


def make(fault: str, relays: Relays, leader: str, pid: int) -> Callable[[], float]:
    """Start `fault` against `leader` (process `pid`); the returned function waits for it to strike and gives
    the time it struck (wall clock)."""
    struck: list[float] = []
    relay = relays.relays[leader]

    def strike() -> None:
        struck.append(time.time())
        if fault == "stall-stop":
            os.kill(pid, signal.SIGSTOP)
        else:
            relay.freeze()

    if fault.startswith("stall"):
        relays.call(lambda: relay.after(b"BEGIN;", strike, skip=1))
    else:
        relays.call(strike)

    def when() -> float:
        while not struck:
            time.sleep(0.01)
        return struck[0]

    return when


def undo(fault: str, relays: Relays, leader: str, pid: int) -> None:
    """Heal the path (and resume a stopped process, which then finds its lease gone and exits 75). A cut path
    heals as a network that dropped the packets does: what it held is not delivered (a middlebox that delivers
    held requests late is tests/test_breaker.py's case)."""
    relay = relays.relays[leader]
    relays.call(relay.thaw if fault.startswith("stall") else relay.reset)
    if fault == "stall-stop":
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
