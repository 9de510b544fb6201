"""One call to the Semookii Cloud Control API on pooled aiohttp sessions: the gate (the caller's rate limiter),
one HTTP attempt, its failure classified by whether the request may have reached the server, the retries per
`retry.py`, the answer's envelope unwrapped. The token is sent and nowhere else: not in logs, errors or reprs."""

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import aiohttp
import msgspec

from ..config.secret import Secret
from ..interface import wire
from . import endpoints as ep
from . import errors
from .answers import ban_seconds, decode_json, read_body, retry_after, token_refused
from .endpoints import Endpoint
from .gate import CallObserver, Gate, OpenGate
from .retry import RetryPolicy, call_with_retries
from .transport import WRITE_REFUSED, MaySend, cannot_connect, connector, refused_write
from .types import (
    Envelope,
)

log = logging.getLogger(__name__)


class Caller:
    """The plumbing under `CloudClient`: sessions, one attempt, retries; `CloudClient` adds the endpoints."""

    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        gate: Gate | None = None,
        max_connections: int = 16,
        observer: CallObserver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_token: Callable[[bool, str], bool] | None = None,
        may_send: MaySend | None = None,
        wire_bound: float | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self.token = token
        """The token sent (a `Secret`); replaced when the operator corrects `api.token_file`."""
        # `connect` bounds the wait for a free pooled connection as well as the TCP connect, and stays below
        # `total`: a request that timed out before it left then raises ConnectionTimeoutError (never sent,
        # retryable), not a plain timeout that would make a control call `ambiguous`.
        connect = min(connect_timeout, 0.8 * timeout)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect, sock_connect=connect)
        self._retry = retry or RetryPolicy()
        self._gate: Gate = gate or OpenGate()
        self._max_connections = max_connections
        self._observer = observer
        self._on_token = on_token or (lambda accepted, message: True)
        """Told (True, "") when an answer shows the token accepted, (False, the API's words) when it reads like
        a refusal; returns whether that counts (else the call's error is the vendor's own, not `unauthorized`)."""
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._may_send, self._wire_bound = may_send, wire_bound  # the hot standby's fence (transport.py)
        self._session: aiohttp.ClientSession | None = None
        self._control_session: aiohttp.ClientSession | None = None
        # Waiting for a pooled connection happens here, before aiohttp's timeouts start: a slow API under a
        # flood of management calls makes requests wait their turn, not fail as if the server were unreachable.
        self._slots = {True: asyncio.Semaphore(max_connections), False: asyncio.Semaphore(max_connections)}

    @property
    def base_url(self) -> str:
        return self._base_url

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the pooled sessions (idempotent): one for control calls and one for everything else, so a
        slow or hanging poll or management call never holds the connection a control call needs."""
        if self._session is None:
            self._session = self._new_session()
            self._control_session = self._new_session()

    def _new_session(self) -> aiohttp.ClientSession:
        pool = connector(
            may_send=self._may_send,
            wire_bound=self._wire_bound,
            limit=self._max_connections,
            keepalive_timeout=10,
            ssl=self._ssl,
        )
        return aiohttp.ClientSession(connector=pool, timeout=self._timeout, headers={"Accept": "application/json"})

    async def close(self) -> None:
        """Close the sessions and their connections."""
        for session in (self._session, self._control_session):
            if session is not None:
                await session.close()
        self._session = self._control_session = None

    # ---- one call ----------------------------------------------------------------------------------

    async def _call(
        self, endpoint: Endpoint, query: Mapping[str, str], result_type: Any, *, prepaid: bool = False
    ) -> Any:
        prepaid_left = [prepaid]

        async def attempt() -> Any:
            params = {**query, "tokenId": self.token.reveal()}
            gated = not prepaid_left[0]
            prepaid_left[0] = False
            raw = await self._http(endpoint, params=params, json_body=None, gated=gated)
            return self._unwrap(endpoint, raw, result_type)

        return await self._retrying(endpoint, attempt)

    async def _retrying(self, endpoint: Endpoint, attempt: Any) -> Any:
        def on_retry(number: int, error: BaseException) -> None:
            code = getattr(error, "code", type(error).__name__)
            log.warning("api_retry endpoint=%s attempt=%d code=%s", endpoint.name, number, code)

        return await call_with_retries(self._retry, attempt, idempotent=endpoint.idempotent, on_retry=on_retry)

    def _unwrap(self, endpoint: Endpoint, raw: bytes, result_type: Any) -> Any:
        envelope = decode_json(endpoint, raw, Envelope)
        ok = envelope.ok
        if ok is None:
            raise errors.BadResponse("the API answer has neither success nor isSuccess", endpoint=endpoint.name)
        if not ok:
            message = self.token.vet(envelope.exception or "the API reported a failure without a message")
            seconds = ban_seconds(message)
            if seconds is not None:
                log.error("api_banned endpoint=%s seconds=%g effect=every_call_paused", endpoint.name, seconds)
                self._gate.banned(seconds)
                raise errors.Banned(message, endpoint=endpoint.name, seconds=seconds)
            raise self._rejected(message, endpoint)
        self._on_token(True, "")
        try:
            return wire.decode(envelope.result, result_type, strict=False)
        except msgspec.ValidationError as exc:
            raise errors.BadResponse(f"unexpected result shape: {exc}", endpoint=endpoint.name) from None

    def _rejected(self, message: str, endpoint: Endpoint) -> errors.ApiRejected:
        """`success: false`: Unauthorized (and the verdict told) when it is the token that is refused."""
        if token_refused(message) and self._on_token(False, message):
            return errors.Unauthorized(message, endpoint=endpoint.name)
        return errors.ApiRejected(message, endpoint=endpoint.name)

    async def _http(
        self, endpoint: Endpoint, *, params: Mapping[str, str] | None, json_body: Any | None, gated: bool = True
    ) -> bytes:
        """One HTTP attempt, its failure classified by whether the request may have reached the server."""
        self._still_leading(endpoint)
        if gated:
            await self._gate.acquire(endpoint)
        else:
            self._gate.check(endpoint)
        control = endpoint.priority == ep.Priority.CONTROL
        async with self._slots[control]:
            return await self._post(endpoint, self._control_session if control else self._session, params, json_body)

    async def _post(
        self, endpoint: Endpoint, session: aiohttp.ClientSession | None, params: Mapping[str, str] | None, body: Any
    ) -> bytes:
        """The HTTP request of one attempt, on a connection of its own."""
        if session is None:
            raise RuntimeError("CloudClient used outside `async with`")
        started = time.perf_counter()
        outcome = "ok"
        try:
            async with session.post(self._base_url + endpoint.path, params=params, json=body) as response:
                refusal = self._refusal(response, endpoint)
                if refusal is not None:
                    outcome = str(response.status)
                    raise refusal
                return await read_body(response, endpoint)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            outcome = "connect_error"
            reason = cannot_connect(self._base_url, self._timeout.connect or 0.0, exc)
            raise errors.ConnectFailed(self.token.vet(reason), endpoint=endpoint.name) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            outcome, error = _after_sending(exc, endpoint)
            raise error from None
        except asyncio.CancelledError:
            outcome = "cancelled"  # the caller gave up (a poll's window): no answer came, none is proven
            raise
        finally:
            elapsed = time.perf_counter() - started
            if self._observer is not None:
                self._observer(endpoint, outcome, elapsed)
            log.debug("api_call endpoint=%s outcome=%s ms=%.1f", endpoint.name, outcome, elapsed * 1000)

    def _refusal(self, response: aiohttp.ClientResponse, endpoint: Endpoint) -> errors.ApiError | None:
        """The error of an answer that refused the request, or None: 429 pauses every call for its Retry-After,
        401 and 403 are the token's refusal if the token check agrees."""
        status = response.status
        if status == 429:
            wait = retry_after(response.headers.get("Retry-After"))
            self._gate.throttled(wait)
            return errors.RateLimited("HTTP 429", endpoint=endpoint.name, retry_after=wait)
        message = f"HTTP {status}: the API refused the token"
        if status in (401, 403) and self._on_token(False, message):
            return errors.Unauthorized(message, endpoint=endpoint.name, status=status)
        if status >= 400:
            return errors.HttpStatusError(f"HTTP {status}", endpoint=endpoint.name, status=status)
        return None

    def _still_leading(self, endpoint: Endpoint) -> None:
        """No attempt at all (nor a rate-limit token) once this process no longer leads."""
        if self._may_send is not None and not self._may_send():
            raise errors.NotLeading(WRITE_REFUSED, endpoint=endpoint.name)


def _after_sending(exc: BaseException, endpoint: Endpoint) -> tuple[str, errors.ApiError]:
    """The outcome and error of a request that failed after its connection was open: refused by the lease guard
    (surely not sent), timed out, or broken."""
    if refused_write(exc):
        return "not_leading", errors.NotLeading(WRITE_REFUSED, endpoint=endpoint.name)
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout", errors.TransportError("timed out waiting for the answer", endpoint=endpoint.name)
    return "transport_error", errors.TransportError(type(exc).__name__, endpoint=endpoint.name)
