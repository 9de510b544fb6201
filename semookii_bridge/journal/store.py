"""What the shared journal asks of its database (`postgres.py`): a snapshot to start from, a batch of writes to
flush in one fenced transaction, the fence itself, and the two ways a flush can fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..budget.ratelimit import BucketState
from .history import History
from .protocol import Entry, PlanRecord
from .timeline import Anchor


class StoreUnavailable(Exception):
    """The database cannot be reached now (the flush is retried)."""


class Fenced(Exception):
    """This process no longer holds the lease: it must not write, nor call the API."""


@dataclass(frozen=True)
class Fence:
    """The fencing token a write must still hold: the lease's epoch and its holder."""

    epoch: int
    holder: str


@dataclass
class Snapshot:
    """Everything the journal holds, as loaded at takeover; `now`: the database's clock then."""

    rows: list[Entry]
    calls: dict[str, int]
    bucket: BucketState | None
    anchor: Anchor | None
    now: float
    plans: list[PlanRecord] = field(default_factory=list)
    read_at: float | None = None
    """This host's boot clock when `now` arrived: the timeline goes on from `now` plus the time since."""
    history: History = field(default_factory=History)
    """The finished, announced commands, as keys only (`rows` holds the open and unannounced ones)."""


@dataclass
class Batch:
    """One flush: rows to write whole, rows to delete, and the one-row tables that changed."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    bucket: BucketState | None = None
    anchor: Anchor | None = None
    plans: list[PlanRecord] = field(default_factory=list)
    sweep_before: float | None = None
    """Also delete (some of) the finished rows received before this instant, loaded or not."""


class Store(Protocol):
    async def flush(self, batch: Batch, fence: Fence | None) -> int: ...

    async def recall(self, request_id: str) -> Entry | None: ...

    async def recall_call(self, column: str, value: str) -> list[Entry]: ...
