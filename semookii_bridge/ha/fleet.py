"""One configuration for the fleet: the bridges sharing one journal must agree on what makes them safe.

Each bridge on a shared journal registers itself (its instance, `ha.name`, whether it runs `[ha]`, and the
values of its safety-relevant settings) and keeps the registration fresh. A bridge that finds a live one
that differs refuses to start, naming the difference and what to do; of two that started together, the
one that registered later gives way, so the bridge that was running keeps running. Plain logic: the
database side is `journal/postgres.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ..config import BridgeConfig

SETTINGS = (
    "mqtt.prefix",
    "mqtt.client_id",
    "rate_limit.rate",
    "rate_limit.burst",
    "rate_limit.daily_quota",
    "rate_limit.quota_timezone",
    "rate_limit.quota_reserve",
    "rate_limit.max_in_flight",
    "rate_limit.pace_quota",
    "commands.allow_groups",
    "commands.allow_inverters",
    "commands.max_abs_power",
    "commands.max_duration",
    "commands.max_timeout",
    "commands.merge",
    "commands.track",
    "commands.batch_max_sns",
    "commands.dry_run",
    "commands.default_ttl",
    "management.read_only",
    "plans.start_grace",
    "ha.lease",
    "ha.wire_bound",
    "sparkplug.enabled",
    "sparkplug.group_id",
    "sparkplug.edge_node_id",
)
"""The settings every bridge of one journal must share: topics and sessions, the token's budget, what may be
sent, and the takeover's timing. Log, HTTP and file paths may differ per host."""

MISMATCH_EXIT = 2
"""Exit code of a bridge that refuses to join a fleet it does not match (a configuration error)."""


class FleetMismatch(Exception):
    """This bridge does not match a live bridge of the same journal: it must not run beside it."""

    exit_code = MISMATCH_EXIT


@dataclass(frozen=True)
class Member:
    """A bridge as registered in the journal; `joined` orders bridges that started together, `seen` is its last
    heartbeat (both by the database's clock)."""

    instance: str
    name: str
    ha: bool
    settings: dict[str, Any]
    joined: float = float("inf")
    seen: float = 0.0
    broker_ok: bool = True
    api_ok: bool = True
    """Its links as it saw them at its last heartbeat (the hot standby hands over on them)."""


def fingerprint(cfg: BridgeConfig) -> dict[str, Any]:
    """The values of `SETTINGS` in `cfg`, as JSON-ready builtins."""
    out: dict[str, Any] = {}
    for key in SETTINGS:
        section, name = key.split(".")
        out[key] = msgspec.to_builtins(getattr(getattr(cfg, section), name))
    return out


def differing(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """`key (here X, there Y)` for each setting that differs."""
    keys = sorted(set(ours) | set(theirs))
    return [f"{k} (here {ours.get(k)!r}, there {theirs.get(k)!r})" for k in keys if ours.get(k) != theirs.get(k)]


def conflict(me: Member, other: Member) -> str | None:
    """Why `me` must not run beside the live bridge `other`, as one line with the fix; None when it may."""
    if other.ha != me.ha:
        if other.ha:
            return (
                f"journal.url is used by the hot standby of bridge '{other.name}': enable [ha] here with the "
                "same settings to join it, or give this bridge its own database (two bridges without [ha] "
                "on one journal would both send every command)"
            )
        return (
            f"journal.url is used by bridge '{other.name}' without [ha], which writes without a fence: "
            "enable [ha] on every bridge of this journal, or give this bridge its own database"
        )
    if me.ha and other.name == me.name:
        return f"another live bridge uses ha.name '{me.name}': give each bridge its own ha.name (empty: <host>-<pid>)"
    if not me.ha:
        return (
            f"journal.url is used by bridge '{other.name}' without [ha]: two bridges on one journal need "
            "[ha] (a hot standby), or each its own database"
        )
    diff = differing(me.settings, other.settings)
    if diff:
        return (
            f"settings differ from the live bridge '{other.name}': {'; '.join(diff)}. Give every bridge "
            "of a hot standby the same configuration (docs/high-availability.md)"
        )
    return None


def conflicts(me: Member, live: list[Member]) -> dict[str, str]:
    """instance -> why `me` must not run beside it, for each live bridge that was there first (of two that
    started together, the one that registered later gives way)."""
    out: dict[str, str] = {}
    for other in sorted(live, key=lambda m: (m.joined, m.instance)):
        if other.instance == me.instance or (other.joined, other.instance) > (me.joined, me.instance):
            continue
        reason = conflict(me, other)
        if reason is not None:
            out[other.instance] = reason
    return out


async def admit(
    me: Member,
    live: Callable[[], Awaitable[list[Member]]],
    window: float,
    dead: Callable[[Member], bool] = lambda _m: False,
) -> str | None:
    """Why `me` may not start (None: it may). A conflicting bridge counts only if it is still alive: one whose
    heartbeat does not move within `window` is a crashed predecessor (a restart after kill -9), not a rival;
    one that `dead` knows is gone (its process on this host has ended) is not waited for."""
    first = {m.instance: m for m in await live() if not dead(m)}
    pending = conflicts(me, list(first.values()))
    loop = asyncio.get_running_loop()
    until = loop.time() + window
    while pending:
        now = {m.instance: m for m in await live()}
        for instance, reason in list(pending.items()):
            seen = now.get(instance)
            if seen is None:
                del pending[instance]
            elif seen.seen > first[instance].seen:
                return reason
        if not pending or loop.time() >= until:
            return None
        await asyncio.sleep(window / 8)
    return None


@dataclass
class LinkWatch:
    """Whether a leader should hand over: its broker or API link down for longer than `grace`, after leading for
    at least `tenure` (no ping-pong when the API is down for everyone), while another bridge of the hot standby
    reports both links up."""

    grace: float
    tenure: float
    down_since: float | None = None

    def verdict(self, now: float, led_since: float | None, me: Member, live: list[Member]) -> str | None:
        """Why to hand over now, or None."""
        if me.broker_ok and me.api_ok:
            self.down_since = None
            return None
        if self.down_since is None:
            self.down_since = now
        if led_since is None or now - led_since < self.tenure or now - self.down_since < self.grace:
            return None
        link = "broker" if not me.broker_ok else "API"
        for other in live:
            if other.instance != me.instance and other.ha and other.broker_ok and other.api_ok:
                return (
                    f"its {link} link has been down for {now - self.down_since:.1f} s and bridge '{other.name}' "
                    "has both links up"
                )
        return None
