"""Shared set-up for the benchmarks: mosquitto, the simulator and the bridge, each its own process.

Everything listens on loopback ports chosen at random, and stops when the `Stack` block exits.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}") from None
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def machine() -> str:
    """One line about the machine the numbers come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mosquitto = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {mosquitto}, "
            f"{platform.system()} {platform.release()}")  # fmt: skip


def mosquitto_binary() -> str:
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class ProcStats:
    """CPU seconds and resident memory of one process, read from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.max_rss_mb = 0.0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.ticks

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                value = int(line.split()[1]) / 1024
                self.max_rss_mb = max(self.max_rss_mb, value)
                return value
        return 0.0


@dataclass
class Recorder:
    """An MQTT 5 client that timestamps every message it receives (wall clock, comparable across processes)."""

    port: int
    topics: list[str]
    on_message: Callable[[str, bytes, float], None] | None = None
    client: paho.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(1000)
        ready = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: ready.set()
        self.client.on_message = lambda c, u, m: self.on_message and self.on_message(m.topic, m.payload, time.time())
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("bench client could not connect")
        for topic in self.topics:
            self.client.subscribe(topic, qos=1)
        time.sleep(0.2)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Stack:
    """Ports and processes of one benchmark run."""

    workdir: Path
    broker_port: int
    sim_url: str
    bridge: subprocess.Popen[bytes] | None
    procs: list[subprocess.Popen[bytes]]

    def sim_calls(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.sim_url}/_sim/calls", timeout=30) as r:
            return list(msgspec.json.decode(r.read()))

    def group_ids(self) -> list[str]:
        with urllib.request.urlopen(f"{self.sim_url}/_sim/fleet", timeout=30) as r:
            return [g["id"] for g in json.loads(r.read())["groups"]]


LOG_LEVEL = os.environ.get("SEMOOKII_BENCH_LOG_LEVEL", "WARNING")
"""The bridge's and simulator's log level; at INFO the bridge also writes a log line per state message."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "semookii_bridge.cli", "--log-level", LOG_LEVEL, *args]


@contextmanager
def stack(
    *,
    groups: int,
    per_group: int = 1,
    sim_args: tuple[str, ...] = (),
    bridge_config: str | None = None,
    http_port: int | None = None,
    journal: str = "",
) -> Iterator[Stack]:
    """mosquitto + simulator (+ the bridge when `bridge_config` is TOML for its sections) until exit; `journal`:
    more lines of the bridge's `[journal]` section (e.g. a PostgreSQL `url`)."""
    workdir = Path(tempfile.mkdtemp(prefix="semookii-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "SEMOOKII_TOKEN": TOKEN}
    try:
        broker_port = free_port()
        conf = workdir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"{user}listener {broker_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
                        "max_inflight_messages 0\nset_tcp_nodelay true\nlog_dest none\n")  # fmt: skip
        procs.append(subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL))
        wait_port(broker_port, procs[-1])
        sim_port = free_port()
        procs.append(subprocess.Popen(_cli("simulate", "--port", str(sim_port), "--groups", str(groups),
                                           "--inverters-per-group", str(per_group), *sim_args), env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        wait_port(sim_port, procs[-1])
        sim_url = f"http://127.0.0.1:{sim_port}"
        bridge = None
        if bridge_config is not None:
            toml = workdir / "bridge.toml"
            toml.write_text(
                f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n[api]\nbase_url = "{sim_url}"\n'
                f'[journal]\npath = "{workdir / "journal.db"}"\n{journal}'
                + (f"[http]\nport = {http_port}\n" if http_port else "[http]\nenabled = false\n")
                + bridge_config
            )
            bridge = subprocess.Popen(_cli("run", "--config", str(toml)), env=env, stdout=subprocess.DEVNULL)
            procs.append(bridge)
            online = threading.Event()
            probe = Recorder(broker_port, ["vpp/bridge/state"],
                             lambda t, p, ts: b"online" in p and online.set())  # fmt: skip
            if not online.wait(20):
                raise RuntimeError("the bridge did not come online")
            probe.close()
        yield Stack(workdir, broker_port, sim_url, bridge, procs)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
