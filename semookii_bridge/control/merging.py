"""Which queued inverter commands may share one batchTempControl call.

Two commands merge when the API would receive exactly the same parameters for them (everything but the
serial list), each names only inverters the inventory lists (an unknown serial could make the API refuse
the whole call), and together they name each inverter once and at most `max_sns` of them.
"""

from __future__ import annotations

from collections.abc import Callable

from ..interface import wire
from .commands import to_params
from .jobs import Job


class MergePolicy:
    """The merge rule, given the inventory's `known(sn)` and the batch size limit."""

    def __init__(self, known: Callable[[str], bool], max_sns: int) -> None:
        self._known = known
        self.max_sns = max_sns

    def signature(self, job: Job) -> bytes | None:
        """The API parameters that must be equal for two commands to merge; None for a group command."""
        if job.target.kind == "group":
            return None
        return wire.encode(to_params(job.command))

    def eligible(self, job: Job) -> bool:
        """Whether the job may be part of a merged call now (its inverters are all known, and room is left)."""
        sns = job.inverters
        return job.merge_sig is not None and 0 < len(sns) < self.max_sns and all(map(self._known, sns))
