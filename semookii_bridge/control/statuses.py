"""A command's statuses, in one place: those published on the state topics, the journal's own `sending`, and the
groups the core asks about (open, tracked, terminal)."""

from __future__ import annotations

from typing import Literal

Status = Literal[
    "queued",
    "accepted",
    "dispatched",
    "completed",
    "partial",
    "rejected",
    "superseded",
    "expired",
    "failed",
    "unknown",
]
"""What `<prefix>/.../state` says."""
JournalStatus = Status | Literal["sending"]
"""A journaled command's status: a published one, or `sending` (on disk before the control call)."""
TERMINAL: frozenset[str] = frozenset({"completed", "partial", "rejected", "superseded", "expired", "failed", "unknown"})
"""A command in one of these has ended: nothing more happens to it."""
OPEN_STATUSES = ("queued", "sending", "accepted", "dispatched")
"""A journaled command still under way: resumed, reported or tracked after a restart or a takeover."""
TRACKED = ("accepted", "dispatched")
"""The API took the command and its results are being polled."""
