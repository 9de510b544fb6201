"""One configuration for the fleet (`fleet.py`): bridges sharing one journal must match, a bridge that does not
refuses to start beside a live one (exit 2, naming the difference and the fix), and a restart after a crash is
not mistaken for a rival."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from semookii_bridge.config import BridgeConfig, MqttConfig
from semookii_bridge.ha.fleet import SETTINGS, LinkWatch, Member, admit, conflict, conflicts, differing, fingerprint
from semookii_bridge.simulator import RunningSimulator

from .support.broker import Mosquitto, Probe
from .support.standby import Bridges, role

HA = fingerprint(BridgeConfig())


def member(instance: str, name: str = "", *, ha: bool = True, joined: float = 1.0, seen: float = 1.0,
           broker_ok: bool = True, api_ok: bool = True, **changed: object) -> Member:  # fmt: skip
    return Member(instance, name or instance, ha, {**HA, **changed}, joined, seen, broker_ok, api_ok)


def test_the_fingerprint_has_every_safety_setting() -> None:
    """Every listed setting is in the fingerprint, with the configuration's value."""
    cfg = BridgeConfig(mqtt=MqttConfig(prefix="site1"))
    assert set(fingerprint(cfg)) == set(SETTINGS) and fingerprint(cfg)["mqtt.prefix"] == "site1"


def test_a_difference_names_each_key_and_both_values() -> None:
    """The refusal names the differing keys with both values, and nothing else."""
    diff = differing({**HA, "mqtt.prefix": "a", "rate_limit.rate": 2.5}, {**HA, "mqtt.prefix": "b"})
    assert diff == ["mqtt.prefix (here 'a', there 'b')", "rate_limit.rate (here 2.5, there 0.16)"]


@pytest.mark.parametrize(
    ("me", "other", "message"),
    [
        (member("x", ha=False), member("y"),
         "journal.url is used by the hot standby of bridge 'y': enable [ha] here with the same settings to join it, "
         "or give this bridge its own database (two bridges without [ha] on one journal would both send every "
         "command)"),
        (member("x"), member("y", ha=False),
         "journal.url is used by bridge 'y' without [ha], which writes without a fence: enable [ha] on every bridge "
         "of this journal, or give this bridge its own database"),
        (member("x", "same"), member("y", "same"),
         "another live bridge uses ha.name 'same': give each bridge its own ha.name (empty: <host>-<pid>)"),
        (member("x", ha=False), member("y", ha=False),
         "journal.url is used by bridge 'y' without [ha]: two bridges on one journal need [ha] (a hot standby), or "
         "each its own database"),
        (member("x", **{"management.read_only": True, "mqtt.prefix": "a"}), member("y"),
         "settings differ from the live bridge 'y': management.read_only (here True, there False); mqtt.prefix "
         "(here 'a', there 'vpp'). Give every bridge of a hot standby the same configuration "
         "(docs/high-availability.md)"),
    ],
)
def test_each_kind_of_mismatch_is_refused_with_what_to_do(me: Member, other: Member, message: str) -> None:
    """[ha] on one side only, a duplicate ha.name, two bridges without [ha], differing settings: each refusal
    word for word (it is what the operator reads when `run` exits 2)."""
    assert conflict(me, other) == message


def test_a_setting_only_one_side_has_is_a_difference() -> None:
    """A key one bridge does not know (an older version) differs from any value the other has."""
    assert differing({"a": 1}, {}) == ["a (here 1, there None)"]


def test_matching_bridges_may_run_together() -> None:
    """Same settings, own names, both with [ha]: no conflict."""
    assert conflict(member("x"), member("y")) is None


def test_of_two_that_started_together_the_later_gives_way() -> None:
    """The bridge that registered first is not refused because of one that came later."""
    first, later = member("x", joined=1.0, **{"mqtt.prefix": "p"}), member("y", joined=2.0)
    assert conflicts(first, [first, later]) == {} and list(conflicts(later, [first, later])) == ["x"]


def answers(*rounds: list[Member]) -> Callable[[], Awaitable[list[Member]]]:
    """A `live()` that answers the given rounds, then the last one again."""
    it = itertools.chain(rounds, itertools.repeat(rounds[-1]))

    async def live() -> list[Member]:
        return next(it)

    return live


async def test_a_crashed_predecessor_is_waited_out_not_refused() -> None:
    """A conflicting bridge whose heartbeat does not move (killed, its row not yet stale) admits the newcomer
    once it drops out of the live window."""
    dead = member("old", seen=5.0, **{"mqtt.prefix": "p"})
    assert await admit(member("new", joined=float("inf")), answers([dead], [dead], []), 0.4) is None


async def test_a_live_rival_is_refused_as_soon_as_its_heartbeat_moves() -> None:
    """A conflicting bridge whose heartbeat moves while the newcomer watches: refused, with the reason."""
    rival = member("old", **{"mqtt.prefix": "p"})
    later = member("old", seen=2.0, **{"mqtt.prefix": "p"})
    reason = await admit(member("new", joined=float("inf")), answers([rival], [later]), 5.0)
    assert reason is not None and "mqtt.prefix" in reason


async def test_a_rival_is_watched_until_its_heartbeat_moves_within_the_window() -> None:
    """The rival's heartbeat moves only at the third look (polls every window/8): refused, well inside the window."""
    rival, later = member("old", **{"mqtt.prefix": "p"}), member("old", seen=2.0, **{"mqtt.prefix": "p"})
    live = answers([rival], [rival], [rival], [later])
    reason = await asyncio.wait_for(admit(member("new", joined=float("inf")), live, 1.0), 0.9)
    assert reason is not None and "mqtt.prefix" in reason


async def test_a_rival_whose_heartbeat_never_moves_is_given_up_at_the_windows_end() -> None:
    """A conflicting row that stays but never moves is a crashed predecessor: admitted once the window has passed,
    not before."""
    stale = member("old", **{"mqtt.prefix": "p"})
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await asyncio.wait_for(admit(member("new", joined=float("inf")), answers([stale]), 0.4), 2.0) is None
    assert loop.time() - start >= 0.4


async def test_a_bridge_known_to_be_gone_is_not_waited_for() -> None:
    """`dead` says the conflicting bridge's process has ended: admitted at once, without watching it."""
    gone = member("old", **{"mqtt.prefix": "p"})
    reason = await asyncio.wait_for(
        admit(member("new", joined=float("inf")), answers([gone]), 60.0, dead=lambda m: m.instance == "old"), 1.0
    )
    assert reason is None


async def refused(bridges: Bridges, name: str, env: dict[str, str]) -> str:
    """Start `name` with `env` beside the running leader; it must exit 2 within 20 s: its last line."""
    bridges.start(name, env=env)
    assert await bridges.exit_code(name, 20) == 2
    return (bridges.tmp_path / f"{name}.log").read_text().strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"SEMOOKII_BRIDGE_MQTT_PREFIX": "other"}, "mqtt.prefix (here 'other', there 'vpp')"),
        ({"SEMOOKII_BRIDGE_RATE_LIMIT_RATE": "40"}, "rate_limit.rate (here 40.0, there 20.0)"),
        ({"SEMOOKII_BRIDGE_HA_ENABLED": "false"}, "enable [ha] here"),
        ({"SEMOOKII_BRIDGE_HA_NAME": "a"}, "another live bridge uses ha.name 'a'"),
    ],
)
async def test_a_bridge_that_does_not_match_the_running_one_refuses_to_start(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str, env: dict[str, str], words: str
) -> None:
    """Another prefix, a higher rate, no [ha], the leader's own ha.name: the newcomer exits 2 naming the
    difference, and the running leader keeps leading and serving commands."""
    group = sim.simulator.state.add_group("fleet")
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a")
            line = await refused(bridges, "b", env)
            probe.publish(f"vpp/group/{group}/set", {"type": "power_control", "active_power": 5, "duration": 60, "timeout": 10,
                                                                "request_id": "f1"})
            await probe.wait_status(f"vpp/group/{group}/state", "f1", "completed", timeout=20)
            assert role(probe, "a") == "leader"
    finally:
        bridges.kill()
    assert words in line, line


async def test_a_leader_restarted_after_kill_9_with_its_own_name_joins_again(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """The supervisor restarts a killed leader with the same ha.name while its registration is still fresh: it is
    not taken for a duplicate (it sees that process has ended, or waits its registration out) and comes back as a
    standby."""
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b")
            bridges.procs["a"].kill()
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
            bridges.start("a")
            await probe.wait_for(lambda: role(probe, "a") == "standby", timeout=30)
            await asyncio.sleep(2.0)
            assert bridges.procs["a"].poll() is None
    finally:
        bridges.kill()


async def test_a_bridge_taking_over_from_a_differently_configured_one_says_so(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """The only bridge dies (kill -9); once it is gone, a bridge with a higher rate leads, and logs which
    settings differ from the one before it."""
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a")
            bridges.procs["a"].kill()
            await asyncio.sleep(3 * 2.0 + 0.5)  # the fleet window of a 2 s lease
            bridges.start("b", env={"SEMOOKII_BRIDGE_RATE_LIMIT_RATE": "40"})
            await probe.wait_for(lambda: role(probe, "b") == "leader", timeout=20)
    finally:
        bridges.kill()
    log = (tmp_path / "b.log").read_text()
    assert 'fleet_settings_changed since_bridge=a keys="rate_limit.rate (here 40.0, there 20.0)"' in log, log


def test_a_leader_hands_over_only_after_grace_and_tenure_and_to_a_healthy_standby() -> None:
    """The link must be down for `grace`, the leader must have led for `tenure`, and another bridge of the hot
    standby must report both links up; a link that comes back resets the count."""
    watch = LinkWatch(grace=2.0, tenure=10.0)
    down, healthy, sick = member("me", broker_ok=False), member("b"), member("c", api_ok=False)
    assert watch.verdict(20.0, 0.0, down, [down, healthy]) is None  # down just now
    assert watch.verdict(21.0, 0.0, down, [down, healthy]) is None  # 1 s < grace
    reason = watch.verdict(22.5, 0.0, down, [down, healthy])
    assert reason is not None and "broker link has been down for 2.5 s" in reason and "'b'" in reason
    assert watch.verdict(22.5, 0.0, down, [down, sick]) is None  # nobody better to hand over to
    assert watch.verdict(22.5, 15.0, down, [down, healthy]) is None  # led for 7.5 s < tenure
    assert watch.verdict(23.0, 0.0, member("me"), [healthy]) is None and watch.down_since is None


def test_a_hand_over_comes_at_exactly_grace_and_tenure_and_names_the_api_link() -> None:
    """Down for exactly `grace` after leading exactly `tenure`: hand over, naming the link that is down."""
    watch = LinkWatch(grace=2.0, tenure=10.0)
    down, healthy = member("me", api_ok=False), member("b")
    assert watch.verdict(20.0, 12.0, down, [down, healthy]) is None
    assert watch.verdict(22.0, 12.0, down, [down, healthy]) == (
        "its API link has been down for 2.0 s and bridge 'b' has both links up"
    )


async def test_the_leader_clears_the_presence_of_bridges_that_are_gone(
    tmp_path: Path, broker: Mosquitto, sim: RunningSimulator, pg_url: str
) -> None:
    """A standby is killed (its will leaves a retained `offline`); once its registration is stale the leader
    clears its retained instance topic, so restarts under new names do not pile up topics."""
    bridges = Bridges(tmp_path, broker, sim, pg_url)
    try:
        with Probe(broker.port) as probe:
            await bridges.up(probe, "a", "b")
            bridges.procs["b"].kill()
            await probe.wait_for(lambda: role(probe, "b") == "offline", timeout=20)
            await probe.wait_for(lambda: probe.on("vpp/bridge/instance/b/state")[-1].payload == b"", timeout=20)
        with Probe(broker.port) as fresh:
            await asyncio.sleep(1.0)
            retained = [m.topic for m in fresh.messages if m.topic.startswith("vpp/bridge/instance/")]
    finally:
        bridges.kill()
    assert retained == ["vpp/bridge/instance/a/state"]
    assert "ha_presence_cleared names=b" in (tmp_path / "a.log").read_text()


class QuietDb:
    """The registrations' store, answering at once; it records when each heartbeat registered."""

    def __init__(self) -> None:
        self.registered: list[float] = []

    async def register(self, me: Member) -> float:
        self.registered.append(asyncio.get_running_loop().time())
        return 1.0

    async def members(self, span: float) -> list[Member]:
        return []


class FlippingLinks:
    """Links that are up until `down` is set (a control call timed out: the API is held)."""

    def __init__(self) -> None:
        self.down = False

    def looks_down(self) -> bool:
        return self.down

    async def check(self) -> tuple[bool, bool]:
        return True, not self.down


async def test_a_link_going_down_is_checked_within_half_a_second_not_a_quarter_window() -> None:
    """With a 9 s window (lease 3 s) heartbeats come every 2.25 s; when the API is held they come every 0.5 s,
    the first within 0.6 s of the change, so a hand-over follows `ha.link_grace` closely."""
    from semookii_bridge.ha.membership import Heartbeat

    db, links = QuietDb(), FlippingLinks()
    beat = Heartbeat(db, member("a"), 9.0, links, LinkWatch(grace=2.0, tenure=10.0), lambda: None,  # type: ignore[arg-type]
                     lambda reason, code: None)  # fmt: skip
    task = asyncio.ensure_future(beat.run())
    await asyncio.sleep(2.4)
    assert len(db.registered) == 1
    links.down = True
    flipped = asyncio.get_running_loop().time()
    await asyncio.sleep(1.7)
    task.cancel()
    after = [t - flipped for t in db.registered if t > flipped]
    assert after and after[0] < 0.6 and len(after) >= 3, after
