"""Wiring of the shared journal (PostgreSQL) and the hot standby: connections, the wait as a standby, the
presence topic of each instance, and fail-stop when the lease is lost.

Fail-stop is deliberate: a leader that lost its lease exits at once (code 75), which also closes its MQTT
connection and every HTTP request it had not sent; a supervisor (systemd `Restart=always`) starts it again
as a candidate. Nothing of a demoted leader can linger and act.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from ..config import BridgeConfig, url_without_password
from ..interface.payloads import Incoming
from ..interface.topics import Topics
from ..journal.lease import Leadership, Role
from ..journal.postgres import Postgres, session_settings
from ..journal.shared import SharedJournal
from ..journal.store import Fence, Fenced, StoreUnavailable
from ..journal.timeline import Timeline, resume_shared
from ..mqtt.client import Will
from ..mqtt.session import MqttSession
from . import membership
from .fleet import FleetMismatch

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

    def __init__(self, cfg: BridgeConfig, name: str, role: Role = "standby") -> None:
        self.topics, self.name = Topics(cfg.mqtt.prefix), name
        self.topic = self.topics.instance_state(name)
        self.state = InstanceState(role, None, _now())
        self.others: dict[str, str] = {}
        """name -> role, from every instance's retained state (so a leader can clear those of bridges gone)."""
        self.seen: dict[str, InstanceState] = {}
        """name -> state of every other instance."""
        self.settled = asyncio.Event()
        """Set once this instance's own state came back: every retained state was delivered before it."""
        offline = msgspec.json.encode(InstanceState("offline", None, _now()))
        # a keepalive of about a lease: a silent cut from the broker shows within 1.5 leases (`membership.py`)
        mqtt = msgspec.structs.replace(cfg.mqtt, keepalive=max(2, round(cfg.ha.lease)))
        self.session = MqttSession(
            mqtt,
            f"{cfg.mqtt.client_id}-{name}",
            will=lambda: Will(self.topic, offline),
            on_connect=self._connected,
            on_message=self._seen,
        )

    def _connected(self) -> None:
        self.session.subscribe([self.topics.instance_state("+")])
        self._publish()  # after subscribing: its echo comes after every retained state

    def _publish(self) -> None:
        self.session.publish(self.topic, msgspec.json.encode(self.state), qos=1, retain=True)

    def _seen(self, msg: Incoming) -> None:
        name = msg.topic.split("/")[-2]
        if name == self.name:
            self.settled.set()
        try:
            self.seen[name] = msgspec.json.decode(msg.payload, type=InstanceState)
            self.others[name] = self.seen[name].role
        except msgspec.DecodeError:  # cleared (empty) or not ours to read
            self.others.pop(name, None)
            self.seen.pop(name, None)

    def sweep(self, live: set[str]) -> None:
        """Clear the retained `offline` state of each instance that is no longer registered (a restart without
        `ha.name` gets a new name each time; their topics would pile up forever)."""
        gone = sorted(n for n, role in self.others.items() if role == "offline" and n not in live and n != self.name)
        for name in gone:
            self.session.publish(self.topics.instance_state(name), b"", qos=1, retain=True)
            self.others.pop(name, None)
        if gone:
            log.info("ha_presence_cleared names=%s", ",".join(gone))

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
    presence: Presence | None = None

    def counter(self, key: str, loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
        """A blocking `next_value(key)` for another thread (paho's, which takes the Sparkplug bdSeq)."""
        return lambda: asyncio.run_coroutine_threadsafe(self.db.next_value(key), loop).result(5.0)


def fail_stop(reason: str, code: int = LOST_LEADERSHIP) -> None:
    """Stop this process now: it may no longer act (as the leader, or beside the fleet it does not match)."""
    log.critical("bridge_stopping reason=%s exit_code=%d", reason, code)
    logging.shutdown()
    os._exit(code)


async def open_postgres_journal(
    cfg: BridgeConfig,
    stack: AsyncExitStack,
    *,
    on_leadership: Callable[[Leadership], None] = lambda _l: None,
    api_held: Callable[[], bool] = lambda: False,
) -> Shared:
    """Connect to PostgreSQL, join the fleet of this journal (`membership.py`), wait to lead (with `[ha]`;
    `on_leadership` sees the candidate first), then load the journal. `api_held`: whether control calls are
    held after a timeout (part of the API link's health). Undone by `stack`."""
    name = cfg.ha.instance_name() if cfg.ha.enabled else ""
    db = Postgres(cfg.journal.url, settings=session_settings(cfg.ha.lease, name))
    stack.push_async_callback(db.close)
    await _set_up(db, cfg.journal.url)
    presence = _present(cfg, stack) if cfg.ha.enabled else None
    candidate: list[Leadership] = []
    links = membership.Links(cfg, presence.session if presence else None, api_held)
    await membership.join(
        cfg,
        db,
        stack,
        links,
        lambda: candidate[0] if candidate else None,
        fail_stop,
        sweep=presence.sweep if presence else None,
    )
    leadership, fence = await _lead(cfg, stack, presence, _seen(candidate, on_leadership)) if presence else (None, None)
    snapshot = await db.load()
    journal = SharedJournal(db, snapshot, fence=fence, on_fenced=lambda exc: fail_stop(str(exc)))
    stack.push_async_callback(journal.aclose)
    timeline = resume_shared(journal, snapshot.now, read_at=snapshot.read_at)
    journal.use_clock(timeline)
    return Shared(journal, timeline, leadership, db, presence)


def _seen(candidate: list[Leadership], on_leadership: Callable[[Leadership], None]) -> Callable[[Leadership], None]:
    """Keep the candidate (the fleet's heartbeat names it) and tell `on_leadership`."""

    def seen(lead: Leadership) -> None:
        candidate.append(lead)
        on_leadership(lead)

    return seen


async def _set_up(db: Postgres, url: str, first_pause: float = 1.0, longest: float = 30.0) -> None:
    """Create the tables, waiting with one log line per try while PostgreSQL cannot be reached at start (it may
    be starting beside the bridge), rather than exiting with a traceback for the supervisor to repeat."""
    pause = first_pause
    while True:
        try:
            await db.setup()
        except StoreUnavailable as exc:
            log.warning("journal_unreachable url=%s cause=%s retry_in=%.0f", url_without_password(url), exc, pause)
            await asyncio.sleep(pause)
            pause = min(longest, pause * 2)
            continue
        log.info("journal_shared url=%s", url_without_password(url))
        return


def _present(cfg: BridgeConfig, stack: AsyncExitStack) -> Presence:
    """This instance's presence session, started (stopped again by `stack`)."""
    presence = Presence(cfg, cfg.ha.instance_name())
    presence.session.start()
    stack.push_async_callback(presence.stop)
    return presence


async def _lead(
    cfg: BridgeConfig, stack: AsyncExitStack, presence: Presence, on_leadership: Callable[[Leadership], None]
) -> tuple[Leadership, Fence]:
    """Wait as a standby until this instance holds the lease (released again by `stack`); the lease and the fence
    every journal write of this leader carries."""
    name = cfg.ha.instance_name()
    lease_db = Postgres(
        cfg.journal.url, timeout=max(1.0, cfg.ha.lease / 2), settings=session_settings(cfg.ha.lease, name)
    )
    stack.push_async_callback(lease_db.close)
    leadership = Leadership(lease_db, name, cfg.ha.lease, on_lost=fail_stop, on_role=presence.role)
    on_leadership(leadership)
    log.info("ha_standby name=%s lease=%g", name, cfg.ha.lease)
    await leadership.acquire()
    stack.push_async_callback(leadership.release)
    assert leadership.epoch is not None  # acquire() returns only once this instance holds an epoch
    return leadership, Fence(leadership.epoch, leadership.name)


__all__ = ["LOST_LEADERSHIP", "Fenced", "FleetMismatch", "Presence", "Shared", "fail_stop", "open_postgres_journal"]
