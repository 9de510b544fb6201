"""A token wrapper that cannot leak through repr, str, logs or exception messages."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus


class Secret:
    """Holds the API token; only `reveal()` returns it, everything else shows stars."""

    __slots__ = ("_pattern", "_value")

    def __init__(self, value: str) -> None:
        self._value = value.strip()
        self._pattern = _pattern(self._value) if self._value else None

    def reveal(self) -> str:
        """The real token, for the one place that sends it."""
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the token replaced by stars: in any letter case, and URL-encoded,
        JSON-escaped or in base64 (an API error may echo it in any of these)."""
        return self._pattern.sub("***", text) if self._pattern is not None else text

    def vet(self, text: str) -> str:
        """Vendor text fit to publish or store, whatever spelling of the token it holds: `redact`, then every
        encoded-looking run starred (hex, base64, percent or entity encoded: 20 characters or more mixing
        letters and digits, or 32 or more of any), and the token spelled out with gaps starred too."""
        text = _ENCODED_RUN.sub(_star_encoded, self.redact(text))
        flat = re.sub(r"[^0-9a-z]", "", self._value.lower())
        if len(flat) < 8:
            return text
        kept = [(i, c) for i, c in enumerate(text) if c.isascii() and c.isalnum()]
        found = "".join(c for _, c in kept).lower().find(flat)
        if found < 0:
            return text
        start, end = kept[found][0], kept[found + len(flat) - 1][0] + 1
        return self.vet(text[:start] + "***" + text[end:])

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("a Secret cannot be pickled")


_ENCODED_RUN = re.compile(r"[A-Za-z0-9+/=_%&#;\\-]{20,}")


def _star_encoded(match: re.Match[str]) -> str:
    """A run that may encode anything (the token among it) is starred; a long number or a word is kept."""
    run = match.group()
    mixed = any(c.isalpha() for c in run) and any(c.isdigit() for c in run)
    return "***" if mixed or len(run) >= 32 else run


def _pattern(token: str) -> re.Pattern[str]:
    """One case-insensitive pattern for the token's spellings; longest first, so none is left half-starred."""
    raw = token.encode()
    forms = {
        token,
        quote(token, safe=""),
        quote_plus(token),
        json.dumps(token)[1:-1],
        json.dumps(token, ensure_ascii=True)[1:-1],
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)), re.IGNORECASE)
