"""How the bridge spends a scarce API budget, counted at the simulator (where a vendor counts).

(A) 20 groups, each re-dispatched every 5 s for `seconds`, at 1 call/s: the same run with `track =
"results"` (confirm every command) and `track = "accepted"` (done when the API accepts it). Reported:
calls per delivered setpoint, the share of calls spent polling, polls for commands already replaced,
time to the first `completed` while the load runs, and how commands ended.
(B) One setpoint for 100 inverters (2 groups of 50) published at once (`vpp/inverter/<sn>/set`), at
1 call/s, with `merge` on and off: calls, time until the last inverter is commanded, and how many expired.
With merging on the load starts once the bridge has read its fleet inventory (3 calls, counted).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

import msgspec

from harness import Recorder, stack

TERMINAL = {"completed", "rejected", "superseded", "expired", "failed", "unknown"}
POLLS = ("/commandapi/queryCommand", "/commandapi/getQueryResult")


class States:
    """Every state message received, with its arrival time."""

    def __init__(self) -> None:
        self.docs: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes, ts: float) -> None:
        if payload and topic.endswith("/state") and not topic.endswith("bridge/state"):
            with self.lock:
                self.docs.append((ts, json.loads(payload)))

    def finals(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {d["request_id"]: d for _, d in self.docs if d["status"] in TERMINAL}

    def first(self, status: str) -> float | None:
        with self.lock:
            return min((ts for ts, d in self.docs if d["status"] == status), default=None)


def polls_after_replacement(calls: list[dict[str, Any]], states: States) -> int:
    """Polls that reached the API after the bridge had announced their command `superseded`/`replaced`
    (measured by when this subscriber received that state, so a poll already on the wire is not counted)."""
    replaced_at: dict[str, float] = {}
    with states.lock:
        for ts, d in states.docs:
            if d["status"] == "superseded" and d["command_id"]:
                for key in (d["command_id"], d["task_id"]):
                    if key:
                        replaced_at[key] = ts
    late = 0
    for c in calls:
        if c["path"] in POLLS:
            key = c["params"].get("commandId") or c["params"].get("taskId")
            if key in replaced_at and c["ts"] > replaced_at[key]:
                late += 1
    return late


def redispatch(seconds: float, track: str) -> dict[str, Any]:
    """Scenario A with commands.track = `track`."""
    config = (f"[rate_limit]\ndaily_quota = 0\nrate = 1.0\nburst = 2\n[commands]\ntrack = \"{track}\"\npoll_initial = 2\n"
              "poll_max = 10\ntrack_results_for = 120\n")  # fmt: skip
    with stack(groups=20, sim_args=("--task-delay", "1", "--result-delay", "2"), bridge_config=config) as s:
        groups = s.group_ids()
        states = States()
        rx = Recorder(s.broker_port, ["vpp/+/+/state"], states)
        start = time.time()
        rounds = int(seconds // 5)
        for n in range(rounds):
            for g in groups:
                payload = msgspec.json.encode({"type": "power_control", "active_power": n, "duration": 60,
                                               "timeout": 1, "request_id": f"{g}-{n}"})  # fmt: skip
                rx.publish(f"vpp/group/{g}/set", payload)
            time.sleep(max(0.0, start + 5 * (n + 1) - time.time()))
        load_end = time.time()
        deadline = load_end + 150
        while time.time() < deadline and len(states.finals()) < rounds * len(groups):
            time.sleep(0.5)
        rx.close()
        calls = s.sim_calls()
    finals = states.finals()
    late_polls = polls_after_replacement(calls, states)
    polls = sum(1 for c in calls if c["path"] in POLLS)
    control = sum(1 for c in calls if c["path"] == "/commandapi/groupControl")
    delivered = len({(c["params"]["groupId"], c["params"]["activePower"]) for c in calls
                     if c["path"] == "/commandapi/groupControl"})  # fmt: skip
    first_completed = states.first("completed")
    return {
        "calls": len(calls),
        "control": control,
        "polls": polls,
        "delivered": delivered,
        "late_polls": late_polls,
        "first_completed": None if first_completed is None else first_completed - start,
        "load_seconds": load_end - start,
        "statuses": Counter(d["status"] for d in finals.values()),
        "commands": rounds * len(groups),
    }


def fleet_setpoint(merge: bool, inverters: int = 100) -> dict[str, Any]:
    """Scenario B: one setpoint for every inverter, published at once."""
    config = f'[rate_limit]\ndaily_quota = 0\nrate = 1.0\nburst = 2\n[commands]\ntrack = "accepted"\nmerge = {str(merge).lower()}\n'
    with stack(groups=2, per_group=inverters // 2, bridge_config=config) as s:
        with urllib.request.urlopen(f"{s.sim_url}/_sim/fleet", timeout=30) as r:
            fleet = json.loads(r.read())
        sns = [sn for g in fleet["groups"] for sn in g["inverters"]][:inverters]
        if merge:
            wait_for_inventory(s, groups=2)
        states = States()
        rx = Recorder(s.broker_port, ["vpp/inverter/+/state"], states)
        start = time.time()
        for n, sn in enumerate(sns):
            payload = msgspec.json.encode({"type": "power_control", "active_power": -3000, "duration": 600,
                                           "timeout": 10, "request_id": f"fleet-{n}"})  # fmt: skip
            rx.publish(f"vpp/inverter/{sn}/set", payload)
        deadline = start + 150
        while time.time() < deadline and len(states.finals()) < len(sns):
            time.sleep(0.5)
        rx.close()
        calls = s.sim_calls()
    control = [c for c in calls if c["path"] in ("/commandapi/singleControl", "/commandapi/batchTempControl")]
    finals = states.finals()
    return {
        "inverters": len(sns),
        "calls": len(calls),
        "control": len(control),
        "last_commanded": max((c["ts"] for c in control), default=start) - start,
        "expired": sum(1 for d in finals.values() if d["status"] == "expired"),
        "completed": sum(1 for d in finals.values() if d["status"] == "completed"),
    }


def wait_for_inventory(s: Any, groups: int, seconds: float = 20) -> None:
    """Until the bridge has listed every group's inverters (its start-up inventory read)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if sum(1 for c in s.sim_calls() if c["path"] == "/vppinverter/findByGroupId") >= groups:
            return
        time.sleep(0.2)
    raise RuntimeError("the bridge did not read its inventory")


def run(seconds: float = 120) -> str:
    a_results, a_accepted = redispatch(seconds, "results"), redispatch(seconds, "accepted")
    b_on, b_off = fleet_setpoint(True), fleet_setpoint(False)

    def row(name: str, fn: Any) -> str:
        return f"| {name} | {fn(a_results)} | {fn(a_accepted)} |"

    def first(r: dict[str, Any]) -> str:
        return "none" if r["first_completed"] is None else f"{r['first_completed']:.0f} s"

    return "\n".join([
        f"### Budget (A): 20 groups re-dispatched every 5 s for {seconds:g} s at 1 call/s, burst 2",
        "",
        "| measure | `track = \"results\"` | `track = \"accepted\"` |",
        "|---|---:|---:|",
        row("commands published", lambda r: r["commands"]),
        row("API calls (control + polling)", lambda r: f"{r['calls']} ({r['control']} control)"),
        row("calls per delivered setpoint", lambda r: f"{r['calls'] / max(1, r['delivered']):.2f}"),
        row("share of calls spent polling", lambda r: f"{100 * r['polls'] / max(1, r['calls']):.0f} %"),
        row("polls for a command after it was replaced", lambda r: r["late_polls"]),
        row("first `completed`, from the start of the load", first),
        row("how commands ended", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))),
        "",
        "Targets (issue 10): 0 polls for replaced commands, polls at most 25 % of calls, first `completed`",
        "within 30 s while the load runs.",
        "",
        "### Budget (B): one setpoint for 100 inverters at once, 1 call/s, burst 2",
        "",
        "| measure | `merge = true` | `merge = false` |",
        "|---|---:|---:|",
        f"| inverters | {b_on['inverters']} | {b_off['inverters']} |",
        f"| API calls (all, at the simulator) | {b_on['calls']} | {b_off['calls']} |",
        f"| control calls | {b_on['control']} | {b_off['control']} |",
        f"| last inverter commanded after | {b_on['last_commanded']:.1f} s | {b_off['last_commanded']:.1f} s |",
        f"| completed | {b_on['completed']} | {b_off['completed']} |",
        f"| expired (default ttl 60 s) | {b_on['expired']} | {b_off['expired']} |",
        "",
        "Target (issue 10): at most 2 control calls and 6 calls in all, last inverter within 2 s, none expired.",
        "The calls include the start-up token check (1 group list of one row) and, with merging on, "
        "the inventory read (1 group list + 1 list per group).",
    ])  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    print(run(args.seconds))
