"""The status page's data (`/status.json`): one read-only snapshot of the bridge for operators, assembled from
what the service already knows. The page itself is `status.html` (no build step, no external assets)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from .. import __version__
from ..config import BridgeConfig
from ..control.statuses import TERMINAL
from ..interface.payloads import INTERFACE_VERSION, utc_now_text

if TYPE_CHECKING:
    from ..budget.report import BridgeSample
    from .observability import Observability

STARTED = time.time()


def snapshot(obs: Observability, config: BridgeConfig, bridge: BridgeSample | None) -> dict[str, Any]:
    """Role, versions, health, budget, burn, in-flight commands, each target's latest, recent problems;
    `bridge`: its sample, None while it is not built yet (a standby, or starting)."""
    ready, health = obs.readiness()
    ha = obs.ha()
    board = obs.board.snapshot()
    return {
        "bridge": {
            "version": __version__,
            "interface": INTERFACE_VERSION,
            "role": ha.role if ha else ("leader" if bridge else "starting"),
            "instance": config.ha.instance_name() if ha else None,
            "prefix": config.mqtt.prefix,
            "dry_run": config.commands.dry_run,
            "started": utc_now_text(STARTED),
        },
        "ready": ready,
        "health": health,
        "budget": msgspec.to_builtins(bridge.budget) if bridge and bridge.budget else None,
        "burn": obs.board.burn(bridge.calls_by_kind if bridge else {}),
        "counts": {"queued": bridge.queued, "in_flight": bridge.in_flight, "tracking": bridge.tracking}
        if bridge
        else {"queued": 0, "in_flight": 0, "tracking": 0},
        "in_flight": [row for row in board["targets"] if row["status"] not in TERMINAL],
        "targets": board["targets"][:200],
        "problems": board["problems"],
        "plans": bridge.plan_rows or [] if bridge else [],
        "ts": utc_now_text(),
    }
