"""An MQTT command is acknowledged to the broker only once the journal holds it (a crash between the two
would otherwise lose an accepted command: the broker forgets it, the journal never had it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable

from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.broker import Mosquitto, Probe


async def test_every_ack_follows_the_commit_of_its_command(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """At the n-th PUBACK the journal file, read by another connection, already holds n commands."""
    service = await make_bridge()
    assert service.link is not None
    client = service.link._client
    path = service.config.journal.path
    committed_at_ack: list[int] = []
    original = client.ack

    def ack(mid: int, qos: int) -> object:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            committed_at_ack.append(int(db.execute("SELECT COUNT(*) FROM commands").fetchone()[0]))
        return original(mid, qos)

    client.ack = ack  # type: ignore[method-assign]
    groups = [g.id for g in sim.simulator.state.list_groups()]
    with Probe(broker.port) as probe:
        for n in range(40):
            probe.publish(f"vpp/group/{groups[n % 2]}/set", {"type": "manual", "action": "stop", "request_id": f"a{n}"})
        await probe.wait_for(lambda: len(committed_at_ack) >= 40)
    assert all(count >= n for n, count in enumerate(committed_at_ack, start=1)), committed_at_ack
