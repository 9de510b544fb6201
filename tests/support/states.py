"""What the tests read back of a run: the terminal states on the broker and the statuses in a journal file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .broker import Probe

TERMINAL = {"completed", "rejected", "superseded", "expired", "failed", "unknown"}


def terminal_states(probe: Probe, topic_prefix: str = "vpp/") -> dict[str, list[str]]:
    """request_id -> every terminal status seen for it."""
    out: dict[str, list[str]] = {}
    for m in probe.messages:
        if (
            m.topic.startswith(topic_prefix)
            and m.topic.endswith("/state")
            and not m.topic.startswith("vpp/bridge/")
            and m.payload
        ):
            doc = m.json()
            if doc["status"] in TERMINAL:
                out.setdefault(doc["request_id"], []).append(doc["status"])
    return out


def journal_statuses(path: Path) -> dict[str, str]:
    """request_id -> status, read from the journal file by another connection (WAL lets it read beside a writer)."""
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            return dict(db.execute("SELECT request_id, status FROM commands").fetchall())
        except sqlite3.OperationalError:
            return {}
