"""Test doubles of the core's neighbours (publisher, API, clock) and the in-process world the lifecycle tests run in."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from semookii_bridge.api import ControlParams
from semookii_bridge.config import CommandsConfig
from semookii_bridge.control.commands import Manual
from semookii_bridge.control.jobs import Job
from semookii_bridge.control.lifecycle import Lifecycle
from semookii_bridge.interface import wire
from semookii_bridge.interface.topics import Target, Topics
from semookii_bridge.journal.protocol import Entry
from semookii_bridge.journal.sqlite import Journal

COMMAND_ID = "1234567890123456789"


GROUP = Target("group", "42")


class Published(msgspec.Struct):
    topic: str
    payload: dict[str, Any]
    retain: bool
    correlation: bytes | None


class Publisher:
    """Records what the lifecycle publishes, decoded; acknowledges each message at once."""

    def __init__(self) -> None:
        self.messages: list[Published] = []

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        on_sent: Callable[[], None] | None = None,
        **_: Any,
    ) -> None:
        self.messages.append(Published(topic, json.loads(payload), retain, correlation_data))
        if on_sent is not None:
            on_sent()

    def statuses(self, topic: str | None = None) -> list[str]:
        return [m.payload["status"] for m in self.messages if topic is None or m.topic == topic]

    def last(self) -> dict[str, Any]:
        return self.messages[-1].payload


class Api:
    """A control API that records each call and answers from queues (an exception in a queue is raised)."""

    def __init__(self, journal_path: Path | None = None) -> None:
        self.journal_path = journal_path
        self.calls: list[tuple[Any, ...]] = []
        self.status_on_disk: list[str] = []
        self.prepaid: list[bool] = []
        self.control: list[Any] = [COMMAND_ID]
        self.tasks: list[Any] = ["7654321"]
        self.results: list[Any] = [{"DONGLE1": "success"}]

    @staticmethod
    def _next(queue: list[Any]) -> Any:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _control(self, *call: Any) -> Any:
        self.calls.append(call)
        if self.journal_path is not None:
            with sqlite3.connect(self.journal_path) as db:
                self.status_on_disk += [s for (s,) in db.execute("SELECT status FROM commands")]
        return self._next(self.control)

    async def group_control(self, group_id: str, params: ControlParams, *, prepaid: bool = False) -> str:
        return str(self._control("group", group_id, params, prepaid))

    async def single_control(self, sn: str, params: ControlParams, *, prepaid: bool = False) -> str:
        return str(self._control("single", sn, params, prepaid))

    async def batch_control(self, sns: Sequence[str], params: ControlParams, *, prepaid: bool = False) -> str:
        return str(self._control("batch", sns, params, prepaid))

    async def query_command(self, command_id: str, *, prepaid: bool = False) -> str | None:
        self.calls.append(("query", command_id))
        self.prepaid.append(prepaid)
        answer: str | None = self._next(self.tasks)
        return answer

    async def get_query_result(self, task_id: str, *, prepaid: bool = False) -> dict[str, str] | None:
        self.calls.append(("result", task_id))
        self.prepaid.append(prepaid)
        answer: dict[str, str] | None = self._next(self.results)
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class World:
    """A journal on disk, the fake API, a recording publisher and a fake clock around one Lifecycle."""

    def __init__(self, tmp_path: Path, tokens: Any = None, **config: Any) -> None:
        self.path = tmp_path / "journal.db"
        self.clock = Clock()
        self.journal = Journal(self.path, clock=self.clock)
        self.api = Api(self.path)
        self.publisher = Publisher()
        self.observed: list[tuple[str, str]] = []
        settings = {"poll_initial": 1.0, "poll_max": 8.0, "track_results_for": 100.0, **config}
        self.life = Lifecycle(api=self.api, journal=self.journal, publisher=self.publisher, topics=Topics(),
                              config=CommandsConfig(**settings), clock=self.clock, tokens=tokens,
                              observer=lambda m, age: self.observed.append((m.target.kind, m.status)))  # fmt: skip

    def job(self, target: Target = GROUP, command: Any = None, rid: str = "r-1", **fields: Any) -> Job:
        command = command or Manual(action="stop", sns=["A", "B"] if target.kind == "batch" else None)
        now = self.clock()
        job = Job(request_id=rid, target=target, command=command, sns=tuple(command.sns) if command.sns else None,
                  received_at=now, deadline=now + 60, **fields)  # fmt: skip
        self.journal.insert(Entry(request_id=job.request_id, target_kind=target.kind, target_id=target.id,
                                  command=wire.encode(command), status="queued", received_at=now,
                                  deadline=now + 60, response_topic=job.response_topic,
                                  correlation=job.correlation))  # fmt: skip
        return job

    def row(self, rid: str = "r-1") -> Entry:
        entry = self.journal.get(rid)
        assert entry is not None
        return entry

    async def step(self, backoff: float, rid: str = "r-1") -> tuple[float, float] | None:
        return await self.life.polls.step(str(self.row(rid).command_id), backoff)


class Recorder:
    """A publisher that keeps what it was given and acknowledges nothing."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], bool]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, correlation_data: bytes | None = None,
                on_sent: Any = None) -> None:  # fmt: skip
        self.sent.append((topic, wire.decode(payload, dict[str, Any]), retain))


class NoApi:
    base_url = "http://nowhere.invalid"
