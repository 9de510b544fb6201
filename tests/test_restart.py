"""A restart is not a reset, with real processes: the bridge is killed and restarted under the vendor's ban
rule, and its wall clock is stepped by hours between runs (libfaketime, Debian's `faketime`)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from semookii_bridge.simulator import RunningSimulator

from .support.bridges import online, restart_config, start_bridge, vendor
from .support.broker import Mosquitto, Probe
from .support.postgres import Postgres
from .support.relay import Relay
from .support.states import journal_statuses, terminal_states

CONTROL = "/commandapi/groupControl"






def start(config: Path, *, wall_offset_file: Path | None = None) -> subprocess.Popen[bytes]:
    """`semookii-bridge run` at INFO (the tests read its lines)."""
    return start_bridge(config, "INFO", wall_offset_file=wall_offset_file)


def stop(bridge: subprocess.Popen[bytes], how: signal.Signals) -> None:
    bridge.send_signal(how)
    bridge.wait(10)






async def test_restarts_after_bursts_get_no_token_banned(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """The vendor allows 1 call/s with a burst of 3 and bans after one over-limit call; 8 setpoints are
    published, the bridge is killed (SIGKILL, then SIGTERM, alternately) after each call it makes and
    restarted 0.3 s later: every command is sent once, no call is refused, nobody is banned."""
    vendor(sim, rate=1.0, burst=3, ban_after=1, ban_for=95.0)
    groups = [sim.simulator.state.add_group(f"r{i}") for i in range(8)]
    config = tmp_path / "bridge.toml"
    restart_config(config, broker, sim, rate=1.0, burst=3)
    bridge = start(config)
    try:
        with Probe(broker.port) as probe:
            await online(probe)
            for g in groups:
                probe.publish(f"vpp/group/{g}/set", {"type": "power_control", "active_power": 100, "duration": 60,
                                                     "timeout": 10, "ttl": 120, "request_id": f"r-{g}"})  # fmt: skip
            for n in range(6):
                calls = len(sim.simulator.calls_to(CONTROL))
                await probe.wait_for(lambda c=calls: len(sim.simulator.calls_to(CONTROL)) > c, timeout=15)  # type: ignore[misc]
                stop(bridge, signal.SIGKILL if n % 2 == 0 else signal.SIGTERM)
                await asyncio.sleep(0.3)
                bridge = start(config)
            await probe.wait_for(lambda: len(terminal_states(probe)) >= len(groups), timeout=60)
            finals = terminal_states(probe)
    finally:
        bridge.kill()
        bridge.wait(5)
    refused = [c for c in sim.simulator.calls if c.outcome in ("rate_limited", "banned")]
    assert sim.simulator.bans == 0 and refused == []
    sent = [c.params["groupId"] for c in sim.simulator.calls_to(CONTROL)]
    assert len(sent) == len(set(sent)) and all(len(v) == 1 for v in finals.values()), finals


async def test_deadlines_hold_when_the_wall_clock_steps_back_between_runs(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Wall clock 1 h ahead, 2 setpoints with ttl 4 s wait for a token, SIGKILL, the clock steps back 1 h,
    6 s later the bridge restarts: both end `expired`, none is sent."""
    offset = tmp_path / "wall-offset"
    offset.write_text("+1h\n")
    blocker, *waiting = [sim.simulator.state.add_group(f"d{i}") for i in range(3)]
    config = tmp_path / "bridge.toml"
    restart_config(config, broker, sim, rate=0.02, burst=1)
    bridge = start(config, wall_offset_file=offset)
    try:
        with Probe(broker.port) as probe:
            await online(probe)
            probe.publish(f"vpp/group/{blocker}/set", {"type": "manual", "action": "stop", "request_id": "blocker"})
            await probe.wait_for(lambda: len(sim.simulator.calls_to(CONTROL)) == 1)
            for g in waiting:
                probe.publish(f"vpp/group/{g}/set", {"type": "power_control", "active_power": 5, "duration": 60,
                                                     "timeout": 10, "ttl": 4, "request_id": f"ttl-{g}"})  # fmt: skip
            rids = [f"ttl-{g}" for g in waiting]
            await probe.wait_for(lambda: all(journal_statuses(tmp_path / "journal.db").get(r) == "queued"
                                             for r in rids))  # fmt: skip
            stop(bridge, signal.SIGKILL)
            offset.write_text("+0\n")
            await asyncio.sleep(6)
            bridge = start(config, wall_offset_file=offset)
            await probe.wait_for(lambda: all(r in terminal_states(probe) for r in rids), timeout=20)
            finals = terminal_states(probe)
    finally:
        bridge.kill()
        bridge.wait(5)
    assert [finals[r] for r in rids] == [["expired"], ["expired"]]
    assert len(sim.simulator.calls_to(CONTROL)) == 1


async def test_a_request_id_is_not_sent_twice_after_a_forward_jump_and_a_restart(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """`once-only` completes, the wall clock jumps 2 h (dedup window 60 s), SIGTERM, restart, the same
    request_id again: one call, and the repeat is answered `duplicate`."""
    offset = tmp_path / "wall-offset"
    offset.write_text("+0\n")
    group = sim.simulator.state.list_groups()[0].id
    config = tmp_path / "bridge.toml"
    restart_config(config, broker, sim, rate=0, burst=1, dedup_window=60)
    command = {"type": "manual", "action": "stop", "request_id": "once-only"}
    topic = f"vpp/group/{group}/state"
    bridge = start(config, wall_offset_file=offset)
    try:
        with Probe(broker.port) as probe:
            await online(probe)
            probe.publish(f"vpp/group/{group}/set", command)
            await probe.wait_status(topic, "once-only", "completed")
            offset.write_text("+2h\n")
            stop(bridge, signal.SIGTERM)
            bridge = start(config, wall_offset_file=offset)
            await asyncio.sleep(1.0)
            probe.publish(f"vpp/group/{group}/set", command)
            await probe.wait_for(lambda: any(s.get("duplicate") for s in probe.states(topic, "once-only")))
    finally:
        bridge.kill()
        bridge.wait(5)
    assert len(sim.simulator.calls_to(CONTROL)) == 1


async def test_a_restart_after_management_calls_does_not_start_from_a_full_bucket(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, postgres_server: Postgres, pg_url: str
) -> None:
    """No daily quota, so only the rate limit, and a slow journal (PostgreSQL 0.2 s away): the vendor allows
    a call per 5 s with a burst of 3 and bans after one over-limit call; the bridge is set to half that rate.
    Three group lists empty the bucket, the bridge is killed (SIGKILL) right after the third call reaches the
    API and restarted at once, two more lists follow: none is refused, nobody is banned (the bucket's state is
    on record before each call leaves, not only before control calls, which journal `sending` anyway)."""
    vendor(sim, rate=0.2, burst=3, ban_after=1, ban_for=95.0)
    relay = await Relay(postgres_server.port).start()
    relay.delay = 0.1
    config = tmp_path / "bridge.toml"
    restart_config(config, broker, sim, rate=0.1, burst=3)  # half the vendor's rate: a margin, as operators set it
    slow = pg_url.replace(f":{postgres_server.port}/", f":{relay.port}/")
    config.write_text(config.read_text().replace("[journal]\n", f'[journal]\nurl = "{slow}"\n'))
    lists = "/vppgroup/findAll"
    bridge = start(config)
    try:
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: probe.on("vpp/bridge/state"), timeout=60)
            for n in range(3):
                probe.publish("vpp/bridge/request/group/list", {"transaction": f"t{n}"})
            await probe.wait_for(lambda: len(sim.simulator.calls_to(lists)) >= 3, timeout=15)
            stop(bridge, signal.SIGKILL)
            bridge = start(config)
            for n in range(3, 5):
                probe.publish("vpp/bridge/request/group/list", {"transaction": f"t{n}"})
            await probe.wait_for(lambda: len(sim.simulator.calls_to(lists)) >= 5, timeout=40)
    finally:
        bridge.kill()
        bridge.wait(5)
        await relay.close()
    refused = [c for c in sim.simulator.calls if c.outcome in ("rate_limited", "banned")]
    assert sim.simulator.bans == 0 and refused == []
