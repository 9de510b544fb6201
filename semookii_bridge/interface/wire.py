"""JSON codec shared by every edge: numeric ids always travel as strings, whatever the peer sent.

The Cloud API sends 15-19 digit ids sometimes as JSON numbers, sometimes as strings; JavaScript clients
(Node-RED) round integers above 2**53. `Id` accepts both on input and always encodes as a string.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from ..errors import BridgeError

T = TypeVar("T")


class Id(str):
    """An id that may arrive as a JSON number or string and is always published as a string."""

    __slots__ = ()


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Id:
        if isinstance(obj, bool) or not isinstance(obj, int | str):
            raise ValueError("expected an id (string or integer)")
        text = str(obj).strip()
        if not text or len(text) > 64 or not (text.isascii() and text.isdigit()):
            raise ValueError("expected an id of 1 to 64 ASCII digits")
        return Id(text)
    raise NotImplementedError(f"no decoder for {type_!r}")


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Id):
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode(obj: Any) -> bytes:
    """Encode to compact JSON bytes."""
    return _encoder.encode(obj)


def decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    """A reusable typed JSON decoder with the same id rules as `decode` (for hot paths)."""
    return msgspec.json.Decoder(type_, dec_hook=_dec_hook)


def decode(data: bytes | str, type_: type[T], *, strict: bool = True) -> T:
    """Decode JSON into `type_`, turning id numbers into `Id` strings."""
    return msgspec.json.decode(data, type=type_, dec_hook=_dec_hook, strict=strict)


def convert(obj: Any, type_: type[T], *, strict: bool = True) -> T:
    """Convert already-decoded builtins into `type_` with the same id rules as `decode`."""
    return msgspec.convert(obj, type=type_, dec_hook=_dec_hook, strict=strict)


def to_user(obj: Any) -> Any:
    """Builtins for users: structs become dicts keyed by their Python (snake_case) names, ids strings."""
    if isinstance(obj, msgspec.Struct):
        return {f: to_user(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, dict):
        return {str(k): to_user(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_user(v) for v in obj]
    if isinstance(obj, Id):
        return str(obj)
    return obj


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
