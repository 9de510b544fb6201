"""What the status page shows that metrics do not: each target's latest command, the last refusals and
failures with their codes, and API calls per minute over the last hour. Plain, bounded memory."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from ..interface.payloads import Response, StateMessage, utc_now_text

PROBLEMS = frozenset({"rejected", "failed", "expired", "unknown", "partial"})
MAX_TARGETS = 2000
MAX_PROBLEMS = 100
MINUTES = 60


class StatusBoard:
    """Fed every lifecycle state (not duplicates) and, each minute, the call counters."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.latest: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.problems: deque[dict[str, Any]] = deque(maxlen=MAX_PROBLEMS)
        self._minutes: deque[tuple[int, dict[str, int]]] = deque(maxlen=MINUTES + 1)

    def observe(self, message: StateMessage) -> None:
        """One published state: the target's latest (a refused command is not, as with the retained state) and a
        problem if its status is one."""
        key = f"{message.target.kind}/{message.target.id}"
        row = {
            "target": key,
            "request_id": message.request_id,
            "status": message.status,
            "code": message.error.code if message.error else None,
            "message": message.error.message if message.error else None,
            "ts": message.ts,
        }
        if message.status != "rejected":
            self.latest[key] = row
            self.latest.move_to_end(key)
            while len(self.latest) > MAX_TARGETS:
                self.latest.popitem(last=False)
        if message.status in PROBLEMS:
            self.problems.appendleft(row)

    def observe_answer(self, op: str, response: Response) -> None:
        """A management answer: a problem when it is an error."""
        if response.error is not None:
            self.problems.appendleft(
                {
                    "target": f"bridge/request/{op}",
                    "request_id": None if response.transaction is None else str(response.transaction),
                    "status": "error",
                    "code": response.error.code,
                    "message": response.error.message,
                    "ts": utc_now_text(self._clock()),
                }
            )

    def tick(self, totals: dict[str, int]) -> None:
        """Remember the call counters as each minute begins (called more often than once a minute)."""
        minute = int(self._clock() // 60)
        if not self._minutes or self._minutes[-1][0] != minute:
            self._minutes.append((minute, dict(totals)))

    def burn(self, totals: dict[str, int]) -> list[dict[str, Any]]:
        """Calls per minute by kind, oldest first, up to the last hour (the current minute so far last)."""
        points = [*self._minutes, (int(self._clock() // 60) + 1, totals)]
        return [
            {"minute": earlier[0] * 60, **{k: later[1].get(k, 0) - earlier[1].get(k, 0) for k in later[1]}}
            for earlier, later in itertools.pairwise(points)
        ]

    def snapshot(self) -> dict[str, Any]:
        """Targets newest first and the problems, newest first."""
        return {"targets": list(reversed(self.latest.values())), "problems": list(self.problems)}
