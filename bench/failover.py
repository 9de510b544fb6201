"""Failover of the hot standby: the leader is killed (SIGKILL) under load, `trials` times in a row.

Two bridges share a throwaway PostgreSQL (started here, as the tests do) and one configuration (`[ha]`,
lease 3 s, the default), at a limit of 10 calls/s whose simulator bans after one over-limit call. A load of
4 setpoints/s on 20 groups runs throughout; each trial kills the leader 2 s into its leadership, measures the
time from the kill to the new leader's first control call at the simulator, and starts the killed bridge
again as the next standby (a supervisor's restart). At the end: commands without a terminal state (lost),
commands whose call reached the API twice, commands reported `ambiguous` per takeover, calls refused.
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
from pathlib import Path
from typing import Any

from harness import ROOT, TOKEN, Recorder, _cli, percentile, stack

sys.path.insert(0, str(ROOT))
from tests.postgres import Postgres

TERMINAL = {"completed", "rejected", "superseded", "expired", "failed", "unknown", "partial"}
CONTROL = "/commandapi/groupControl"


def bridge_toml(workdir: Path, broker_port: int, sim_url: str, db_url: str, name: str) -> Path:
    path = workdir / f"{name}.toml"
    path.write_text(f"""[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\nclient_id = "bench-ha"\n
[api]\nbase_url = "{sim_url}"\n[rate_limit]\nrate = 10\nburst = 5\n
[commands]\npoll_initial = 0.5\npoll_max = 1\ntrack_results_for = 10\nmerge = false\n
[journal]\npath = "{workdir / name}.db"\nurl = "{db_url}"\n[ha]\nenabled = true\nname = "{name}"\n
[http]\nenabled = false\n""")
    return path


class Load:
    """Setpoints at 4/s on the groups, each with a unique power, until stopped; the states that come back."""

    def __init__(self, port: int, groups: list[str]) -> None:
        self.groups = groups
        self.sent: list[str] = []
        self.states: dict[str, list[dict[str, Any]]] = {}
        self.roles: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.rx = Recorder(port, ["vpp/group/+/state", "vpp/bridge/instance/+/state"], self._state)
        self.tx = Recorder(port, [])

    def _state(self, topic: str, payload: bytes, ts: float) -> None:
        if not payload:
            return
        doc = json.loads(payload)
        with self.lock:
            if topic.startswith("vpp/bridge/instance/"):
                self.roles[topic.split("/")[3]] = doc["role"]
            elif doc["status"] in TERMINAL:
                self.states.setdefault(doc["request_id"], []).append(doc)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            group = self.groups[n % len(self.groups)]
            rid = f"f-{n}"
            body = {"type": "power_control", "active_power": n, "duration": 60, "timeout": 10, "request_id": rid}
            self.tx.publish(f"vpp/group/{group}/set", json.dumps(body).encode())
            self.sent.append(rid)
            n += 1
            time.sleep(0.25)


def wait_for(predicate: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.02)


def run(trials: int = 20) -> str:
    db = Postgres()
    db.start()
    env = {**os.environ, "SEMOOKII_TOKEN": TOKEN}
    takeovers: list[float] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        sim_args = ("--task-delay", "0.3", "--result-delay", "0.6", "--rate", "10", "--burst", "5", "--ban-after", "1")
        with stack(groups=20, sim_args=sim_args) as s:
            configs = {n: bridge_toml(s.workdir, s.broker_port, s.sim_url, db.url, n) for n in ("a", "b")}
            procs = {n: subprocess.Popen(_cli("run", "--config", str(c)), env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL) for n, c in configs.items()}  # fmt: skip
            load = Load(s.broker_port, s.group_ids())
            wait_for(lambda: sorted(load.roles.values()) == ["leader", "standby"])
            worker = threading.Thread(target=load.run)
            worker.start()
            for _ in range(trials):
                leader = next(n for n, r in load.roles.items() if r == "leader")
                other = "b" if leader == "a" else "a"
                time.sleep(2.0)
                killed_at = time.time()
                procs[leader].send_signal(signal.SIGKILL)
                procs[leader].wait(10)
                wait_for(lambda k=killed_at: any(c["ts"] > k and c["path"] == CONTROL for c in s.sim_calls()[-50:]))  # type: ignore[misc]
                first = min(c["ts"] for c in s.sim_calls() if c["ts"] > killed_at and c["path"] == CONTROL)
                takeovers.append(first - killed_at)
                wait_for(lambda o=other: load.roles.get(o) == "leader")  # type: ignore[misc]
                procs[leader] = subprocess.Popen(_cli("run", "--config", str(configs[leader])), env=env,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                wait_for(lambda n=leader: load.roles.get(n) == "standby")  # type: ignore[misc]
            load.stop.set()
            worker.join()
            wait_for(lambda: all(r in load.states for r in load.sent), seconds=60)
            every = s.sim_calls()
            calls = Counter((c["params"]["groupId"], c["params"].get("activePower")) for c in every
                            if c["path"] == CONTROL)  # fmt: skip
            refused = sum(1 for c in every if c["outcome"] in ("rate_limited", "banned"))
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(10)
        db.remove()
    ambiguous = sum(
        1 for docs in load.states.values() for d in docs if (d.get("error") or {}).get("code") == "ambiguous"
    )
    lost = sum(1 for r in load.sent if r not in load.states)
    twice = sum(1 for n in calls.values() if n > 1)
    return "\n".join([
        f"### Failover ({trials} takeovers after SIGKILL of the leader, lease 3 s, 4 setpoints/s on 20 groups)",
        "", "| measure | value | target |", "|---|---|---|",
        f"| kill -> the new leader's first control call, p50 / max | {percentile(takeovers, 50):.2f} / "
        f"{max(takeovers):.2f} s | at most 5 s |",
        f"| commands published / without a terminal state (lost) | {len(load.sent)} / {lost} | 0 lost |",
        f"| control calls that reached the API twice for one command | {twice} | 0 |",
        f"| commands reported `ambiguous`, per takeover | {ambiguous / trials:.2f} | |",
        f"| calls refused by a simulator that bans after one over-limit call (10/s, burst 5) | {refused} | 0 |", "",
    ])  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    print(run(parser.parse_args().trials))
