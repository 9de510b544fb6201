"""The command topics' rules on the management topics: allow-lists, read-only mode and a dry run's no calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..api.types import Group, Inverter
from ..errors import BridgeError
from .ops import Op, Scope


async def _no_call(_command: str | None, _task: str | None) -> Scope | None:
    return None


@dataclass(frozen=True)
class Guard:
    """The same rules as on the command topics: allow-lists (empty: all) and read-only mode.

    `inverter_of` names the group and serial behind an inverter row id (from the fleet inventory), and
    `call_scope` what a control call touched (from the journal, by command or task id); with allow-lists
    set, what they cannot name is refused, since the bridge cannot tell what the request would touch.
    """

    allow_groups: frozenset[str] = frozenset()
    allow_inverters: frozenset[str] = frozenset()
    read_only: bool = False
    dry_run: bool = False
    inverter_of: Callable[[str], tuple[str, str] | None] = lambda _id: None
    call_scope: Callable[[str | None, str | None], Awaitable[Scope | None]] = _no_call

    async def check(self, name: str, op: Op, request: Any) -> None:
        """Raise BridgeError `not_allowed` before any call when the request is outside the rules."""
        if self.dry_run:
            raise BridgeError("dry_run", f"{name} is not sent: commands.dry_run is set and a dry run calls nothing")
        if self.read_only and op.mutating:
            raise BridgeError("not_allowed", f"{name} changes the account; management.read_only is set")
        if not (self.allow_groups or self.allow_inverters):
            return
        scope = await self._resolved(op.scope(request))
        if scope.new_group and self.allow_groups:
            raise BridgeError("not_allowed", f"{name} creates a group, which cannot be in commands.allow_groups")
        self._inside(list(scope.groups), list(scope.sns))

    async def _resolved(self, scope: Scope) -> Scope:
        """The scope with inverter row ids and control calls replaced by the groups and serials they name."""
        groups, sns = list(scope.groups), list(scope.sns)
        for inverter_id in scope.inverter_ids:
            known = self.inverter_of(inverter_id)
            if known is None:
                raise BridgeError(
                    "not_allowed",
                    f"inverter id {inverter_id} is not in the bridge's inventory, so the allow-lists cannot be checked",
                )
            groups.append(known[0])
            sns.append(known[1])
        if scope.command_id is not None or scope.task_id is not None:
            call = await self.call_scope(scope.command_id, scope.task_id)
            if call is None:
                which = scope.command_id if scope.command_id is not None else scope.task_id
                raise BridgeError(
                    "not_allowed",
                    f"{which} is not a control call this bridge sent, so the allow-lists cannot be checked",
                )
            groups += call.groups
            sns += call.sns
        return Scope(groups=tuple(groups), sns=tuple(sns), new_group=scope.new_group)

    def _inside(self, groups: list[str], sns: list[str]) -> None:
        """`not_allowed` naming the groups or inverters outside the allow-lists."""
        outside = [g for g in groups if self.allow_groups and g not in self.allow_groups]
        if outside:
            raise BridgeError("not_allowed", f"group(s) {', '.join(outside)} not in commands.allow_groups")
        outside = [sn for sn in sns if self.allow_inverters and sn not in self.allow_inverters]
        if outside:
            raise BridgeError("not_allowed", f"inverter(s) {', '.join(outside)} not in commands.allow_inverters")

    def reveal(self, data: Any) -> Any:
        """Leave out of a listing the groups and inverters outside the allow-lists."""
        items = getattr(data, "items", None) if not isinstance(data, dict) else data.get("items")
        if not isinstance(items, list) or not (self.allow_groups or self.allow_inverters):
            return data
        kept = [item for item in items if self._visible(item)]
        return {"total": len(kept), "items": kept}

    def _visible(self, item: Any) -> bool:
        if isinstance(item, Group):
            return not self.allow_groups or str(item.id) in self.allow_groups
        if isinstance(item, Inverter):
            return not self.allow_inverters or (item.inverter_sn or "") in self.allow_inverters
        return True
