"""Errors of the Cloud API client. Each has a stable `code` (published to operators) and a message.

Messages never contain the token or a request URL (the URL carries the token in its query string).
"""

from __future__ import annotations

from typing import ClassVar


class ApiError(Exception):
    """Base class: a call to the Cloud API did not give a usable answer."""

    code: ClassVar[str] = "api_error"

    def __init__(self, message: str, *, endpoint: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, endpoint={self.endpoint!r}, message={self.message!r})"


class ApiRejected(ApiError):
    """The API answered `success: false`; `message` is its `exception` text."""

    code = "api_error"


class Unauthorized(ApiRejected):
    """The API refused the token (invalid, expired or not this account's): no call can succeed until it is
    replaced, so calls fail at once without spending the budget until a re-check finds it accepted."""

    code = "unauthorized"


class HttpStatusError(ApiError):
    """The API answered with an HTTP error status."""

    code = "http_error"


class RateLimited(HttpStatusError):
    """HTTP 429: the API's own rate limit; `retry_after` is its hint in seconds, if it gave one."""

    code = "rate_limited"

    def __init__(self, message: str, *, endpoint: str, retry_after: float | None = None) -> None:
        super().__init__(message, endpoint=endpoint, status=429)
        self.retry_after = retry_after


class ConnectFailed(ApiError):
    """The connection could not be opened, so the request surely never reached the server."""

    code = "http_error"


class TransportError(ApiError):
    """The request was sent, then the connection broke or timed out before a full answer."""

    code = "http_error"


class BadResponse(ApiError):
    """The API answered, but not with the JSON envelope the document describes."""

    code = "bad_response"


class Ambiguous(ApiError):
    """A mutating call may have reached the API but its outcome is unknown; it is never resent."""

    code = "ambiguous"


class NotLeading(ApiError):
    """This bridge no longer holds the hot standby's lease: the request was not written (the new leader goes on)."""

    code = "not_leading"


class QuotaExceeded(ApiError):
    """The configured daily quota of API calls is used up; the call was not made."""

    code = "quota_exhausted"


class Banned(ApiError):
    """The API refuses every call of this token for `seconds` (too many calls over its limit); not retried."""

    code = "api_banned"

    def __init__(self, message: str, *, endpoint: str, seconds: float) -> None:
        super().__init__(message, endpoint=endpoint)
        self.seconds = seconds
