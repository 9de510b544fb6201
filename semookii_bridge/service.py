"""Wiring for `semookii-bridge run`: journal, rate limiter, API client, bridge core and MQTT edge.

Start order matters: connect (messages buffer), recover the journal, then deliver new messages, so a
recovered older command can never supersede a newer one. Stop order: stop taking messages (unacked ones
come back next time), let calls in flight finish, publish `offline`, disconnect.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import msgspec

from .api import CloudClient, Endpoint, QuotaExceeded, RetryPolicy
from .bridge import Bridge, topics_for
from .budget import authorization
from .budget.authorization import Authorization
from .budget.breaker import Breaker
from .budget.ratelimit import QuotaExhausted, RateLimiter, TokenBucket
from .config import BridgeConfig, ConfigError, load_token
from .config.secret import Secret
from .ha import copies
from .journal.protocol import CommandJournal
from .journal.sqlite import Journal
from .journal.timeline import Timeline, resume
from .mqtt import MqttFailure, MqttLink
from .ops import http_server, status_page
from .ops.metrics import HaSample, LiveSample
from .ops.observability import Observability

if TYPE_CHECKING:
    from .ha.standby import Presence, Shared
    from .journal.lease import Leadership
    from .sparkplug.edge import EdgeNode

log = logging.getLogger(__name__)


class Service:
    """One running bridge; `await start()`, then `await stop()`."""

    def __init__(
        self,
        config: BridgeConfig,
        token: Secret,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self._token = token
        self._api: CloudClient | None = None
        self._retry = retry or RetryPolicy(attempts=config.api.attempts)
        self.auth = Authorization()
        self.obs = Observability(api_stale_after=config.http.api_stale_after, auth=self.auth)
        self.http_port: int | None = None
        self._stack = AsyncExitStack()
        rl = config.rate_limit
        self.limiter = RateLimiter(
            TokenBucket(rl.rate, rl.burst, quota=rl.quota(), margin=rl.send_margin),
            default_pause=rl.pause_on_429,
            poll_share=rl.poll_share,
        )
        self.breaker = Breaker()
        """Held open after a control call timed out, until the API answers (`breaker.py`)."""
        self.journal: CommandJournal | None = None
        self.leadership: Leadership | None = None
        self._shared: Shared | None = None
        self.bridge: Bridge | None = None
        self.link: MqttLink | None = None
        self.safety_link: MqttLink | None = None
        self.edge: EdgeNode | None = None
        self.failed: asyncio.Future[MqttFailure] | None = None
        """Set when the bridge must stop for a cause no retry fixes (its MQTT session taken over again and
        again): `run` stops and exits with the failure's code."""

    async def start(self) -> None:
        """Open the journal and the API client, connect, recover the journal, then take messages."""
        cfg = self.config
        if cfg.http.enabled:  # first: a standby answers the probes, the page and /metrics while it waits
            await self._start_http()
        self.journal, timeline = await self._open_journal()
        self._resume_budget(self.journal, timeline)
        api = await self._stack.enter_async_context(self._api_client())
        bridge, link = self._build(api, self.journal, timeline)
        self.obs.bind(self._sample)
        bridge.answers.answered = self.obs.board.observe_answer
        bridge.plans.on_interval, bridge.plans.on_lateness = (
            self.obs.observe_plan_interval,
            self.obs.plan_lateness.observe,
        )
        safety = self.safety_link = self._safety_link(bridge, self.journal)
        presence = None if cfg.ha.enabled else await copies.start(cfg, self._stack)  # a second copy stops here
        self.failed = asyncio.get_running_loop().create_future()
        self._watch_links((link, safety), presence or (self._shared.presence if self._shared is not None else None))
        wait = cfg.mqtt.start_timeout
        await asyncio.gather(link.start(wait), safety.start(wait))
        await bridge.start()
        self._stack.push_async_callback(bridge.stop)
        self._watch_token(api, bridge, link)
        probe = self.breaker.probe(lambda: api.group_find_all(1, 1))
        for job in (self.obs.watch_loop(), _tick_board(self.obs, bridge), probe):
            task = asyncio.get_running_loop().create_task(job)
            self._stack.callback(task.cancel)
        safety.deliver()
        link.deliver()
        if cfg.sparkplug.enabled:
            await self._start_sparkplug()
        page = f"http://{cfg.http.host}:{self.http_port}/" if self.http_port else "off"
        log.info(
            "bridge_started prefix=%s api=%s dry_run=%s status_page=%s",
            cfg.mqtt.prefix,
            api.base_url,
            cfg.commands.dry_run,
            page,
        )

    async def _start_http(self) -> None:
        """The status page, the probes and /metrics, stopped last."""
        http = self.config.http
        runner, self.http_port = await http_server.start(
            self.obs, http.host, http.port, self._status, token=http.token(), metrics_public=http.metrics_public
        )
        self._stack.push_async_callback(runner.cleanup)

    def _watch_links(self, links: tuple[MqttLink, MqttLink], seen: Presence | None) -> None:
        """A session taken over again and again stops `run`; with a presence topic, a rival copy is named."""
        for each in links:
            each.watch.on_takeover = self._give_up
            if seen is not None:
                each.watch.rival = functools.partial(copies.rival, seen)
            self._stack.push_async_callback(each.stop)  # before connecting: a failed start must stop retrying too

    def _give_up(self, failure: MqttFailure) -> None:
        if self.failed is not None and not self.failed.done():
            self.failed.set_result(failure)

    def _watch_token(self, api: CloudClient, bridge: Bridge, link: MqttLink) -> None:
        """Check the token now (one call) and slowly while refused; info and budget say its standing."""
        bridge.api_state = lambda: self.auth.state
        self.auth.listeners.append(lambda _state: link.announce())
        if self.config.commands.dry_run:
            return  # a dry run calls nothing, not even the token check
        cfg = self.config.api
        check = authorization.watch(
            self.auth, lambda: self._check_token(api), cfg.token_recheck, at_start=cfg.check_token
        )
        task = asyncio.get_running_loop().create_task(check)
        self._stack.callback(task.cancel)
        self._api = api

    async def _check_token(self, api: CloudClient) -> object:
        """The token check; `api.token_file` is read again first, so a corrected file needs no restart."""
        self._reload_token(api)
        return await api.group_find_all(1, 1)

    def _reload_token(self, api: CloudClient) -> None:
        if not self.config.api.token_file:
            return
        try:
            token = load_token(self.config.api)
        except ConfigError as exc:
            log.warning("api_token_file_unreadable cause=%s action=%s", exc, "the token in use is kept")
            return
        if token.reveal() != self._token.reveal():
            self._token = token
            api.token = token
            log.info("api_token_reloaded source=api.token_file")

    def reload(self) -> None:
        """SIGHUP: read `api.token_file` again and check the token at once (one call)."""
        if self._api is not None:
            self._reload_token(self._api)
            self.auth.check_now()

    async def _open_journal(self) -> tuple[CommandJournal, Timeline]:
        """The SQLite file, or (with `journal.url`) the shared PostgreSQL journal, where with `[ha]` this
        waits as a standby until it leads; and the journal's timeline."""
        cfg = self.config.journal
        if cfg.url:
            from .ha.standby import open_postgres_journal

            shared = await open_postgres_journal(
                self.config, self._stack, on_leadership=self._show_leadership, api_held=lambda: self.breaker.open
            )
            self.leadership, self._shared = shared.leadership, shared
            return shared.journal, shared.timeline
        journal = Journal(cfg.path, synchronous=cfg.synchronous)
        self._stack.callback(journal.close)
        timeline = resume(journal)
        journal.use_clock(timeline)
        return journal, timeline

    def _show_leadership(self, leadership: Leadership) -> None:
        """Health and metrics say this instance's role from the moment it is a candidate."""
        self.leadership = leadership
        self.obs.ha = lambda: HaSample(leadership.role, leadership.epoch, leadership.takeovers, self._skew())

    def _skew(self) -> float | None:
        """This host's wall clock minus the journal's timeline (the database's clock), once leading."""
        return time.time() - self._shared.timeline() if self._shared is not None else None

    def _resume_budget(self, journal: CommandJournal, timeline: Timeline) -> None:
        """The rate limiter and quota going on from what the journal holds.

        The bucket's state and the day's count are written with each granted call, and each call waits for
        them to be on record before it leaves: neither a restart, a SIGKILL nor a takeover starts from a full
        bucket or under-counts the day's quota. With a leader's fence every call waits for it too.
        """
        bucket = self.limiter.bucket
        bucket.attach(journal, timeline, doubt=timeline.doubt)
        if self._shared is not None:
            bucket.quota.use_wall(timeline)
        if self.config.rate_limit.daily_quota:
            bucket.quota.attach(journal)
        if self.config.rate_limit.daily_quota or not bucket.unlimited or self.leadership is not None:
            self.limiter.after_grant = journal.durable
        checkpoints = asyncio.get_running_loop().create_task(_checkpoint_loop(journal, timeline))
        self._stack.callback(lambda: journal.save_clock_anchor(timeline.anchor()))
        self._stack.callback(checkpoints.cancel)

    async def _start_sparkplug(self) -> None:
        """The Sparkplug B edge node, a client of the JSON topics on its own session (loaded only when on)."""
        from .sparkplug.edge import EdgeNode

        loop = asyncio.get_running_loop()
        bd_seq = self._shared.counter("sparkplug_bd_seq", loop) if self._shared is not None else None
        edge = self.edge = EdgeNode(self.config, bd_seq=bd_seq)
        await edge.start()
        self._stack.push_async_callback(edge.stop)

    def _api_client(self) -> CloudClient:
        """The Cloud API client behind the shared rate limiter, reporting each attempt to the metrics; under the
        hot standby no request leaves once the lease is gone, nor stays on the wire past `ha.wire_bound`."""
        api, leading = self.config.api, self.leadership
        return CloudClient(
            api.base_url,
            self._token,
            timeout=api.timeout,
            connect_timeout=api.connect_timeout,
            retry=self._retry,
            gate=LimiterGate(self.limiter, self.auth),
            max_connections=api.max_connections,
            observer=self._observe_call,
            on_token=self.auth.told,
            may_send=leading.valid if leading is not None else None,
            wire_bound=self.config.ha.wire_bound if leading is not None else None,
        )

    def _observe_call(self, endpoint: Endpoint, outcome: str, seconds: float) -> None:
        """Each API attempt: to the metrics, and to the breaker that holds control calls after a timeout."""
        self.obs.observe_call(endpoint, outcome, seconds)
        self.breaker.observe(endpoint, outcome)

    def _build(self, api: CloudClient, journal: CommandJournal, timeline: Timeline) -> tuple[Bridge, MqttLink]:
        """The MQTT link and the bridge, each calling the other (the link's callbacks find the bridge later)."""
        cfg = self.config
        bridge: Bridge | None = None
        link = MqttLink(
            cfg.mqtt,
            topics_for(cfg),
            on_message=lambda msg: _require(bridge).handle(msg),
            info=lambda: _require(bridge).info(),
            before_ack=journal.durable,
            on_overload=lambda msg: _require(bridge).refuse_overloaded(msg),
            will_delay=int(2 * cfg.ha.lease + 2) if cfg.ha.enabled else 0,
            urgent=lambda: _require(bridge).lane.pending() or self._stop_arriving(),
        )
        bridge = Bridge(
            cfg,
            api=api,
            publisher=link,
            journal=journal,
            limiter=self.limiter,
            clock=timeline,
            wall=timeline if self._shared is not None else time.time,
            clock_doubt=timeline.doubt,
            observer=self.obs.observe_state,
            age_observer=self.obs.observe_setpoint_age,
            breaker=self.breaker,
        )
        self.bridge, self.link = bridge, link
        return bridge, link

    def _stop_arriving(self) -> bool:
        """A message on the safety lane has arrived and waits to be handled."""
        return self.safety_link is not None and self.safety_link.waiting

    def _safety_link(self, bridge: Bridge, journal: CommandJournal) -> MqttLink:
        """The safety lane: its own persistent session (`<client_id>-safety`) on the safety topics only, so the
        broker's queue for the ordinary topics never holds a stop back; its commands go to the same bridge."""
        cfg = self.config.mqtt
        return MqttLink(
            msgspec.structs.replace(cfg, client_id=f"{cfg.client_id}-safety"),
            bridge.topics,
            on_message=bridge.handle,
            before_ack=journal.durable,
            on_overload=bridge.refuse_overloaded,
            safety=True,
        )

    def _status(self) -> dict[str, Any]:
        """The status page's data."""
        sample = self.bridge.sample(with_budget=True) if self.bridge else None
        return status_page.snapshot(self.obs, self.config, sample)

    def _sample(self) -> LiveSample | None:
        bridge, link = self.bridge, self.link
        if bridge is None or link is None:
            return None
        quota, now = self.limiter.bucket.quota, bridge.sample()
        return LiveSample(
            mqtt_connected=link.connected,
            mqtt_reconnects=link.reconnects,
            tokens=self.limiter.bucket.tokens(),
            limiter_waiting=self.limiter.queue_depth(),
            queued=now.queued,
            in_flight=now.in_flight,
            tracking=now.tracking,
            quota_used=quota.used,
            quota_remaining=quota.remaining,
            quota_reserve_only=quota.reserve_only(),
            quota_limit=quota.limit,
            quota_reserve=quota.reserve,
            journal_writable=self.journal.writable if self.journal is not None else False,
            banned_for=self.limiter.banned_for(),
            oldest_queued=now.oldest_queued,
            calls_by_kind=now.calls_by_kind,
            plans=now.plans,
            sparkplug_limited=dict(self.edge.limited) if self.edge is not None else None,
            mqtt_refused=sum(link.outbox.refused for link in self._links()),
            mqtt_refusal=self._refusal(),
        )

    def _links(self) -> list[MqttLink]:
        return [link for link in (self.link, self.safety_link) if link is not None]

    def _refusal(self) -> str | None:
        """The broker's latest refusal of a publish on either session, while recent."""
        latest = [r for r in (link.outbox.refusing() for link in self._links()) if r is not None]
        refusal = max(latest, key=lambda r: r.at) if latest else None
        return f"{refusal.topic}: {refusal.reason}" if refusal else None

    async def stop(self) -> None:
        for link in (self.safety_link, self.link):
            if link is not None:
                await link.pause()
        await self._stack.aclose()
        log.info("bridge_stopped")


async def _checkpoint_loop(journal: CommandJournal, timeline: Timeline, every: float = 10.0) -> None:
    """Journal how far the timeline got, so that after a reboot it goes on from no earlier than that."""
    while True:
        await asyncio.sleep(every)
        journal.save_clock_anchor(timeline.anchor())


async def _tick_board(obs: Observability, bridge: Bridge, every: float = 10.0) -> None:
    """Give the status page's burn chart the call counters each minute."""
    while True:
        obs.board.tick(bridge.calls.by_kind())
        await asyncio.sleep(every)


def _require(bridge: Bridge | None) -> Bridge:
    if bridge is None:
        raise RuntimeError("bridge not constructed yet")
    return bridge


class LimiterGate:
    """Adapts the RateLimiter to the API client's gate: priority by endpoint, 429 pauses everyone."""

    def __init__(self, limiter: RateLimiter, auth: Authorization | None = None) -> None:
        self.limiter, self.auth = limiter, auth

    def check(self, endpoint: Endpoint) -> None:
        if self.auth is not None and self.auth.refused():
            raise self.auth.refusal(endpoint.name)  # no call: it could not succeed

    async def acquire(self, endpoint: Endpoint) -> None:
        self.check(endpoint)  # before the token, which stays in the bucket
        try:
            await self.limiter.acquire(endpoint.priority)
        except QuotaExhausted as exc:
            raise QuotaExceeded(str(exc), endpoint=endpoint.name) from None

    def throttled(self, retry_after: float | None) -> None:
        self.limiter.throttled(retry_after)

    def banned(self, seconds: float) -> None:
        self.limiter.banned(seconds)
