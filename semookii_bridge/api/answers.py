"""Reading the API's answers: whole bodies however the network splits them, JSON or `bad_response`, the
vendor's ban message, Retry-After, comma lists, and pages read to the end."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

import aiohttp
import msgspec

from .endpoints import Endpoint
from .errors import BadResponse

T = TypeVar("T")

MAX_BODY = 8 * 1024 * 1024
_BAN = re.compile(r"prohibit\w*(?:\s+calls?)?\s+within\s+the\s+next\s+(?:(\d+)\s*)?(second|minute|hour)", re.I)
_UNIT = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_TOKEN_REFUSED = re.compile(
    r"token\w*\W+(?:\w+\W+){0,3}?(?:invalid|expired|illegal|incorrect|wrong|not\s+exist|"
    r"unauthori[sz]ed|not\s+valid)|(?:invalid|illegal|expired|wrong)\s+token",
    re.I,
)


def ban_seconds(message: str) -> float | None:
    """How long the API says it bans the token ("... prohibit calls within the next hour"), or None."""
    match = _BAN.search(message)
    if match is None:
        return None
    return float(match.group(1) or 1) * _UNIT[match.group(2).lower()]


def token_refused(message: str) -> bool:
    """Whether a `success: false` answer says the token itself is refused ("tokenId is invalid or expired")."""
    return _TOKEN_REFUSED.search(message) is not None


async def read_body(response: aiohttp.ClientResponse, endpoint: Endpoint) -> bytes:
    """The whole answer, however the network splits it (`content.read(n)` returns only what has arrived);
    over MAX_BODY is BadResponse rather than memory spent on it."""
    if response.content_length is not None and response.content_length > MAX_BODY:
        raise BadResponse(f"answer of {response.content_length} bytes exceeds {MAX_BODY}", endpoint=endpoint.name)
    body = bytearray()
    while chunk := await response.content.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise BadResponse(f"answer exceeds {MAX_BODY} bytes", endpoint=endpoint.name)
    return bytes(body)


def decode_json(endpoint: Endpoint, raw: bytes, type_: type[T]) -> T:
    """Decode an answer's JSON; anything else is BadResponse (which retry policy treats as possibly landed)."""
    try:
        return msgspec.json.decode(raw, type=type_, strict=False)
    except msgspec.DecodeError:
        raise BadResponse("the API answered with invalid JSON", endpoint=endpoint.name) from None


def id_list(ids: Iterable[str]) -> dict[str, str]:
    """Batch deletes: the table names the parameter `id`, the example sends `ids`; send both."""
    joined = ",".join(str(i) for i in ids)
    return {"id": joined, "ids": joined}


def split(value: Any) -> list[str]:
    """A comma-separated answer field as a list (None and blanks give nothing)."""
    if value is None:
        return []
    return [part.strip() for part in str(value).split(",") if part.strip()]


def retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None when absent or not a number."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


async def all_pages(fetch: Any, page_size: int) -> list[Any]:
    """Read pages from 1 until the total is reached or a page comes back short."""
    items: list[Any] = []
    current = 1
    while True:
        page = await fetch(current)
        items.extend(page.items)
        if not page.items or len(page.items) < page_size or len(items) >= page.total:
            return items
        current += 1
