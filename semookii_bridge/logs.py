"""Logging set-up: one line per event, `key=value` (default) or JSON, never the token."""

from __future__ import annotations

import logging
import sys
import time

import msgspec

from .secret import Secret


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(doc).decode()


def setup(level: str = "INFO", fmt: str = "kv") -> None:
    """Configure the root logger on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
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
