"""Run every benchmark and write bench/RESULTS.md (the numbers, the machine, the commit).

.venv/bin/python bench/run.py            # about 85 minutes on 2 cores
.venv/bin/python bench/run.py --quick    # shorter runs, same shape
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import failover
import overload
import restarts

import budget
import decode
import flood
import latency
import nodered
import plans
import throughput
from harness import ROOT, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s throughput runs instead of 60 s")
    args = parser.parse_args()
    seconds = 15.0 if args.quick else 60.0
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    sections = [
        "# Benchmark results",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit `{commit}` with `python bench/run.py`"
        f"{' --quick' if args.quick else ''}.",
        f"Machine: {machine()}. mosquitto, the simulator, the bridge and the load generator share these cores;",
        "each comparison is measured in the same run, so the ratios are the figures to compare across machines.",
        "",
    ]
    for name, produce in (
        ("latency", lambda: latency.run(200, 10)),
        (
            "throughput",
            lambda: throughput.report(throughput.run(seconds, track=False), throughput.run(seconds, track=True)),
        ),
        ("flood", lambda: flood.run(10)),
        ("budget", lambda: budget.run(60.0 if args.quick else 120.0)),
        ("restarts", lambda: restarts.run(30.0 if args.quick else 60.0)),
        ("failover", lambda: failover.run(5 if args.quick else 20)),
        ("failover rows", lambda: failover.run(3 if args.quick else 10, "kill", 400_000)),
        *(
            (f"failover {fault}", lambda f=fault: failover.run(2 if args.quick else 10, f))  # type: ignore[misc]
            for fault in ("stall-cut", "stall-stop", "broker-cut", "api-cut")
        ),
        ("overload", lambda: overload.run(0.1 if args.quick else 1.0)),
        ("node-red", lambda: nodered.run(200, 10)),
        ("plans", lambda: plans.report(plans.steady(count=12 if args.quick else 96),
                                       plans.takeover(count=12 if args.quick else 96), plans.crowd())),
        ("decode", lambda: decode.run(1.0)),
    ):
        print(f"running {name} ...", flush=True)
        try:
            sections += [produce(), ""]
        except Exception as exc:  # one broken section must not lose the others' figures
            sections += [f"### {name}: the run failed ({type(exc).__name__}: {exc})", ""]
    out = Path(__file__).with_name("RESULTS.md")
    out.write_text("\n".join(sections))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
