"""The simulated cloud: groups, inverters, bound dongles, commands and tasks, in memory.

Plain code with an injected clock, so it can be tested without HTTP. Methods raise `Rejected` for what the
real API answers with `success: false`, using messages in the style of the real service.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from .validation import ControlRequest


class Rejected(Exception):
    """The API would answer `success: false` with this `exception` text."""


@dataclass
class Device:
    """A dongle (`wifi_sn`) with the inverter behind it; only bound devices may be controlled."""

    wifi_sn: str
    inverter_sn: str
    bound: bool
    online: bool = True
    rate_power: float = 7.5


@dataclass
class GroupRow:
    id: str
    name: str
    create_time: str
    update_time: str | None = None


@dataclass
class InverterRow:
    id: str
    group_id: str
    inverter_sn: str
    create_time: str
    update_time: str | None = None


@dataclass
class Command:
    """An accepted control command: when the cloud dispatches it and when devices answer."""

    id: str
    target: str
    wifi_sns: list[str]
    request: ControlRequest
    created: float
    task_id: str | None = None
    dispatch_at: float = 0.0
    results_at: float = 0.0


@dataclass
class SimTimings:
    """Seconds from command to task id (`task_delay`) and from command to device results."""

    task_delay: float = 0.2
    result_delay: float = 0.5


@dataclass
class CloudState:
    """Everything the simulated cloud knows; ids are 19-digit strings."""

    timings: SimTimings = field(default_factory=SimTimings)
    clock: Callable[[], float] = time.monotonic
    seed: int = 1
    tz: tzinfo = UTC
    groups: dict[str, GroupRow] = field(default_factory=dict)
    inverters: dict[str, InverterRow] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    commands: dict[str, Command] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._next_id = 1_028_902_640_000_000_000 + self._rng.randrange(10**6)

    # ---- ids and time ---------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh 19-digit id, increasing like the cloud's snowflake ids."""
        self._next_id += self._rng.randrange(1, 10**6)
        return str(self._next_id)

    def _task_id(self) -> str:
        return "".join(self._rng.choice("0123456789abcdef") for _ in range(32))

    def now_text(self) -> str:
        """Now as the API writes dates: local time of the site (`tz`), no zone suffix."""
        return datetime.now(self.tz).strftime("%Y-%m-%d %H:%M:%S")

    # ---- seeding --------------------------------------------------------------------------------

    def add_device(self, *, bound: bool = True, online: bool = True) -> Device:
        """Create a dongle + inverter pair that exists in the world (bound to this account or not)."""
        suffix = "".join(self._rng.choice(string.ascii_uppercase + string.digits) for _ in range(8))
        device = Device(
            wifi_sn=f"SW{suffix}",
            inverter_sn=f"H475{self._rng.randrange(10**9):09d}",
            bound=bound,
            online=online,
        )
        self.devices[device.wifi_sn] = device
        return device

    def seed_fleet(self, groups: int, per_group: int, spare: int = 3, unbound: int = 3) -> None:
        """Groups full of bound inverters, plus bound spares outside groups and unbound dongles."""
        for g in range(groups):
            group_id = self.add_group(f"vpp-{g + 1}")
            for _ in range(per_group):
                self.add_inverter(group_id, self.add_device().inverter_sn)
        for _ in range(spare):
            self.add_device()
        for _ in range(unbound):
            self.add_device(bound=False)

    def silence(self, count: int) -> None:
        """Make `count` devices never answer: the first inverter of each group, then the second, ..."""
        members = [sorted(self.group_members(g), key=lambda i: i.id) for g in sorted(self.groups)]
        order = [rows[k] for k in range(max((len(r) for r in members), default=0)) for rows in members if k < len(rows)]
        for row in order[:count]:
            self.set_silent(row.inverter_sn, True)

    def set_silent(self, sn: str, silent: bool) -> bool:
        """Whether a device (by inverter or dongle serial) answers commands; False if it is unknown."""
        device = self.devices.get(sn) or self._device_by_inverter(sn)
        if device is None:
            return False
        device.online = not silent
        return True

    # ---- lookups --------------------------------------------------------------------------------

    def _device_by_inverter(self, sn: str) -> Device | None:
        return next((d for d in self.devices.values() if d.inverter_sn == sn), None)

    def _authorized(self, sn: str) -> Device:
        device = self._device_by_inverter(sn)
        if device is None or not device.bound:
            raise Rejected(f"The inverter {sn} is not authorized to this account")
        return device

    def _group(self, group_id: str) -> GroupRow:
        group = self.groups.get(group_id)
        if group is None:
            raise Rejected(f"Group {group_id} does not exist")
        return group

    def group_members(self, group_id: str) -> list[InverterRow]:
        return [i for i in self.inverters.values() if i.group_id == group_id]

    # ---- groups ---------------------------------------------------------------------------------

    def add_group(self, name: str) -> str:
        if not name.strip():
            raise Rejected("Group name cannot be empty")
        if any(g.name == name for g in self.groups.values()):
            raise Rejected(f"Group name {name} already exists")
        group = GroupRow(id=self.new_id(), name=name, create_time=self.now_text())
        self.groups[group.id] = group
        return group.id

    def update_group(self, group_id: str, name: str) -> None:
        group = self._group(group_id)
        group.name = name
        group.update_time = self.now_text()

    def delete_groups(self, group_ids: list[str]) -> None:
        for group_id in group_ids:
            self._group(group_id)
        for group_id in group_ids:
            for inverter in self.group_members(group_id):
                del self.inverters[inverter.id]
            del self.groups[group_id]

    def list_groups(self, name_like: str | None = None) -> list[GroupRow]:
        rows = sorted(self.groups.values(), key=lambda g: g.id)
        return [g for g in rows if name_like is None or name_like in g.name]

    # ---- inverters ------------------------------------------------------------------------------

    def add_inverter(self, group_id: str, sn: str) -> str:
        self._group(group_id)
        self._authorized(sn)
        if any(i.inverter_sn == sn for i in self.inverters.values()):
            raise Rejected(f"The inverter {sn} is already in a group")
        row = InverterRow(id=self.new_id(), group_id=group_id, inverter_sn=sn, create_time=self.now_text())
        self.inverters[row.id] = row
        return row.id

    def _inverter(self, inverter_id: str) -> InverterRow:
        row = self.inverters.get(inverter_id)
        if row is None:
            raise Rejected(f"Inverter {inverter_id} does not exist")
        return row

    def delete_inverters(self, inverter_ids: list[str]) -> None:
        for inverter_id in inverter_ids:
            self._inverter(inverter_id)
        for inverter_id in inverter_ids:
            del self.inverters[inverter_id]

    def replace_inverter(self, inverter_id: str, new_sn: str) -> None:
        row = self._inverter(inverter_id)
        self._authorized(new_sn)
        if any(i.inverter_sn == new_sn and i.id != inverter_id for i in self.inverters.values()):
            raise Rejected(f"The inverter {new_sn} is already in a group")
        row.inverter_sn = new_sn
        row.update_time = self.now_text()

    def list_inverters(
        self, group_id: str, wifi_like: str | None = None, sn_like: str | None = None
    ) -> list[InverterRow]:
        self._group(group_id)
        rows = sorted(self.group_members(group_id), key=lambda i: i.id)
        if sn_like:
            rows = [r for r in rows if sn_like in r.inverter_sn]
        if wifi_like:
            rows = [r for r in rows if wifi_like in self.wifi_sn_of(r.inverter_sn)]
        return rows

    def wifi_sn_of(self, inverter_sn: str) -> str:
        device = self._device_by_inverter(inverter_sn)
        return device.wifi_sn if device else ""

    def rate_power_of(self, inverter_sn: str) -> float | None:
        device = self._device_by_inverter(inverter_sn)
        return device.rate_power if device else None

    # ---- control --------------------------------------------------------------------------------

    def control(self, target: str, sns: list[str], request: ControlRequest) -> str:
        """Accept a command for the given inverters; returns the command id."""
        wifi = [self._authorized(sn).wifi_sn for sn in sns]
        now = self.clock()
        command = Command(
            id=self.new_id(),
            target=target,
            wifi_sns=wifi,
            request=request,
            created=now,
            dispatch_at=now + self.timings.task_delay,
            results_at=now + self.timings.result_delay,
        )
        self.commands[command.id] = command
        return command.id

    def control_group(self, group_id: str, request: ControlRequest) -> str:
        self._group(group_id)
        sns = [i.inverter_sn for i in self.group_members(group_id)]
        return self.control(f"group:{group_id}", sns, request)

    def query_command(self, command_id: str) -> str | None:
        """The task id once the dispatch delay has passed, else None."""
        command = self.commands.get(command_id)
        if command is None:
            raise Rejected(f"Command {command_id} does not exist")
        if command.task_id is None and self.clock() >= command.dispatch_at:
            command.task_id = self._task_id()
            self.tasks[command.task_id] = command.id
        return command.task_id

    def query_result(self, task_id: str) -> dict[str, str] | None:
        """Per-dongle status once results are in: "success", or "null" for a device that never answered."""
        command_id = self.tasks.get(task_id)
        if command_id is None:
            raise Rejected(f"Task {task_id} does not exist")
        command = self.commands[command_id]
        if self.clock() < command.results_at:
            return None
        return {w: "success" if self.devices[w].online else "null" for w in command.wifi_sns}

    # ---- binding --------------------------------------------------------------------------------

    def bind(self, sns: list[str]) -> dict[str, list[str]]:
        """Bind dongles to the account; the answer sorts each sn into one of four lists."""
        out: dict[str, list[str]] = {"Binding success": [], "Have bound sn": [], "Non-existent sn": []}
        for sn in sns:
            device = self.devices.get(sn)
            if device is None:
                out["Non-existent sn"].append(sn)
            elif device.bound:
                out["Have bound sn"].append(sn)
            else:
                device.bound = True
                out["Binding success"].append(sn)
        return out
