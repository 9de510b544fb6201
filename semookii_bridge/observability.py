"""Metrics (Prometheus, via prometheus-client) and the health verdict, as plain code.

The aiohttp server in `http_server.py` only renders what this module computes. One registry per
service, so several bridges can live in one process (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .api.endpoints import Endpoint

TRANSPORT_FAILURES = frozenset({"connect_error", "timeout", "transport_error"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
LAG_UNHEALTHY = 5.0
"""Seconds of event-loop lag, seen within the last LAG_WINDOW, that make /healthz answer 503."""
LAG_WINDOW = 30.0
AGE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


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
    quota_reserve_only: bool = False
    banned_for: float = 0.0
    oldest_queued: float = 0.0
    calls_by_kind: dict[str, int] | None = None
    sparkplug_limited: dict[str, int] | None = None


class _LiveCollector(Collector):
    def __init__(self, sample: Callable[[], LiveSample | None]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Any]:
        s = self._sample()
        if s is None:
            return
        yield GaugeMetricFamily(
            "semookii_mqtt_connected", "1 while connected to the broker", value=int(s.mqtt_connected)
        )
        yield CounterMetricFamily("semookii_mqtt_reconnects", "Reconnections to the broker", value=s.mqtt_reconnects)
        tokens = s.tokens if s.tokens != float("inf") else -1.0
        yield GaugeMetricFamily("semookii_ratelimit_tokens", "Tokens in the bucket (-1: unlimited)", value=tokens)
        yield GaugeMetricFamily("semookii_ratelimit_waiting", "API calls waiting for a token", value=s.limiter_waiting)
        yield GaugeMetricFamily("semookii_commands_queued", "Control commands waiting to be sent", value=s.queued)
        yield GaugeMetricFamily("semookii_commands_in_flight", "Control calls on the wire", value=s.in_flight)
        yield GaugeMetricFamily("semookii_commands_tracking", "Accepted commands being polled", value=s.tracking)
        yield GaugeMetricFamily("semookii_quota_used", "API calls counted today (quota day)", value=s.quota_used)
        oldest = "Age of the longest-waiting queued command (0: none)"
        yield GaugeMetricFamily("semookii_oldest_queued_seconds", oldest, value=s.oldest_queued)
        calls = CounterMetricFamily(
            "semookii_api_calls", "API calls made (rate-limit tokens granted), by kind", labels=["kind"]
        )
        for kind, count in (s.calls_by_kind or {}).items():
            calls.add_metric([kind], count)
        yield calls
        limited = CounterMetricFamily("semookii_sparkplug_limited", "Sparkplug node commands merged into a paced one "
                                      "and DCMDs refused, by reason", labels=["reason"])  # fmt: skip
        for reason, count in (s.sparkplug_limited or {}).items():
            limited.add_metric([reason], count)
        yield limited
        remaining = -1 if s.quota_remaining is None else s.quota_remaining
        yield GaugeMetricFamily(
            "semookii_quota_remaining", "API calls left today, reserve included (-1: no quota)", value=remaining
        )


@dataclass(frozen=True)
class HaSample:
    """This instance's part in a hot standby."""

    role: str
    epoch: int | None
    takeovers: int


ROLES = ("leader", "standby", "offline")


class _HaCollector(Collector):
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
        yield GaugeMetricFamily("semookii_ha_epoch", "The lease's epoch while leading (0: none)", value=s.epoch or 0)
        yield CounterMetricFamily("semookii_ha_takeovers", "Times this instance took the lease", value=s.takeovers)


class Observability:
    """Counts what happens (metrics) and remembers whether the API answered lately (health)."""

    def __init__(self, *, api_stale_after: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self.api_stale_after = api_stale_after
        self.commands = Counter(
            "semookii_commands", "Lifecycle states published", ["target", "status"], registry=self.registry
        )
        self.api_attempts = Counter(
            "semookii_api_attempts", "HTTP attempts to the Cloud API (retries included)", ["endpoint", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.api_latency = Histogram(
            "semookii_api_call_seconds", "Cloud API call latency", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.setpoint_age = Histogram(
            "semookii_setpoint_age_seconds", "Age of a control command (since it arrived) when its call leaves",
            buckets=AGE_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.loop_lag = Histogram(
            "semookii_event_loop_lag_seconds", "How late the event loop ran a 0.25 s timer",
            buckets=LAG_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._lags: deque[tuple[float, float]] = deque()
        self.last_api_answer: float | None = None
        self.last_api_failure: float | None = None
        self._children: dict[tuple[Any, ...], Any] = {}
        self._live: Callable[[], LiveSample | None] = lambda: None
        self.registry.register(_LiveCollector(lambda: self._live()))
        self.ha: Callable[[], HaSample | None] = lambda: None
        """The hot standby's role (set by the service when `[ha]` is on)."""
        self.registry.register(_HaCollector(lambda: self.ha()))

    def bind(self, sample: Callable[[], LiveSample | None]) -> None:
        """Where scrape-time values come from (the running service)."""
        self._live = sample

    def observe_call(self, endpoint: Endpoint, outcome: str, seconds: float) -> None:
        """One HTTP attempt (the API client's observer)."""
        self._child(self.api_attempts, endpoint.name, outcome).inc()
        self._child(self.api_latency, endpoint.name).observe(seconds)
        if outcome in TRANSPORT_FAILURES:
            self.last_api_failure = self._clock()
        else:
            self.last_api_answer = self._clock()

    def observe_loop_lag(self, seconds: float) -> None:
        """One measurement of the event loop's lag (kept LAG_WINDOW seconds for /healthz)."""
        self.loop_lag.observe(seconds)
        now = self._clock()
        self._lags.append((now, seconds))
        while self._lags and self._lags[0][0] < now - LAG_WINDOW:
            self._lags.popleft()

    def worst_recent_lag(self) -> float:
        """The largest loop lag measured in the last LAG_WINDOW seconds."""
        horizon = self._clock() - LAG_WINDOW
        return max((lag for at, lag in self._lags if at >= horizon), default=0.0)

    async def watch_loop(self, interval: float = 0.25) -> None:
        """Measure the event loop's lag forever: how much later than asked a short sleep returns."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(interval)
            self.observe_loop_lag(max(0.0, loop.time() - started - interval))

    def observe_setpoint_age(self, seconds: float) -> None:
        """A control command's age as its call leaves (how stale a setpoint reaches the API)."""
        self.setpoint_age.observe(seconds)

    def observe_status(self, target_kind: str, status: str) -> None:
        """One lifecycle state published (the lifecycle's observer)."""
        self._child(self.commands, target_kind, status).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: labels() locks and validates on every call."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy when MQTT is connected, the API's last attempt got an answer (or none was needed), the API has
        not banned the token, more than the safety reserve of the daily quota is left, and the event loop
        has not lagged more than LAG_UNHEALTHY seconds in the last LAG_WINDOW."""
        sample = self._live()
        mqtt_ok = bool(sample and sample.mqtt_connected)
        now = self._clock()
        answer, failure = self.last_api_answer, self.last_api_failure
        api_ok = failure is None or (answer is not None and answer >= failure) or now - failure > self.api_stale_after
        quota_ok = not (sample and sample.quota_reserve_only)
        banned = sample.banned_for if sample else 0.0
        lag = self.worst_recent_lag()
        loop_ok = lag <= LAG_UNHEALTHY
        healthy = mqtt_ok and api_ok and quota_ok and banned <= 0 and loop_ok
        ha = self.ha()
        doc: dict[str, Any] = {
            "status": "ok" if healthy else "unhealthy",
            "mqtt": {"connected": mqtt_ok},
            "loop": {"ok": loop_ok, "worst_lag_recent": round(lag, 3)},
            "quota": {
                "ok": quota_ok,
                "used": sample.quota_used if sample else 0,
                "remaining": sample.quota_remaining if sample else None,
                "reason": None if quota_ok else "only the safety reserve of the daily quota is left",
            },
            "api": {
                "reachable": api_ok,
                "banned_for": round(banned, 3),
                "last_answer_age": None if answer is None else round(now - answer, 3),
                "last_failure_age": None if failure is None else round(now - failure, 3),
            },
        }
        if ha is not None:
            doc["ha"] = {"role": ha.role, "epoch": ha.epoch}
            if ha.role == "standby":
                doc["status"] = "standby"
        return healthy, doc
