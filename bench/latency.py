"""Added latency of the bridge at a steady command rate, against bare MQTT and bare HTTP in the same run.

Bridge path: publish -> broker -> bridge -> HTTP -> simulator, and simulator answer -> bridge -> broker
-> `accepted` at a subscriber. Bare path: one MQTT publish -> subscriber (counted twice, in and out) plus
one aiohttp request to the same simulator endpoint. Added = bridge - bare, per percentile.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

import aiohttp
import msgspec

from harness import Recorder, percentile, stack

BRIDGE_CONFIG = "[rate_limit]\ndaily_quota = 0\nrate = 0\n[commands]\npoll_initial = 120\ntrack_results_for = 600\n"


def paced(rate: float, seconds: float, send: Any) -> None:
    """Call send(n) `rate` times a second for `seconds`, on schedule (no catch-up bursts)."""
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(n)


def bare_mqtt(port: int, rate: float, seconds: float) -> list[float]:
    """One-way publish -> subscriber latency, ms."""
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    rx = Recorder(port, ["bench/echo/#"], lambda t, p, ts: got.__setitem__(int(t.rsplit("/", 1)[1]), ts))
    tx = Recorder(port, [])

    def send(n: int) -> None:
        sent[n] = time.time()
        tx.publish(f"bench/echo/{n}", b'{"type":"manual","action":"stop"}')

    paced(rate, seconds, send)
    time.sleep(1)
    rx.close()
    tx.close()
    return [(got[n] - sent[n]) * 1000 for n in sent if n in got]


async def bare_http(url: str, group_ids: list[str], rate: float, seconds: float) -> list[float]:
    """Round trip of one groupControl call to the simulator, ms (same pacing, same pooled client)."""
    rtts: list[float] = []
    params = {
        "tokenId": "bench-token",
        "superType": "0",
        "mode": "1",
        "activePower": "1",
        "reactivePower": "0",
        "setType": "1",
        "proidTime": "59",
        "timeout": "1",
    }  # proidTime 59 marks bare calls
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        tasks = []

        async def one(n: int) -> None:
            t0 = time.perf_counter()
            async with session.post(f"{url}/commandapi/groupControl",
                                    params={**params, "groupId": group_ids[n % len(group_ids)]}) as r:  # fmt: skip
                await r.read()
            rtts.append((time.perf_counter() - t0) * 1000)

        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return rtts


def through_bridge(port: int, group_ids: list[str], rate: float, seconds: float) -> dict[str, dict[int, float]]:
    """Publish commands at `rate`; returns publish and `accepted` times per command number."""
    published: dict[int, float] = {}
    accepted: dict[int, float] = {}
    decoder = msgspec.json.Decoder()

    def on_state(topic: str, payload: bytes, ts: float) -> None:
        if b'"accepted"' in payload:
            doc = decoder.decode(payload)
            accepted[int(doc["request_id"])] = ts

    rx = Recorder(port, ["vpp/group/+/state"], on_state)
    tx = Recorder(port, [])

    def send(n: int) -> None:
        payload = msgspec.json.encode({"type": "power_control", "active_power": n, "duration": 60, "timeout": 1,
                                       "request_id": str(n)})  # fmt: skip
        published[n] = time.time()
        tx.publish(f"vpp/group/{group_ids[n % len(group_ids)]}/set", payload)

    paced(rate, seconds, send)
    deadline = time.time() + 10
    while len(accepted) < len(published) and time.time() < deadline:
        time.sleep(0.05)
    rx.close()
    tx.close()
    return {"published": published, "accepted": accepted}


def stats(values: list[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 99)


def run(rate: float = 200, seconds: float = 10) -> str:
    groups = max(200, int(rate))
    with stack(groups=groups, sim_args=("--task-delay", "300", "--result-delay", "600"),
               bridge_config=BRIDGE_CONFIG) as s:  # fmt: skip
        group_ids = s.group_ids()
        mqtt = bare_mqtt(s.broker_port, rate, seconds)
        http = asyncio.run(bare_http(s.sim_url, group_ids, rate, seconds))
        threading.Event().wait(1)
        bridge = through_bridge(s.broker_port, group_ids, rate, seconds)
        calls = [c for c in s.sim_calls()
                 if c["path"] == "/commandapi/groupControl" and c["params"].get("proidTime") == "60"]  # fmt: skip
    return report(rate, seconds, mqtt, http, bridge, calls)


def report(rate: float, seconds: float, mqtt: list[float], http: list[float], bridge: dict[str, dict[int, float]],
           calls: list[dict[str, Any]]) -> str:  # fmt: skip
    published, accepted = bridge["published"], bridge["accepted"]
    total = [(accepted[n] - published[n]) * 1000 for n in published if n in accepted]
    by_power = {int(c["params"]["activePower"]): c for c in calls}
    inbound = [(by_power[n]["ts"] - published[n]) * 1000 for n in published if n in by_power]
    outbound = [(accepted[n] - by_power[n]["answered"]) * 1000 for n in accepted if n in by_power]
    m50, m99 = stats(mqtt)
    h50, h99 = stats(http)
    t50, t99 = stats(total)
    bare50, bare99 = 2 * m50 + h50, 2 * m99 + h99
    lines = [
        f"### Added latency at {rate:g} commands/s for {seconds:g} s ({len(total)} of {len(published)} accepted)",
        "",
        "| path | p50 ms | p99 ms |",
        "|---|---:|---:|",
        f"| bare MQTT publish -> subscriber (one way) | {m50:.2f} | {m99:.2f} |",
        f"| bare aiohttp request to the simulator | {h50:.2f} | {h99:.2f} |",
        f"| bare total (2 x MQTT + 1 x HTTP) | {bare50:.2f} | {bare99:.2f} |",
        f"| bridge: publish -> simulator receives the call | {stats(inbound)[0]:.2f} | {stats(inbound)[1]:.2f} |",
        f"| bridge: simulator answers -> `accepted` at subscriber | {stats(outbound)[0]:.2f} | {stats(outbound)[1]:.2f} |",
        f"| bridge: publish -> `accepted` | {t50:.2f} | {t99:.2f} |",
        f"| **added by the bridge** (bridge - bare) | **{t50 - bare50:.2f}** | **{t99 - bare99:.2f}** |",
        f"| ratio bridge / bare | {t50 / bare50:.2f} | {t99 / bare99:.2f} |",
        "",
        "Target: under 2 ms added at p50 and under 10 ms at p99 at 200 commands/s on 2 cores.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(run(args.rate, args.seconds))
