"""Injected failures: HTTP errors, 429s, connections dropped before or after the call was processed,
slow and malformed answers, the way a real outage leaves a client not knowing whether its command landed."""

from __future__ import annotations

import asyncio
import math
from typing import Literal

import msgspec
from aiohttp import web

from .routes import envelope

FaultKind = Literal[
    "http_403",
    "http_500",
    "http_502",
    "http_503",
    "http_429",
    "drop_before",
    "drop_after",
    "slow",
    "malformed",
    "reject",
]
BEFORE = {"http_403", "http_500", "http_502", "http_503", "http_429", "drop_before", "reject"}


class Fault(msgspec.Struct, frozen=True):
    """One injected failure for the next `times` calls to `path` (any path when None).

    `*_before` kinds fail without processing; `drop_after`, `slow` and `malformed` process the call first,
    the way a real outage leaves a client not knowing whether its command landed.
    """

    kind: FaultKind
    path: str | None = None
    times: int = 1
    delay: float = 0.0
    retry_after: float | None = None
    message: str = "Simulated failure"


def ban_text(seconds: float) -> str:
    """The vendor's words for a ban (SolaX: several violations in a row, then no calls for an hour)."""
    return f"Several violations in a row, prohibit calls within the next {math.ceil(seconds)} seconds"


def fault_before(request: web.Request, fault: Fault) -> web.StreamResponse | None:
    if fault.kind == "drop_before":
        _drop(request)
        return None
    if fault.kind == "reject":
        return envelope(None, ok=False, exception=fault.message)
    if fault.kind == "http_429":
        retry = fault.retry_after if fault.retry_after is not None else 1
        return web.Response(status=429, headers={"Retry-After": f"{retry:g}"})
    return web.Response(status=int(fault.kind.removeprefix("http_")), text=fault.message)


async def fault_after(request: web.Request, fault: Fault, payload: web.StreamResponse) -> web.StreamResponse | None:
    if fault.kind == "drop_after":
        _drop(request)
        return None
    if fault.kind == "slow":
        await asyncio.sleep(fault.delay)
        return payload
    return web.Response(body=b'{"exception":null,"result":', content_type="application/json")


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()
