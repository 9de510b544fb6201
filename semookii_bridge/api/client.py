"""Async client for the Semookii Cloud Control API on one pooled aiohttp session.

Every call goes through `_call`: gate (the caller's rate limiter), one HTTP attempt, classification of
the failure, retries per `retry.py`. Parameters travel in the query string (POST), except `/api/regsn`
which takes a JSON body. The token is sent and nowhere else: not in logs, errors or reprs."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
import msgspec

from ..config.secret import Secret
from ..interface import wire
from ..interface.wire import Id
from . import endpoints as ep
from .answers import all_pages, ban_seconds, decode_json, id_list, read_body, retry_after, split, token_refused
from .endpoints import Endpoint
from .errors import (
    ApiError,
    ApiRejected,
    BadResponse,
    Banned,
    ConnectFailed,
    HttpStatusError,
    NotLeading,
    RateLimited,
    TransportError,
    Unauthorized,
)
from .gate import CallObserver, Gate, OpenGate
from .params import ControlParams
from .retry import RetryPolicy, call_with_retries
from .transport import WRITE_REFUSED, MaySend, cannot_connect, connector, refused_write
from .types import (
    BIND_KEYS,
    BindResult,
    CommandStatus,
    Envelope,
    Group,
    GroupPage,
    Inverter,
    InverterPage,
    TaskResults,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

REGSN_CHUNK = 100


class CloudClient:
    """One client per process; use as `async with CloudClient(...) as client`."""

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

    def __repr__(self) -> str:
        return f"CloudClient(base_url={self._base_url!r}, token=Secret('***'))"

    @property
    def base_url(self) -> str:
        return self._base_url

    async def __aenter__(self) -> CloudClient:
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
        pool = connector(may_send=self._may_send, wire_bound=self._wire_bound, limit=self._max_connections,
                         keepalive_timeout=10, ssl=self._ssl)  # fmt: skip
        return aiohttp.ClientSession(connector=pool, timeout=self._timeout, headers={"Accept": "application/json"})

    async def close(self) -> None:
        """Close the sessions and their connections."""
        for session in (self._session, self._control_session):
            if session is not None:
                await session.close()
        self._session = self._control_session = None

    # ---- control -------------------------------------------------------------------------------

    # `prepaid=True`: the caller already took a rate-limit token for the first attempt (the bridge's
    # dispatcher takes it before choosing which queued command to send, so the newest one goes out; result
    # polling takes it before checking that the command is still worth polling).

    async def single_control(self, sn: str, params: ControlParams, *, prepaid: bool = False) -> Id:
        """Control one inverter; returns the command id."""
        return await self._command(ep.SINGLE_CONTROL, {"sn": sn}, params, prepaid)

    async def batch_control(self, sns: Sequence[str], params: ControlParams, *, prepaid: bool = False) -> Id:
        """Control a list of inverters (`snList`, comma separated); returns the command id."""
        return await self._command(ep.BATCH_CONTROL, {"snList": ",".join(sns)}, params, prepaid)

    async def group_control(self, group_id: str, params: ControlParams, *, prepaid: bool = False) -> Id:
        """Control every inverter of a group; returns the command id."""
        return await self._command(ep.GROUP_CONTROL, {"groupId": str(group_id)}, params, prepaid)

    async def _command(self, endpoint: Endpoint, target: dict[str, str], params: ControlParams, prepaid: bool) -> Id:
        query = {**target, **params.to_query()}
        result: Id | None = await self._call(endpoint, query, Id | None, prepaid=prepaid)
        if result is None:
            raise BadResponse("the API accepted the command but returned no command id", endpoint=endpoint.name)
        return result

    # ---- groups --------------------------------------------------------------------------------

    async def group_add(self, name: str) -> Id:
        """Create a group; returns its id."""
        result: Id | None = await self._call(ep.GROUP_ADD, {"name": name}, Id | None)
        if result is None:
            raise BadResponse("the API created a group but returned no id", endpoint=ep.GROUP_ADD.name)
        return result

    async def group_update(self, group_id: str, name: str) -> None:
        """Rename a group (the API may answer `exception: "update succeeded"`, which is a success)."""
        await self._call(ep.GROUP_UPDATE, {"id": str(group_id), "name": name}, Any)

    async def group_delete(self, group_id: str) -> None:
        """Delete one group."""
        await self._call(ep.GROUP_DELETE, {"id": str(group_id)}, Any)

    async def group_delete_batch(self, group_ids: Iterable[str]) -> None:
        """Delete several groups in one call."""
        await self._call(ep.GROUP_DELETE_BATCH, id_list(group_ids), Any)

    async def group_find_all(self, current: int = 1, size: int = 20) -> GroupPage:
        """One page of groups (pages count from 1)."""
        query = {"current": str(current), "size": str(size)}
        page: GroupPage = await self._call(ep.GROUP_FIND_ALL, query, GroupPage)
        return page

    async def group_list_all(self, page_size: int = 100) -> list[Group]:
        """Every group, reading all pages."""
        return await all_pages(lambda cur: self.group_find_all(cur, page_size), page_size)

    async def group_find_like_name(self, name: str) -> GroupPage:
        """Groups whose name contains `name`."""
        page: GroupPage = await self._call(ep.GROUP_FIND_LIKE_NAME, {"name": name}, GroupPage)
        return page

    # ---- inverters -----------------------------------------------------------------------------

    async def inverter_add(self, group_id: str, sn: str) -> Id:
        """Add an inverter to a group; returns the inverter id."""
        query = {"groupId": str(group_id), "inverterSn": sn}
        result: Id | None = await self._call(ep.INVERTER_ADD, query, Id | None)
        if result is None:
            raise BadResponse("the API added the inverter but returned no id", endpoint=ep.INVERTER_ADD.name)
        return result

    async def inverter_delete(self, inverter_id: str) -> None:
        """Remove one inverter from its group."""
        await self._call(ep.INVERTER_DELETE, {"id": str(inverter_id)}, Any)

    async def inverter_delete_batch(self, inverter_ids: Iterable[str]) -> None:
        """Remove several inverters in one call."""
        await self._call(ep.INVERTER_DELETE_BATCH, id_list(inverter_ids), Any)

    async def inverter_update(self, inverter_id: str, new_sn: str) -> None:
        """Replace the inverter behind `inverter_id` with `new_sn`."""
        query = {"id": str(inverter_id), "newInverterSn": new_sn}
        await self._call(ep.INVERTER_UPDATE, query, Any)

    async def inverter_find_by_group(self, group_id: str, current: int = 1, size: int = 20) -> InverterPage:
        """One page of a group's inverters."""
        query = {"groupId": str(group_id), "current": str(current), "size": str(size)}
        page: InverterPage = await self._call(ep.INVERTER_FIND_BY_GROUP, query, InverterPage)
        return page

    async def inverter_list_all(self, group_id: str, page_size: int = 100) -> list[Inverter]:
        """Every inverter of a group, reading all pages."""
        return await all_pages(lambda cur: self.inverter_find_by_group(group_id, cur, page_size), page_size)

    async def inverter_find_like(
        self, group_id: str, *, wifi_sn: str | None = None, sn: str | None = None
    ) -> InverterPage:
        """Inverters of a group whose dongle or inverter serial contains the given text."""
        query = {"groupId": str(group_id)}
        if wifi_sn:
            query["wifiSn"] = wifi_sn
        if sn:
            query["inverterSn"] = sn
        page: InverterPage = await self._call(ep.INVERTER_FIND_LIKE, query, InverterPage)
        return page

    # ---- queries -------------------------------------------------------------------------------

    async def query_command(self, command_id: str, *, prepaid: bool = False) -> str | None:
        """The task id of a command, or None while the cloud has not dispatched it yet."""
        query = {"commandId": str(command_id)}
        status = await self._call(ep.QUERY_COMMAND, query, CommandStatus | None, prepaid=prepaid)
        return status.task_id if status else None

    async def get_query_result(self, task_id: str, *, prepaid: bool = False) -> TaskResults | None:
        """Per-device results (dongle registration number -> status string, maybe "null"), or None."""
        raw = await self._call(ep.GET_QUERY_RESULT, {"taskId": task_id}, dict[str, Any] | None, prepaid=prepaid)
        if raw is None:
            return None
        return {str(k): "null" if v is None else str(v) for k, v in raw.items()}

    # ---- device binding ------------------------------------------------------------------------

    async def bind_sns(self, sns: Sequence[str]) -> BindResult:
        """Bind dongles to this account, at most 100 per call; results merged over all calls."""
        merged: dict[str, list[str]] = {field: [] for field in BIND_KEYS.values()}
        for start in range(0, len(sns), REGSN_CHUNK):
            chunk = sns[start : start + REGSN_CHUNK]
            answer = await self._regsn(list(chunk))
            for field, values in answer.items():
                merged[field].extend(values)
        return BindResult(**merged)

    async def _regsn(self, sns: list[str]) -> dict[str, list[str]]:
        endpoint = ep.REGISTER_SN

        async def attempt() -> dict[str, list[str]]:
            # The parameter table names `tokenId`, the example body sends `token`: send both.
            token = self.token.reveal()
            body = {"tokenId": token, "token": token, "sns": ",".join(sns)}
            raw = await self._http(endpoint, params=None, json_body=body)
            doc = decode_json(endpoint, raw, dict[str, Any])
            if doc.get("success") is not True:
                message = self.token.vet(str(doc.get("exception") or "the API reported a failure"))
                raise self._rejected(message, endpoint)
            self._on_token(True, "")
            return {field: split(doc.get(key)) for key, field in BIND_KEYS.items()}

        answer: dict[str, list[str]] = await self._retrying(endpoint, attempt)
        return answer

    # ---- plumbing ------------------------------------------------------------------------------

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
            raise BadResponse("the API answer has neither success nor isSuccess", endpoint=endpoint.name)
        if not ok:
            message = self.token.vet(envelope.exception or "the API reported a failure without a message")
            seconds = ban_seconds(message)
            if seconds is not None:
                log.error("api_banned endpoint=%s seconds=%g effect=every_call_paused", endpoint.name, seconds)
                self._gate.banned(seconds)
                raise Banned(message, endpoint=endpoint.name, seconds=seconds)
            raise self._rejected(message, endpoint)
        self._on_token(True, "")
        try:
            return wire.decode(envelope.result, result_type, strict=False)
        except msgspec.ValidationError as exc:
            raise BadResponse(f"unexpected result shape: {exc}", endpoint=endpoint.name) from None

    def _rejected(self, message: str, endpoint: Endpoint) -> ApiRejected:
        """`success: false`: Unauthorized (and the verdict told) when it is the token that is refused."""
        if token_refused(message) and self._on_token(False, message):
            return Unauthorized(message, endpoint=endpoint.name)
        return ApiRejected(message, endpoint=endpoint.name)

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
                if response.status == 429:
                    wait = retry_after(response.headers.get("Retry-After"))
                    self._gate.throttled(wait)
                    outcome = "429"
                    raise RateLimited("HTTP 429", endpoint=endpoint.name, retry_after=wait)
                if response.status in (401, 403):
                    outcome = str(response.status)
                    message = f"HTTP {response.status}: the API refused the token"
                    if self._on_token(False, message):
                        raise Unauthorized(message, endpoint=endpoint.name, status=response.status)
                    raise HttpStatusError(f"HTTP {response.status}", endpoint=endpoint.name, status=response.status)
                if response.status >= 400:
                    outcome = str(response.status)
                    raise HttpStatusError(f"HTTP {response.status}", endpoint=endpoint.name, status=response.status)
                return await read_body(response, endpoint)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            outcome = "connect_error"
            reason = cannot_connect(self._base_url, self._timeout.connect or 0.0, exc)
            raise ConnectFailed(self.token.vet(reason), endpoint=endpoint.name) from None
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

    def _still_leading(self, endpoint: Endpoint) -> None:
        """No attempt at all (nor a rate-limit token) once this process no longer leads."""
        if self._may_send is not None and not self._may_send():
            raise NotLeading(WRITE_REFUSED, endpoint=endpoint.name)


def _after_sending(exc: BaseException, endpoint: Endpoint) -> tuple[str, ApiError]:
    """The outcome and error of a request that failed after its connection was open: refused by the lease guard
    (surely not sent), timed out, or broken."""
    if refused_write(exc):
        return "not_leading", NotLeading(WRITE_REFUSED, endpoint=endpoint.name)
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout", TransportError("timed out waiting for the answer", endpoint=endpoint.name)
    return "transport_error", TransportError(type(exc).__name__, endpoint=endpoint.name)
