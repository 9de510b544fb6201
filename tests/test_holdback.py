"""What a new leader holds after a takeover (`holdback.py`): the old leader's targets in flight and what overlaps
them, until the wire bound has passed."""

from __future__ import annotations

from semookii_bridge.control.commands import Manual
from semookii_bridge.control.jobs import Job
from semookii_bridge.ha.holdback import Holdback
from semookii_bridge.interface.topics import Target


def job(kind: str, ident: str, sns: tuple[str, ...] | None = None) -> Job:
    return Job(request_id=f"{kind}-{ident}", target=Target(kind, ident), command=Manual(action="stop"), sns=sns,
               received_at=0.0, deadline=60.0)  # type: ignore[arg-type]  # fmt: skip


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_same_target_waits_until_the_bound_and_then_goes() -> None:
    """A held group waits the rest of the bound, then nothing is held."""
    clock = Clock()
    holdback = Holdback(clock)
    holdback.hold(job("group", "1"), 3.0)
    clock.now = 1.0
    assert holdback.left(job("group", "1")) == 2.0 and holdback.held == 1
    clock.now = 3.0
    assert holdback.left(job("group", "1")) == 0.0 and holdback.held == 0


def test_an_inverter_in_flight_holds_its_batches_and_every_group_but_not_other_inverters() -> None:
    """A held inverter holds itself, batches containing it and every group (members unknown), not others."""
    holdback = Holdback(Clock())
    holdback.hold(job("inverter", "A"), 3.0)
    assert holdback.left(job("inverter", "A")) == 3.0
    assert holdback.left(job("batch", "x", ("B", "A"))) == 3.0
    assert holdback.left(job("group", "7")) == 3.0
    assert holdback.left(job("inverter", "B")) == 0.0
    assert holdback.left(job("batch", "y", ("B", "C"))) == 0.0


def test_a_group_in_flight_holds_every_inverter_command_but_not_other_groups() -> None:
    """A held group holds inverter and batch commands (they may be its members), not another group."""
    holdback = Holdback(Clock())
    holdback.hold(job("group", "1"), 3.0)
    assert holdback.left(job("inverter", "A")) == 3.0
    assert holdback.left(job("batch", "x", ("B",))) == 3.0
    assert holdback.left(job("group", "2")) == 0.0


def test_nothing_is_held_without_a_takeover() -> None:
    """A fresh holdback holds nothing."""
    assert Holdback(Clock()).left(job("group", "1")) == 0.0
