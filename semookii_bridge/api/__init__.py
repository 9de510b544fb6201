"""Client for the Semookii Cloud Control API (HTTP, JSON, token in the query string)."""

from .client import CloudClient, Gate, OpenGate
from .endpoints import Endpoint, Priority
from .errors import (
    Ambiguous,
    ApiError,
    ApiRejected,
    BadResponse,
    Banned,
    ConnectFailed,
    HttpStatusError,
    QuotaExceeded,
    RateLimited,
    TransportError,
)
from .params import ControlParams
from .retry import RetryPolicy
from .types import BindResult, Group, GroupPage, Inverter, InverterPage

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
    "OpenGate",
    "Priority",
    "QuotaExceeded",
    "RateLimited",
    "RetryPolicy",
    "TransportError",
]
