"""What the client asks of the bridge around each HTTP attempt: a gate (the rate limiter) and an observer
(the metrics). Protocols only, so the core can implement them without loading an HTTP stack."""

from __future__ import annotations

from typing import Protocol

from .endpoints import Endpoint


class Gate(Protocol):
    """What the client asks before each HTTP attempt and tells after a 429 (the bridge's rate limiter)."""

    async def acquire(self, endpoint: Endpoint) -> None: ...

    def check(self, endpoint: Endpoint) -> None:
        """Raise the ApiError a call must fail with before it leaves (a refused token); prepaid calls too."""
        ...

    def throttled(self, retry_after: float | None) -> None: ...

    def banned(self, seconds: float) -> None: ...


class OpenGate:
    """No rate limit: every attempt goes straight out."""

    async def acquire(self, endpoint: Endpoint) -> None:
        return None

    def check(self, endpoint: Endpoint) -> None:
        return None

    def throttled(self, retry_after: float | None) -> None:
        return None

    def banned(self, seconds: float) -> None:
        return None


class CallObserver(Protocol):
    """Receives one event per HTTP attempt (for metrics); must not raise."""

    def __call__(self, endpoint: Endpoint, outcome: str, seconds: float) -> None: ...
