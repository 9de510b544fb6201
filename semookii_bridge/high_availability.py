"""Wiring of the shared journal (PostgreSQL) and the hot standby: connections, the wait as a standby, the
presence topic of each instance, and fail-stop when the lease is lost.

Fail-stop is deliberate: a leader that lost its lease exits at once (code 75), which also closes its MQTT
connection and every HTTP request it had not sent; a supervisor (systemd `Restart=always`) starts it again
as a candidate. Nothing of a demoted leader can linger and act.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import msgspec

from .config import BridgeConfig, url_without_password
from .fleet import MISMATCH_EXIT, FleetMismatch, Member, admit, conflicts, differing, fingerprint
from .ha import Leadership, Role
from .journal_shared import Fence, Fenced, SharedJournal, StoreUnavailable
from .mqtt.client import Will
from .mqtt.session import MqttSession
from .postgres import Postgres, session_settings
from .timeline import Timeline, resume_shared
from .topics import Topics

log = logging.getLogger(__name__)

LOST_LEADERSHIP = 75
"""Exit code of a bridge that stopped leading (EX_TEMPFAIL: start it again)."""


class InstanceState(msgspec.Struct, frozen=True):
    """Retained on `<prefix>/bridge/instance/<name>/state`."""

    role: Role
    epoch: int | None
    since: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Presence:
    """Each instance's own small MQTT session: its role, retained, and `offline` as its will."""

    def __init__(self, cfg: BridgeConfig, name: str) -> None:
        self.topic = Topics(cfg.mqtt.prefix).instance_state(name)
        self.state = InstanceState("standby", None, _now())
        offline = msgspec.json.encode(InstanceState("offline", None, _now()))
        self.session = MqttSession(cfg.mqtt, f"{cfg.mqtt.client_id}-{name}", will=lambda: Will(self.topic, offline),
                                   on_connect=self._publish, on_message=lambda _msg: None)  # fmt: skip

    def _publish(self) -> None:
        self.session.publish(self.topic, msgspec.json.encode(self.state), qos=1, retain=True)

    def role(self, role: Role, epoch: int | None) -> None:
        self.state = InstanceState(role, epoch, _now())
        self._publish()

    async def stop(self) -> None:
        await self.session.stop(last=(self.topic, msgspec.json.encode(InstanceState("offline", None, _now()))))


@dataclass
class Shared:
    """What the shared journal brings up: the journal, its timeline, and (with `[ha]`) the leadership."""

    journal: SharedJournal
    timeline: Timeline
    leadership: Leadership | None
    db: Postgres

    def counter(self, key: str, loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
        """A blocking `next_value(key)` for another thread (paho's, which takes the Sparkplug bdSeq)."""
        return lambda: asyncio.run_coroutine_threadsafe(self.db.next_value(key), loop).result(5.0)


def fail_stop(reason: str, code: int = LOST_LEADERSHIP) -> None:
    """Stop this process now: it may no longer act (as the leader, or beside the fleet it does not match)."""
    log.critical("bridge_stopping reason=%s exit_code=%d", reason, code)
    logging.shutdown()
    os._exit(code)


async def open_shared(
    cfg: BridgeConfig, stack: AsyncExitStack, *, on_leadership: Callable[[Leadership], None] = lambda _l: None
) -> Shared:
    """Connect to PostgreSQL, wait to lead (with `[ha]`; `on_leadership` sees the candidate first), then load
    the journal. Undone by `stack`."""
    name = cfg.ha.instance_name() if cfg.ha.enabled else ""
    db = Postgres(cfg.journal.url, settings=session_settings(cfg.ha.lease, name))
    stack.push_async_callback(db.close)
    await db.setup()
    log.info("journal_shared url=%s", url_without_password(cfg.journal.url))
    await _join(cfg, db, stack)
    leadership, fence = None, None
    if cfg.ha.enabled:
        leadership = await _lead(cfg, stack, on_leadership)
        assert leadership.epoch is not None
        fence = Fence(leadership.epoch, leadership.name)
    snapshot = await db.load()
    journal = SharedJournal(db, snapshot, fence=fence, on_fenced=lambda exc: fail_stop(str(exc)))
    stack.push_async_callback(journal.aclose)
    timeline = resume_shared(journal, snapshot.now)
    journal.use_clock(timeline)
    return Shared(journal, timeline, leadership, db)


def fleet_window(cfg: BridgeConfig) -> float:
    """Seconds without a heartbeat after which a bridge of the journal counts as gone."""
    return 3 * cfg.ha.lease if cfg.ha.enabled else 10.0


async def _join(cfg: BridgeConfig, db: Postgres, stack: AsyncExitStack) -> None:
    """Refuse to run beside a live bridge of this journal that does not match (`fleet.py`); else register, keep
    the registration fresh, and remove it at a graceful stop."""
    window = fleet_window(cfg)
    me = Member(uuid.uuid4().hex, cfg.ha.instance_name(), cfg.ha.enabled, fingerprint(cfg))
    reason = await admit(me, lambda: db.members(window), window)
    if reason is not None:
        raise FleetMismatch(reason)
    for gone in await db.members(86400.0):
        if gone.instance != me.instance and (keys := differing(me.settings, gone.settings)):
            log.warning("fleet_settings_changed since_bridge=%s keys=%s", gone.name, "; ".join(keys))
    me = replace(me, joined=await db.register(me))
    stack.push_async_callback(_leave, db, me)
    task = asyncio.get_running_loop().create_task(_heartbeat(db, me, window))
    stack.callback(task.cancel)


async def _heartbeat(db: Postgres, me: Member, window: float) -> None:
    """Refresh the registration every quarter window; stop (exit 2) if a rival that was there first turns up
    (two started together: the later gives way). A rival is a bridge whose heartbeat moves while we watch."""
    last: dict[str, float] = {}
    while True:
        await asyncio.sleep(window / 4)
        try:
            await db.register(me)
            live = await db.members(window)
        except StoreUnavailable as exc:
            log.warning("fleet_heartbeat_failed error=%s", exc)
            continue
        rivals = [m for m in live if m.seen > last.get(m.instance, m.seen)]
        last = {m.instance: m.seen for m in live}
        found = conflicts(me, rivals)
        if found:
            fail_stop(next(iter(found.values())), MISMATCH_EXIT)


async def _leave(db: Postgres, me: Member) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(db.leave(me.instance), 2.0)


async def _lead(cfg: BridgeConfig, stack: AsyncExitStack, on_leadership: Callable[[Leadership], None]) -> Leadership:
    """Announce this instance, wait as a standby until it holds the lease; released again by `stack`."""
    name = cfg.ha.instance_name()
    presence = Presence(cfg, name)
    presence.session.start()
    stack.push_async_callback(presence.stop)
    lease_db = Postgres(cfg.journal.url, timeout=max(1.0, cfg.ha.lease / 2),
                        settings=session_settings(cfg.ha.lease, name))  # fmt: skip
    stack.push_async_callback(lease_db.close)
    leadership = Leadership(lease_db, name, cfg.ha.lease, on_lost=fail_stop, on_role=presence.role)
    on_leadership(leadership)
    log.info("ha_standby name=%s lease=%g", name, cfg.ha.lease)
    await leadership.acquire()
    stack.push_async_callback(leadership.release)
    return leadership


__all__ = ["LOST_LEADERSHIP", "Fenced", "FleetMismatch", "Presence", "Shared", "fail_stop", "open_shared"]
