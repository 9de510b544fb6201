"""Client for the Semookii Cloud Control API (HTTP, JSON, token in the query string).

The client (and with it aiohttp) is loaded on first use: the core imports the API's types, errors and
parameters from here without loading an HTTP stack.
"""

from typing import TYPE_CHECKING, Any

from .endpoints import Endpoint, Priority
from .errors import (
    Ambiguous,
    ApiError,
    ApiRejected,
    BadResponse,
    Banned,
    ConnectFailed,
    HttpStatusError,
    NotLeading,
    QuotaExceeded,
    RateLimited,
    TransportError,
    Unauthorized,
)
from .gate import Gate, OpenGate
from .params import ControlParams
from .retry import RetryPolicy
from .types import BindResult, Group, GroupPage, Inverter, InverterPage

if TYPE_CHECKING:
    from .client import CloudClient


def __getattr__(name: str) -> Any:
    """`CloudClient`, imported when first asked for."""
    if name == "CloudClient":
        from . import client

        return getattr(client, name)
    raise AttributeError(name)


__all__ = [
    "Ambiguous",
    "ApiError",
    "ApiRejected",
    "BadResponse",
    "Banned",
    "BindResult",
    "CloudClient",
    "ConnectFailed",
    "ControlParams",
    "Endpoint",
    "Gate",
    "Group",
    "GroupPage",
    "HttpStatusError",
    "Inverter",
    "InverterPage",
    "NotLeading",
    "OpenGate",
    "Priority",
    "QuotaExceeded",
    "RateLimited",
    "RetryPolicy",
    "TransportError",
    "Unauthorized",
]
