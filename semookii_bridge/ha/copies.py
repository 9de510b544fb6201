"""A second copy of a bridge without `[ha]`, found by its presence before it takes the MQTT session.

Each bridge without `[ha]` keeps a retained presence (`<prefix>/bridge/instance/<host>-<pid>/state`, role
`single`, `offline` as its will). One that finds another live bridge on its prefix when it starts refuses to
run (exit 2), naming it and the two ways out; the bridge already running keeps running. The same presence
tells a session taken over from a broker restarting: the session counts as taken over only while an older
live bridge is present (`rival`), so broker restarts, however many, never end the bridge.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from ..config import BridgeConfig
from .fleet import FleetMismatch
from .membership import process_ended
from .standby import Presence

log = logging.getLogger(__name__)

LIVE = ("single", "leader")
"""Roles of a bridge that holds the prefix's sessions (a standby does not)."""
SETTLE = 5.0
"""Seconds at most to wait for the presence session to connect and read the retained states."""


async def start(cfg: BridgeConfig, stack: AsyncExitStack) -> Presence:
    """This bridge's presence, started (stopped again by `stack`); raises FleetMismatch when another live
    bridge runs on the prefix."""
    presence = Presence(cfg, cfg.ha.instance_name(), role="single")
    presence.session.start()
    stack.push_async_callback(presence.stop)
    try:
        await asyncio.wait_for(presence.settled.wait(), SETTLE)
    except TimeoutError:
        log.warning("presence_unsettled within=%g effect=%s", SETTLE, "started without checking for another copy")
        return presence
    others = older(presence)
    if others:
        raise FleetMismatch(
            f"another bridge runs on prefix {cfg.mqtt.prefix!r} at this broker ({', '.join(others)}): two bridges "
            "on one prefix would both send every command. Stop this copy; for a second machine run a hot "
            "standby ([ha] on a PostgreSQL journal, docs/high-availability.md); for a separate fleet give it "
            f"another mqtt.prefix. If that bridge is gone, clear its retained state: mosquitto_pub -r -n -t "
            f"{presence.topics.instance_state(others[0])}"
        )
    return presence


def running(presence: Presence) -> list[str]:
    """The other live bridges on the prefix (one on this host whose process has ended is not)."""
    return sorted(
        name
        for name, state in presence.seen.items()
        if name != presence.name and state.role in LIVE and not _ended_here(name)
    )


def older(presence: Presence) -> list[str]:
    """The live bridges that started before this one (of two started together, the later one gives way)."""
    mine = (presence.state.since, presence.name)
    return [name for name in running(presence) if (presence.seen[name].since, name) < mine]


def rival(presence: Presence) -> bool:
    """Whether a live bridge that started before this one is present: a session of ours lost soon after it
    opened was then taken over by it (else the broker restarted, or a client that is no bridge took it)."""
    return bool(older(presence))


def _ended_here(name: str) -> bool:
    """Whether `name` (`<host>-<pid>`) ran on this host in a process that has ended (its will never arrived)."""
    host, _, pid = name.rpartition("-")
    return process_ended(host, pid)
