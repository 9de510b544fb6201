"""Logging set-up: one line per event, valid logfmt (default) or JSON, each field its own key, never the token.

Call sites log `"event key=%s key2=%d", a, b`; the formatters read that template back into the event name and
its fields, so `request_id`, `target` or `code` can be filtered on in Loki or Elasticsearch. Lines from
libraries (no such template) keep their text in `msg`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Literal

import msgspec

from ..config.secret import Secret

LogFormat = Literal["logfmt", "json"]
FORMATS: tuple[str, ...] = ("logfmt", "json", "kv")
"""`kv` is the former name of `logfmt`, still accepted."""
_FIELD = re.compile(r"^([A-Za-z_][\w.]*)=(%[-#0 +]?\d*(?:\.\d+)?[sdifgr]|[^%\s]*)$")
_EVENT = re.compile(r"^[a-z][a-z0-9_]*$")
_NAMED = re.compile(r"^[a-z][a-z0-9_]*%s$")
_BARE = re.compile(r"^[^\s\"=\\]+$")


def fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The event name and its fields, read from the call's template and arguments; `msg` holds free text."""
    template, args = record.msg, record.args
    if not isinstance(template, str) or not isinstance(args, tuple | type(None)):
        return "log", {"msg": record.getMessage()}
    pending, out, text = list(args or ()), {}, []
    words = template.split(" ")
    event = "log"
    if words and _EVENT.match(words[0]):
        event = words.pop(0)
    elif words and _NAMED.match(words[0]) and pending:  # "mqtt_%s ...": the event is named by an argument
        event = words.pop(0) % (pending.pop(0),)
    for word in words:
        match = _FIELD.match(word)
        if match is None or (match.group(2).startswith("%") and not pending):
            text.append(word)
            continue
        key, spec = match.groups()
        out[key] = _value(spec, pending.pop(0)) if spec.startswith("%") else spec
    if pending or any("%" in word for word in text):  # not a template of ours: keep the whole message
        return event, {"msg": record.getMessage()}
    if text:
        out["msg"] = " ".join(text).lstrip(": ")
    return event, out


def _value(spec: str, arg: Any) -> Any:
    """A field's value: numbers stay numbers (formatted as the template asks), the rest text."""
    if spec[-1] in "dif" and isinstance(arg, int | float) and not isinstance(arg, bool):
        return float(spec % arg) if spec[-1] == "f" else arg
    if spec[-1] == "g" and isinstance(arg, int | float):
        return arg
    try:
        return spec % (arg,)
    except (TypeError, ValueError):  # a log line never fails: the value as text
        return str(arg)


def _rfc3339(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _logfmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    text = str(value)
    if text and _BARE.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    """`ts=<RFC 3339> level=info logger=<name> event=<event> key=value ...`, values quoted where needed."""

    def format(self, record: logging.LogRecord) -> str:
        event, extra = fields(record)
        pairs = {"ts": _rfc3339(record), "level": record.levelname.lower(), "logger": record.name, "event": event}
        pairs.update({k: v for k, v in extra.items() if k not in pairs})
        if record.exc_info:
            pairs["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in pairs.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then each field as its own key (+ `exc`)."""

    def format(self, record: logging.LogRecord) -> str:
        event, extra = fields(record)
        doc: dict[str, Any] = {
            "ts": _rfc3339(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
        }
        doc.update({k: v for k, v in extra.items() if k not in doc})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(doc).decode()


def setup(level: str = "INFO", fmt: str = "logfmt") -> None:
    """Configure the root logger on stderr (`kv` is taken as `logfmt`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _Redacting(logging.Formatter):
    """Formats with `inner`, then stars out the token in every spelling: the last line of defence, for text
    from a library or an exception that no call site scrubbed."""

    def __init__(self, inner: logging.Formatter, secret: Secret) -> None:
        super().__init__()
        self.inner, self.secret = inner, secret

    def format(self, record: logging.LogRecord) -> str:
        return self.secret.redact(self.inner.format(record))


def redact(secret: Secret) -> None:
    """Scrub `secret` from every line the root logger's handlers write."""
    for handler in logging.getLogger().handlers:
        inner = handler.formatter or logging.Formatter()
        if not isinstance(inner, _Redacting):
            handler.setFormatter(_Redacting(inner, secret))
