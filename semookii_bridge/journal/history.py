"""Finished commands a new leader does not load whole: 64-bit keys of their request ids and MQTT deliveries.

A takeover loads the open commands and the finished ones not yet announced; every other row only matters to
refuse a repeated `request_id` or a broker's redelivery within the dedup window, so it is kept as an 8-byte
key and the instant it was received (16 bytes a row instead of the row), and read whole from the database
only when a duplicate needs its old state. The same key is computed here and by PostgreSQL (`key_sql`, a
stored generated column).
"""

from __future__ import annotations

import hashlib
import logging
import operator
import sys
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import islice

log = logging.getLogger(__name__)


def key_of(text: str) -> int:
    """The first 8 bytes of the text's MD5 as a signed 64-bit integer (not a security use: a compact key)."""
    digest = hashlib.md5(text.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def key_sql(column: str) -> str:
    """The SQL expression PostgreSQL computes the same key with (`key_of`)."""
    return f"('x' || substr(md5({column}), 1, 16))::bit(64)::bigint"


def from_network(raw: bytes | None, typecode: str) -> array[int] | array[float]:
    """An array from big-endian 8-byte values (`int8send`/`float8send` joined by `string_agg`)."""
    values: array[int] | array[float] = array(typecode)
    values.frombytes(raw or b"")
    if sys.byteorder == "little":
        values.byteswap()
    return values


@dataclass
class Keys:
    """Keys sorted ascending, and when each one's command was received (the same order)."""

    keys: array[int] = field(default_factory=lambda: array("q"))
    received: array[float] = field(default_factory=lambda: array("d"))

    def has(self, key: int, since: float) -> bool:
        """Whether a command with this key was received at or after `since` (older ones are pruned)."""
        i = bisect_left(self.keys, key)
        while i < len(self.keys) and self.keys[i] == key:
            if self.received[i] >= since:
                return True
            i += 1
        return False

    def __len__(self) -> int:
        return len(self.keys)


def sorted_keys(keys: array[int], received: array[float]) -> Keys:
    """`Keys` from arrays that should arrive sorted by key; sorted here (and logged) if they did not."""
    if all(map(operator.le, keys, islice(keys, 1, None))):
        return Keys(keys, received)
    log.warning("journal_keys_unsorted rows=%d effect=sorted_here", len(keys))
    pairs = sorted(zip(keys, received, strict=True))
    return Keys(array("q", (k for k, _ in pairs)), array("d", (r for _, r in pairs)))


@dataclass
class History:
    """The finished commands left in the database at takeover, as keys; `since` follows the last prune."""

    requests: Keys = field(default_factory=Keys)
    deliveries: Keys = field(default_factory=Keys)
    latest: float | None = None
    """The latest `updated_at` among them (the timeline never goes back behind it)."""
    since: float = float("-inf")

    def has_request(self, request_id: str) -> bool:
        return self.requests.has(key_of(request_id), self.since)

    def has_delivery(self, *delivery_hashes: str) -> bool:
        return any(self.deliveries.has(key_of(h), self.since) for h in delivery_hashes)

    def prune(self, older_than: float) -> None:
        """Forget what was received before `older_than`; the keys go once all of them are that old."""
        self.since = max(self.since, older_than)
        if self.requests.received and max(self.requests.received) < self.since:
            self.requests, self.deliveries = Keys(), Keys()

    def __len__(self) -> int:
        return len(self.requests)
