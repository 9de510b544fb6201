"""Wiring for `semookii-bridge run`: journal, rate limiter, API client, bridge core and MQTT edge.

Start order matters: connect (messages buffer), recover the journal, then deliver new messages, so a
recovered older command can never supersede a newer one. Stop order: stop taking messages (unacked ones
come back next time), let calls in flight finish, publish `offline`, disconnect.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from .api import CloudClient, RetryPolicy
from .bridge import Bridge
from .config import BridgeConfig
from .journal import Journal
from .lifecycle import StatusObserver
from .mqtt import MqttLink
from .ratelimit import LimiterGate, RateLimiter, TokenBucket
from .secret import Secret
from .topics import Topics

log = logging.getLogger(__name__)


class Service:
    """One running bridge; `await start()`, then `await stop()`."""

    def __init__(
        self,
        config: BridgeConfig,
        token: Secret,
        *,
        retry: RetryPolicy | None = None,
        observer: StatusObserver | None = None,
    ) -> None:
        self.config = config
        self._token = token
        self._retry = retry or RetryPolicy(attempts=config.api.attempts)
        self._observer = observer
        self._stack = AsyncExitStack()
        rl = config.rate_limit
        self.limiter = RateLimiter(
            TokenBucket(rl.rate, rl.burst, daily_quota=rl.daily_quota), default_pause=rl.pause_on_429
        )
        self.journal: Journal | None = None
        self.bridge: Bridge | None = None
        self.link: MqttLink | None = None

    async def start(self) -> None:
        cfg = self.config
        self.journal = Journal(cfg.journal.path, synchronous=cfg.journal.synchronous)
        self._stack.callback(self.journal.close)
        api = CloudClient(
            cfg.api.base_url,
            self._token,
            timeout=cfg.api.timeout,
            connect_timeout=cfg.api.connect_timeout,
            retry=self._retry,
            gate=LimiterGate(self.limiter),
            max_connections=cfg.api.max_connections,
        )
        await self._stack.enter_async_context(api)
        bridge: Bridge | None = None
        link = MqttLink(
            cfg.mqtt,
            _topics(cfg),
            on_message=lambda msg: _require(bridge).handle(msg),
            info=lambda: _require(bridge).info(),
        )
        bridge = Bridge(
            cfg, api=api, publisher=link, journal=self.journal, limiter=self.limiter, observer=self._observer
        )
        self.bridge, self.link = bridge, link
        await link.start()
        self._stack.push_async_callback(link.stop)
        await bridge.start()
        self._stack.push_async_callback(bridge.stop)
        link.deliver()
        log.info("bridge_started prefix=%s api=%s dry_run=%s", cfg.mqtt.prefix, api.base_url, cfg.commands.dry_run)

    async def stop(self) -> None:
        if self.link is not None:
            await self.link.pause()
        await self._stack.aclose()
        log.info("bridge_stopped")


def _topics(cfg: BridgeConfig) -> Topics:
    return Topics(cfg.mqtt.prefix, cfg.mqtt.shared_group)


def _require(bridge: Bridge | None) -> Bridge:
    if bridge is None:
        raise RuntimeError("bridge not constructed yet")
    return bridge
