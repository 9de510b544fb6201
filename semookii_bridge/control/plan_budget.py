"""Budget feedback before the fact (docs/plans.md): how many calls each plan boundary needs at once, across the
plans held, and how late the last of them leaves at the configured rate limit. Plain arithmetic: at a boundary
`n` calls start together; a full bucket lets `burst` go at once and the rest at `rate` per second, so the last
leaves `(n - burst) / rate` seconds after the boundary."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from ..interface import wire
from ..interface.payloads import PlanWarning
from ..interface.topics import Target
from .plans import Step


def boundary_calls(programs: Iterable[tuple[Target, tuple[Step, ...]]], batch_max: int) -> dict[float, int]:
    """Calls due at each step start: one per group; inverters with the same command share a batch call (at most
    `batch_max` serials each), as merging sends them."""
    groups: dict[float, int] = defaultdict(int)
    inverters: dict[float, dict[bytes, int]] = defaultdict(lambda: defaultdict(int))
    for target, steps in programs:
        for step in steps:
            if target.kind == "inverter":
                inverters[step.interval.start][wire.encode(step.interval.command)] += 1
            else:
                groups[step.interval.start] += 1
    for at, alike in inverters.items():
        groups[at] += sum(math.ceil(count / batch_max) for count in alike.values())
    return dict(groups)


def lateness(calls: int, rate: float, burst: int) -> float:
    """Seconds after a boundary the last of `calls` leaves, from a full bucket (0 when unlimited)."""
    if rate <= 0 or calls <= burst:
        return 0.0
    return (calls - burst) / rate


def warning_for(
    steps: tuple[Step, ...], calls: dict[float, int], rate: float, burst: int, grace: float
) -> PlanWarning | None:
    """The first of `steps`' boundaries whose calls cannot all leave within the grace, or None."""
    for step in (s for s in steps if s.index is not None):
        due = calls.get(step.interval.start, 0)
        late = lateness(due, rate, burst)
        limit = min(grace, step.interval.end - step.interval.start)
        if late > limit:
            message = (
                f"{due} calls are due at once at interval {step.index}'s start; at {rate:g} calls/s (burst {burst}) "
                f"the last leaves about {late:.1f} s late, past its {limit:g} s deadline: some intervals will be missed"
            )
            return PlanWarning(message=message, at=step.interval.start, calls=due, expected_lateness=round(late, 3))
    return None
