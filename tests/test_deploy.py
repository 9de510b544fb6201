"""The shipped broker config and `make demo`, exercised for real."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from semookii_bridge.api import RetryPolicy
from semookii_bridge.cli.demo import REPO_MOSQUITTO, free_port, render_broker_config, running_broker
from semookii_bridge.config import HttpConfig, MqttConfig
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN, bridge_config_for
from .support.broker import PASSWORDS, Probe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[int]:
    """mosquitto running the repo's `mosquitto/` config (password file + ACL) on a free port."""
    port = free_port()
    with running_broker(render_broker_config(REPO_MOSQUITTO, tmp_path, port, PASSWORDS), port):
        yield port


def test_anonymous_client_is_refused(secured_broker: int) -> None:
    """Without credentials the broker refuses the connection."""
    assert not connects(secured_broker, None, None)


async def test_acl_lets_operators_command_and_stops_others(
    secured_broker: int, sim: RunningSimulator, tmp_path: Path
) -> None:
    """The operator's command completes, on the ordinary and the safety lane; a viewer's publish to either never
    reaches the bridge."""
    config = bridge_config_for(secured_broker, sim, tmp_path, mqtt={"username": "bridge", "password": PASSWORDS["bridge"]})  # fmt: skip
    service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
    await service.start()
    group_id = sim.simulator.state.list_groups()[0].id
    try:
        with Probe(secured_broker, username="viewer", password=PASSWORDS["viewer"]) as viewer:
            viewer.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "sneaky"})
            with Probe(secured_broker, username="operator", password=PASSWORDS["operator"]) as operator:
                operator.publish(
                    f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "legit"}
                )
                await operator.wait_status(f"vpp/group/{group_id}/state", "legit", "completed")
                assert [m.json() for m in operator.on("vpp/bridge/state")][-1] == {"state": "online"}
                operator.publish(f"vpp/safety/group/{group_id}/set",
                                 {"type": "manual", "action": "stop", "request_id": "safety-lane"})  # fmt: skip
                await operator.wait_status(f"vpp/group/{group_id}/state", "safety-lane", "completed")
                viewer.publish(f"vpp/safety/group/{group_id}/set",
                               {"type": "manual", "action": "stop", "request_id": "sneaky-safety"})  # fmt: skip
                await asyncio.sleep(0.3)
                assert not operator.states(f"vpp/group/{group_id}/state", "sneaky")
                assert not operator.states(f"vpp/group/{group_id}/state", "sneaky-safety")
    finally:
        await service.stop()
    assert len(sim.simulator.calls_to("/commandapi/groupControl")) == 2


async def test_only_the_bridge_may_publish_state(secured_broker: int) -> None:
    """An operator cannot forge a state message: the ACL drops it."""
    with Probe(secured_broker, username="operator", password=PASSWORDS["operator"]) as operator:
        operator.publish("vpp/group/1/state", {"status": "completed", "request_id": "forged"})
        await asyncio.sleep(0.3)
        assert not operator.on("vpp/group/1/state")


async def test_the_shipped_acl_lets_the_budget_and_sparkplug_through(
    secured_broker: int, sim: RunningSimulator, tmp_path: Path
) -> None:
    """With the repo's ACL the budget reaches operators, and the Sparkplug edge node (its own `sparkplug` user)
    reads the device list, is born, and turns a SCADA operator's DCMD into a command that completes."""
    from semookii_bridge.sparkplug.codec import DataType, Metric, decode, encode

    group_id = sim.simulator.state.list_groups()[0].id
    config = bridge_config_for(
        secured_broker, sim, tmp_path, mqtt={"username": "bridge", "password": PASSWORDS["bridge"]},
        sparkplug={"enabled": True, "username": "sparkplug", "password": PASSWORDS["sparkplug"]},
    )  # fmt: skip
    with Probe(secured_broker, subscribe=["vpp/#", "spBv1.0/#"], username="operator",
               password=PASSWORDS["operator"]) as operator:  # fmt: skip
        service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
        await service.start()
        try:
            await operator.wait_for(lambda: operator.on("vpp/bridge/budget"))
            dbirth = f"spBv1.0/vpp/DBIRTH/semookii-bridge/group-{group_id}"
            await operator.wait_for(lambda: operator.on(dbirth))
            write = encode([Metric("Setpoint/ActivePower", DataType.Int32, -1500)], timestamp=1, seq=None)
            operator.publish(f"spBv1.0/vpp/DCMD/semookii-bridge/group-{group_id}", write)
            ddata = f"spBv1.0/vpp/DDATA/semookii-bridge/group-{group_id}"

            def completed() -> bool:
                values = [{m.name: m.value for m in decode(r.payload).metrics} for r in operator.on(ddata)]
                return any(v.get("State/Status") == "completed" for v in values)

            await operator.wait_for(completed)
        finally:
            await service.stop()
    calls = sim.simulator.calls_to("/commandapi/groupControl")
    assert [c.params["activePower"] for c in calls] == ["-1500"]


def test_make_demo_runs_to_completed_on_ports_of_its_own() -> None:
    """`make demo` with DEMO_ONCE=1 picks free ports for the broker and the status page (not the configured
    defaults, which a running broker or bridge may hold), prints the status page's URL, shows the whole
    lifecycle and exits 0."""
    env = {**os.environ, "DEMO_ONCE": "1"}
    result = subprocess.run(["make", "-s", "demo"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for status in ("queued", "accepted", "dispatched", "completed"):
        assert status in result.stdout
    page = re.search(r"bridge     http://127\.0\.0\.1:(\d+)/  \(status page", result.stdout)
    broker = re.search(r"mosquitto  127\.0\.0\.1:(\d+) ", result.stdout)
    assert page and broker, result.stdout
    assert int(page.group(1)) != HttpConfig().port and int(broker.group(1)) != MqttConfig().port


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (ExecStart pointed at this venv's entry point)."""
    import shutil
    import sys

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    entry = Path(sys.executable).parent / "semookii-bridge"
    unit = (ROOT / "deploy" / "systemd" / "semookii-bridge.service").read_text()
    path = tmp_path / "semookii-bridge.service"
    path.write_text(unit.replace("/opt/semookii-bridge/bin/semookii-bridge", str(entry)))
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_the_broker_password_drop_in_verifies_and_points_at_its_credential(tmp_path: Path) -> None:
    """The unit with the broker-password drop-in merged in passes `systemd-analyze verify`; the password file the
    bridge is told to read is the credential the drop-in loads."""
    import re
    import shutil
    import sys

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    drop_in = (ROOT / "deploy" / "systemd" / "broker-password.conf").read_text()
    (credential,) = re.findall(r"^LoadCredential=(\w+):/etc/semookii-bridge/mqtt-password$", drop_in, re.M)
    assert f"Environment=SEMOOKII_BRIDGE_MQTT_PASSWORD_FILE=%d/{credential}" in drop_in.splitlines()
    unit = (ROOT / "deploy" / "systemd" / "semookii-bridge.service").read_text()
    service = "\n".join(line for line in drop_in.splitlines() if line.startswith(("LoadCredential", "Environment")))
    merged = unit.replace("/opt/semookii-bridge/bin/semookii-bridge", str(Path(sys.executable).parent / "semookii-bridge"))
    path = tmp_path / "semookii-bridge.service"
    path.write_text(merged.replace("DynamicUser=yes\n", f"DynamicUser=yes\n{service}\n"))
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_container_files_reference_what_exists() -> None:
    """Every repository path the Dockerfile copies and the compose file mounts exists."""
    import re

    deploy = ROOT / "deploy"
    dockerfile = (deploy / "Dockerfile").read_text()
    copied = [p for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from" not in line
              for p in line.split()[1:-1]]  # fmt: skip
    assert copied and all((ROOT / p).exists() for p in copied), copied
    compose = (deploy / "docker-compose.yml").read_text()
    mounted = re.findall(r"- (\.\./[^:]+):", compose)
    assert mounted and all((deploy / p).resolve().exists() for p in mounted), mounted
    assert "dockerfile: deploy/Dockerfile" in compose and "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile


def test_compose_ships_no_password_and_keeps_the_broker_local() -> None:
    """The compose file mounts no password file, asks for every secret, and publishes the broker's port on
    127.0.0.1 unless MQTT_BIND says otherwise."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    broker = compose["services"]["mosquitto"]
    assert not any("passwd" in volume for volume in broker["volumes"])
    (published,) = broker["ports"]
    assert re.fullmatch(r"\$\{MQTT_BIND:-127\.0\.0\.1\}:(\d+):\1", published), published
    assert all(spec["file"].startswith("./secrets/") for spec in compose["secrets"].values())
    assert not (ROOT / "mosquitto" / "passwd.example").exists()


def test_compose_makes_the_password_file_from_its_secrets(tmp_path: Path) -> None:
    """The broker service's start script, run here with its paths moved into a temp dir: mosquitto then lets
    the operator in with the secret's password and refuses any other."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    script = compose["services"]["mosquitto"]["command"][2].replace("$$", "$")
    secrets_dir, data, config_dir, etc = (tmp_path / d for d in ("secrets", "data", "config", "etc"))
    for folder in (secrets_dir, data, config_dir, etc):
        folder.mkdir()
    for user in ("bridge", "operator"):
        (secrets_dir / f"mqtt_{user}_password").write_text(PASSWORDS[user])
    shutil.copy(ROOT / "mosquitto" / "mosquitto.conf", etc / "mosquitto.conf")
    shutil.copy(ROOT / "mosquitto" / "acl", etc / "acl")
    script = (script.replace("/run/secrets/", f"{secrets_dir}/").replace("/mosquitto/data/", f"{data}/")
              .replace("/mosquitto/config/", f"{config_dir}/")
              .replace("/etc/mosquitto/semookii/mosquitto.conf", f"{etc}/mosquitto.conf"))  # fmt: skip
    script = script.split("exec mosquitto")[0]
    subprocess.run(["sh", "-c", script], check=True, timeout=60)
    port = free_port()
    conf = re.sub(r"\nlistener \d+\n", f"\nlistener {port} 127.0.0.1\n", (config_dir / "run.conf").read_text(), count=1)
    assert f"password_file {data}/passwd" in conf  # the generated file, not a shipped one
    conf = conf.replace("acl_file /etc/mosquitto/semookii/acl", f"acl_file {etc}/acl")
    (config_dir / "run.conf").write_text(("user root\n" if os.geteuid() == 0 else "") + conf + "\nlog_dest none\n")
    with running_broker(config_dir / "run.conf", port):
        assert connects(port, "operator", PASSWORDS["operator"])
        assert not connects(port, "operator", "operator-demo-password")


def connects(port: int, user: str | None, password: str | None) -> bool:
    """Whether the broker accepts these credentials (None: none); False too when it does not answer."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    if user is not None:
        client.username_pw_set(user, password)
    reasons: list[Any] = []
    client.on_connect = lambda c, u, f, rc, p: reasons.append(rc)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for _ in range(100):
        if reasons:
            break
        time.sleep(0.02)
    client.loop_stop()
    client.disconnect()
    return bool(reasons) and not reasons[0].is_failure


async def test_a_broker_refusing_the_bridges_publishes_is_an_error_in_log_readyz_and_metrics(
    secured_broker: int, sim: RunningSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bridge connects as a user the ACL lets read commands but not publish states: the broker refuses its
    publishes (MQTT 5 PUBACK 0x87), and the bridge says so (log `mqtt_publish_refused` naming the topic,
    `/readyz` 503 with `publish_refused`, `semookii_mqtt_publishes_refused_total`) instead of running silently."""
    viewer = {"username": "viewer", "password": PASSWORDS["viewer"]}
    config = bridge_config_for(secured_broker, sim, tmp_path, mqtt=viewer)
    service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
    await service.start()
    base = f"http://127.0.0.1:{service.http_port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                async with session.get(base + "/readyz") as r:
                    ready = await r.json()
                if ready["mqtt"]["publish_refused"]:
                    break
                await asyncio.sleep(0.1)
            async with session.get(base + "/metrics") as r:
                metrics = await r.text()
    finally:
        await service.stop()
    assert r.status == 200 and "mqtt" in ready["failing"] and ready["mqtt"]["connected"] is True
    assert ready["mqtt"]["publish_refused"].startswith("vpp/") and "Not authorized" in ready["mqtt"]["publish_refused"]
    refused = [line for line in metrics.splitlines() if line.startswith("semookii_mqtt_publishes_refused_total ")]
    assert refused and float(refused[0].split()[1]) >= 1
    assert "mqtt_publish_refused topic=vpp/" in caplog.text
