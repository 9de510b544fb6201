"""Learning of inverters the inventory does not know yet, so setpoints to inverters added at the vendor after
start still merge into one call instead of going out one by one.

A command naming an unknown inverter waits briefly (at most MAX_HOLD seconds) while one debounced lookup
runs: the group list plus only the groups whose inverter count moved (`Inventory.refresh_changed`, counted in
the budget like any call). Commands arriving meanwhile join the same lookup; then they are queued together,
and merging covers them. Lookups are spaced (SPACING) and a serial a lookup did not find is not looked for
again until the next full refresh, so junk serials cannot spend the budget. The safety lane never waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from ..api.errors import ApiError
from ..budget.ratelimit import QuotaExhausted
from ..common.clock import steady
from .inventory import FleetApi, Inventory
from .jobs import Job

log = logging.getLogger(__name__)

DEBOUNCE = 0.3
"""Seconds a lookup waits for more commands naming unknown inverters (a fleet-wide dispatch arrives as many)."""
MAX_HOLD = 5.0
"""Seconds a command waits at most for the lookup; then it is queued whatever the lookup found."""
FLEET_OPS = frozenset({"inverter/add", "inverter/remove", "inverter/replace", "group/remove"})
"""Management ops after which the inventory is updated at once."""
SPACING = 10.0
"""Seconds between lookups at least; meanwhile commands naming unknown inverters are queued at once."""


class Learner:
    """Holds commands that name unknown inverters until one lookup has run, then queues them together."""

    def __init__(
        self,
        inventory: Inventory,
        api: FleetApi,
        submit: Callable[[Job], None],
        *,
        forget_after: float,
        clock: Callable[[], float] = steady,
    ) -> None:
        self.inventory, self.api, self._submit, self._clock = inventory, api, submit, clock
        self.forget_after = forget_after
        """Seconds a serial that a lookup did not find is not looked for again (the full refresh interval)."""
        self._held: list[Job] = []
        self._wanted: set[str] = set()
        self._missing: dict[str, float] = {}
        self._last = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self.lookups = 0

    def unknown(self, job: Job) -> list[str]:
        """The inverters of `job` worth a lookup: not known, and not missed by a lookup lately."""
        now = self._clock()
        return [sn for sn in job.inverters if not self.inventory.known(sn) and self._missing.get(sn, now) <= now]

    def take(self, job: Job) -> bool:
        """Hold `job` for a lookup when it names unknown inverters and one may run; False: queue it now."""
        if self._task is None and self._clock() - self._last < SPACING:
            return False
        unknown = self.unknown(job)
        if not unknown:
            return False
        self._held.append(job)
        self._wanted.update(unknown)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._lookup())
        return True

    async def _lookup(self) -> None:
        """Wait for the rest of the burst, look once, then queue every held command in arrival order."""
        try:
            await asyncio.sleep(DEBOUNCE)
            self._last = self._clock()
            self.lookups += 1
            await asyncio.wait_for(self.inventory.refresh_changed(self.api), MAX_HOLD - DEBOUNCE)
        except asyncio.CancelledError:
            self._task = None  # stopping: the held commands are journaled `queued` and resume after a restart
            raise
        except (ApiError, QuotaExhausted, TimeoutError) as exc:
            log.warning("inventory_lookup_failed error=%s", type(exc).__name__)
        except Exception:
            log.exception("inventory_lookup_crashed")
        self._release()

    def _release(self) -> None:
        held, wanted, self._held, self._wanted, self._task = self._held, self._wanted, [], set(), None
        until = self._clock() + self.forget_after
        missed = [sn for sn in wanted if not self.inventory.known(sn)]
        self._missing.update(dict.fromkeys(missed, until))
        log.info("inventory_learned wanted=%d found=%d commands=%d", len(wanted), len(wanted) - len(missed), len(held))
        for job in held:
            self._submit(job)

    async def after_management(self, op: str, payload: bytes) -> None:
        """A management call that added, moved or removed inverters succeeded: list the groups it touched
        again at once (removed groups are just forgotten), so merging sees the fleet as it now is; other ops
        change nothing here."""
        if op not in FLEET_OPS:
            return
        decoded = msgspec.json.decode(payload or b"{}")  # it validated, so it is an object
        request: dict[str, Any] = decoded if isinstance(decoded, dict) else {}
        ids = [str(i) for i in ([request.get("id")] if request.get("id") is not None else request.get("ids") or [])]
        if op == "group/remove":
            self.inventory.drop_groups(ids)
            return
        groups = [str(request["group_id"])] if op == "inverter/add" and request.get("group_id") else []
        groups += [row[0] for i in ids if (row := self.inventory.inverter_of(i)) is not None]
        if groups:
            try:
                await self.inventory.refresh_groups(self.api, groups)
            except (ApiError, QuotaExhausted) as exc:
                log.warning("inventory_update_failed op=%s error=%s", op, type(exc).__name__)

    def close(self) -> None:
        """Stop a lookup in progress (held commands stay journaled as `queued` and resume after a restart)."""
        if self._task is not None:
            self._task.cancel()
