"""Restarts under load at the vendor's limit: the bridge is killed and restarted every 5 s.

20 groups get a new setpoint every 2 s; the simulator allows 1 call/s with a burst of 5 and bans the
token after a single over-limit call (stricter than the vendor's 3). The bridge runs at the same limit and
is stopped every `every` seconds, SIGKILL and SIGTERM in turn, then started again 0.2 s later (a supervisor's
restart). Counted at the simulator: calls in the busiest window of 1, 2, 5 and 10 s against what the limit
allows there (burst + rate x window), calls refused as over the limit, and bans.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import threading
import time

from flood import max_in_window
from harness import TOKEN, Recorder, _cli, stack

RATE, BURST = 1.0, 5
CONFIG = f"""
[rate_limit]
rate = {RATE}
burst = {BURST}
[commands]
poll_initial = 1
poll_max = 3
track_results_for = 10
"""


def restart(s: object, every: float, until: float) -> int:
    """Stop and start the bridge every `every` seconds until `until`; returns how many restarts."""
    count = 0
    while time.monotonic() + every < until:
        time.sleep(every)
        bridge = s.procs[-1]  # type: ignore[attr-defined]
        bridge.send_signal(signal.SIGKILL if count % 2 == 0 else signal.SIGTERM)
        bridge.wait(15)
        time.sleep(0.2)
        toml = s.workdir / "bridge.toml"  # type: ignore[attr-defined]
        env = {**__import__("os").environ, "SEMOOKII_TOKEN": TOKEN}
        s.procs.append(subprocess.Popen(_cli("run", "--config", str(toml)), env=env, stdout=subprocess.DEVNULL))  # type: ignore[attr-defined]
        count += 1
    return count


def run(seconds: float = 60, every: float = 5.0, groups: int = 20) -> str:
    sim_args = ("--rate", str(RATE), "--burst", str(BURST), "--ban-after", "1", "--task-delay", "0.5",
                "--result-delay", "1")  # fmt: skip
    with stack(groups=groups, sim_args=sim_args, bridge_config=CONFIG) as s:
        group_ids = s.group_ids()
        tx = Recorder(s.broker_port, [])
        until = time.monotonic() + seconds
        restarts: list[int] = []
        worker = threading.Thread(target=lambda: restarts.append(restart(s, every, until)))
        worker.start()
        n = 0
        while time.monotonic() < until:
            for g in group_ids:
                body = {"type": "power_control", "active_power": n % 1000, "duration": 60, "timeout": 10, "ttl": 30}
                tx.publish(f"vpp/group/{g}/set", json.dumps(body).encode())
            n += 1
            time.sleep(2.0)
        worker.join()
        time.sleep(2)
        calls = s.sim_calls()
        tx.close()
    stamps = sorted(c["ts"] for c in calls)
    refused = sum(1 for c in calls if c["outcome"] in ("rate_limited", "banned"))
    lines = [
        f"### Restarts under load ({seconds:g} s, restarted every {every:g} s, limit {RATE:g}/s burst {BURST}, "
        "ban after 1 over-limit call)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| restarts (SIGKILL and SIGTERM in turn) | {restarts[0] if restarts else 0} |",
        f"| API calls at the simulator | {len(calls)} |",
    ]
    for window in (1.0, 2.0, 5.0, 10.0):
        allowed = BURST + RATE * window
        lines.append(
            f"| most calls in any {window:g} s window (allowed {allowed:g}) | {max_in_window(stamps, window)} |"
        )
    lines += [f"| calls refused as over the limit | {refused} |",
              f"| bans | {sum(1 for c in calls if c['outcome'] == 'banned')} |", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--every", type=float, default=5.0)
    print(run(parser.parse_args().seconds, parser.parse_args().every))
