"""The shared journal's memory and group commit against a store the test scripts (no database): what each flush
carries, what a failed flush keeps, the sweep, the fence, and the answers read from memory. The same journal on
a real PostgreSQL is tested in test_shared_journal.py."""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable

import pytest

from semookii_bridge.budget.ratelimit import BucketState
from semookii_bridge.journal.history import History, Keys, key_of
from semookii_bridge.journal.protocol import DuplicateRequest, Entry
from semookii_bridge.journal.shared import SharedJournal
from semookii_bridge.journal.store import Batch, Fence, Fenced, Snapshot, StoreUnavailable
from semookii_bridge.journal.timeline import Anchor

from .support.journal import entry

BUCKET = BucketState(tokens=3.0, stamp=100.0, paused_until=0.0, banned_until=0.0)
ANCHOR = Anchor(boot_id=None, offset=0.0, high=100.0)


class Store:
    """Records each flush; `failures` flushes fail first (StoreUnavailable, or the given exception), and
    `during` runs inside the next flush (a write arriving while it is under way)."""

    def __init__(self, failures: list[Exception] | None = None, swept: list[int] | None = None) -> None:
        self.batches: list[Batch] = []
        self.failures = failures or []
        self.swept = swept or []
        self.during: Callable[[], None] | None = None
        self.recalled: list[str] = []
        self.stored: list[Entry] = []

    async def flush(self, batch: Batch, fence: Fence | None) -> int:
        await asyncio.sleep(0)
        if self.during is not None:
            during, self.during = self.during, None
            during()
        self.batches.append(batch)
        if self.failures:
            raise self.failures.pop(0)
        return self.swept.pop(0) if self.swept else 0

    async def recall(self, request_id: str) -> Entry | None:
        self.recalled.append(request_id)
        return None

    async def recall_call(self, column: str, value: str) -> list[Entry]:
        return [e for e in self.stored if getattr(e, column) == value]


def journal(store: Store, *rows: Entry, history: History | None = None, fence: Fence | None = None,
            on_fenced: Callable[[Fenced], None] | None = None) -> SharedJournal:
    snapshot = Snapshot(rows=list(rows), calls={}, bucket=BUCKET, anchor=ANCHOR, now=100.0,
                        history=history or History())
    return SharedJournal(store, snapshot, fence=fence, on_fenced=on_fenced, clock=lambda: 50.0)


def rids(batch: Batch) -> list[str]:
    return sorted(str(row[0]) for row in batch.rows)


async def test_a_flush_carries_the_rows_written_and_only_the_one_row_tables_that_changed() -> None:
    """The bucket and the anchor loaded at takeover are not written back until they change, and once written
    they are not written again with the next flush."""
    store = Store()
    j = journal(store)
    assert j.path == "postgresql" and j.writable
    j.insert(entry("a"))
    await j.durable()
    assert rids(store.batches[0]) == ["a"] and store.batches[0].bucket is None and store.batches[0].anchor is None
    j.record_bucket(BUCKET)
    j.save_clock_anchor(ANCHOR)
    await j.durable()
    assert store.batches[1].bucket == BUCKET and store.batches[1].anchor == ANCHOR
    j.update("a", "accepted")
    await j.durable()
    assert rids(store.batches[2]) == ["a"] and store.batches[2].bucket is None and store.batches[2].anchor is None


async def test_without_a_fence_nothing_pending_means_no_flush() -> None:
    """A single bridge's `durable()` with nothing written returns at once, without a transaction."""
    store = Store()
    await journal(store).durable()
    assert store.batches == []


async def test_a_failed_flush_is_not_writable_until_one_succeeds_and_loses_nothing_written_meanwhile() -> None:
    """The database away for one flush: `writable` says so, and the retry carries the row, the deletion and the
    bucket written while the failed flush was under way."""
    store = Store(failures=[StoreUnavailable("down")])
    j = journal(store, entry("old", status="completed", received_at=1.0))
    j.prune(5.0)
    states: list[bool] = []
    store.during = lambda: (j.record_bucket(BUCKET), states.append(j.writable))
    j.insert(entry("a"))
    await asyncio.wait_for(j.durable(), 1.0)  # the retry comes after 0.05 s, not a second later
    assert states == [True] and j.writable
    retry = store.batches[-1]
    assert rids(retry) == ["a"] and retry.deleted == ["old"] and retry.bucket == BUCKET


async def test_writable_is_false_while_the_database_is_away() -> None:
    """Between a failed flush and the next good one the journal says it cannot write."""
    store = Store(failures=[StoreUnavailable("down")])
    j = journal(store)
    j.insert(entry("a"))
    await asyncio.sleep(0.02)
    assert not j.writable
    await j.durable()
    assert j.writable


async def test_a_sweep_goes_on_while_it_deletes_rows_and_stops_when_it_finds_none() -> None:
    """prune() asks the database to delete old rows too: repeated while a flush deleted some, then dropped."""
    store = Store(swept=[3, 0])
    j = journal(store)
    j.prune(5.0)
    await j.durable()
    await asyncio.sleep(0.05)
    assert [b.sweep_before for b in store.batches] == [5.0, 5.0]
    j.insert(entry("a"))
    await j.durable()
    assert store.batches[-1].sweep_before is None and len(store.batches) == 3


async def test_a_lost_fence_fails_every_waiter_with_its_reason_and_tells_the_owner() -> None:
    """The flush finds the lease gone: durable() raises that Fenced, on_fenced gets it, nothing more is written."""
    lost = Fenced("the lease was taken over")
    told: list[Fenced] = []
    store = Store(failures=[lost])
    j = journal(store, fence=Fence(1, "a"), on_fenced=told.append)
    j.insert(entry("a"))
    with pytest.raises(Fenced) as raised:
        await j.durable()
    assert raised.value is lost and told == [lost] and j.fenced is lost and not j.writable


async def test_after_commit_runs_once_its_write_is_on_record() -> None:
    """A callback registered after a write runs after the flush that records it, not before, and only once."""
    store = Store()
    j = journal(store)
    ran: list[int] = []
    j.insert(entry("a"))
    j.after_commit(lambda: ran.append(len(store.batches)))
    assert ran == []
    await j.durable()
    await asyncio.sleep(0)
    assert ran == [1]
    j.insert(entry("b"))
    await j.durable()
    await asyncio.sleep(0)
    assert ran == [1]


async def test_aclose_flushes_what_is_pending() -> None:
    """A graceful stop writes what was written last."""
    store = Store()
    j = journal(store)
    j.insert(entry("a"))
    await j.aclose()
    assert [rids(b) for b in store.batches] == [["a"]]


async def test_rows_are_answered_from_memory() -> None:
    """insert, update, announce, recall, deliveries, calls and duplicates, without asking the database."""
    store = Store()
    j = journal(store)
    j.insert(entry("a", delivery_hash="h1", command_id="c1"))
    with pytest.raises(DuplicateRequest, match=r"^a$"):
        j.insert(entry("a"))
    j.update("a", "accepted", command_id="c1")
    j.mark_announced("a")
    row = await j.recall("a")
    assert row is not None and row.status == "accepted" and row.announced == 1 and row.updated_at == 50.0
    assert j.delivered("h1") and not j.delivered("h2")
    assert [e.request_id for e in await j.recall_call(command_id="c1")] == ["a"]
    assert j.tracked_for_call("c1") == [row] and j.tracked_for_call("nothing") == []
    assert await j.recall("never") is None and store.recalled == []


async def test_a_finished_row_known_only_as_a_key_is_read_from_the_database() -> None:
    """A request id in the history (not in memory) is looked up in the store; counted; its instant bounds the
    timeline."""
    keys = Keys(array("q", [key_of("old")]), array("d", [1.0]))
    store = Store()
    j = journal(store, entry("a", command_id="c1"), history=History(requests=keys, latest=150.0))
    assert await j.recall("old") is None and store.recalled == ["old"]
    assert j.count() == 2 and j.latest_instant() == 150.0
    store.stored = [entry("b", command_id="c2", task_id="t2")]
    assert [e.request_id for e in await j.recall_call(task_id="t2")] == ["b"]
    assert [e.request_id for e in await j.recall_call(command_id="c1")] == ["a"]


async def test_prune_keeps_open_rows_and_rows_received_at_the_limit() -> None:
    """Only finished rows received before the limit go; an open one and one received exactly at it stay."""
    store = Store()
    j = journal(store, entry("old", "completed", 1.0), entry("edge", "completed", 5.0), entry("open", "queued", 1.0))
    assert j.prune(5.0) == 1
    await j.durable()
    assert store.batches[-1].deleted == ["old"] and {e.request_id for e in j.open_entries()} == {"open"}
    assert await j.recall("edge") is not None


async def test_a_new_clock_stamps_later_writes() -> None:
    """use_clock: the timeline the service builds after takeover stamps every later write."""
    j = journal(Store())
    j.use_clock(lambda: 77.0)
    j.insert(entry("a"))
    row = j.get("a")
    assert row is not None and row.updated_at == 77.0
