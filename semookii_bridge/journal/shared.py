"""The shared journal (PostgreSQL): the same protocol as the SQLite journal, for bridges on several hosts.

Only the leader writes, so the leader's memory is the journal's current state: a takeover loads the open
commands and the unannounced ones whole, and every other (finished) row of the dedup window only as keys
(`history.py`), so its time and memory do not grow with the finished rows. Reads are answered from
memory; a finished row is read whole from the database only when asked for (`recall`). Every write of an
event-loop turn is flushed in one transaction (group commit, as in `sqlite.py`). What must be durable before
an irreversible step waits for that flush (`durable()`); what announces a write runs after it
(`after_commit`). Each flush first checks the fence (the leader's epoch and lease): a leader that lost its
lease never gets `sending` on record, so it never makes the call. Transport stays in `postgres.py`; this
module sees a `Store`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from ..budget.ratelimit import BucketState
from ..common.backoff import Backoff
from ..control.statuses import OPEN_STATUSES, TRACKED
from .protocol import COLUMNS, DuplicateRequest, Entry, PlanRecord, check_columns, run_after_commit
from .store import Batch, Fence, Fenced, Snapshot, Store, StoreUnavailable
from .timeline import Anchor

log = logging.getLogger(__name__)

SETTLE_SLICE = 0.05
"""Seconds of after-commit callbacks (each publishes a state) run per loop turn."""


class SharedJournal:
    """The journal protocol over a `Store`, answered from memory, written behind in fenced transactions."""

    def __init__(
        self,
        store: Store,
        snapshot: Snapshot,
        *,
        fence: Fence | None = None,
        on_fenced: Callable[[Fenced], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = "postgresql"
        self._store, self._fence, self._on_fenced, self._clock = store, fence, on_fenced, clock
        self._rows: dict[str, Entry] = {e.request_id: e for e in snapshot.rows}
        self._delivery = {e.delivery_hash: e.request_id for e in snapshot.rows if e.delivery_hash}
        self._calls_of: dict[str, set[str]] = {}
        """command_id -> request ids: each result poll looks its call's commands up (the SQLite journal's index)."""
        for e in snapshot.rows:
            self._index(e)
        self._calls, self._bucket, self._anchor = dict(snapshot.calls), snapshot.bucket, snapshot.anchor
        self._history = snapshot.history
        self._plans = {p.target: p for p in snapshot.plans}
        self._dirty_plans: set[str] = set()
        self._sweep: float | None = None
        self._dirty: set[str] = set()
        self._deleted: set[str] = set()
        self._dirty_calls: set[str] = set()
        self._dirty_bucket = self._dirty_anchor = False
        self._written = self._flushed = 0
        self._after: list[tuple[int, Callable[[], None]]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._due: deque[Callable[[], None]] = deque()
        self._draining = False
        self._flusher: asyncio.Task[None] | None = None
        self.fenced: Fenced | None = None
        self._failing = False

    @property
    def writable(self) -> bool:
        """False from a failed flush until the next one succeeds, and once fenced."""
        return not self._failing and self.fenced is None

    def use_clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    # ---- group commit -------------------------------------------------------------------------------

    def _wrote(self) -> None:
        self._written += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        """Flush until nothing is left to write; a database that cannot be reached is retried with backoff."""
        await asyncio.sleep(0)  # the rest of this loop turn's writes join the batch
        backoff = Backoff(0.05, 2.0)
        wait = backoff.initial
        while self._flushed < self._written and self.fenced is None:
            target, batch = self._written, self._batch()
            try:
                swept = await self._store.flush(batch, self._fence)
            except StoreUnavailable as exc:
                self._restore(batch)
                self._failing = True
                log.warning("journal_flush_failed error=%s retry_in=%.2f", exc, wait)
                await asyncio.sleep(wait)
                wait = backoff.after(wait)
                continue
            except Fenced as exc:
                self._lost(exc)
                return
            wait = backoff.initial
            self._failing = False
            self._flushed = target
            self._swept(batch.sweep_before, swept)
            self._settle()

    def _batch(self) -> Batch:
        """What changed since the last flush, taken out of the dirty sets."""
        rows = [tuple(getattr(self._rows[r], c) for c in COLUMNS) for r in self._dirty if r in self._rows]
        batch = Batch(
            rows=rows,
            deleted=sorted(self._deleted),
            calls={d: self._calls[d] for d in self._dirty_calls},
            bucket=self._bucket if self._dirty_bucket else None,
            anchor=self._anchor if self._dirty_anchor else None,
            plans=[self._plans[t] for t in sorted(self._dirty_plans)],
            sweep_before=self._sweep,
        )
        self._dirty, self._deleted, self._dirty_calls, self._dirty_plans = set(), set(), set(), set()
        self._dirty_bucket = self._dirty_anchor = False
        return batch

    def _swept(self, before: float | None, rows: int) -> None:
        """A sweep that deleted rows goes on with the next flush; one that found none is done."""
        if before is None:
            return
        if rows:
            self._written += 1
        elif self._sweep == before:
            self._sweep = None

    def _restore(self, batch: Batch) -> None:
        """A flush that failed: its changes are written with the next one (rows as they are by then)."""
        self._dirty.update(str(row[0]) for row in batch.rows)
        self._deleted.update(r for r in batch.deleted if r not in self._rows)
        self._dirty_calls.update(batch.calls)
        self._dirty_bucket |= batch.bucket is not None
        self._dirty_anchor |= batch.anchor is not None
        self._dirty_plans.update(p.target for p in batch.plans)

    def _settle(self) -> None:
        """Wake what waited for the writes now on record at once (a stop's `durable()` must not wait behind a
        storm's state publishes), and run the after-commit callbacks in order, a slice at a time."""
        woken = [w for gen, w in self._waiters if gen <= self._flushed]
        self._waiters = [(gen, w) for gen, w in self._waiters if gen > self._flushed]
        for waiter in woken:
            _resolve(waiter)
        self._due.extend(cb for gen, cb in self._after if gen <= self._flushed)
        self._after = [(gen, cb) for gen, cb in self._after if gen > self._flushed]
        if self._due and not self._draining:
            self._drain()

    def _drain(self) -> None:
        """Run due callbacks for up to SETTLE_SLICE seconds, then let the loop turn (timers such as the lease's
        renewal, the safety lane's socket) before the next slice: a storm's batch would otherwise stall it."""
        until = time.monotonic() + SETTLE_SLICE
        while self._due and time.monotonic() < until:
            run_after_commit(self._due.popleft())
        self._draining = bool(self._due)
        if self._draining:
            asyncio.get_running_loop().call_soon(self._drain)

    def _lost(self, exc: Fenced) -> None:
        """The fence failed: nothing more is written and nothing waiting may go on."""
        self.fenced = exc
        log.critical("journal_fenced error=%s effect=no_longer_leader", exc)
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._waiters, self._after = [], []
        if self._on_fenced is not None:
            self._on_fenced(exc)

    def commit(self) -> None:
        """Writes are flushed by the flush task; nothing to do synchronously."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        if self._flushed >= self._written and not self._due:
            callback()
        elif self._flushed >= self._written:
            self._due.append(callback)  # behind what earlier writes still have due: states stay in order
        else:
            self._after.append((self._written, callback))

    async def durable(self) -> None:
        """Wait until every write made so far is on record; raises Fenced once the lease is lost. With a fence,
        it is checked even when nothing is pending: every API call waits here first."""
        if self.fenced is not None:
            raise self.fenced
        if self._fence is not None and self._flushed >= self._written:
            self._wrote()
        if self._flushed < self._written:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((self._written, waiter))
            await waiter

    async def aclose(self) -> None:
        """Flush what is pending (for at most 5 s), then stop."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher], timeout=5.0)
            self._flusher.cancel()

    def close(self) -> None:
        """The synchronous close of the SQLite journal: here `aclose()` does the work."""

    # ---- commands -----------------------------------------------------------------------------------

    def insert(self, entry: Entry) -> None:
        if entry.request_id in self._rows or self._history.has_request(entry.request_id):
            raise DuplicateRequest(entry.request_id)
        entry.updated_at = self._clock()
        self._rows[entry.request_id] = entry
        if entry.delivery_hash:
            self._delivery[entry.delivery_hash] = entry.request_id
        self._index(entry)
        self._touch(entry.request_id)

    def update(self, request_id: str, status: str, **fields: Any) -> None:
        check_columns(fields)
        entry = self._rows.get(request_id)
        if entry is None:
            return
        self._rows[request_id] = msgspec.structs.replace(entry, status=status, updated_at=self._clock(), **fields)
        self._index(self._rows[request_id])
        self._touch(request_id)

    def _index(self, entry: Entry) -> None:
        if entry.command_id is not None:
            self._calls_of.setdefault(entry.command_id, set()).add(entry.request_id)

    def _of_call(self, command_id: str) -> list[Entry]:
        return [self._rows[r] for r in self._calls_of.get(command_id, ()) if r in self._rows]

    def _touch(self, request_id: str) -> None:
        self._deleted.discard(request_id)
        self._dirty.add(request_id)
        self._wrote()

    def get(self, request_id: str) -> Entry | None:
        """An open or unannounced command, or one since the takeover (`recall` reads any from the database)."""
        return self._rows.get(request_id)

    async def recall(self, request_id: str) -> Entry | None:
        if request_id in self._rows or not self._history.has_request(request_id):
            return self._rows.get(request_id)
        return await self._store.recall(request_id)

    def tracked_for_call(self, command_id: str) -> list[Entry]:
        found = [e for e in self._of_call(command_id) if e.command_id == command_id and e.status in TRACKED]
        return sorted(found, key=lambda e: e.received_at)

    async def recall_call(self, *, command_id: str | None = None, task_id: str | None = None) -> list[Entry]:
        if command_id is not None:
            held = [e for e in self._of_call(command_id) if e.command_id == command_id]
        else:
            held = [e for e in self._rows.values() if e.task_id == task_id]
        if not len(self._history):
            return held
        column, value = ("command_id", command_id) if command_id is not None else ("task_id", str(task_id))
        stored = {e.request_id: e for e in await self._store.recall_call(column, value)}
        return list({**stored, **{e.request_id: e for e in held}}.values())

    def delivered(self, *delivery_hashes: str) -> bool:
        held = (self._delivery.get(key) for key in delivery_hashes)
        return any(r is not None and r in self._rows for r in held) or self._history.has_delivery(*delivery_hashes)

    def mark_announced(self, request_id: str) -> None:
        entry = self._rows.get(request_id)
        if entry is not None:
            self._rows[request_id] = msgspec.structs.replace(entry, announced=1)
            self._touch(request_id)

    def unannounced(self) -> list[Entry]:
        done = [e for e in self._rows.values() if not e.announced and e.status not in OPEN_STATUSES]
        return sorted(done, key=lambda e: e.updated_at)

    def open_entries(self) -> list[Entry]:
        return sorted((e for e in self._rows.values() if e.status in OPEN_STATUSES), key=lambda e: e.received_at)

    def prune(self, older_than: float) -> int:
        gone = [r for r, e in self._rows.items() if e.received_at < older_than and e.status not in OPEN_STATUSES]
        for request_id in gone:
            entry = self._rows.pop(request_id)
            if entry.delivery_hash:
                self._delivery.pop(entry.delivery_hash, None)
            if entry.command_id is not None:
                self._calls_of.get(entry.command_id, set()).discard(request_id)
            self._dirty.discard(request_id)
            self._deleted.add(request_id)
        self._history.prune(older_than)
        self._sweep = older_than
        self._wrote()
        return len(gone)

    def count(self) -> int:
        return len(self._rows) + len(self._history)

    # ---- quota, limiter, timeline -------------------------------------------------------------------

    def calls_on(self, day: str) -> int:
        return self._calls.get(day, 0)

    def record_calls(self, day: str, used: int) -> None:
        self._calls[day] = used
        self._dirty_calls.add(day)
        self._wrote()

    def latest_day(self) -> str | None:
        return max(self._calls, default=None)

    def bucket_state(self) -> BucketState | None:
        return self._bucket

    def record_bucket(self, state: BucketState) -> None:
        self._bucket, self._dirty_bucket = state, True
        self._wrote()

    def plans(self) -> list[PlanRecord]:
        return list(self._plans.values())

    def save_plan(self, record: PlanRecord) -> None:
        self._plans[record.target] = record
        self._dirty_plans.add(record.target)
        self._wrote()

    def clock_anchor(self) -> Anchor | None:
        return self._anchor

    def save_clock_anchor(self, anchor: Anchor) -> None:
        self._anchor, self._dirty_anchor = anchor, True
        self._wrote()

    def latest_instant(self) -> float | None:
        stamps = [e.updated_at for e in self._rows.values()]
        if self._bucket is not None:
            stamps.append(self._bucket.stamp)
        if self._history.latest is not None:
            stamps.append(self._history.latest)
        return max(stamps, default=None)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
