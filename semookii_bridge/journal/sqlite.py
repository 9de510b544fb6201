"""Local SQLite journal (WAL) of commands accepted from the broker and of commands being tracked.

A command is written here before its MQTT delivery is acknowledged, and its status is written before
each step that cannot be undone (`sending` before the HTTP call). On restart, `queued` rows are resumed,
`sending` rows are reported `ambiguous` (never resent), `accepted`/`dispatched` rows are tracked again,
and terminal states the broker never acknowledged are announced again. Rows stay for the dedup window
so a repeated request_id is recognised.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ..budget.ratelimit import BucketState
from ..control.statuses import OPEN_STATUSES, TRACKED
from .protocol import (
    COLUMNS,
    PLAN_COLUMNS,
    DuplicateRequest,
    Entry,
    JournalError,
    PlanRecord,
    check_columns,
    run_after_commit,
)
from .schema import create_tables
from .timeline import Anchor

log = logging.getLogger(__name__)


_SCHEMA = (
    create_tables("sqlite")
    + """
CREATE INDEX IF NOT EXISTS commands_delivery ON commands(delivery_hash);
CREATE INDEX IF NOT EXISTS commands_received ON commands(received_at);
CREATE INDEX IF NOT EXISTS commands_call ON commands(command_id);
"""
)
# No index on status or updated_at: both change on every step (index churn cost ~30 us per command),
# and open or unannounced rows are only looked for at start-up, where a scan is fine. command_id is set
# once, at `accepted`, and each result poll looks up the commands that share one control call by it.


_TRACKED_MARKS = ",".join("?" * len(TRACKED))
_SAVE_PLAN = f"INSERT OR REPLACE INTO plans VALUES ({','.join('?' * len(PLAN_COLUMNS))})"  # noqa: S608
_INSERT = f"INSERT INTO commands ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})"  # noqa: S608


class Journal:
    """Group commit: every write of one event-loop turn joins one transaction, committed at the end of it.

    What must be on disk before an irreversible step waits for it (`await durable()`: before the MQTT ack,
    before the HTTP call); what announces a write (state messages) runs after the commit that holds it
    (`after_commit`). Without a running loop (tools, tests) every write commits at once.
    """

    def __init__(
        self, path: str | Path, *, synchronous: str = "normal", clock: Callable[[], float] = time.time
    ) -> None:
        self.path = str(path)
        self._clock = clock
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._open = False
        self._after: list[Callable[[], None]] = []
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def writable(self) -> bool:
        """Always, while running: a commit that fails stops the process (see `commit`)."""
        return True

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Stamp rows by `clock` (the journal's timeline) from now on."""
        self._clock = clock

    def close(self) -> None:
        """Commit what is pending, including what the after-commit callbacks wrote (announced marks), then close."""
        self.commit()
        if self._open:
            self.commit()
        self._db.close()

    # ---- group commit ---------------------------------------------------------------------------------

    def _write(self, sql: str, values: Sequence[Any]) -> sqlite3.Cursor:
        if not self._open:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return self._db.execute(sql, values)  # no loop: autocommit
            self._db.execute("BEGIN")
            self._open = True
            loop.call_soon(self.commit)
        return self._db.execute(sql, values)

    def commit(self) -> None:
        """Commit the open transaction, then run what waited for it.

        A failed commit leaves memory ahead of the disk (commands queued that the journal does not hold), so
        the process stops at once: restarted, it resumes from the journal and the broker redelivers what was
        not acknowledged.
        """
        if self._open:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                log.critical("journal_commit_failed path=%s action=stopping", self.path, exc_info=True)
                os._exit(70)
            self._open = False
        after, self._after = self._after, []
        waiters, self._waiters = self._waiters, []
        for callback in after:
            run_after_commit(callback)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once every write made so far is committed (at once if none is pending)."""
        if self._open:
            self._after.append(callback)
        else:
            callback()

    async def durable(self) -> None:
        """Wait until every write made so far is committed."""
        if self._open:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def insert(self, entry: Entry) -> None:
        """Record a newly accepted command; raises DuplicateRequest when its request_id is known."""
        entry.updated_at = self._clock()
        values = [getattr(entry, c) for c in COLUMNS]
        try:
            self._write(_INSERT, values)
        except sqlite3.IntegrityError:
            raise DuplicateRequest(entry.request_id) from None
        except sqlite3.Error as exc:
            raise JournalError(str(exc)) from exc

    def update(self, request_id: str, status: str, **fields: Any) -> None:
        """Move a command to `status`, setting any other columns given."""
        check_columns(fields)
        sets = ", ".join(f"{k} = ?" for k in ("status", "updated_at", *fields))
        values = [status, self._clock(), *fields.values(), request_id]
        self._write(f"UPDATE commands SET {sets} WHERE request_id = ?", values)  # noqa: S608

    def get(self, request_id: str) -> Entry | None:
        row = self._db.execute(
            f"SELECT {','.join(COLUMNS)} FROM commands WHERE request_id = ?",  # noqa: S608
            (request_id,),
        ).fetchone()
        return self._entry(row) if row else None

    def tracked_for_call(self, command_id: str) -> list[Entry]:
        """The commands of one control call (several when merged) that still wait for its results."""
        rows = self._db.execute(
            f"SELECT {','.join(COLUMNS)} FROM commands WHERE command_id = ?"  # noqa: S608
            f" AND status IN ({_TRACKED_MARKS}) ORDER BY received_at",
            (command_id, *TRACKED),
        ).fetchall()
        return [self._entry(r) for r in rows]

    async def recall_call(self, *, command_id: str | None = None, task_id: str | None = None) -> list[Entry]:
        """Every journaled command of one control call, by its command id or its task id, whatever its status
        (a management query of the call is checked against what they name)."""
        column, value = ("command_id", command_id) if command_id is not None else ("task_id", task_id)
        rows = self._db.execute(
            f"SELECT {','.join(COLUMNS)} FROM commands WHERE {column} = ?",  # noqa: S608
            (value,),
        ).fetchall()
        return [self._entry(r) for r in rows]

    def delivered(self, *delivery_hashes: str) -> bool:
        """Whether a command was journaled from this exact MQTT delivery (a broker redelivery after a crash)."""
        marks = ",".join("?" * len(delivery_hashes))
        sql = f"SELECT 1 FROM commands WHERE delivery_hash IN ({marks})"  # noqa: S608
        return self._db.execute(sql, delivery_hashes).fetchone() is not None

    async def recall(self, request_id: str) -> Entry | None:
        """One command's row (here the same as `get`: every row is on disk)."""
        return self.get(request_id)

    def mark_announced(self, request_id: str) -> None:
        """The broker acknowledged the command's terminal state message."""
        self._write("UPDATE commands SET announced = 1 WHERE request_id = ?", (request_id,))

    def unannounced(self) -> list[Entry]:
        """Finished commands whose terminal state may not have reached the broker (the bridge died first)."""
        marks = ",".join("?" * len(OPEN_STATUSES))
        rows = self._db.execute(
            f"SELECT {','.join(COLUMNS)} FROM commands WHERE announced = 0 AND status NOT IN ({marks})"  # noqa: S608
            " ORDER BY updated_at",
            OPEN_STATUSES,
        ).fetchall()
        return [self._entry(r) for r in rows]

    def open_entries(self) -> list[Entry]:
        """Commands not yet in a terminal state, oldest first."""
        marks = ",".join("?" * len(OPEN_STATUSES))
        rows = self._db.execute(
            f"SELECT {','.join(COLUMNS)} FROM commands WHERE status IN ({marks}) ORDER BY received_at",  # noqa: S608
            OPEN_STATUSES,
        ).fetchall()
        return [self._entry(r) for r in rows]

    def prune(self, older_than: float) -> int:
        """Forget finished commands received before `older_than` (the end of their dedup window)."""
        marks = ",".join("?" * len(OPEN_STATUSES))
        cursor = self._write(
            f"DELETE FROM commands WHERE received_at < ? AND status NOT IN ({marks})",  # noqa: S608
            (older_than, *OPEN_STATUSES),
        )
        return cursor.rowcount

    def calls_on(self, day: str) -> int:
        """API calls counted on a quota day (`YYYY-MM-DD`)."""
        row = self._db.execute("SELECT used FROM api_calls WHERE day = ?", (day,)).fetchone()
        return int(row[0]) if row else 0

    def record_calls(self, day: str, used: int) -> None:
        """Keep the day's count of API calls (written with the step that spends the call)."""
        self._write(
            "INSERT INTO api_calls (day, used) VALUES (?, ?) ON CONFLICT(day) DO UPDATE SET used = excluded.used",
            (day, used),
        )

    def latest_day(self) -> str | None:
        """The latest quota day any call was counted on (the quota day never goes back before it)."""
        row = self._db.execute("SELECT MAX(day) FROM api_calls").fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def bucket_state(self) -> BucketState | None:
        """The rate limiter's state as of its last grant, refund or pause."""
        row = self._db.execute("SELECT tokens, stamp, paused_until, banned_until FROM limiter").fetchone()
        return BucketState(*row) if row else None

    def record_bucket(self, state: BucketState) -> None:
        """Keep the rate limiter's state (written with the step that takes the token, so before the call)."""
        self._write(
            "INSERT OR REPLACE INTO limiter (id, tokens, stamp, paused_until, banned_until) VALUES (1, ?, ?, ?, ?)",
            (state.tokens, state.stamp, state.paused_until, state.banned_until),
        )

    def plans(self) -> list[PlanRecord]:
        rows = self._db.execute(f"SELECT {', '.join(PLAN_COLUMNS)} FROM plans").fetchall()  # noqa: S608
        return [PlanRecord(**dict(zip(PLAN_COLUMNS, row, strict=True))) for row in rows]

    def save_plan(self, record: PlanRecord) -> None:
        values = msgspec.structs.astuple(record)
        self._write(_SAVE_PLAN, values)

    def clock_anchor(self) -> Anchor | None:
        """Where the journal's timeline stood (see `timeline.py`)."""
        row = self._db.execute("SELECT boot_id, offset, high FROM clock").fetchone()
        return Anchor(*row) if row else None

    def save_clock_anchor(self, anchor: Anchor) -> None:
        self._write(
            "INSERT OR REPLACE INTO clock (id, boot_id, offset, high) VALUES (1, ?, ?, ?)",
            (anchor.boot_id, anchor.offset, anchor.high),
        )

    def latest_instant(self) -> float | None:
        """The latest instant on the timeline that any row holds (a floor for the timeline after a reboot)."""
        row = self._db.execute(
            "SELECT MAX(x) FROM (SELECT MAX(updated_at) AS x FROM commands UNION ALL SELECT stamp FROM limiter)"
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def latest_deadline(self) -> float | None:
        """The latest deadline of a command not yet sent (after a reboot with an unset clock, the timeline starts
        past it)."""
        row = self._db.execute("SELECT MAX(deadline) FROM commands WHERE status = 'queued'").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM commands").fetchone()[0])

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> Entry:
        return Entry(**dict(zip(COLUMNS, row, strict=True)))
