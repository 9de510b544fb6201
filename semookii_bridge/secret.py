"""A token wrapper that cannot leak through repr, str, logs or exception messages."""

from __future__ import annotations


class Secret:
    """Holds the API token; only `reveal()` returns it, everything else shows stars."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value.strip()

    def reveal(self) -> str:
        """The real token, for the one place that sends it."""
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the token replaced by stars."""
        return text.replace(self._value, "***") if self._value else text

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("a Secret cannot be pickled")
