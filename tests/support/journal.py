"""Journal rows for the tests."""

from __future__ import annotations

import time
from typing import Any

from semookii_bridge.control.commands import Manual
from semookii_bridge.interface import wire
from semookii_bridge.journal.protocol import Entry


def entry(rid: str, status: str = "queued", received_at: float = 100.0, **fields: Any) -> Entry:
    """A command for group 42 (a stop), received at `received_at`, due 60 s later."""
    return Entry(request_id=rid, target_kind="group", target_id="42", command=wire.encode(Manual(action="stop")),
                 status=status, received_at=received_at, deadline=received_at + 60, **fields)


def entry_now(rid: str, status: str, **fields: Any) -> Entry:
    """A stop for group 42 received now (for a bridge whose clock is the wall clock)."""
    return entry(rid, status, time.time(), **fields)
