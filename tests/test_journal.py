"""The SQLite journal in isolation: its durability settings, group commit, and what each query returns."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from semookii_bridge.control.commands import Manual
from semookii_bridge.interface import wire
from semookii_bridge.journal.protocol import COLUMNS, DuplicateRequest
from semookii_bridge.journal.schema import TABLES, create_tables
from semookii_bridge.journal.sqlite import Journal

from .support.journal import entry


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def on_disk(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """What another connection reads from the file: only committed data."""
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize(("setting", "level"), [("normal", 1), ("full", 2)])
def test_the_file_is_in_wal_mode_with_the_chosen_sync_level(tmp_path: Path, setting: str, level: int) -> None:
    """The journal runs in WAL mode (readers beside the writer) with synchronous NORMAL or FULL as configured."""
    journal = Journal(tmp_path / "deep" / "dir" / "j.db", synchronous=setting)
    assert journal._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert journal._db.execute("PRAGMA synchronous").fetchone() == (level,)
    journal.close()
    assert on_disk(tmp_path / "deep" / "dir" / "j.db", "PRAGMA journal_mode") == [("wal",)]


def test_without_a_loop_every_write_commits_at_once(tmp_path: Path) -> None:
    """Tools and tests without an event loop see each write on disk immediately."""
    journal = Journal(tmp_path / "j.db")
    journal.insert(entry("a"))
    assert on_disk(tmp_path / "j.db", "SELECT request_id, status FROM commands") == [("a", "queued")]
    journal.close()


async def test_writes_of_one_loop_turn_commit_together_then_callbacks_run(tmp_path: Path) -> None:
    """Writes in one turn are invisible on disk until the end of the turn; then after_commit callbacks and
    durable() waiters run, in that order."""
    journal = Journal(tmp_path / "j.db")
    order: list[str] = []
    journal.insert(entry("a"))
    journal.update("a", "sending")
    journal.after_commit(lambda: order.append("after"))
    assert on_disk(tmp_path / "j.db", "SELECT status FROM commands") == []
    waiter = asyncio.ensure_future(journal.durable())
    waiter.add_done_callback(lambda _: order.append("durable"))
    await waiter
    assert on_disk(tmp_path / "j.db", "SELECT status FROM commands") == [("sending",)]
    assert order == ["after", "durable"]
    journal.close()


async def test_after_commit_runs_at_once_when_nothing_is_pending(tmp_path: Path) -> None:
    """With no open transaction, after_commit runs the callback immediately and durable() returns at once."""
    journal = Journal(tmp_path / "j.db")
    ran: list[int] = []
    journal.after_commit(lambda: ran.append(1))
    assert ran == [1]
    await asyncio.wait_for(journal.durable(), 0.1)
    journal.close()


async def test_a_failing_callback_does_not_stop_the_others(tmp_path: Path) -> None:
    """One after_commit callback that raises is logged; the rest and the durable() waiters still run."""
    journal = Journal(tmp_path / "j.db")
    ran: list[str] = []
    journal.insert(entry("a"))

    def broken() -> None:
        raise RuntimeError("bug")

    journal.after_commit(broken)
    journal.after_commit(lambda: ran.append("second"))
    await asyncio.wait_for(journal.durable(), 1)
    assert ran == ["second"]
    journal.close()


async def test_a_failed_commit_stops_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the commit fails, memory is ahead of the disk: the process exits (fail-stop) instead of going on."""
    journal = Journal(tmp_path / "j.db")
    codes: list[int] = []

    def exit_(code: int) -> None:
        codes.append(code)
        raise SystemExit(code)

    monkeypatch.setattr("semookii_bridge.journal.sqlite.os._exit", exit_)
    journal.insert(entry("a"))
    journal._db.execute("ROLLBACK")
    with pytest.raises(SystemExit):
        journal.commit()
    assert codes == [70]
    journal._open = False  # the real os._exit never returns: no second commit attempt at the end of the turn


def test_insert_stamps_and_refuses_a_known_request_id(tmp_path: Path) -> None:
    """insert() sets updated_at from the clock and raises DuplicateRequest for a request_id already held."""
    clock = Clock()
    journal = Journal(tmp_path / "j.db", clock=clock)
    journal.insert(entry("a"))
    with pytest.raises(DuplicateRequest):
        journal.insert(entry("a"))
    row = journal.get("a")
    assert row is not None and row.updated_at == 5000.0 and row.command == wire.encode(Manual(action="stop"))
    assert journal.count() == 1 and journal.get("b") is None
    journal.close()


def test_update_sets_status_fields_and_time(tmp_path: Path) -> None:
    """update() moves the status, sets the named columns and stamps updated_at; unknown columns are refused."""
    clock = Clock()
    journal = Journal(tmp_path / "j.db", clock=clock)
    journal.insert(entry("a"))
    clock.now = 6000.0
    journal.update("a", "accepted", command_id="99", track_until=7000.0)
    row = journal.get("a")
    assert row is not None and (row.status, row.command_id, row.track_until, row.updated_at) == (
        "accepted", "99", 7000.0, 6000.0)  # fmt: skip
    with pytest.raises(ValueError, match="colour"):
        journal.update("a", "failed", colour="red")
    journal.close()


def test_a_delivery_is_recognised_by_any_of_its_keys(tmp_path: Path) -> None:
    """A redelivery is recognised by either delivery key (the current one or an earlier version's)."""
    journal = Journal(tmp_path / "j.db")
    journal.insert(entry("a", delivery_hash="new-key"))
    journal.insert(entry("b", delivery_hash="old-key"))
    assert journal.delivered("new-key", "nope") and journal.delivered("nope", "old-key")
    assert not journal.delivered("x", "y")
    journal.close()


def test_unannounced_lists_finished_commands_oldest_update_first(tmp_path: Path) -> None:
    """Terminal states not yet acknowledged by the broker, in the order they were reached; open ones excluded."""
    clock = Clock()
    journal = Journal(tmp_path / "j.db", clock=clock)
    for rid in ("open", "first", "second", "acked"):
        journal.insert(entry(rid))
    clock.now = 7000.0
    journal.update("second", "failed")
    clock.now = 6000.0
    journal.update("first", "completed")
    journal.update("acked", "expired")
    journal.mark_announced("acked")
    journal.update("open", "dispatched")
    assert [e.request_id for e in journal.unannounced()] == ["first", "second"]
    acked = journal.get("acked")
    assert acked is not None and acked.announced == 1
    journal.close()


def test_open_entries_are_the_unfinished_oldest_first(tmp_path: Path) -> None:
    """queued, sending, accepted and dispatched commands, by arrival."""
    journal = Journal(tmp_path / "j.db")
    for n, status in enumerate(["completed", "dispatched", "queued", "sending", "accepted", "failed"]):
        journal.insert(entry(f"r{n}", status, received_at=1000.0 - n))
    assert [e.request_id for e in journal.open_entries()] == ["r4", "r3", "r2", "r1"]
    journal.close()


def test_prune_keeps_open_commands_and_recent_ones(tmp_path: Path) -> None:
    """prune() deletes finished commands received before the cut-off and says how many."""
    journal = Journal(tmp_path / "j.db")
    journal.insert(entry("old-done", "completed", received_at=10.0))
    journal.insert(entry("old-open", "accepted", received_at=10.0))
    journal.insert(entry("new-done", "completed", received_at=500.0))
    journal.insert(entry("edge", "failed", received_at=100.0))
    assert journal.prune(100.0) == 1
    assert sorted(e[0] for e in journal._db.execute("SELECT request_id FROM commands")) == ["edge", "new-done",
                                                                                           "old-open"]  # fmt: skip
    journal.close()


def test_entries_read_back_whole(tmp_path: Path) -> None:
    """Every column written comes back as written."""
    journal = Journal(tmp_path / "j.db")
    written = entry("a", "dispatched", delivery_hash="h", command_id="1", task_id="t", track_until=9.5,
                    response_topic="r/t", correlation=b"\x00c", results=b"{}", error=b"{}", announced=1)  # fmt: skip
    journal.insert(written)
    assert journal.get("a") == written
    journal.close()


async def test_close_commits_what_after_commit_callbacks_wrote(tmp_path: Path) -> None:
    """Closing with announcements pending commits the marks they write instead of failing later (fail-stop)."""
    journal = Journal(tmp_path / "j.db")
    journal.insert(entry("a", "completed"))
    journal.after_commit(lambda: journal.mark_announced("a"))
    journal.close()
    await asyncio.sleep(0)
    assert on_disk(tmp_path / "j.db", "SELECT announced FROM commands") == [(1,)]


def test_the_commands_table_has_the_entrys_columns_in_order_in_both_dialects() -> None:
    """One definition: the commands table's columns are `Entry`'s fields, and both dialects write every table
    with the same columns, only the types spelled differently."""
    assert tuple(name for name, _kind, _constraint in TABLES["commands"]) == COLUMNS
    sqlite, postgres = create_tables("sqlite"), create_tables("postgres")
    assert sqlite.count("CREATE TABLE") == postgres.count("CREATE TABLE") == len(TABLES)
    assert sqlite.replace("BLOB", "BYTEA").replace("REAL", "DOUBLE PRECISION") == postgres
