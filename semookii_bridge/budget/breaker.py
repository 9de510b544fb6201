"""No pile of late calls: after a control call times out, no further control call leaves until the API answers.

A control call that timed out (or whose connection broke after it was sent) may be sitting in a middlebox that
accepted it and will deliver it later, together with every call sent after it: a vendor that bans a token for
a burst would ban it at heal. So the breaker opens: the dispatcher sends only safety commands (a stop is worth
the risk), and a cheap probe (one page of one group, through the rate limiter) asks the API now and then until
any answer (the probe's or another call's) closes it again; result polls wait meanwhile too. A middlebox can
thus deliver at most `rate_limit.max_in_flight` late control calls at once, plus the polls already on their
way when the first call timed out. Plain logic: the probe is the caller's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..api.endpoints import Endpoint, Priority
from ..common.backoff import Backoff

log = logging.getLogger(__name__)

TRIPS = frozenset({"timeout", "transport_error"})
"""Outcomes of a control attempt after which the request may still be on its way (it was sent)."""
ANSWERS = frozenset({"ok", "429", "401", "403"})
"""Outcomes that prove the API answers (an HTTP status of any kind counts: see `answered`)."""


class Breaker:
    """Open from a control call's timeout until the API answers; `listeners` hear each change."""

    def __init__(self, probe_every: tuple[float, float] = (2.0, 30.0)) -> None:
        self.open = False
        self.trips = 0
        self.listeners: list[Callable[[bool], None]] = []
        self._backoff = Backoff(*probe_every)
        self._opened = asyncio.Event()

    def observe(self, endpoint: Endpoint, outcome: str) -> None:
        """One API attempt's outcome (the client's observer)."""
        if outcome in TRIPS and endpoint.priority == Priority.CONTROL:
            self._set(True, f"a control call ended without an answer ({outcome})")
        elif answered(outcome):
            self._set(False, "the API answered")

    def _set(self, is_open: bool, reason: str) -> None:
        if is_open == self.open:
            return
        self.open = is_open
        if is_open:
            self.trips += 1
            self._opened.set()
            log.warning(
                "api_held reason=%s effect=%s",
                reason,
                "control calls wait until the API answers (safety commands still go); probing",
            )
        else:
            self._opened.clear()
            log.info("api_answering reason=%s effect=control_calls_resume", reason)
        for listener in list(self.listeners):
            listener(is_open)

    async def probe(self, ask: Callable[[], Awaitable[object]]) -> None:
        """While open, `ask` the API (a cheap call) with growing pauses until it is closed; runs forever."""
        while True:
            await self._opened.wait()
            wait = self._backoff.initial
            while True:
                await asyncio.sleep(wait)
                if not self._opened.is_set():
                    break
                try:
                    await ask()
                except Exception as exc:  # the client observed the outcome; the probe only keeps asking
                    log.debug("api_probe_failed error=%s", type(exc).__name__)
                wait = self._backoff.after(wait)


def answered(outcome: str) -> bool:
    """Whether an attempt got an HTTP answer: anything but a timeout, a broken or refused connection, or the
    lease guard's refusal."""
    return outcome in ANSWERS or outcome.isdigit()
