"""`make demo`: mosquitto with the repo's `mosquitto/` config, the simulator and the bridge, then one
command's whole lifecycle printed as it arrives. Ctrl-C stops everything; DEMO_ONCE=1 exits after it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..config import ApiConfig, BridgeConfig, CommandsConfig, HttpConfig, JournalConfig, MqttConfig, RateLimitConfig
from ..config.secret import Secret
from ..interface.topics import Target, Topics
from ..mqtt import StateFollower
from ..ops import logs
from ..service import Service
from ..simulator import SimConfig, serve

REPO_MOSQUITTO = Path(__file__).resolve().parents[2] / "mosquitto"
USERS = ("bridge", "operator", "viewer", "sparkplug")
"""The broker users the repo's ACL knows; no password for them ships: the demo makes new ones each run."""
SIM_TOKEN = "sim-token"


def fresh_passwords() -> dict[str, str]:
    """A new random password per broker user (the demo prints the operator's)."""
    return {user: secrets.token_urlsafe(12) for user in USERS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_passwords(path: Path, passwords: dict[str, str]) -> None:
    """A mosquitto password file (hashed by `mosquitto_passwd`) for these users."""
    binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.touch(mode=0o600)
    for user, password in passwords.items():
        subprocess.run([binary, "-b", str(path), user, password], check=True, capture_output=True, timeout=30)


def render_broker_config(source: Path, workdir: Path, port: int, passwords: dict[str, str]) -> Path:
    """The repo's broker config, made runnable in `workdir` on a loopback `port` (same ACL), with a password
    file for `passwords`."""
    write_passwords(workdir / "passwd", passwords)
    shutil.copy(source / "acl", workdir / "acl")
    text = (source / "mosquitto.conf").read_text(encoding="utf-8")
    text = text.replace("/etc/mosquitto/semookii/", f"{workdir}/")
    text = text.replace("persistence_location /var/lib/mosquitto/", f"persistence_location {workdir}/")
    text = text.replace("\nlistener 1883\n", f"\nlistener {port} 127.0.0.1\n")
    if os.geteuid() == 0:
        text = "user root\n" + text  # else mosquitto drops to `mosquitto`, which cannot read a private temp dir
    path = workdir / "mosquitto.conf"
    path.write_text(text + "\nlog_dest none\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def running_broker(config: Path, port: int) -> Iterator[None]:
    """Run mosquitto with `config` until the block exits."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"mosquitto did not start: {err}") from None
                time.sleep(0.05)
        yield None
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


def _line(start: float, state: dict[str, object]) -> str:
    status = str(state["status"])
    detail = {
        "queued": f"request_id={state['request_id']}",
        "accepted": f"command_id={state['command_id']}",
        "dispatched": f"task_id={state['task_id']}",
        "completed": f"results={json.dumps(state['results'])}",
    }.get(status, f"error={json.dumps(state.get('error'))}")
    return f"  +{time.monotonic() - start:5.2f}s  {status:<10}  {detail}"


async def demo(once: bool) -> int:
    """Run the demo; returns the exit code (0 when the sample command completed)."""
    workdir = Path(tempfile.mkdtemp(prefix="semookii-demo-"))
    port = free_port()
    passwords = fresh_passwords()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with running_broker(render_broker_config(REPO_MOSQUITTO, workdir, port, passwords), port):
            sim_config = SimConfig(
                tokens=[SIM_TOKEN], task_delay=0.5, result_delay=1.5, groups=2, inverters_per_group=3
            )
            async with serve(sim_config) as sim:
                config = BridgeConfig(
                    mqtt=MqttConfig(host="127.0.0.1", port=port, username="bridge", password=passwords["bridge"]),
                    api=ApiConfig(base_url=sim.base_url),
                    rate_limit=RateLimitConfig(rate=2.0, burst=5),
                    commands=CommandsConfig(poll_initial=0.25, poll_max=1.0),
                    journal=JournalConfig(path=str(workdir / "journal.db")),
                    http=HttpConfig(port=0),  # a free port: the demo never collides with a running bridge
                )
                service = Service(config, Secret(SIM_TOKEN))
                await service.start()
                try:
                    urls = (port, sim.base_url, f"http://127.0.0.1:{service.http_port}")
                    group = sim.simulator.state.list_groups()[0].id
                    return await _show(group, urls, passwords["operator"], once, stop)
                finally:
                    await service.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _show(group_id: str, urls: tuple[int, str, str], password: str, once: bool, stop: asyncio.Event) -> int:
    port, sim_url, bridge_url = urls
    print(
        f"mosquitto  127.0.0.1:{port}  (config: mosquitto/, ACL enforced; user operator, password {password},"
        " made for this run)"
    )
    print(f"simulator  {sim_url}  (Semookii Cloud Control API, no account needed; token {SIM_TOKEN})")
    print(f"bridge     {bridge_url}/  (status page; {bridge_url}/metrics, {bridge_url}/readyz); 2 calls/s\n")
    command = {"type": "power_control", "active_power": -3000, "duration": 600, "timeout": 10, "request_id": "demo-1"}
    topic = Topics().command(Target("group", group_id))
    async with StateFollower("127.0.0.1", port, username="operator", password=password) as operator:
        print(f"publish  {topic}\n         {json.dumps(command)}\n")
        start = time.monotonic()
        operator.send(topic, json.dumps(command).encode())
        final: dict[str, object] = {}
        async for state in operator.follow("demo-1", 30):
            print(_line(start, state), flush=True)
            final = state
    print(f"\nlast message on vpp/group/{group_id}/state (retained):\n{json.dumps(final, indent=2)}")
    ok = final.get("status") == "completed"
    if once:
        return 0 if ok else 1
    print(
        f"\nTry your own (Ctrl-C to stop):\n"
        f"  mosquitto_sub -h 127.0.0.1 -p {port} -u operator -P {password} -t 'vpp/#' -v\n"
        f"  mosquitto_pub -h 127.0.0.1 -p {port} -u operator -P {password} -t {topic} "
        f'-m \'{{"type":"soc_control","target_soc":80,"charge_power":3000,"timeout":10}}\'\n'
        f"  mosquitto_pub -h 127.0.0.1 -p {port} -u operator -P {password} "
        f"-t vpp/bridge/request/group/list -m '{{\"all\":true}}'",
        flush=True,
    )
    await stop.wait()
    return 0 if ok else 1


def main() -> None:
    logs.setup("WARNING")
    once = os.environ.get("DEMO_ONCE", "") not in ("", "0")
    sys.exit(asyncio.run(demo(once)))


if __name__ == "__main__":
    main()
