"""Retries in one place: which failures are transient, for which calls, and how long to wait.

Idempotent calls (queries) retry on anything transient. Mutating calls (control, add, update, delete,
bind) retry only when the request surely never reached the server (connect failure) or the server said
it did not take it (429, 503); any other failure after sending becomes `Ambiguous` and is never resent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import tenacity

from ..common.backoff import Backoff
from .errors import (
    Ambiguous,
    ApiError,
    BadResponse,
    ConnectFailed,
    HttpStatusError,
    NotLeading,
    RateLimited,
    TransportError,
)

T = TypeVar("T")


class RetryPolicy(msgspec.Struct, frozen=True):
    """Stop after `attempts` or `max_total` seconds; waits grow exponentially with jitter.

    `wait_scale` multiplies every wait, the server's Retry-After included: 0 makes tests instant.
    """

    attempts: int = 4
    max_total: float = 30.0
    initial_wait: float = 0.25
    max_wait: float = 8.0
    jitter: float = 0.25
    wait_scale: float = 1.0

    @classmethod
    def instant(cls, attempts: int = 4) -> RetryPolicy:
        """The same decisions with zero waits, for tests."""
        return cls(attempts=attempts, wait_scale=0.0)

    def wait_for(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait before attempt `attempt + 1`: the server's Retry-After if longer than backoff."""
        backoff = Backoff(self.initial_wait, self.max_wait, jitter=self.jitter).wait(attempt)
        if isinstance(error, RateLimited) and error.retry_after is not None:
            backoff = max(backoff, min(error.retry_after, self.max_total))
        return backoff * self.wait_scale


def is_transient(error: BaseException, *, idempotent: bool) -> bool:
    """Whether another attempt is safe and may succeed."""
    if isinstance(error, ConnectFailed | RateLimited | NotLeading):
        return True  # never reached the server (NotLeading: refused before a byte was written; a renewal late
        # by a stalled loop catches up, a lost lease stops the process)
    if isinstance(error, HttpStatusError):
        return error.status is not None and (error.status == 503 or (idempotent and error.status >= 500))
    if isinstance(error, TransportError | BadResponse):
        return idempotent
    return False


def settle(error: ApiError, *, idempotent: bool) -> ApiError:
    """The error to surface once retrying stopped: a mutating call that may have landed is `Ambiguous`."""
    if idempotent:
        return error
    may_have_landed = isinstance(error, TransportError | BadResponse) or (
        isinstance(error, HttpStatusError)
        and not isinstance(error, RateLimited)
        and error.status is not None
        and error.status >= 500
        and error.status != 503
    )
    if may_have_landed:
        return Ambiguous(
            f"{error.message}; the request may have reached the API and is not repeated",
            endpoint=error.endpoint,
            status=error.status,
        )
    return error


async def call_with_retries(
    policy: RetryPolicy,
    attempt_fn: Callable[[], Awaitable[T]],
    *,
    idempotent: bool,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run `attempt_fn` under `policy`; raises the settled `ApiError` when it gives up.

    The first attempt runs before tenacity: nearly every call succeeds at once, and tenacity's bookkeeping
    cost about 30 us per call. A failed first attempt is replayed to tenacity, so it decides exactly as if it
    had run it: whether to retry, how long to wait, and when the attempts or the time budget are used up.
    """
    started = time.monotonic()
    try:
        return await attempt_fn()
    except ApiError as error:
        replay: list[ApiError] = [error]

    async def attempt() -> T:
        if replay:
            raise replay.pop()
        return await attempt_fn()

    retrying = _retrying(policy, policy.max_total - (time.monotonic() - started), idempotent, on_retry)
    try:
        return await retrying(attempt)
    except ApiError as error:
        settled = settle(error, idempotent=idempotent)
        if settled is error:
            raise
        raise settled from None


def _retrying(
    policy: RetryPolicy, budget: float, idempotent: bool, on_retry: Callable[[int, BaseException], None] | None
) -> tenacity.AsyncRetrying:
    """tenacity set up from the policy: stop on attempts or the time left, wait per `wait_for`, retry what
    `is_transient` allows, and tell `on_retry` before each wait."""

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return float(policy.wait_for(state.attempt_number, error))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if on_retry and error is not None:
            on_retry(state.attempt_number, error)

    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_after_delay(budget),
        wait=wait,
        retry=tenacity.retry_if_exception(lambda e: is_transient(e, idempotent=idempotent)),
        before_sleep=before_sleep,
        reraise=True,
    )
