"""Failover of the hot standby: the leader is killed (SIGKILL) under load, `trials` times in a row; or, with
`--fault`, stalled inside its fence transaction (its database path cut, or the process stopped), or cut off from
the broker or the API (see faults.py).

Two bridges share a throwaway PostgreSQL (started here, as the tests do) and one configuration (`[ha]`,
lease 3 s, the default), at a limit of 10 calls/s whose simulator bans after one over-limit call. A load of
4 setpoints/s on 20 groups runs throughout; each trial kills the leader 2 s into its leadership, measures the
time from the kill to the new leader's first control call at the simulator, and starts the killed bridge
again as the next standby (a supervisor's restart). At the end: commands without a terminal state (lost),
commands whose call reached the API twice, commands reported `ambiguous` per takeover, calls refused.

`--rows N` first fills the journal with N finished commands received within the dedup window (as a busy
hour leaves it), and reports the new leader's peak memory as well: a takeover must not grow with them.
"""

from __future__ import annotations

import argparse
import contextlib
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

from faults import FAULTS, PEER, Relays, make, undo

from harness import ROOT, TOKEN, Recorder, _cli, percentile, stack

sys.path.insert(0, str(ROOT))
from semookii_bridge.journal.postgres import Postgres as Journal
from tests.support.postgres import Postgres

TERMINAL = {"completed", "rejected", "superseded", "expired", "failed", "unknown", "partial"}
CONTROL = "/commandapi/groupControl"


def bridge_toml(workdir: Path, broker_port: int, sim_url: str, db_url: str, name: str) -> Path:
    path = workdir / f"{name}.toml"
    path.write_text(f"""[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\nclient_id = "bench-ha"\n
[api]\nbase_url = "{sim_url}"\ntimeout = 5.0\n[rate_limit]\ndaily_quota = 0\nrate = 10\nburst = 5\n
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
        self.since: dict[str, float] = {}
        """When each instance last said its role (the message's arrival)."""
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.online = False
        """The bridge said `online` (it says so once it has subscribed: a command published earlier is lost)."""
        self.rx = Recorder(port, ["vpp/group/+/state", "vpp/bridge/instance/+/state", "vpp/bridge/state"], self._state)
        self.tx = Recorder(port, [])

    def _state(self, topic: str, payload: bytes, ts: float) -> None:
        if not payload:
            return
        doc = json.loads(payload)
        with self.lock:
            if topic == "vpp/bridge/state":
                self.online = doc.get("state") == "online"
            elif topic.startswith("vpp/bridge/instance/"):
                self.roles[topic.split("/")[3]] = doc["role"]
                self.since[topic.split("/")[3]] = ts
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


class Bench:
    """Two bridges, their configurations (through relays when a fault needs them) and the load."""

    def __init__(self, s: Any, db: Postgres, fault: str) -> None:
        self.s, self.fault = s, fault
        self.env = {**os.environ, "SEMOOKII_TOKEN": TOKEN}
        peer = PEER.get(fault)
        target = {"db": db.port, "broker": s.broker_port, "api": int(s.sim_url.rsplit(":", 1)[1])}.get(peer or "")
        self.relays = Relays(target, ("a", "b")) if target else None

        def via(name: str, kind: str, port: int) -> int:
            return self.relays.port(name) if self.relays is not None and peer == kind else port

        self.configs = {n: bridge_toml(s.workdir, via(n, "broker", s.broker_port),
                                       f"http://127.0.0.1:{via(n, 'api', int(s.sim_url.rsplit(':', 1)[1]))}",
                                       db.url.replace(f":{db.port}/", f":{via(n, 'db', db.port)}/"), n)
                        for n in ("a", "b")}  # fmt: skip
        self.procs = {n: self.start(n) for n in self.configs}
        self.memory: list[float] = []
        """The new leader's peak resident memory (MB) after each takeover."""
        self.load = Load(s.broker_port, s.group_ids())

    def start(self, name: str) -> subprocess.Popen[bytes]:
        logs = os.environ.get("BENCH_LOGS")  # a folder to keep the bridges' logs in
        sink = open(Path(logs) / f"{name}.log", "ab") if logs else subprocess.DEVNULL  # noqa: SIM115
        return subprocess.Popen(_cli("run", "--config", str(self.configs[name])), env=self.env,
                                stdout=sink, stderr=sink)  # fmt: skip

    def trial(self) -> float:
        """One fault against the leader: seconds from the fault to the new leader's first control call."""
        load, s = self.load, self.s
        leader = next(n for n, r in load.roles.items() if r == "leader")
        other = "b" if leader == "a" else "a"
        time.sleep(16.0 if self.fault in ("broker-cut", "api-cut") else 2.0)  # the tenure before a hand-over
        proc = self.procs[leader]
        if self.fault == "kill":
            struck = time.time()
            proc.send_signal(signal.SIGKILL)
        else:
            assert self.relays is not None
            struck = make(self.fault, self.relays, leader, proc.pid)()
        wait_for(lambda: load.roles.get(other) == "leader", 60)
        led = max(struck, load.since[other])
        wait_for(lambda: any(c["ts"] > led and c["path"] == CONTROL for c in s.sim_calls()[-50:]), 60)
        first = min(c["ts"] for c in s.sim_calls() if c["ts"] > led and c["path"] == CONTROL)
        self.memory.append(peak_memory(self.procs[other].pid))
        if self.relays is not None:
            undo(self.fault, self.relays, leader, proc.pid)
        proc.wait(60)
        self.procs[leader] = self.start(leader)
        wait_for(lambda: load.roles.get(leader) == "standby", 60)
        return first - struck

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(10)
        if self.relays is not None:
            self.relays.close()


def peak_memory(pid: int) -> float:
    """A process's peak resident memory in MB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fill(db: Postgres, rows: int) -> None:
    """`rows` finished, announced commands received in the last half hour (inside the dedup window)."""
    import asyncio

    async def setup() -> None:
        journal = Journal(db.url)
        await journal.setup()
        await journal.close()

    asyncio.run(setup())
    command = json.dumps({"type": "power_control", "active_power": 1000, "duration": 60, "timeout": 10})
    results = json.dumps([{"sn": f"SN{i:04d}", "status": "success"} for i in range(4)])
    db.sql(f"""INSERT INTO commands SELECT 'hist-' || i, 'group', '1', convert_to('{command}', 'UTF8'), 'completed',
               extract(epoch FROM now()) - random() * 1800, extract(epoch FROM now()) + 60, md5('d' || i), 'c' || i,
               't' || i, NULL, NULL, NULL, extract(epoch FROM now()) - random() * 1800,
               convert_to('{results}', 'UTF8'), NULL, 1 FROM generate_series(1, {rows}) i""")  # noqa: S608
    db.sql("VACUUM ANALYZE commands")  # as autovacuum leaves a journal that has run for a while


def run(trials: int = 20, fault: str = "kill", rows: int = 0) -> str:
    db = Postgres()
    db.start()
    if rows:
        fill(db, rows)
    takeovers: list[float] = []
    bench: Bench | None = None
    try:
        sim_args = ("--task-delay", "0.3", "--result-delay", "0.6", "--rate", "10", "--burst", "5", "--ban-after", "1")
        with stack(groups=20, sim_args=sim_args) as s, contextlib.ExitStack() as stack_exit:
            bench = Bench(s, db, fault)
            load = bench.load
            if os.environ.get("BENCH_LOGS"):  # the simulator's calls too, whatever happens
                atexit_calls = Path(os.environ["BENCH_LOGS"], "sim_calls.json")
                stack_exit.callback(lambda: atexit_calls.write_text(json.dumps(s.sim_calls())))
            wait_for(lambda: sorted(load.roles.values()) == ["leader", "standby"] and load.online)
            worker = threading.Thread(target=load.run)
            worker.start()
            for _ in range(trials):
                takeovers.append(bench.trial())
            load.stop.set()
            worker.join()
            try:
                wait_for(lambda: all(r in load.states for r in load.sent), seconds=90)
            except RuntimeError:
                missing = [r for r in load.sent if r not in load.states]
                raise RuntimeError(f"no terminal state for {len(missing)} commands: {missing[:10]}") from None
            every = s.sim_calls()
            calls = Counter((c["params"]["groupId"], c["params"].get("activePower")) for c in every
                            if c["path"] == CONTROL)  # fmt: skip
            refused = sum(1 for c in every if c["outcome"] in ("rate_limited", "banned"))
    finally:
        if bench is not None:
            bench.stop()
        db.remove()
    return report(fault, trials, takeovers, load, calls, refused, rows=rows, memory=bench.memory if bench else [])


WHAT = {"kill": "SIGKILL of the leader", "stall-cut": "the leader's database path cut inside its fence transaction",
        "stall-stop": "the leader stopped (SIGSTOP) inside its fence transaction",
        "broker-cut": "the leader's broker path cut (silent)", "api-cut": "the leader's API path cut (silent)"}


def report(fault: str, trials: int, takeovers: list[float], load: Load, calls: Counter[Any], refused: int, *,
           rows: int = 0, memory: list[float] | None = None) -> str:  # fmt: skip
    ambiguous = sum(
        1 for docs in load.states.values() for d in docs if (d.get("error") or {}).get("code") == "ambiguous"
    )
    lost = sum(1 for r in load.sent if r not in load.states)
    twice = sum(1 for n in calls.values() if n > 1)
    target = {"kill": "at most 5 s", "stall-cut": "at most 5 s", "stall-stop": "at most 5 s",
              "broker-cut": "at most 12 s", "api-cut": "at most 15 s"}[fault]  # fmt: skip
    return "\n".join([
        f"### Failover: {WHAT[fault]} ({trials} trials, lease 3 s, 4 setpoints/s on 20 groups"
        f"{f', {rows:,} finished rows in the journal' if rows else ''})",
        "", "| measure | value | target |", "|---|---|---|",
        f"| fault -> the new leader's first control call, p50 / max | {percentile(takeovers, 50):.2f} / "
        f"{max(takeovers):.2f} s | {target} |",
        f"| commands published / without a terminal state (lost) | {len(load.sent)} / {lost} | 0 lost |",
        f"| control calls that reached the API twice for one command | {twice} | 0 |",
        f"| commands reported `ambiguous`, per trial | {ambiguous / trials:.2f} | |",
        f"| calls refused by a simulator that bans after one over-limit call (10/s, burst 5) | {refused} | 0 |",
        f"| the new leader's peak resident memory, p50 / max | {percentile(memory or [0.0], 50):.0f} / "
        f"{max(memory or [0.0]):.0f} MB | |", "",
    ])  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--fault", choices=FAULTS, default="kill")
    parser.add_argument("--rows", type=int, default=0, help="finished commands in the journal before the start")
    args = parser.parse_args()
    print(run(args.trials, args.fault, args.rows))
