"""Rate-limited flood: 500 setpoints/s on 50 groups under a 5 calls/s limit.

Counted at the simulator: API calls in any 1 s window (the limit, plus burst), and for every control call
the age of the setpoint it carried (call arrival - publish time of that setpoint): latest-wins keeps it
young even though only one in a hundred setpoints can be sent.
"""

from __future__ import annotations

import argparse
import sys
import time

import msgspec

from harness import ROOT, Recorder, percentile, stack

sys.path.insert(0, str(ROOT))
from tests.support.load import max_in_window

RATE, BURST = 5.0, 5


def run(seconds: float = 10, rate: float = 500, groups: int = 50) -> str:
    config = f"[rate_limit]\ndaily_quota = 0\nrate = {RATE}\nburst = {BURST}\n[commands]\npoll_initial = 2\npoll_max = 5\n"
    with stack(groups=groups, sim_args=("--task-delay", "0.5", "--result-delay", "1"), bridge_config=config) as s:
        group_ids = s.group_ids()
        tx = Recorder(s.broker_port, [])
        published: dict[int, float] = {}
        start = time.perf_counter()
        flood_start = time.time()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            published[n] = time.time()
            payload = msgspec.json.encode({"type": "power_control", "active_power": n % 60000, "duration": 60,
                                           "timeout": 1, "request_id": f"f{n}"})  # fmt: skip
            tx.publish(f"vpp/group/{group_ids[n % groups]}/set", payload)
        flood_end = time.time()
        time.sleep(3)
        tx.close()
        calls = s.sim_calls()
    stamps = sorted(c["ts"] for c in calls)
    control = [c for c in calls if c["path"] == "/commandapi/groupControl"]

    def age(call: dict[str, float | dict[str, str]]) -> float:
        return (call["ts"] - published[int(call["params"]["activePower"])]) * 1000  # type: ignore[index, call-overload, operator]

    during = [age(c) for c in control if c["ts"] <= flood_end]
    drain = [age(c) for c in control if c["ts"] > flood_end]
    span = flood_end - flood_start
    return "\n".join([
        f"### Flood under a rate limit: {rate:g} setpoints/s on {groups} groups for {seconds:g} s, limit {RATE:g}/s, burst {BURST}",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| setpoints published | {len(published):,} |",
        f"| API calls seen by the simulator (control + polling) | {len(calls)} ({len(control)} control) |",
        f"| mean API calls/s while flooding | {sum(1 for t in stamps if t <= flood_end) / span:.2f} |",
        f"| most API calls in any 1 s window (allowed: {BURST} + {RATE:g}) | {max_in_window(stamps, 1.0)} |",
        f"| most API calls in any 10 s window (allowed: {BURST} + {RATE * 10:g}) | {max_in_window(stamps, 10.0)} |",
        f"| age of the setpoint each call carried while flooding, p50 / p99 / max | {percentile(during, 50):.0f} / {percentile(during, 99):.0f} / {max(during):.0f} ms |",
        f"| after the flood stopped: calls draining the queue, oldest setpoint | {len(drain)}, {max(drain, default=0) / 1000:.1f} s |",
        "",
        "Target: never above the limit in any window; the age of each group's setpoint under 1.5 s. After the",
        f"flood stops, groups still queued get their last setpoint in turn ({groups} groups at {RATE:g} calls/s:",
        "up to about 10 s), which is the limit at work, not staleness: no newer setpoint exists for them.",
    ])  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(run(args.seconds))
