"""The Prometheus metrics read at scrape time (prometheus-client collectors), named by the Prometheus rules:
base units, `_total` counters, no -1 sentinels (a series is left out when it has no value), a `build_info`."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import __version__
from ..interface.payloads import INTERFACE_VERSION

API_STATES = ("unknown", "authorized", "unauthorized")
ROLES = ("leader", "standby", "offline")


@dataclass(frozen=True)
class LiveSample:
    """Values read at scrape time from the running bridge."""

    mqtt_connected: bool
    mqtt_reconnects: int
    tokens: float
    limiter_waiting: int
    queued: int
    in_flight: int
    tracking: int
    quota_used: int = 0
    quota_remaining: int | None = None
    quota_limit: int = 0
    quota_reserve: int = 0
    quota_reserve_only: bool = False
    banned_for: float = 0.0
    oldest_queued: float = 0.0
    calls_by_kind: dict[str, int] | None = None
    sparkplug_limited: dict[str, int] | None = None
    journal_writable: bool = True
    mqtt_refused: int = 0
    """Publishes the broker refused (MQTT 5 reason codes, among the watched ones)."""
    plans: dict[str, int] | None = None
    mqtt_refusal: str | None = None
    """The latest refusal while recent: `<topic>: <reason>`."""


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class LiveCollector(Collector):
    """Gauges and counters the running service knows (MQTT, limiter, queue, quota, journal)."""

    def __init__(self, sample: Callable[[], LiveSample | None]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Any]:
        s = self._sample()
        if s is None:
            return
        yield _gauge("semookii_mqtt_connected", "1 while connected to the broker", int(s.mqtt_connected))
        yield CounterMetricFamily("semookii_mqtt_reconnects", "Reconnections to the broker", value=s.mqtt_reconnects)
        refused = "Publishes the broker refused (its ACL)"
        yield CounterMetricFamily("semookii_mqtt_publishes_refused", refused, value=s.mqtt_refused)
        if s.tokens != float("inf"):  # unlimited: no series rather than a sentinel
            yield _gauge("semookii_ratelimit_tokens", "Tokens in the bucket (absent when unlimited)", s.tokens)
        yield _gauge("semookii_ratelimit_waiting", "API calls waiting for a token", s.limiter_waiting)
        yield _gauge("semookii_commands_queued", "Control commands waiting to be sent", s.queued)
        yield _gauge("semookii_commands_in_flight", "Control calls on the wire", s.in_flight)
        yield _gauge("semookii_commands_tracking", "Accepted commands being polled", s.tracking)
        yield _gauge(
            "semookii_oldest_queued_command_age_seconds",
            "Age of the longest-waiting queued command (0: none queued)",
            s.oldest_queued,
        )
        yield _gauge("semookii_journal_writable", "1 while the journal takes writes", int(s.journal_writable))
        yield _gauge("semookii_api_banned_seconds", "Seconds left of an API ban (0: none)", s.banned_for)
        yield from _quota(s)
        yield _by_label(
            "semookii_api_calls", "API calls made (rate-limit tokens granted), by kind", "kind", s.calls_by_kind
        )
        plans = GaugeMetricFamily("semookii_plans", "Targets' dispatch plans by their status", labels=["status"])
        for status, count in (s.plans or {}).items():
            plans.add_metric([status], count)
        yield plans
        yield _by_label(
            "semookii_sparkplug_limited",
            "Sparkplug node commands merged into a paced one and DCMDs refused, by reason",
            "reason",
            s.sparkplug_limited,
        )


def _quota(s: LiveSample) -> Iterator[Any]:
    """Quota gauges; with no daily quota configured only the count of today's calls."""
    yield _gauge("semookii_quota_used_calls", "API calls counted today (quota day)", s.quota_used)
    if s.quota_limit:
        yield _gauge("semookii_quota_limit_calls", "The daily quota of API calls", s.quota_limit)
        yield _gauge("semookii_quota_reserve_calls", "Daily quota calls kept for safety commands", s.quota_reserve)
    if s.quota_remaining is not None:
        yield _gauge("semookii_quota_remaining_calls", "API calls left today, reserve included", s.quota_remaining)


def _by_label(name: str, doc: str, label: str, values: dict[str, int] | None) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, count in (values or {}).items():
        family.add_metric([key], count)
    return family


class ApiStateCollector(Collector):
    """`semookii_api_token_state{state}`: 1 for the token's standing with the API."""

    def __init__(self, state: Callable[[], str]) -> None:
        self._state = state

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily("semookii_api_token_state", "1 for the API token's standing", labels=["state"])
        current = self._state()
        for state in API_STATES:
            family.add_metric([state], int(current == state))
        yield family


@dataclass(frozen=True)
class HaSample:
    """This instance's part in a hot standby."""

    role: str
    epoch: int | None
    takeovers: int
    clock_skew: float | None = None
    """Seconds this host's wall clock is ahead of the journal's timeline (the database's clock); None before
    leading."""


class HaCollector(Collector):
    """Role, epoch and takeovers of the hot standby (absent without `[ha]`)."""

    def __init__(self, sample: Callable[[], HaSample | None]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Any]:
        s = self._sample()
        if s is None:
            return
        roles = GaugeMetricFamily("semookii_ha_role", "1 for this instance's role in the hot standby", labels=["role"])
        for role in ROLES:
            roles.add_metric([role], int(s.role == role))
        yield roles
        yield _gauge("semookii_ha_epoch", "The lease's epoch while leading (0: none)", s.epoch or 0)
        yield CounterMetricFamily("semookii_ha_takeovers", "Times this instance took the lease", value=s.takeovers)
        if s.clock_skew is not None:
            yield _gauge(
                "semookii_clock_skew_seconds", "This host's wall clock minus the database's (leader)", s.clock_skew
            )


class BuildInfo(Collector):
    """`semookii_build_info`: 1, with the package, interface and Python versions as labels."""

    def collect(self) -> Iterator[Any]:
        info = GaugeMetricFamily(
            "semookii_build_info", "The running build (always 1)", labels=["version", "interface", "python"]
        )
        info.add_metric([__version__, INTERFACE_VERSION, platform.python_version()], 1)
        yield info
