"""The one catch point: every management request ends as one `{status, data, error, transaction}` response,
published where the request asked; the requests waiting at once are bounded (`busy` beyond)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from ..api.errors import ApiError
from ..errors import BridgeError, ErrorInfo
from ..interface import wire
from ..interface.payloads import Incoming, Response
from .guard import Guard
from .ops import OPS
from .requests import ManagementApi

if TYPE_CHECKING:
    from ..control.lifecycle import Publisher

log = logging.getLogger(__name__)


def _parse(payload: bytes) -> tuple[dict[str, Any], Any]:
    """The request's fields and its `transaction`; an empty payload is an empty request."""
    if not payload.strip():
        return {}, None
    doc = wire.json_object(payload)
    transaction = doc.pop("transaction", None)
    return doc, transaction


def busy(payload: bytes, pending: int, *, max_payload: int) -> Response:
    """The answer to a request that arrives while `pending` others wait: `busy` at once, no API call."""
    transaction: Any = None
    if len(payload) <= max_payload:
        with contextlib.suppress(BridgeError):
            _, transaction = _parse(payload)
    message = f"{pending} management requests are already waiting; try again later"
    return Response(status="error", error=ErrorInfo(code="busy", message=message), transaction=transaction)


async def handle_request(
    api: ManagementApi, op: str, payload: bytes, *, max_payload: int, guard: Guard | None = None
) -> Response:
    """Run one management request; never raises, every outcome is a Response."""
    transaction: Any = None
    try:
        if len(payload) > max_payload:
            raise BridgeError("payload_too_large", f"payload of {len(payload)} bytes exceeds {max_payload}")
        fields, transaction = _parse(payload)
        spec = OPS.get(op)
        if spec is None:
            raise BridgeError("unknown_op", f"unknown op {op!r}; known: {', '.join(sorted(OPS))}")
        try:
            request = wire.convert(fields, spec.request)
        except msgspec.ValidationError as exc:
            raise BridgeError("validation_error", str(exc)) from None
        guard = guard or Guard()
        await guard.check(op, spec, request)
        data = guard.reveal(await spec.handler(api, request))
        return Response(status="ok", data=wire.to_user(data), transaction=transaction)
    except BridgeError as exc:
        return Response(status="error", error=exc.info(), transaction=transaction)
    except ApiError as exc:
        return Response(status="error", error=ErrorInfo(code=exc.code, message=exc.message), transaction=transaction)
    except Exception as exc:
        log.exception("management_failed op=%s", op)
        error = ErrorInfo(code="internal_error", message=f"{type(exc).__name__} in the bridge")
        return Response(status="error", error=error, transaction=transaction)


class Answerer:
    """Answers each request in its own task (`spawn`), `busy` at once beyond `max_pending` waiting, and
    publishes the response on the request's response topic or the op's (`response_topic`)."""

    def __init__(
        self,
        api: ManagementApi,
        guard: Guard,
        publisher: Publisher,
        response_topic: Callable[[str], str],
        *,
        max_pending: int,
        max_payload: int,
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.api, self.guard, self.publisher, self.response_topic = api, guard, publisher, response_topic
        self.max_pending, self.max_payload, self.spawn = max_pending, max_payload, spawn
        self.pending = 0
        self.answered: Callable[[str, Response], None] = lambda op, response: None
        """Told of every response (the status page's board)."""
        self.after_ok: Callable[[str, bytes], Coroutine[Any, Any, None]] | None = None
        """Run after a successful request (the inventory learns of a fleet change)."""

    def request(self, op: str, msg: Incoming) -> None:
        """Answer one request in its own task, or `busy` at once when too many are waiting."""
        if self.pending >= self.max_pending:
            self.refuse(op, msg)
            return
        self.pending += 1
        self.spawn(self._answer(op, msg))

    def refuse(self, op: str, msg: Incoming) -> None:
        """`busy`, without an API call: too many requests wait, or the inbox was full."""
        self._respond(op, msg, busy(msg.payload, self.pending, max_payload=self.max_payload))

    async def _answer(self, op: str, msg: Incoming) -> None:
        try:
            response = await handle_request(self.api, op, msg.payload, max_payload=self.max_payload, guard=self.guard)
        finally:
            self.pending -= 1
        self._respond(op, msg, response)

    def _respond(self, op: str, msg: Incoming, response: Response) -> None:
        topic = msg.response_topic or self.response_topic(op)
        self.publisher.publish(topic, wire.encode(response), correlation_data=msg.correlation_data)
        log.info("management op=%s status=%s", op, response.status)
        self.answered(op, response)
        if response.status == "ok" and self.after_ok is not None:
            self.spawn(self.after_ok(op, msg.payload))
