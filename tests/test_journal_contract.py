"""One journal protocol, two implementations: every test here runs against the SQLite journal and against
the shared PostgreSQL journal (a real server), and each checks what survives a reopen."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from semookii_bridge.budget.ratelimit import BucketState
from semookii_bridge.journal.postgres import Postgres
from semookii_bridge.journal.protocol import CommandJournal, DuplicateRequest, PlanRecord
from semookii_bridge.journal.shared import SharedJournal
from semookii_bridge.journal.sqlite import Journal
from semookii_bridge.journal.timeline import Anchor

from .support.journal import entry

Opener = Callable[[], Awaitable[CommandJournal]]


@pytest.fixture(params=["sqlite", "postgres"])
async def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the journal of this test afresh each call, as a restarted bridge would (the last one stays)."""
    opened: list[Any] = []
    databases: list[Postgres] = []

    async def open_sqlite() -> CommandJournal:
        for journal in opened:
            journal.close()
        opened.append(Journal(tmp_path / "j.db"))
        return opened[-1]  # type: ignore[no-any-return]

    async def open_postgres() -> CommandJournal:
        url = request.getfixturevalue("pg_url") if not databases else databases[0].url
        db = Postgres(url)
        await db.setup()
        databases.insert(0, db)
        opened.append(SharedJournal(db, await db.load()))
        return opened[-1]  # type: ignore[no-any-return]

    yield open_sqlite if request.param == "sqlite" else open_postgres
    for journal in opened:
        if isinstance(journal, SharedJournal):
            await journal.aclose()
        else:
            journal.close()
    for db in databases:
        await db.close()


async def test_a_durable_insert_survives_a_reopen_and_a_known_request_id_is_refused(reopen: Opener) -> None:
    """insert, durable(), reopen: the row reads back whole; a second insert of its id is DuplicateRequest."""
    journal = await reopen()
    journal.insert(entry("a", command_id="7", response_topic="replies/x", correlation=b"\x00\x01"))
    await journal.durable()
    again = await reopen()
    got = again.get("a")
    assert got is not None and (got.status, got.command_id, got.response_topic, got.correlation) == (
        "queued", "7", "replies/x", b"\x00\x01")  # fmt: skip
    with pytest.raises(DuplicateRequest):
        again.insert(entry("a"))


async def test_update_sets_status_and_fields_and_refuses_unknown_columns(reopen: Opener) -> None:
    """update() changes the status and the named columns; a column the journal has not is a ValueError."""
    journal = await reopen()
    journal.insert(entry("a"))
    journal.update("a", "accepted", command_id="9", track_until=500.0)
    with pytest.raises(ValueError, match="unknown journal columns"):
        journal.update("a", "failed", nonsense=1)
    await journal.durable()
    got = (await reopen()).get("a")
    assert got is not None and (got.status, got.command_id, got.track_until) == ("accepted", "9", 500.0)


async def test_queries_answer_as_the_core_expects(reopen: Opener) -> None:
    """delivered, tracked_for_call, recall_call, open_entries and unannounced, in their orders."""
    journal = await reopen()
    journal.insert(entry("late", "accepted", received_at=300, command_id="c", delivery_hash="h2"))
    journal.insert(entry("early", "dispatched", received_at=200, command_id="c", task_id="t"))
    journal.insert(entry("done", "completed", received_at=100, command_id="c"))
    journal.insert(entry("told", "failed", received_at=50, announced=1))
    journal.insert(entry("wait", "queued", received_at=400))
    await journal.durable()
    journal = await reopen()
    assert journal.delivered("nope", "h2") and not journal.delivered("h1")
    assert [e.request_id for e in journal.tracked_for_call("c")] == ["early", "late"]
    assert sorted(e.request_id for e in await journal.recall_call(command_id="c")) == ["done", "early", "late"]
    assert [e.request_id for e in await journal.recall_call(task_id="t")] == ["early"]
    assert [e.request_id for e in journal.open_entries()] == ["early", "late", "wait"]
    assert [e.request_id for e in journal.unannounced()] == ["done"]
    journal.mark_announced("done")
    await journal.durable()
    assert (await reopen()).unannounced() == []


async def test_prune_forgets_finished_rows_before_the_window_only(reopen: Opener) -> None:
    """prune() removes finished commands received before the cut, keeps open ones and recent ones."""
    journal = await reopen()
    for rid, status, at in (("old-done", "completed", 10), ("old-open", "accepted", 10), ("new", "completed", 900)):
        journal.insert(entry(rid, status, received_at=at))
    assert journal.prune(500) == 1
    await journal.durable()
    journal = await reopen()
    assert journal.get("old-done") is None and journal.count() == 2


async def test_quota_limiter_and_timeline_state_survive_a_reopen(reopen: Opener) -> None:
    """The day's count (and the latest day), the bucket's state and the timeline's anchor read back."""
    journal = await reopen()
    journal.record_calls("2026-11-28", 40)
    journal.record_calls("2026-11-29", 7)
    journal.record_bucket(BucketState(1.5, 1000.0, 1010.0, 0.0))
    journal.save_clock_anchor(Anchor("boot", 123.0, 2000.0))
    journal.insert(entry("a"))
    await journal.durable()
    again = await reopen()
    assert again.calls_on("2026-11-29") == 7 and again.latest_day() == "2026-11-29"
    assert again.bucket_state() == BucketState(1.5, 1000.0, 1010.0, 0.0)
    assert again.clock_anchor() == Anchor("boot", 123.0, 2000.0)
    assert again.latest_instant() is not None


async def test_a_targets_plan_record_is_replaced_and_survives_a_reopen(reopen: Opener) -> None:
    """save_plan keeps one record per target (a second one replaces it); plans() reads them back after a reopen."""
    journal = await reopen()
    journal.save_plan(PlanRecord(target="group:1", plan_id="a", body=b"{}", status="active", updated_at=1.0))
    journal.save_plan(PlanRecord(target="group:2", plan_id="b", body=b"{}", status="active", updated_at=1.0))
    journal.save_plan(PlanRecord(target="group:1", plan_id="a", body=b"{}", status="active", next_index=2, sent=1,
                                 missed=1, error=b"x", updated_at=2.0))
    await journal.durable()
    again = await reopen()
    records = {r.target: r for r in again.plans()}
    assert set(records) == {"group:1", "group:2"}
    assert (records["group:1"].next_index, records["group:1"].sent, records["group:1"].missed) == (2, 1, 1)
    assert records["group:1"].error == b"x" and records["group:2"].plan_id == "b"


async def test_after_commit_runs_once_the_write_is_on_record(reopen: Opener) -> None:
    """A callback registered after a write runs only after durable() could return; at once when nothing waits."""
    journal = await reopen()
    await journal.durable()
    ran: list[str] = []
    journal.after_commit(lambda: ran.append("idle"))
    assert ran == ["idle"]
    journal.insert(entry("a"))
    journal.after_commit(lambda: ran.append("after"))
    assert ran == ["idle"]
    await journal.durable()
    assert ran == ["idle", "after"]


async def test_the_small_answers_hold_on_both(reopen: Opener) -> None:
    """A day without calls counts 0 and an empty journal has no latest day; unannounced commands come oldest
    update first; a pruned command's delivery is forgotten; the latest instant includes the limiter's stamp."""
    journal = await reopen()
    assert journal.calls_on("2026-01-01") == 0 and journal.latest_day() is None and journal.latest_instant() is None
    journal.insert(entry("first", "completed", delivery_hash="d1"))
    journal.insert(entry("second", "failed"))
    journal.update("first", "completed")  # updated later: comes second
    journal.record_bucket(BucketState(0.0, 10**10, 0.0, 0.0))
    await journal.durable()
    journal = await reopen()
    assert [e.request_id for e in journal.unannounced()] == ["second", "first"]
    assert journal.latest_instant() == 10**10
    assert journal.prune(10**6) == 2 and not journal.delivered("d1")
    await journal.durable()
    assert (await reopen()).count() == 0


async def test_a_finished_command_is_still_known_after_a_reopen(reopen: Opener) -> None:
    """A finished, announced command (which a new leader holds only as a key): its request id is refused, its
    delivery is recognised, recall and recall_call read it whole; once pruned, all three forget it and the
    store no longer holds it."""
    journal = await reopen()
    journal.insert(entry("old", "completed", received_at=100, delivery_hash="d-old", command_id="c9", announced=1))
    journal.insert(entry("mate", "dispatched", received_at=150, command_id="c9"))
    journal.insert(entry("gone", "failed", received_at=100, announced=1))
    journal.insert(entry("b", "failed", received_at=100, announced=1))  # a key with the sign bit set
    await journal.durable()
    journal = await reopen()
    for known in ("old", "b"):
        with pytest.raises(DuplicateRequest):
            journal.insert(entry(known))
    assert journal.delivered("d-old") and not journal.delivered("d-new")
    recalled = await journal.recall("old")
    assert recalled is not None and (recalled.status, recalled.command_id) == ("completed", "c9")
    assert sorted(e.request_id for e in await journal.recall_call(command_id="c9")) == ["mate", "old"]
    assert await journal.recall("never") is None
    journal.prune(120)
    await journal.durable()
    assert not journal.delivered("d-old") and await journal.recall("old") is None
    journal.insert(entry("old", received_at=200))
    await journal.durable()
    journal = await reopen()
    assert await journal.recall("gone") is None and await journal.recall("b") is None and journal.count() == 2


async def test_writes_are_on_record_after_close_without_waiting(reopen: Opener) -> None:
    """A write followed by close (SQLite) or aclose (PostgreSQL), with no durable() between: on record."""
    journal = await reopen()
    journal.insert(entry("late"))
    journal.record_calls("2026-11-29", 3)
    if isinstance(journal, SharedJournal):
        await journal.aclose()
    else:
        journal.close()
    again = await reopen()
    assert again.get("late") is not None and again.calls_on("2026-11-29") == 3
