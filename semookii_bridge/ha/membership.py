"""Wiring of the fleet's registration in the shared journal (`fleet.py` holds the rules): admission at start,
the heartbeat with this bridge's link health, and the hand-over of a leader whose broker or API link is down
while a standby has both. Links are checked without API calls: the presence session's MQTT keepalive (a
lease), a TCP connect to the API, and whether control calls are held after a timeout (`breaker.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Protocol

from yarl import URL

from ..config import BridgeConfig
from ..journal.lease import Leadership, boottime
from ..journal.postgres import Postgres
from ..journal.store import StoreUnavailable
from .fleet import MISMATCH_EXIT, FleetMismatch, LinkWatch, Member, admit, conflicts, differing, fingerprint

log = logging.getLogger(__name__)

Stop = Callable[[str, int], None]


class Session(Protocol):
    """The presence session, as far as link health goes."""

    connected: bool


QUICK = 0.5
"""Seconds between heartbeats while a link is down (two registrations a second, only while it lasts)."""


def window(cfg: BridgeConfig) -> float:
    """Seconds without a heartbeat after which a bridge of the journal counts as gone."""
    return 3 * cfg.ha.lease if cfg.ha.enabled else 10.0


class Links:
    """This bridge's two links as the heartbeat reports them: the broker (the presence session is connected;
    its keepalive is about a lease, so a silent cut shows within 1.5 leases) and the API (a TCP connect
    succeeds and control calls are not held after a timeout)."""

    def __init__(self, cfg: BridgeConfig, presence: Session | None, api_held: Callable[[], bool]) -> None:
        url = URL(cfg.api.base_url)
        self.host, self.port = url.host or "", url.port or 443
        self.presence, self.api_held = presence, api_held
        self.timeout = min(2.0, cfg.ha.lease)

    def looks_down(self) -> bool:
        """What is known without a probe: the presence session lost, or control calls held after a timeout."""
        return (self.presence is not None and not self.presence.connected) or self.api_held()

    async def check(self) -> tuple[bool, bool]:
        broker = self.presence is None or self.presence.connected
        return broker, not self.api_held() and await self._reachable()

    async def _reachable(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True


async def join(
    cfg: BridgeConfig,
    db: Postgres,
    stack: AsyncExitStack,
    links: Links,
    leading: Callable[[], Leadership | None],
    stop: Stop,
    *,
    sweep: Callable[[set[str]], None] | None = None,
) -> None:
    """Refuse to run beside a live bridge of this journal that does not match; else register, keep the
    registration fresh (with the links), hand over when `LinkWatch` says so, and deregister at a graceful stop."""
    span = window(cfg)
    me = Member(
        f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex}",
        cfg.ha.instance_name(),
        cfg.ha.enabled,
        fingerprint(cfg),
    )
    reason = await admit(me, lambda: db.members(span), span, dead=ended_here)
    if reason is not None:
        raise FleetMismatch(reason)
    for gone in await db.members(86400.0):
        if gone.instance != me.instance and (keys := differing(me.settings, gone.settings)):
            log.warning("fleet_settings_changed since_bridge=%s keys=%s", gone.name, "; ".join(keys))
    me = replace(me, joined=await db.register(me))
    stack.push_async_callback(_leave, db, me)
    watch = LinkWatch(cfg.ha.link_grace, 5 * cfg.ha.lease)
    beat = Heartbeat(db, me, span, links, watch, leading, stop)
    beat.sweep = sweep
    task = asyncio.get_running_loop().create_task(beat.run())
    stack.callback(task.cancel)


class Heartbeat:
    """Every quarter window: check the links, refresh the registration, then act on what the others say."""

    def __init__(
        self,
        db: Postgres,
        me: Member,
        span: float,
        links: Links,
        watch: LinkWatch,
        leading: Callable[[], Leadership | None],
        stop: Stop,
    ) -> None:
        self.db, self.me, self.span, self.links, self.watch = db, me, span, links, watch
        self.leading, self.stop = leading, stop
        self.sweep: Callable[[set[str]], None] | None = None
        """The leader clears the presence of bridges no longer registered (`Presence.sweep`)."""
        self._last: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            await self._pause()
            broker_ok, api_ok = await self.links.check()
            self.me = replace(self.me, broker_ok=broker_ok, api_ok=api_ok)
            try:
                await self.db.register(self.me)
                live = await self.db.members(self.span)
            except StoreUnavailable as exc:
                log.warning("fleet_heartbeat_failed error=%s", exc)
                continue
            self._rivals(live)
            await self._hand_over(live)
            lead = self.leading()
            if self.sweep is not None and lead is not None and lead.role == "leader":
                self.sweep({m.name for m in live})

    async def _pause(self) -> None:
        """A quarter window; while a link is down (or as soon as it looks down) QUICK, so a hand-over follows
        `ha.link_grace` closely instead of up to a quarter window later."""
        period = self.span / 4 if self.me.broker_ok and self.me.api_ok else QUICK
        steps = max(1, round(period / QUICK))
        for _ in range(steps):
            await asyncio.sleep(period / steps)
            if self.links.looks_down():
                return

    def _rivals(self, live: list[Member]) -> None:
        """Stop (exit 2) if a rival that was there first turned up: one whose heartbeat moved since the last."""
        rivals = [m for m in live if m.seen > self._last.get(m.instance, m.seen)]
        self._last = {m.instance: m.seen for m in live}
        found = conflicts(self.me, rivals)
        if found:
            self.stop(next(iter(found.values())), MISMATCH_EXIT)

    async def _hand_over(self, live: list[Member]) -> None:
        """A leader whose link is down hands the lease to a standby that has both (released at once, then
        fail-stop: the supervisor brings this one back as a standby)."""
        leadership = self.leading()
        led_since = leadership.since if leadership is not None and leadership.role == "leader" else None
        reason = self.watch.verdict(boottime(), led_since, self.me, live)
        if reason is None or leadership is None:
            return
        log.warning("ha_handing_over name=%s reason=%s", self.me.name, reason)
        await leadership.release()
        self.stop(f"handed the lease over: {reason}", 75)


def ended_here(member: Member) -> bool:
    """Whether `member` ran on this host in a process that has ended (its instance is `<host>/<pid>/<id>`): a
    restart after kill -9 on the same host need not wait for the old registration to go stale."""
    host, _, rest = member.instance.partition("/")
    return process_ended(host, rest.partition("/")[0])


def process_ended(host: str, pid: str) -> bool:
    """Whether process `pid` of `host` is known to have ended: on this host, not this process, and gone."""
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def _leave(db: Postgres, me: Member) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(db.leave(me.instance), 2.0)


__all__ = ["Links", "join", "window"]
