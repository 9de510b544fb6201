"""Metrics (Prometheus, via prometheus-client), liveness and readiness, and the status page's data, as plain
code. The aiohttp server in `http_server.py` only renders what this module computes. One registry per
service, so several bridges can live in one process (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from ..api.endpoints import Endpoint
from ..budget.authorization import Authorization
from ..control.statuses import TERMINAL
from ..interface.payloads import StateMessage
from .metrics import ApiStateCollector, BuildInfo, HaCollector, HaSample, LiveCollector, LiveSample
from .status_board import StatusBoard

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: they double the counters and nothing reads them

TRANSPORT_FAILURES = frozenset({"connect_error", "timeout", "transport_error"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
LAG_UNHEALTHY = 5.0
"""Seconds of event-loop lag, seen within the last LAG_WINDOW, that make /healthz answer 503."""
LAG_WINDOW = 30.0
AGE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PLAN_LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
ACCEPT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LIVE_AFTER = 10.0
"""Seconds without a tick of the loop watcher after which /livez answers 503 (the process is wedged)."""
__all__ = ["HaSample", "LiveSample", "Observability"]


class Observability:
    """Counts what happens (metrics), remembers whether the API answered lately, and judges liveness and
    readiness."""

    def __init__(
        self,
        *,
        api_stale_after: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        auth: Authorization | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self.api_stale_after = api_stale_after
        self.auth = auth or Authorization()
        self.board = StatusBoard()
        self._counters()
        self._histograms()
        self._plan_metrics()
        self._lags: deque[tuple[float, float]] = deque()
        self._last_tick = clock()
        self.last_api_answer: float | None = None
        self.last_api_failure: float | None = None
        self._children: dict[tuple[Any, ...], Any] = {}
        self._live: Callable[[], LiveSample | None] = lambda: None
        self.ha: Callable[[], HaSample | None] = lambda: None
        """The hot standby's role (set by the service when `[ha]` is on)."""
        for collector in (
            LiveCollector(lambda: self._live()),
            HaCollector(lambda: self.ha()),
            BuildInfo(),
            ApiStateCollector(lambda: self.auth.state),
            ProcessCollector(registry=None),
            PlatformCollector(registry=None),
        ):
            self.registry.register(collector)
        GCCollector(registry=self.registry)  # registers itself

    def _counters(self) -> None:
        self.states = Counter(
            "semookii_command_states_published",
            "Lifecycle states published (several per command)",
            ["target", "status"],
            registry=self.registry,
        )
        self.finished = Counter(
            "semookii_commands_finished",
            'Commands that reached a final status, by status and error code (code "none" when there is no error)',
            ["target", "status", "code"],
            registry=self.registry,
        )
        self.api_attempts = Counter(
            "semookii_api_attempts",
            "HTTP attempts to the Cloud API (retries included)",
            ["endpoint", "outcome"],
            registry=self.registry,
        )

    def _plan_metrics(self) -> None:
        self.plan_intervals = Counter(
            "semookii_plan_intervals",
            "Plan intervals by outcome: issued at their start, missed (past their deadline), expired (issued, no call)",
            ["outcome"],
            registry=self.registry,
        )
        self.plan_lateness = Histogram(
            "semookii_plan_interval_lateness_seconds",
            "How late after its interval's start a plan step's call left",
            buckets=PLAN_LATENESS_BUCKETS,
            registry=self.registry,
        )

    def observe_plan_interval(self, outcome: str) -> None:
        """One plan interval's outcome (the plan runner's observer)."""
        self._child(self.plan_intervals, outcome).inc()

    def _histograms(self) -> None:
        def histogram(name: str, text: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, text, labels, buckets=buckets, registry=self.registry)

        self.api_latency = histogram(
            "semookii_api_call_duration_seconds",
            "Cloud API call latency, one HTTP attempt",
            LATENCY_BUCKETS,
            ("endpoint",),
        )
        self.setpoint_age = histogram(
            "semookii_setpoint_age_seconds",
            "Age of a control command (since it arrived) when its call leaves",
            AGE_BUCKETS,
        )
        self.accept_latency = histogram(
            "semookii_command_accept_latency_seconds",
            "From a command's arrival to the API accepting it",
            ACCEPT_BUCKETS,
        )
        self.loop_lag = histogram(
            "semookii_event_loop_lag_seconds", "How late the event loop ran a 0.25 s timer", LAG_BUCKETS
        )

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
        """One measurement of the event loop's lag (kept LAG_WINDOW seconds for readiness)."""
        self.loop_lag.observe(seconds)
        now = self._last_tick = self._clock()
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

    def observe_state(self, message: StateMessage, age: float | None) -> None:
        """One lifecycle state published (the lifecycle's observer); `age` since the command arrived, if known."""
        kind, status = message.target.kind, message.status
        self._child(self.states, kind, status).inc()
        if status in TERMINAL:
            self._child(self.finished, kind, status, message.error.code if message.error else "none").inc()
        elif status == "accepted" and age is not None:
            self.accept_latency.observe(max(0.0, age))
        self.board.observe(message)

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

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Alive while the event loop runs its timers: the watcher ticked within LIVE_AFTER seconds. Nothing
        outside the process (broker, cloud, database) counts, so a cloud outage never restarts the bridge."""
        silent = self._clock() - self._last_tick
        alive = silent <= LIVE_AFTER
        return alive, {"status": "alive" if alive else "stalled", "loop_silent_seconds": round(silent, 3)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when MQTT is connected, the API answers and accepts the token and has not banned it, the
        journal takes writes, more than the safety reserve of the quota is left and the loop keeps time."""
        sample = self._live()
        checks = self._checks(sample)
        ready = all(ok for ok, _ in checks.values())
        doc: dict[str, Any] = {
            "status": "ok" if ready else "unhealthy",
            "failing": [name for name, (ok, _) in checks.items() if not ok],
        }
        doc.update({name: part for name, (_, part) in checks.items()})
        ha = self.ha()
        if ha is not None:
            doc["ha"] = {"role": ha.role, "epoch": ha.epoch}
            if ha.clock_skew is not None:
                doc["ha"]["clock_skew_seconds"] = round(ha.clock_skew, 1)
            if ha.role == "standby":
                doc["status"] = "standby"
        return ready, doc

    health = readiness
    """`/healthz`: an alias of readiness, kept for existing probes."""

    def _checks(self, sample: LiveSample | None) -> dict[str, tuple[bool, dict[str, Any]]]:
        """Each readiness check: (ok, what it reports)."""
        refusal = sample.mqtt_refusal if sample else None
        mqtt_ok = bool(sample and sample.mqtt_connected) and refusal is None
        journal_ok = sample.journal_writable if sample else False
        quota_ok = not (sample and sample.quota_reserve_only)
        lag = self.worst_recent_lag()
        api_ok, api = self._api(sample)
        quota = {
            "ok": quota_ok,
            "used": sample.quota_used if sample else 0,
            "remaining": sample.quota_remaining if sample else None,
            "reason": None if quota_ok else "only the safety reserve of the daily quota is left",
        }
        return {
            "mqtt": (mqtt_ok, {"connected": bool(sample and sample.mqtt_connected), "publish_refused": refusal}),
            "api": (api_ok, api),
            "journal": (journal_ok, {"writable": journal_ok}),
            "quota": (quota_ok, quota),
            "loop": (lag <= LAG_UNHEALTHY, {"ok": lag <= LAG_UNHEALTHY, "worst_lag_recent": round(lag, 3)}),
        }

    def _api(self, sample: LiveSample | None) -> tuple[bool, dict[str, Any]]:
        """The API's part of readiness: reachable, the token accepted, no ban."""
        now = self._clock()
        answer, failure = self.last_api_answer, self.last_api_failure
        stale = failure is not None and now - failure > self.api_stale_after
        reachable = failure is None or (answer is not None and answer >= failure) or stale
        banned = sample.banned_for if sample else 0.0
        authorized = self.auth.state != "unauthorized"
        return reachable and authorized and banned <= 0, {
            "reachable": reachable,
            "token": self.auth.state,
            "token_refused": self.auth.message if not authorized else None,
            "banned_for": round(banned, 3),
            "last_answer_age": None if answer is None else round(now - answer, 3),
            "last_failure_age": None if failure is None else round(now - failure, 3),
        }
