"""The payload contract: what the bridge publishes (lifecycle state messages, management responses) and the
frozen type every delivered MQTT message becomes at the edge (nothing past it sees a paho object)."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ..control.statuses import Status
from ..errors import ErrorInfo
from .topics import Target

if TYPE_CHECKING:
    from ..config import BridgeConfig

INTERFACE_VERSION = "1.5.0"
"""The MQTT interface's version (payloads, topics, statuses), in `<prefix>/bridge/info` and the AsyncAPI
document. Raised when a payload changes: 1.1.0 added `partial`, `no_answer` and `duplicate`; 1.3.0 the token's
standing (`api`) in the budget and bridge/info, and the error code `unauthorized`; 1.4.0 the instance presence
of every bridge (role `single` without `[ha]`) and the error code `not_leading`; 1.5.0 dispatch plans (the
`plan/set` and `plan/state` topics) and `planned_next_hour` in the budget."""


def utc_now_text(now: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-24T19:00:00.123Z."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{_utc_second(millis // 1000)}.{millis % 1000:03d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    """The formatted second, reused by the hundreds of state messages stamped within it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class StateMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One lifecycle step of one command, published on the target's state topic."""

    request_id: str
    status: Status
    target: Target
    command: Any = None
    command_id: str | None = None
    task_id: str | None = None
    results: dict[str, str] | None = None
    no_answer: list[str] | None = None
    error: ErrorInfo | None = None
    duplicate: bool = False
    ts: str = msgspec.field(default_factory=utc_now_text)


class PlanWarning(msgspec.Struct, frozen=True, kw_only=True):
    """A boundary of the plan that needs more calls at once than the rate limit lets leave within the grace."""

    code: str = "over_budget"
    message: str
    at: float
    """The boundary (epoch seconds)."""
    calls: int
    """Calls due at that boundary, across every plan held."""
    expected_lateness: float
    """Seconds after the boundary the last of them is expected to leave."""


PlanStatus = Literal["active", "finished", "cancelled", "replaced", "suspended", "rejected"]


class PlanState(msgspec.Struct, frozen=True, kw_only=True):
    """How a target's plan goes, retained on `<prefix>/<group|inverter>/<id>/plan/state` (a rejected plan is
    published, not retained): the current or next interval, its start, and the intervals sent and missed."""

    plan_id: str
    status: PlanStatus
    interval: int | None = None
    next_start: str | None = None
    sent: int = 0
    missed: int = 0
    error: ErrorInfo | None = None
    warning: PlanWarning | None = None
    """Set when a boundary of the plan needs more calls at once than the rate limit lets leave in time."""
    ts: str = msgspec.field(default_factory=utc_now_text)


ApiState = Literal["unknown", "authorized", "unauthorized"]
"""The API token's standing: no answer yet, accepted, refused."""


class RateLimitInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The rate limit and daily quota the bridge runs with."""

    rate: float
    burst: int
    daily_quota: int
    quota_reserve: int
    quota_timezone: str


class BridgeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Retained on `<prefix>/bridge/info`: versions and effective limits (never the token); published again
    when `api` changes."""

    version: str
    interface: str
    prefix: str
    rate_limit: RateLimitInfo
    dry_run: bool
    merge: bool
    batch_max_sns: int
    default_ttl: float
    track_results_for: float
    max_abs_power: int
    api_base_url: str
    api: ApiState
    """The token's standing with the Cloud API."""


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a management request."""

    status: Literal["ok", "error"]
    data: Any = None
    error: ErrorInfo | None = None
    transaction: Any = None


class Incoming(msgspec.Struct, frozen=True, kw_only=True):
    """A message delivered by the broker, with the MQTT 5 properties the bridge honours."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    dup: bool = False
    mid: int = 0
    response_topic: str | None = None
    correlation_data: bytes | None = None
    message_expiry: int | None = None


INFO_COMMANDS = ("dry_run", "merge", "batch_max_sns", "default_ttl", "track_results_for", "max_abs_power")
"""The `[commands]` settings `<prefix>/bridge/info` repeats, by the same names."""


def describe(config: BridgeConfig, prefix: str, quota_reserve: int, api_base_url: str, api: ApiState) -> BridgeInfo:
    """What `<prefix>/bridge/info` says of a bridge running with `config` (never the token)."""
    from .. import __version__

    rl = config.rate_limit
    limits = RateLimitInfo(
        rate=rl.rate,
        burst=rl.burst,
        daily_quota=rl.daily_quota,
        quota_timezone=rl.quota_timezone,
        quota_reserve=quota_reserve,
    )
    commands = {key: getattr(config.commands, key) for key in INFO_COMMANDS}
    return BridgeInfo(
        version=__version__,
        interface=INTERFACE_VERSION,
        prefix=prefix,
        rate_limit=limits,
        **commands,
        api_base_url=api_base_url,
        api=api,
    )
