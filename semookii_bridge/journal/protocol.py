"""What the command core asks of a journal: the row (`Entry`), the protocol (`CommandJournal`) and its errors.
Two implementations: `sqlite.Journal` for one host, `shared.SharedJournal` on PostgreSQL for a hot standby; one
test suite for both (tests/test_journal_contract.py). Nothing here names a database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from ..budget.ratelimit import BucketState
from ..control.statuses import JournalStatus
from ..interface.topics import TargetKind
from .timeline import Anchor

log = logging.getLogger(__name__)


class Entry(msgspec.Struct, kw_only=True):
    """One journaled command."""

    request_id: str
    target_kind: TargetKind
    target_id: str | None
    command: bytes
    status: JournalStatus
    received_at: float
    deadline: float
    delivery_hash: str | None = None
    command_id: str | None = None
    task_id: str | None = None
    track_until: float | None = None
    response_topic: str | None = None
    correlation: bytes | None = None
    updated_at: float = 0.0
    results: bytes | None = None
    error: bytes | None = None
    announced: int = 0


class PlanRecord(msgspec.Struct, kw_only=True):
    """A target's dispatch plan as the journal keeps it: the plan as validated (`body`, encoded by the plan
    runner) and how far it got; one per target (`target`: `group:<id>` or `inverter:<sn>`)."""

    target: str
    plan_id: str
    body: bytes
    status: str
    next_index: int = 0
    """The first interval neither sent nor missed yet."""
    sent: int = 0
    missed: int = 0
    error: bytes | None = None
    updated_at: float = 0.0


PLAN_COLUMNS = tuple(PlanRecord.__struct_fields__)
COLUMNS = tuple(Entry.__struct_fields__)
"""The commands table's columns, in `Entry`'s order: both backends read and write rows as these."""


def check_columns(fields: Iterable[str]) -> None:
    """Refuse an update that names a column the commands table does not have (it would be lost, not written)."""
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown journal columns: {sorted(unknown)}")


def run_after_commit(callback: Callable[[], None]) -> None:
    """Run one after-commit callback: its failure is logged, never raised into the commit that ran it."""
    try:
        callback()
    except Exception:
        log.exception("after_commit_failed")


class DuplicateRequest(Exception):
    """The request_id is already in the journal."""


class JournalError(Exception):
    """The journal could not record a write (the database refused it); the command was not accepted."""


class CommandJournal(Protocol):
    """Commands, request ids, the quota count, the limiter's state and the timeline's anchor; writes join a
    group commit, `durable()` waits for it, `after_commit` runs after it."""

    path: str

    @property
    def writable(self) -> bool:
        """False while writes cannot reach the store (the shared database unreachable); for readiness."""
        ...

    def use_clock(self, clock: Callable[[], float]) -> None: ...

    def commit(self) -> None: ...

    def after_commit(self, callback: Callable[[], None]) -> None: ...

    async def durable(self) -> None: ...

    def close(self) -> None: ...

    def insert(self, entry: Entry) -> None: ...

    def update(self, request_id: str, status: str, **fields: Any) -> None: ...

    def get(self, request_id: str) -> Entry | None:
        """A command the journal holds at hand: any (SQLite), or an open, unannounced or new one (shared)."""
        ...

    async def recall(self, request_id: str) -> Entry | None:
        """Any command of the journal, read from its store when it is not at hand (a duplicate's old state)."""
        ...

    def tracked_for_call(self, command_id: str) -> list[Entry]: ...

    async def recall_call(self, *, command_id: str | None = None, task_id: str | None = None) -> list[Entry]:
        """Every command of one control call, whatever its status (what a management query of it may touch)."""
        ...

    def delivered(self, *delivery_hashes: str) -> bool:
        """Whether a command was journaled from this exact MQTT delivery (a broker's redelivery)."""
        ...

    def mark_announced(self, request_id: str) -> None: ...

    def unannounced(self) -> list[Entry]: ...

    def open_entries(self) -> list[Entry]: ...

    def prune(self, older_than: float) -> int: ...

    def count(self) -> int: ...

    def calls_on(self, day: str) -> int: ...

    def record_calls(self, day: str, used: int) -> None: ...

    def latest_day(self) -> str | None: ...

    def bucket_state(self) -> BucketState | None: ...

    def record_bucket(self, state: BucketState) -> None: ...

    def plans(self) -> list[PlanRecord]:
        """Every target's plan record (finished and ended ones too, until a new plan replaces them)."""
        ...

    def save_plan(self, record: PlanRecord) -> None:
        """Keep a target's plan record (replacing the target's previous one); joins the group commit."""
        ...

    def clock_anchor(self) -> Anchor | None: ...

    def save_clock_anchor(self, anchor: Anchor) -> None: ...

    def latest_instant(self) -> float | None: ...
