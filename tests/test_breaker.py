"""After a control call times out, no further control call leaves until the API answers (`breaker.py`): a
middlebox that accepts and holds requests can deliver at most `max_in_flight` late control calls at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

from semookii_bridge.api.endpoints import GROUP_CONTROL, GROUP_FIND_ALL
from semookii_bridge.budget.breaker import Breaker

from .support.bridges import TOKEN, write_config
from .support.broker import Mosquitto, Probe
from .support.relay import Relay
from .support.states import TERMINAL, terminal_states

CONTROL = "/commandapi/groupControl"


def start(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`semookii-bridge run` as a process, logging beside its configuration."""
    return subprocess.Popen([sys.executable, "-m", "semookii_bridge.cli", "run", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=(config.parent / "bridge.log").open("ab"))  # fmt: skip


def test_a_control_timeout_opens_and_any_answer_closes() -> None:
    """A control call's timeout opens the breaker; a management call's timeout does not; any HTTP answer closes."""
    breaker = Breaker()
    breaker.observe(GROUP_FIND_ALL, "timeout")
    assert not breaker.open
    breaker.observe(GROUP_CONTROL, "connect_error")
    assert not breaker.open, "a request that never left cannot arrive late"
    breaker.observe(GROUP_CONTROL, "timeout")
    assert breaker.open and breaker.trips == 1
    breaker.observe(GROUP_FIND_ALL, "500")
    assert not breaker.open


async def test_a_call_given_up_by_its_caller_is_no_answer(sim: object) -> None:
    """A poll cancelled by its window while the API holds it reports `cancelled`, which leaves an open breaker
    open: only an answer proves the API answers (bench/failover.py's API cut saw polls close it at once)."""
    from semookii_bridge.api import CloudClient, RetryPolicy
    from semookii_bridge.config.secret import Secret
    from semookii_bridge.simulator import Fault, RunningSimulator

    assert isinstance(sim, RunningSimulator)
    breaker, seen = Breaker(), list[str]()
    breaker.observe(GROUP_CONTROL, "timeout")

    def observe(endpoint: object, outcome: str, elapsed: float) -> None:
        seen.append(outcome)
        breaker.observe(endpoint, outcome)  # type: ignore[arg-type]

    sim.simulator.inject(Fault("slow", path="/commandapi/queryCommand", delay=5.0))
    async with CloudClient(sim.base_url, Secret(TOKEN), retry=RetryPolicy.instant(), observer=observe) as client:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.query_command("501"), 0.3)
    assert seen == ["cancelled"] and breaker.open


async def test_a_holding_middlebox_gets_no_pile_of_control_calls(
    tmp_path: Path, broker: Mosquitto, sim: object
) -> None:
    """The path to the API accepts and holds every request for 6 s while 10 groups get setpoints (1 s API
    timeout, max_in_flight 2): at most 2 control calls are held and delivered late together (not 10), and once
    the API answers again the rest go out and every command ends."""
    from semookii_bridge.simulator import RunningSimulator

    assert isinstance(sim, RunningSimulator)
    groups = [sim.simulator.state.add_group(f"mb{i}") for i in range(10)]
    relay = await Relay(int(sim.base_url.rsplit(":", 1)[1])).start()
    config = tmp_path / "bridge.toml"
    write_config(config, broker, sim, "bridge-breaker", api={"timeout": 1.0},
                 rate_limit={"rate": 20, "burst": 5, "max_in_flight": 2}, commands={"merge": False, "track": "accepted"},
                 journal={"path": tmp_path / "j.db"}, http={"enabled": False})
    env = {**os.environ, "SEMOOKII_TOKEN": TOKEN, "SEMOOKII_BRIDGE_API_BASE_URL": f"http://127.0.0.1:{relay.port}"}
    proc = start(config, env)
    try:
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: probe.on("vpp/bridge/state"), timeout=20)
            relay.hold()
            for i, group in enumerate(groups):
                probe.publish(f"vpp/group/{group}/set", {"type": "power_control", "active_power": i, "duration": 60,
                                                         "timeout": 10, "request_id": f"m{i}"})  # fmt: skip
            await asyncio.sleep(6.0)
            late = [data for _, data in relay._held if b"groupControl" in data]
            relay.release()
            await probe.wait_for(lambda: all(f"m{i}" in terminal_states(probe) for i in range(10)), timeout=60)
            finals = terminal_states(probe)
    finally:
        proc.kill()
        proc.wait(10)
        await relay.close()
    assert len(late) <= 2, f"{len(late)} control calls were held and delivered late together"
    assert all(v[-1] in TERMINAL for v in finals.values())
    assert sum(v[-1] == "completed" for v in finals.values()) >= 8
    assert "api_held" in (tmp_path / "bridge.log").read_text()
