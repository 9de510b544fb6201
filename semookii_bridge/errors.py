"""The bridge's own error type: a stable machine-readable `code` and a human `message`."""

from __future__ import annotations

import msgspec


class ErrorInfo(msgspec.Struct, frozen=True):
    """`{"code": ..., "message": ...}` as published to operators."""

    code: str
    message: str


class BridgeError(Exception):
    """An error that is reported to the operator rather than crashing anything."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message)
