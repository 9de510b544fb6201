"""The bridge's own error type: a stable machine-readable `code` and a human `message`."""

from __future__ import annotations

from typing import Any

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


def json_object(payload: bytes) -> dict[str, Any]:
    """Parse a payload that must be a JSON object; raises BridgeError `invalid_json` or `validation_error`."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise BridgeError("invalid_json", f"payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise BridgeError("validation_error", "payload is nested too deeply") from None
    if not isinstance(doc, dict):
        raise BridgeError("validation_error", "payload must be a JSON object")
    return doc
