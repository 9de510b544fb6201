"""Dispatch plans (docs/plans.md) carried out by the bridge, measured at the simulator.

(a) `steady`: 20 groups, each with a plan of 96 intervals of 10 s (a day's quarter hours, compressed), at a
    limit of 50 calls/s (burst 20): how late each interval's call reaches the API after its start (p50, p99,
    max), intervals missed, sent twice or sent early, calls per boundary.
(b) `takeover`: the same under a hot standby on PostgreSQL, the leader killed (SIGKILL) every 60 s and started
    again as the standby: intervals sent twice or early (0 wanted), missed.
(c) `crowd`: 200 groups whose plans start together at 20 calls/s (burst 20). First with intervals long enough
    for every call to go: the lateness of the last call measured against `(calls - burst) / rate`, the
    arithmetic of the plans' warning. Then with 5 s intervals, where that lateness passes the deadline: the
    warning's expected lateness and the intervals it implies will be missed, against those measured.

Each interval carries its own power value (group x 100 + index), so every call at the simulator names the
interval it carries out.

    .venv/bin/python bench/plans.py                       # all three, about 40 minutes
    .venv/bin/python bench/plans.py --only steady --intervals 12
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import ROOT, TOKEN, Recorder, _cli, percentile, stack

sys.path.insert(0, str(ROOT))
from tests.support.postgres import Postgres

CONTROL = "/commandapi/groupControl"
LEAD = 8.0
"""Seconds between publishing the plans and their first start."""


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def plan_for(g: int, t0: float, count: int, length: float) -> dict[str, Any]:
    """Group number `g`'s plan: `count` adjacent intervals of `length` s from `t0`, power -(g x 1000 + index)."""
    intervals = [
        {"start": iso(t0 + i * length), "end": iso(t0 + (i + 1) * length),
         "command": {"type": "power_control", "active_power": -(g * 100 + i)}}
        for i in range(count)
    ]  # fmt: skip
    return {"plan_id": f"bench-{g}", "intervals": intervals}


class Plans:
    """Publishes one plan per group and keeps the plan states and warnings that come back."""

    def __init__(self, port: int, groups: list[str]) -> None:
        self.groups = groups
        self.states: dict[str, dict[str, Any]] = {}
        self.warnings: dict[str, dict[str, Any]] = {}
        """Each group's plan warning, from whichever state carried it (the final state drops it)."""
        self.lock = threading.Lock()
        self.roles: dict[str, str] = {}
        self.rx = Recorder(port, ["vpp/group/+/plan/state", "vpp/bridge/instance/+/state"], self._state)
        self.tx = Recorder(port, [])

    def _state(self, topic: str, payload: bytes, ts: float) -> None:
        if not payload:
            return
        doc = json.loads(payload)
        with self.lock:
            if topic.startswith("vpp/bridge/instance/"):
                self.roles[topic.split("/")[3]] = doc["role"]
            else:
                self.states[topic.split("/")[2]] = doc
                if doc.get("warning"):
                    self.warnings[topic.split("/")[2]] = doc["warning"]

    def send(self, t0: float, count: int, length: float) -> None:
        for g, group in enumerate(self.groups):
            self.tx.publish(f"vpp/group/{group}/plan/set", json.dumps(plan_for(g, t0, count, length)).encode())

    def ended(self) -> bool:
        with self.lock:
            return len(self.states) == len(self.groups) and all(s["status"] != "active" for s in self.states.values())

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


def measure(calls: list[dict[str, Any]], groups: int, t0: float, count: int, length: float) -> dict[str, Any]:
    """Per interval: its calls at the simulator; lateness of each first call after its start."""
    seen = Counter(-int(c["params"]["activePower"]) for c in calls if c["path"] == CONTROL)
    first: dict[int, float] = {}
    for c in sorted((c for c in calls if c["path"] == CONTROL), key=lambda c: c["ts"]):
        first.setdefault(-int(c["params"]["activePower"]), c["ts"])
    late = [first[g * 100 + i] - (t0 + i * length) for g in range(groups) for i in range(count) if g * 100 + i in first]
    per_boundary = Counter(round((ts - t0) / length) for ts in first.values())
    return {
        "groups": groups,
        "count": count,
        "length": length,
        "expected": groups * count,
        "sent": len(first),
        "missed": groups * count - len(first),
        "twice": sum(1 for n in seen.values() if n > 1),
        "early": sum(1 for x in late if x < 0),
        "p50": percentile(late, 50),
        "p99": percentile(late, 99),
        "max": max(late, default=0.0),
        "per_boundary": max(per_boundary.values(), default=0),
    }


def bridge_config(rate: float, burst: int, grace: float = 60.0) -> str:
    return (f"[rate_limit]\nrate = {rate}\nburst = {burst}\ndaily_quota = 0\n[commands]\nmerge = false\n"
            f"track = \"accepted\"\n[plans]\nstart_grace = {grace}\n")  # fmt: skip


def steady(groups: int = 20, count: int = 96, length: float = 10.0) -> dict[str, Any]:
    """(a): the plans at 50 calls/s, burst 20."""
    with stack(groups=groups, bridge_config=bridge_config(50, 20)) as s:
        plans = Plans(s.broker_port, s.group_ids())
        t0 = time.time() + LEAD
        plans.send(t0, count, length)
        wait_until(plans.ended, t0 + count * length + 30)
        result = measure(s.sim_calls(), groups, t0, count, length)
        plans.close()
    return result


def takeover(groups: int = 20, count: int = 96, length: float = 10.0, every: float = 60.0) -> dict[str, Any]:
    """(b): the same under a hot standby, the leader killed every `every` seconds and started again."""
    db = Postgres()
    db.start()
    try:
        with stack(groups=groups) as s:
            env = {**os.environ, "SEMOOKII_TOKEN": TOKEN}
            configs = {n: ha_toml(s.workdir, s.broker_port, s.sim_url, db.url, n) for n in ("a", "b")}
            procs = {n: subprocess.Popen(_cli("run", "--config", str(c)), env=env) for n, c in configs.items()}
            plans = Plans(s.broker_port, s.group_ids())
            wait_until(lambda: "leader" in plans.roles.values(), time.time() + 30)
            t0 = time.time() + LEAD
            plans.send(t0, count, length)
            kills = 0
            while not plans.ended() and time.time() < t0 + count * length + 60:
                strike = t0 + (kills + 1) * every - 1.0  # a second before a boundary: the takeover spans it
                if strike > t0 + count * length - length:
                    time.sleep(0.5)
                    continue
                time.sleep(max(0.0, strike - time.time()))
                leader = next((n for n, r in plans.roles.items() if r == "leader"), None)
                if leader is None:
                    continue
                procs[leader].send_signal(signal.SIGKILL)
                procs[leader].wait(10)
                kills += 1
                procs[leader] = subprocess.Popen(_cli("run", "--config", str(configs[leader])), env=env)
            result = {**measure(s.sim_calls(), groups, t0, count, length), "kills": kills}
            for proc in procs.values():
                proc.terminate()
                proc.wait(10)
            plans.close()
    finally:
        db.stop()
    return result


def ha_toml(workdir: Path, broker_port: int, sim_url: str, db_url: str, name: str) -> Path:
    path = workdir / f"{name}.toml"
    path.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\nclient_id = "bench-plans"\n'
                    f'[api]\nbase_url = "{sim_url}"\n{bridge_config(50, 20)}'
                    f'[journal]\npath = "{workdir / name}.db"\nurl = "{db_url}"\n'
                    f'[ha]\nenabled = true\nname = "{name}"\n[http]\nenabled = false\n')  # fmt: skip
    return path


def crowd(groups: int = 200, rate: float = 20.0, burst: int = 20) -> dict[str, Any]:
    """(c): every plan's first interval starts at one boundary."""
    out: dict[str, Any] = {"groups": groups, "predicted_lateness": (groups - burst) / rate}
    for label, length in (("long", 30.0), ("short", 5.0)):
        with stack(groups=groups, bridge_config=bridge_config(rate, burst)) as s:
            plans = Plans(s.broker_port, s.group_ids())
            t0 = time.time() + LEAD + groups / 50
            plans.send(t0, 1, length)
            wait_until(plans.ended, t0 + length + 30)
            result = measure(s.sim_calls(), groups, t0, 1, length)
            warnings = list(plans.warnings.values())
            plans.close()
        out[label] = {**result, "warnings": len(warnings),
                      "warned_lateness": max((w["expected_lateness"] for w in warnings), default=None),
                      "predicted_missed": max(0, groups - burst - int(rate * length))}  # fmt: skip
    return out


def wait_until(predicate: Any, deadline: float) -> None:
    while not predicate() and time.time() < deadline:
        time.sleep(0.5)


def report(a: dict[str, Any] | None, b: dict[str, Any] | None, c: dict[str, Any] | None) -> str:
    """The section of bench/RESULTS.md."""
    lines = ["## Dispatch plans (bench/plans.py)", ""]
    if a:
        lines += [f"(a) {a['expected']} intervals ({a['groups']} groups x {a['count']} of {a['length']:g} s) at 50 calls/s, "
                  f"burst 20: lateness after "
                  f"the start p50 {a['p50']:.3f} s, p99 {a['p99']:.3f} s, max {a['max']:.3f} s; missed {a['missed']}, "
                  f"sent twice {a['twice']}, early {a['early']}; at most {a['per_boundary']} calls per boundary.", ""]  # fmt: skip
    if b:
        lines += [f"(b) {b['expected']} intervals the same way under a hot standby, the leader killed {b['kills']} times "
                  f"(every 60 s, a second before a boundary): sent twice "
                  f"{b['twice']}, early {b['early']}, missed {b['missed']}; lateness p50 {b['p50']:.3f} s, p99 "
                  f"{b['p99']:.3f} s, max {b['max']:.3f} s (the takeovers' waits included).", ""]  # fmt: skip
    if c:
        long, short = c["long"], c["short"]
        lines += [f"(c) {c['groups']} groups' plans starting together at 20 calls/s, burst 20. With 30 s intervals "
                  f"{long['missed']} missed: "
                  f"the last left {long['max']:.2f} s after the start, against "
                  f"{c['predicted_lateness']:.2f} s predicted ((calls - burst) / rate); no warning "
                  f"({long['warnings']}). With 5 s intervals the plans carry the warning (expected lateness "
                  f"{short['warned_lateness']}) and {short['missed']} intervals were missed, against "
                  f"{short['predicted_missed']} predicted (calls beyond burst + rate x deadline); sent twice "
                  f"{long['twice'] + short['twice']}, early {long['early'] + short['early']}.", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=["steady", "takeover", "crowd"])
    parser.add_argument("--intervals", type=int, default=96, help="intervals per plan in (a) and (b)")
    args = parser.parse_args()
    chosen = args.only or ["steady", "takeover", "crowd"]
    a = steady(count=args.intervals) if "steady" in chosen else None
    b = takeover(count=args.intervals) if "takeover" in chosen else None
    c = crowd() if "crowd" in chosen else None
    print(report(a, b, c))


if __name__ == "__main__":
    main()
