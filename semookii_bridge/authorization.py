"""Whether the Cloud API accepts the token, as plain state: told by every answer, checked once at start and
re-checked slowly while refused, so a wrong token is loud and a fixed one recovers without a restart."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

from .api.errors import ApiError, Unauthorized
from .payloads import ApiState

log = logging.getLogger(__name__)

AuthState = ApiState
PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("semookii_token_probe", default=False)
"""True inside the token check: the one call that may go out while the token is refused."""


class Authorization:
    """The token's standing with the API: `unknown` until an answer says, then `authorized` or `unauthorized`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.state: AuthState = "unknown"
        self.message = ""
        """The API's words when it refused the token."""
        self._clock = clock
        self.since = clock()
        self.listeners: list[Callable[[AuthState], None]] = []

    def told(self, accepted: bool, message: str) -> None:
        """An answer's verdict on the token (the API client's `on_token`)."""
        new: AuthState = "authorized" if accepted else "unauthorized"
        if not accepted:
            self.message = message
        if new == self.state:
            return
        self.state, self.since = new, self._clock()
        if accepted:
            log.info("api_token_accepted")
        else:
            log.error("api_unauthorized cause=%s action=%s", f"the API refused the token: {message}",
                      "set a valid SEMOOKII_TOKEN or api.token_file; it is re-checked every api.token_recheck s")
        for listener in list(self.listeners):
            listener(new)

    def refused(self) -> bool:
        """Whether calls must fail at once (`unauthorized`) instead of spending the budget."""
        return self.state == "unauthorized" and not PROBING.get()

    def refusal(self, endpoint: str) -> Unauthorized:
        """The error a call gets while the token is refused."""
        text = f"the API refused the token ({self.message}); not sent until a re-check finds it accepted"
        return Unauthorized(text, endpoint=endpoint)


async def watch(
    auth: Authorization, check: Callable[[], Awaitable[object]], recheck: float, *, at_start: bool = True
) -> None:
    """Check the token at once (unless not `at_start`: then the first real call tells), then every `recheck`
    seconds while it is refused, or every 30 s at most while no answer has come (one call each)."""
    if at_start:
        await _probe(check)
    while True:
        await asyncio.sleep(recheck if auth.state != "unknown" else min(recheck, 30.0))
        if auth.state == "unauthorized" or (at_start and auth.state == "unknown"):
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
