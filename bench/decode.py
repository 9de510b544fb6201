"""Decode and validate: commands/s through `decode_command` (msgspec tagged union), a pure-function benchmark."""

from __future__ import annotations

import argparse
import json
import time

from semookii_bridge.control.commands import decode_command, to_params

PAYLOADS = {
    "power_control": b'{"type":"power_control","active_power":-3000,"duration":600,"timeout":10,"request_id":"r-42"}',
    "schedule": b'{"type":"schedule","period1":{"charge":["01:00","05:00"],"discharge":["17:00","21:00"]},'
    b'"period2":{"charge":["11:00","13:00"],"discharge":["22:00","23:00"]}}',
    "API-name form": b'{"superType":0,"mode":1,"activePower":1000,"reactivePower":0,"setType":1,"proidTime":600,"timeout":10}',
    "invalid (rejected)": b'{"type":"power_control","active_power":70000,"duration":600,"timeout":10}',
}


def rate(fn: object, payload: bytes, seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            try:
                fn(payload)  # type: ignore[operator]
            except Exception:  # noqa: S110 - invalid payloads are part of the benchmark
                pass
        count += 1000
    return count / (time.perf_counter() - start)


def run(seconds: float = 1.0) -> str:
    rows = [
        "### Decode and validate (one core, pure function)",
        "",
        "| payload | decode_command/s | + to_params/s | json.loads/s (no validation) |",
        "|---|---:|---:|---:|",
    ]
    for name, payload in PAYLOADS.items():
        decoded = rate(decode_command, payload, seconds)
        full = rate(lambda p: to_params(decode_command(p)).to_query(), payload, seconds)
        plain = rate(json.loads, payload, seconds)
        rows.append(f"| {name} | {decoded:,.0f} | {full:,.0f} | {plain:,.0f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    print(run(parser.parse_args().seconds))
