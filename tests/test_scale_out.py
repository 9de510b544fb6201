"""Several bridge instances on one broker: shared subscriptions, one owner per target, a share of the limit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from semookii_bridge.config import BridgeConfig, ClusterConfig
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator
from semookii_bridge.topics import ControlRoute, Target, Topics, owner_of

from .broker import Mosquitto, Probe
from .test_ratelimit import max_in_window

TERMINAL = {"completed", "rejected", "superseded", "expired", "failed", "unknown"}


def test_each_instance_gets_its_share_and_its_own_identity() -> None:
    """Rate, burst and quota are divided; client id and journal get the instance's index."""
    config = BridgeConfig(cluster=ClusterConfig(instances=3, index=2))
    mine = config.for_instance()
    assert mine.rate_limit.rate == config.rate_limit.rate / 3 and mine.rate_limit.burst == 1
    assert mine.mqtt.client_id == "semookii-bridge-2" and mine.journal.path == "semookii-bridge-2.db"
    assert mine.mqtt.shared_group == "semookii"


def test_ownership_is_stable_and_covers_every_instance() -> None:
    """crc32 ownership gives the same owner in every process and spreads targets over all instances."""
    owners = Counter(owner_of(Target("group", str(10**18 + i)), 3) for i in range(300))
    assert set(owners) == {0, 1, 2} and min(owners.values()) > 60
    assert owner_of(Target("group", "1028902640000737745"), 3) == owner_of(Target("group", "1028902640000737745"), 3)


def test_forward_topics_round_trip() -> None:
    """A command forwarded to instance 1 parses, on instance 1 only, as the original target."""
    topics = Topics("vpp", "g", instance=1)
    forwarded = topics.forward(1, "vpp/group/42/set")
    assert forwarded == "vpp/bridge/instance/1/fwd/group/42/set"
    assert topics.parse(forwarded) == ControlRoute(Target("group", "42"), forwarded=True)
    assert Topics("vpp", "g", instance=0).parse(forwarded) is None
    assert "vpp/bridge/instance/1/fwd/#" in topics.subscriptions()


async def test_three_instances_share_the_work_and_latest_wins_holds(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """300 setpoints on 30 groups over 3 instances: each group owned by one instance, all instances busy,
    newest setpoint last for every group, one terminal state per command, the combined limit kept."""
    state = sim.simulator.state
    groups = [state.add_group(f"s{i}") for i in range(30)]
    rate, burst, rounds = 30.0, 6, 10
    services = [
        await make_bridge(cluster={"instances": 3, "index": i}, rate_limit={"rate": rate, "burst": burst},
                          commands={"poll_initial": 0.3, "poll_max": 1}, mqtt={"shared_group": "vpp-test"})
        for i in range(3)
    ]  # fmt: skip
    with Probe(broker.port) as probe:
        for n in range(rounds):
            for g in groups:
                probe.publish(f"vpp/group/{g}/set", {"type": "power_control", "active_power": n, "duration": 60,
                                                     "timeout": 1, "request_id": f"{g}-{n}"})  # fmt: skip
        for g in groups:
            await probe.wait_status(f"vpp/group/{g}/state", f"{g}-{rounds - 1}", "completed", timeout=60)
        finals: dict[str, list[str]] = {}
        for g in groups:
            for s in probe.states(f"vpp/group/{g}/state"):
                if s["status"] in TERMINAL:
                    finals.setdefault(s["request_id"], []).append(s["status"])
    assert len(finals) == len(groups) * rounds and all(len(v) == 1 for v in finals.values())
    owners: dict[str, set[int]] = {}
    for index, service in enumerate(services):
        assert service.journal is not None
        rows = service.journal._db.execute("SELECT target_id FROM commands").fetchall()
        assert rows, f"instance {index} did no work"
        for (target_id,) in rows:
            owners.setdefault(target_id, set()).add(index)
    assert all(len(v) == 1 for v in owners.values()), "a group was handled by two instances"
    sent: dict[str, list[int]] = {}
    for call in sim.simulator.calls_to("/commandapi/groupControl"):
        sent.setdefault(call.params["groupId"], []).append(int(call.params["activePower"]))
    assert all(v == sorted(v) and v[-1] == rounds - 1 for v in sent.values())
    arrivals = sorted(c.ts for c in sim.simulator.calls)
    per_instance_burst = sum(s.config.rate_limit.burst for s in services)
    assert max_in_window(arrivals, 1.0) <= per_instance_burst + rate * 1.0
