"""The status page's data (`/status.json`): one read-only snapshot of the bridge for operators, assembled from
what the service already knows. The page itself is `status.html` (no build step, no external assets)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from . import __version__
from .payloads import INTERFACE_VERSION, utc_now_text
from .statuses import TERMINAL

if TYPE_CHECKING:
    from .service import Service

STARTED = time.time()


def snapshot(service: Service) -> dict[str, Any]:
    """Role, versions, health, budget, burn, in-flight commands, each target's latest, recent problems."""
    obs, bridge = service.obs, service.bridge
    ready, health = obs.readiness()
    ha = obs.ha()
    board = obs.board.snapshot()
    totals = bridge.calls.by_kind() if bridge else {}
    return {
        "bridge": {
            "version": __version__,
            "interface": INTERFACE_VERSION,
            "role": ha.role if ha else ("leader" if bridge else "starting"),
            "instance": service.config.ha.instance_name() if ha else None,
            "prefix": service.config.mqtt.prefix,
            "dry_run": service.config.commands.dry_run,
            "started": utc_now_text(STARTED),
        },
        "ready": ready,
        "health": health,
        "budget": msgspec.to_builtins(bridge.budget.snapshot()) if bridge else None,
        "burn": obs.board.burn(totals),
        "counts": _counts(service),
        "in_flight": [row for row in board["targets"] if row["status"] not in TERMINAL],
        "targets": board["targets"][:200],
        "problems": board["problems"],
        "ts": utc_now_text(),
    }


def _counts(service: Service) -> dict[str, int]:
    bridge = service.bridge
    if bridge is None:
        return {"queued": 0, "in_flight": 0, "tracking": 0}
    return {"queued": bridge.dispatcher.queued, "in_flight": bridge.dispatcher.in_flight,
            "tracking": bridge.lifecycle.tracking}  # fmt: skip
