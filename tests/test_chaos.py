"""Chaos: SIGKILL the bridge at random points while 1,000 commands flow, five times over.

Afterwards every request_id has exactly one terminal status (a state may be announced twice after a
crash, never two different ones) and no command was executed twice (counted at the simulator).
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from pathlib import Path

from semookii_bridge.simulator import RunningSimulator

from .support.bridges import sigkill_config, start_bridge
from .support.broker import Mosquitto, Probe
from .support.states import TERMINAL

GROUPS = 50
ROUNDS = 20
KILLS = 5


async def test_sigkill_five_times_during_a_thousand_commands(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """Nothing lost, nothing executed twice, one terminal status per request_id."""
    rng = random.Random(20261125)
    state = sim.simulator.state
    state.timings.task_delay, state.timings.result_delay = 0.05, 0.15
    groups = [state.add_group(f"chaos-{i}") for i in range(GROUPS)]
    config = tmp_path / "bridge.toml"
    sigkill_config(config, broker, sim, tmp_path / "journal.db", rate=0, track_results_for=60)
    rids = [f"c-{n}-{g}" for n in range(ROUNDS) for g in groups]
    bridge = start_bridge(config)
    kills = 0
    progress: list[int] = []
    with Probe(broker.port, subscribe=["vpp/+/+/state", "vpp/bridge/state"]) as probe:
        # The bridge's session must exist before the flood; the broker keeps commands only for known sessions.
        await probe.wait_for(lambda: [m for m in probe.on("vpp/bridge/state") if m.json()["state"] == "online"])

        def publish_all() -> None:
            for n in range(ROUNDS):
                for g in groups:
                    probe.publish(f"vpp/group/{g}/set", {"type": "power_control", "active_power": n, "duration": 60,
                                                         "timeout": 1, "request_id": f"c-{n}-{g}"})  # fmt: skip

        def ended() -> int:
            return sum(1 for m in probe.messages if m.topic != "vpp/bridge/state" and m.json()["status"] in TERMINAL)

        publishing = asyncio.create_task(asyncio.to_thread(publish_all))
        try:
            while kills < KILLS:
                if kills == 0:  # mid-flood, however fast the bridge works through it
                    first = rng.randint(20, 300)
                    await probe.wait_for(lambda: ended() >= first, timeout=30)  # noqa: B023
                else:
                    await asyncio.sleep(rng.uniform(0.3, 1.0))
                progress.append(ended())
                bridge.send_signal(signal.SIGKILL)
                bridge.wait(5)
                kills += 1
                bridge = start_bridge(config)
            await publishing

            def finals() -> dict[str, set[str]]:
                seen: dict[str, set[str]] = {}
                for m in probe.messages:
                    if m.topic == "vpp/bridge/state":
                        continue
                    doc = m.json()
                    if doc["status"] in TERMINAL:
                        seen.setdefault(doc["request_id"], set()).add(doc["status"])
                return seen

            await probe.wait_for(lambda: len(finals()) == len(rids), timeout=120)
            result = finals()
        finally:
            bridge.kill()
            bridge.wait(5)
    assert kills == KILLS
    assert all(len(result[r]) == 1 for r in rids), {r: s for r, s in result.items() if len(s) > 1}
    statuses = Counter(next(iter(result[r])) for r in rids)
    assert set(statuses) <= {"completed", "superseded", "failed"}, statuses
    executed = Counter(
        (c.params["groupId"], c.params["activePower"]) for c in sim.simulator.calls_to("/commandapi/groupControl")
    )
    assert max(executed.values()) == 1
    for g in groups:
        # Nothing newer can supersede a group's last command: it ran (completed), or was on the wire at a kill.
        assert result[f"c-{ROUNDS - 1}-{g}"] <= {"completed", "failed"}, (g, result[f"c-{ROUNDS - 1}-{g}"])
    # A group ends with no completed command only if a command of it was on the wire at a kill (`failed`).
    assert statuses["completed"] >= GROUPS - statuses["failed"], statuses
    assert progress[0] < len(rids) // 2, "the first kill came after most of the work was done"
