"""Whether the Cloud API accepts the token, as plain state: checked once at start and re-checked slowly while
refused, so a wrong token is loud and a fixed one recovers without a restart.

Only the token check (a call that carries nothing but the token) decides that the token is refused. An
ordinary call's answer that reads like a refusal may be the vendor's words about a serial or a group name the
call carried ("token.invalid", a group named "token expired"): it only raises a doubt, which the check then
confirms or clears at once (one call, at most one per `CONFIRM_EVERY` s). A safety command (a stop, a
switch-off) is attempted whatever the token's standing: the vendor may refuse it, which costs one call."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

from ..api.errors import ApiError, Unauthorized
from ..interface.payloads import ApiState

log = logging.getLogger(__name__)

AuthState = ApiState
PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("semookii_token_probe", default=False)
"""True inside the token check: the one call that may go out while the token is refused."""
ATTEMPT: contextvars.ContextVar[bool] = contextvars.ContextVar("semookii_attempt_anyway", default=False)
"""True while a safety command is sent: it goes out whatever the token's standing."""
CONFIRM_EVERY = 30.0
"""Seconds between token checks that an ordinary call's answer may cause (each costs one call)."""


class Authorization:
    """The token's standing with the API: `unknown` until an answer says, then `authorized` or `unauthorized`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.state: AuthState = "unknown"
        self.message = ""
        """The API's words when it refused the token."""
        self._clock = clock
        self.since = clock()
        self.listeners: list[Callable[[AuthState], None]] = []
        self._doubt = asyncio.Event()
        self._doubted_at = -CONFIRM_EVERY

    def told(self, accepted: bool, message: str) -> bool:
        """An answer's verdict on the token (the API client's `on_token`); whether it counts: a refusal counts
        from the token check or once the check has found the token refused; any other only raises a doubt."""
        if not accepted and not PROBING.get() and self.state != "unauthorized":
            self._doubted(message)
            return False
        new: AuthState = "authorized" if accepted else "unauthorized"
        if not accepted:
            self.message = message
        if new == self.state:
            return True
        self.state, self.since = new, self._clock()
        if accepted:
            log.info("api_token_accepted")
        else:
            log.error(
                "api_unauthorized cause=%s action=%s",
                f"the API refused the token: {message}",
                "set a valid SEMOOKII_TOKEN or api.token_file; it is re-checked every api.token_recheck s",
            )
        for listener in list(self.listeners):
            listener(new)
        return True

    def _doubted(self, message: str) -> None:
        """An ordinary answer reads like a refusal: have the token checked now (not again within CONFIRM_EVERY)."""
        if self._clock() - self._doubted_at < CONFIRM_EVERY:  # `told` asks only while not refused
            return
        self._doubted_at = self._clock()
        cause = f"an answer read like a token refusal: {message}"
        log.warning("api_token_doubted cause=%s action=%s", cause, "checking the token with a call of its own")
        self._doubt.set()

    def check_now(self) -> None:
        """Have the token checked at once (SIGHUP: the operator changed it)."""
        self._doubt.set()

    async def doubt_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for a doubt; whether one came (it is then cleared)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._doubt.wait(), seconds)
        doubted = self._doubt.is_set()
        self._doubt.clear()
        return doubted

    def refused(self) -> bool:
        """Whether calls must fail at once (`unauthorized`) instead of spending the budget: not the token
        check, nor a safety command."""
        return self.state == "unauthorized" and not PROBING.get() and not ATTEMPT.get()

    def refusal(self, endpoint: str) -> Unauthorized:
        """The error a call gets while the token is refused."""
        text = f"the API refused the token ({self.message}); not sent until a re-check finds it accepted"
        return Unauthorized(text, endpoint=endpoint)


async def watch(
    auth: Authorization, check: Callable[[], Awaitable[object]], recheck: float, *, at_start: bool = True
) -> None:
    """Check the token at once (unless not `at_start`: then the first real call tells), then every `recheck`
    seconds while it is refused, or every 30 s at most while no answer has come, and at once when an ordinary
    answer raised a doubt (one call each)."""
    if at_start:
        await _probe(check)
    while True:
        doubted = await auth.doubt_within(recheck if auth.state != "unknown" else min(recheck, 30.0))
        if doubted or auth.state == "unauthorized" or (at_start and auth.state == "unknown"):
            await _probe(check)


async def _probe(check: Callable[[], Awaitable[object]]) -> None:
    """One token check; its verdict reaches `auth` through the client's `on_token`, failures are logged."""
    token = PROBING.set(True)
    try:
        await check()
    except Unauthorized:
        pass
    except ApiError as exc:
        log.warning("api_token_check_failed code=%s error=%s", exc.code, exc.message)
    finally:
        PROBING.reset(token)
