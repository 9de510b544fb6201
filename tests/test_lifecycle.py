"""A command's life in isolation: what is on disk before the control call, and what each state carries."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from semookii_bridge import wire
from semookii_bridge.api import ControlParams
from semookii_bridge.commands import Manual
from semookii_bridge.config import CommandsConfig
from semookii_bridge.jobs import Job
from semookii_bridge.journal import Entry, Journal
from semookii_bridge.lifecycle import Lifecycle
from semookii_bridge.topics import Target, Topics


class Recorded(msgspec.Struct):
    topic: str
    payload: dict[str, Any]


class Publisher:
    """Records what the lifecycle publishes, decoded."""

    def __init__(self) -> None:
        self.messages: list[Recorded] = []

    def publish(self, topic: str, payload: bytes, *, on_sent: Callable[[], None] | None = None, **_: Any) -> None:
        self.messages.append(Recorded(topic, json.loads(payload)))
        if on_sent is not None:
            on_sent()

    def statuses(self) -> list[str]:
        return [m.payload["status"] for m in self.messages]


class DiskReadingApi:
    """A control API that, when called, reads the command's status from the journal file on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.status_on_disk: list[str] = []

    def _read(self, request_id: str) -> str:
        with sqlite3.connect(self.path) as db:
            row = db.execute("SELECT status FROM commands WHERE request_id = ?", (request_id,)).fetchone()
        return str(row[0])

    async def group_control(self, group_id: str, params: ControlParams, *, prepaid: bool = False) -> str:
        self.status_on_disk.append(self._read("r-1"))
        return "1234567890123456789"

    async def single_control(self, sn: str, params: ControlParams, *, prepaid: bool = False) -> str:
        raise AssertionError("not used")

    async def batch_control(self, sns: Sequence[str], params: ControlParams, *, prepaid: bool = False) -> str:
        raise AssertionError("not used")

    async def query_command(self, command_id: str) -> str | None:
        return "7654321"

    async def get_query_result(self, task_id: str) -> dict[str, str] | None:
        return {"DONGLE1": "success"}


def queued_job(journal: Journal) -> Job:
    now = time.time()
    job = Job(request_id="r-1", target=Target("group", "42"), command=Manual(action="stop"), sns=None,
              received_at=now, deadline=now + 60)  # fmt: skip
    journal.insert(Entry(request_id=job.request_id, target_kind="group", target_id="42",
                         command=wire.encode(job.command), status="queued", received_at=now, deadline=now + 60))  # fmt: skip
    return job


def lifecycle(journal: Journal, api: DiskReadingApi, publisher: Publisher) -> Lifecycle:
    config = CommandsConfig(poll_initial=0.01, poll_max=0.02, track_results_for=5)
    return Lifecycle(api=api, journal=journal, publisher=publisher, topics=Topics(), config=config)


async def test_sending_is_on_disk_before_the_control_call(tmp_path: Path) -> None:
    """When the control call starts, the journal file already says `sending` (a crash then reports ambiguous)."""
    path = tmp_path / "journal.db"
    journal = Journal(path)
    api = DiskReadingApi(path)
    job = queued_job(journal)
    await asyncio.sleep(0)
    await lifecycle(journal, api, Publisher()).send(job)
    journal.close()
    assert api.status_on_disk == ["sending"]


async def test_ids_are_json_strings_in_every_state(tmp_path: Path) -> None:
    """`command_id` and `task_id` are JSON strings from the state that first carries them (`accepted`) on."""
    path = tmp_path / "journal.db"
    journal = Journal(path)
    publisher = Publisher()
    life = lifecycle(journal, DiskReadingApi(path), publisher)
    tracking = asyncio.create_task(life.run_tracking())
    await life.send(queued_job(journal))
    deadline = time.monotonic() + 5
    while "completed" not in publisher.statuses() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    tracking.cancel()
    await life.close()
    journal.close()
    by_status = {m.payload["status"]: m.payload for m in publisher.messages}
    assert publisher.statuses() == ["accepted", "dispatched", "completed"]
    assert all(by_status[s]["command_id"] == "1234567890123456789" for s in by_status)
    assert by_status["dispatched"]["task_id"] == "7654321" and by_status["completed"]["task_id"] == "7654321"
