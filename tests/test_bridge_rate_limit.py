"""Rate limit and latest-wins through mosquitto, the bridge and the simulator, counted at the simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from semookii_bridge.service import Service
from semookii_bridge.simulator import Fault, RunningSimulator, SimConfig

from .support.broker import Mosquitto, Probe
from .support.load import cpu_burners, max_in_window


def record_grants(service: Service) -> list[float]:
    """Wrap the bridge's bucket to record when each token was taken (and drop refunded ones)."""
    bucket = service.limiter.bucket
    granted: list[float] = []
    take, refund = bucket.try_take, bucket.refund

    def try_take(**kwargs: bool) -> bool:
        ok = take(**kwargs)
        if ok:
            granted.append(time.monotonic())
        return ok

    def give_back() -> None:
        refund()
        granted.pop()

    bucket.try_take = try_take  # type: ignore[method-assign]
    bucket.refund = give_back  # type: ignore[method-assign]
    return granted


TERMINAL = {"completed", "rejected", "superseded", "expired", "failed", "unknown"}




async def test_flood_never_exceeds_the_limit_and_latest_wins(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """300 setpoints on 6 groups at 10 calls/s while two other processes load the CPU: no window at the
    simulator (where a vendor counts) over burst + rate x window, and each group gets its newest setpoint."""
    state = sim.simulator.state
    groups = [g.id for g in state.list_groups()] + [state.add_group(f"extra-{i}") for i in range(4)]
    rate, burst = 10.0, 3
    # The simulator counts like the vendor: the same limit at arrival, and one over-limit call bans the token.
    fields = {f: getattr(sim.simulator.config, f) for f in sim.simulator.config.__struct_fields__}
    sim.simulator.config = SimConfig(**{**fields, "rate": rate, "burst": burst, "ban_after": 1, "ban_for": 60.0})
    service = await make_bridge(
        rate_limit={"rate": rate, "burst": burst}, commands={"poll_initial": 0.3, "poll_max": 1}
    )
    granted = record_grants(service)
    with Probe(broker.port) as probe, cpu_burners(2):
        for n in range(50):
            for g in groups:
                probe.publish(f"vpp/group/{g}/set", {"type": "power_control", "active_power": n, "duration": 60,
                                                     "timeout": 1, "request_id": f"{g}-{n}"})  # fmt: skip
        for g in groups:
            await probe.wait_status(f"vpp/group/{g}/state", f"{g}-49", "completed", timeout=30)
        arrivals = sorted(c.ts for c in sim.simulator.calls)
        assert len(arrivals) == len(granted)
        for window in (0.5, 1.0, 3.0):
            assert max_in_window(granted, window) <= burst + rate * window
            assert max_in_window(arrivals, window) <= burst + rate * window, window
        sent = {c.params["groupId"]: [] for c in sim.simulator.calls_to("/commandapi/groupControl")}
        for call in sim.simulator.calls_to("/commandapi/groupControl"):
            sent[call.params["groupId"]].append(int(call.params["activePower"]))
        for g in groups:
            assert sent[g][-1] == 49 and sent[g] == sorted(sent[g]), (g, sent[g])
            finals = {}
            for s in probe.states(f"vpp/group/{g}/state"):
                if s["status"] in TERMINAL:
                    assert s["request_id"] not in finals, "two terminal states for one request"
                    finals[s["request_id"]] = s["status"]
            assert len(finals) == 50 and set(finals.values()) <= {"completed", "superseded"}
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) < 50 * len(groups) / 4
    assert sim.simulator.bans == 0 and not [c for c in sim.simulator.calls if c.outcome == "rate_limited"]


async def test_api_429_pauses_all_calls_for_retry_after(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """After a 429 with Retry-After: 2, no call reaches the API for 2 s, and the next one comes then: not after
    the configured default pause (30 s here, so a bridge that ignored the header would time out)."""
    await make_bridge(rate_limit={"rate": 100, "burst": 10, "pause_on_429": 30})
    sim.simulator.inject(Fault("http_429", path="/commandapi/groupControl", retry_after=2))
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "slow-down"})
        await probe.wait_status(f"vpp/group/{group_id}/state", "slow-down", "completed")
    first, second = sim.simulator.calls[:2]
    assert first.status == 429 and 1.95 <= second.ts - first.ts < 5


async def test_re_dispatched_groups_poll_only_their_newest_command(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto, sim: RunningSimulator
) -> None:
    """Groups re-dispatched faster than their results come: a sent command that a newer one replaced ends
    `superseded`/`replaced` and is never polled; confirmations still arrive while control load goes on."""
    state = sim.simulator.state
    state.timings.result_delay = 2.0  # results slower than the 0.7 s between rounds: replacements must happen
    groups = [g.id for g in state.list_groups()] + [state.add_group(f"re-{i}") for i in range(2)]
    await make_bridge(rate_limit={"rate": 4, "burst": 2, "poll_share": 0.2},
                      commands={"poll_initial": 0.3, "poll_max": 1, "track_results_for": 20})  # fmt: skip
    rids = [f"{g}-{n}" for n in range(6) for g in groups]
    with Probe(broker.port, subscribe="vpp/group/+/state") as probe:
        for n in range(6):
            for g in groups:
                probe.publish(f"vpp/group/{g}/set", {"type": "power_control", "active_power": n, "duration": 60,
                                                     "timeout": 1, "request_id": f"{g}-{n}"})  # fmt: skip
            await asyncio.sleep(0.7)  # a round every 0.7 s, faster than results come (2 s)
        await probe.wait_for(lambda: all(f"{g}-5" in finals(probe) for g in groups), timeout=30)
        done = finals(probe)
    replaced = [d for d in done.values() if d["status"] == "superseded" and d["command_id"]]
    assert replaced, "the load should have replaced some sent commands"
    assert all(d["error"]["code"] == "replaced" for d in replaced)  # type: ignore[index]
    for doc in replaced:
        assert not polls_after_replacement(sim, doc), doc
    assert all(done[f"{g}-5"]["status"] == "completed" for g in groups)
    assert set(rids) <= set(done)


def polls_after_replacement(sim: RunningSimulator, doc: dict[str, Any]) -> list[object]:
    """Polls for a replaced command that reached the API after the newer command's control call was answered
    (a poll already on the wire then may land up to 100 ms later)."""
    group, power = doc["target"]["id"], doc["command"]["active_power"]
    newer = [c for c in sim.simulator.calls_to("/commandapi/groupControl")
             if c.params["groupId"] == group and int(c.params["activePower"]) > power]  # fmt: skip
    replaced_at = min(newer, key=lambda c: c.seq).answered
    ids = {doc["command_id"], doc["task_id"]} - {None}
    return [c for c in sim.simulator.calls if c.path in ("/commandapi/queryCommand", "/commandapi/getQueryResult")
            and ids & {c.params.get("commandId"), c.params.get("taskId")} and c.ts > replaced_at + 0.1]  # fmt: skip


def finals(probe: Probe) -> dict[str, dict[str, Any]]:
    """request_id -> its terminal state document (asserting there is only one)."""
    out: dict[str, dict[str, Any]] = {}
    for m in probe.messages:
        doc = m.json()
        if doc["status"] in TERMINAL:
            assert doc["request_id"] not in out, f"two terminal states for {doc['request_id']}"
            out[doc["request_id"]] = doc
    return out
