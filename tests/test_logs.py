"""Logs for people and machines: every log call reads back into an event and fields, logfmt lines are valid
logfmt, JSON lines carry each field as its own key, and level and format come from the file, the environment
or flags after the subcommand. `run` names why the broker failed, with an exit code per cause."""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from semookii_bridge.api import RetryPolicy
from semookii_bridge.cli.demo import REPO_MOSQUITTO, render_broker_config, running_broker
from semookii_bridge.config.secret import Secret
from semookii_bridge.ops import logs
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN, bridge_config_for
from .support.broker import PASSWORDS, Mosquitto, free_port

PACKAGE = Path(__file__).resolve().parents[1] / "semookii_bridge"
LOGFMT = re.compile(r'^(?:[A-Za-z_][\w.]*=(?:[^\s"=\\]+|"(?:[^"\\]|\\.)*")(?: |$))+$')
"""One logfmt line: key=bare or key="quoted with \\" escapes", separated by single spaces."""


@pytest.fixture
def broker_with_passwords(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """mosquitto with the repo's password file and ACL, on a free port."""
    port = free_port()
    with running_broker(render_broker_config(REPO_MOSQUITTO, tmp_path, port, PASSWORDS), port):
        yield port, PASSWORDS


def log_calls() -> list[tuple[str, str, int]]:
    """(file, template, number of arguments) of every `log.<level>("...", ...)` call in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "log" and node.args and isinstance(node.args[0], ast.Constant)):  # fmt: skip
                first = node.args[0].value
                if node.func.attr == "log":
                    first = node.args[1].value if isinstance(node.args[1], ast.Constant) else ""
                    found.append((path.name, str(first), len(node.args) - 2))
                else:
                    found.append((path.name, str(first), len(node.args) - 1))
    return found


def record(template: str, *args: Any, exc: bool = False) -> logging.LogRecord:
    return logging.LogRecord("semookii_bridge.test", logging.WARNING, __file__, 1, template, args or None, None)


def test_every_log_call_reads_back_into_an_event_and_fields() -> None:
    """Each template is `event key=%s ...`: an event name, then only key=value words, one argument each."""
    calls = log_calls()
    assert len(calls) > 50
    for where, template, count in calls:
        event, fields = logs.fields(record(template, *(["x"] * count)))
        assert event != "log" and "msg" not in fields, f"{where}: {template!r}"
        assert len([v for v in fields.values() if v == "x"]) == count, f"{where}: {template!r}"


def test_logfmt_lines_are_valid_and_quote_what_needs_it() -> None:
    """Values with spaces, quotes, `=` or newlines are quoted and escaped; the timestamp is RFC 3339."""
    line = logs.LogfmtFormatter().format(record("mqtt_disconnected reason=%s topic=%s n=%d", 'Normal "bye"\nnow', "a=b", 3))
    assert LOGFMT.match(line), line
    assert re.match(r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=warning logger=semookii_bridge.test "
                    r"event=mqtt_disconnected ", line)  # fmt: skip
    assert 'reason="Normal \\"bye\\"\\nnow" topic="a=b" n=3' in line


def test_json_lines_carry_each_field_as_its_own_key() -> None:
    """request_id, target and code are keys a log store can filter on; numbers stay numbers."""
    line = logs.JsonFormatter().format(record("rejected request_id=%s topic=%s code=%s ms=%.1f", "r-1", "vpp/x", "bad", 2.25))
    doc = json.loads(line)
    assert doc["event"] == "rejected" and doc["request_id"] == "r-1" and doc["code"] == "bad" and doc["ms"] == 2.2
    assert doc["level"] == "warning" and doc["ts"].endswith("Z") and "msg" not in doc


def test_a_library_line_keeps_its_text() -> None:
    """A message that is not one of ours keeps its text in `msg`."""
    event, fields = logs.fields(record("Unclosed client session %r", object()))
    assert event == "log" and fields["msg"].startswith("Unclosed client session <object")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SEMOOKII_BRIDGE_")}
    environ.update({"SEMOOKII_TOKEN": TOKEN, **(env or {})})
    return subprocess.run([sys.executable, "-m", "semookii_bridge.cli", *args], capture_output=True, text=True,
                          env=environ, timeout=timeout)  # fmt: skip


@pytest.mark.parametrize("source", ["flag after the subcommand", "environment", "config file"])
def test_run_names_an_unreachable_broker_in_json(tmp_path: Path, source: str) -> None:
    """JSON logs asked for by `run --log-format json`, SEMOOKII_BRIDGE_LOG_FORMAT or `[log] format`: lines with
    the event `mqtt_unreachable`, then one line naming host, port and the OS reason, exit code 3."""
    port = free_port()
    (tmp_path / "bridge.toml").write_text('[log]\nformat = "json"\n' if source == "config file" else "")
    flags = ["--log-format", "json"] if source.startswith("flag") else []
    env = {"SEMOOKII_BRIDGE_MQTT_START_TIMEOUT": "1.5", "SEMOOKII_BRIDGE_HTTP_PORT": "0"}
    if source == "environment":
        env["SEMOOKII_BRIDGE_LOG_FORMAT"] = "json"
    out = run_cli("run", "--config", str(tmp_path / "bridge.toml"), *flags, "--mqtt-host", "127.0.0.1",
                  "--mqtt-port", str(port), "--journal", str(tmp_path / "j.db"), env=env)  # fmt: skip
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == f"Error: broker unreachable at 127.0.0.1:{port}: Connection refused"
    events = [json.loads(line) for line in lines[:-1] if line.startswith("{")]
    assert any(e["event"] == "mqtt_unreachable" and e["port"] == port for e in events)


def test_run_names_refused_credentials_with_the_level_from_the_environment(
    tmp_path: Path, broker_with_passwords: tuple[int, dict[str, str]]
) -> None:
    """A wrong broker password ends `run` at once (no 30 s of retries): "not authorized (check ...)", exit code
    4; SEMOOKII_BRIDGE_LOG_LEVEL=warning leaves the INFO lines out."""
    port, _ = broker_with_passwords
    started = time.monotonic()
    out = run_cli("run", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), "--journal", str(tmp_path / "j.db"),
                  env={"SEMOOKII_BRIDGE_MQTT_USERNAME": "bridge", "SEMOOKII_BRIDGE_MQTT_PASSWORD": "wrong",
                       "SEMOOKII_BRIDGE_HTTP_PORT": "0", "SEMOOKII_BRIDGE_LOG_LEVEL": "warning"})  # fmt: skip
    assert out.returncode == 4, out.stderr
    assert time.monotonic() - started < 10  # no retrying for mqtt.start_timeout (30 s): no retry fixes a password
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: the broker at 127.0.0.1:{port} refused the credentials: not authorized (check")
    assert "level=info" not in out.stderr and "event=mqtt_not_authorized" in out.stderr
    assert all(LOGFMT.match(line) for line in out.stderr.strip().splitlines()[:-1])


async def test_a_client_that_keeps_taking_the_session_is_named_and_the_bridge_keeps_running(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path, caplog: Any
) -> None:
    """A client that is no bridge connects with the bridge's client_id again and again: the flapping is named
    (the broker restarting, or such a client), not an unspecified error, and the bridge does not stop (only an
    older bridge present would make it give way: tests/test_copies.py)."""
    import paho.mqtt.client as paho

    cfg = bridge_config_for(broker.port, sim, tmp_path, mqtt={"client_id": "same-id"})
    service = Service(cfg, Secret(TOKEN), retry=RetryPolicy.instant())
    with caplog.at_level(logging.WARNING):
        await service.start()
        try:
            for _ in range(4):
                intruder = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="same-id", protocol=paho.MQTTv5)
                intruder.connect("127.0.0.1", broker.port)
                intruder.loop_start()
                await asyncio.sleep(0.5)
                intruder.disconnect()
                intruder.loop_stop()
                await asyncio.sleep(1.5)
            assert service.failed is not None and not service.failed.done()
        finally:
            await service.stop()
    named = [m for r in caplog.records if (m := r.getMessage()).startswith("mqtt_flapping")]
    assert any("client_id=same-id" in m and "a client that is no bridge using this client_id" in m for m in named)


def test_config_check_connect_names_refused_broker_credentials(
    broker_with_passwords: tuple[int, dict[str, str]],
) -> None:
    """`config check --connect` with a wrong broker password: "not authorized (check ...)", exit 1."""
    port, _ = broker_with_passwords
    out = run_cli("config", "check", "--connect", env={
        "SEMOOKII_BRIDGE_MQTT_PORT": str(port), "SEMOOKII_BRIDGE_MQTT_HOST": "127.0.0.1",
        "SEMOOKII_BRIDGE_MQTT_USERNAME": "bridge", "SEMOOKII_BRIDGE_MQTT_PASSWORD": "wrong",
        "SEMOOKII_BRIDGE_API_BASE_URL": f"http://127.0.0.1:{free_port()}", "SEMOOKII_BRIDGE_API_TIMEOUT": "2"})
    assert out.returncode == 1
    assert f"FAIL mqtt: the broker at 127.0.0.1:{port} refused the credentials: not authorized" in out.stderr
    assert re.search(r"FAIL api: http_error: cannot connect to 127\.0\.0\.1:\d+: Connection refused", out.stderr)


@pytest.mark.parametrize("user", ["bridge", "sparkplug"])
def test_config_check_connect_names_what_the_acl_refuses_the_bridge(
    user: str, broker_with_passwords: tuple[int, dict[str, str]]
) -> None:
    """`config check --connect` as a user the ACL lets connect but not publish answers: a FAIL line naming the
    topic; as the bridge's user, mqtt ok. (mosquitto grants a subscription its ACL will not deliver to, so the
    subscription check only speaks for brokers that refuse at SUBACK.)"""
    port, passwords = broker_with_passwords
    out = run_cli("config", "check", "--connect", env={
        "SEMOOKII_BRIDGE_MQTT_PORT": str(port), "SEMOOKII_BRIDGE_MQTT_HOST": "127.0.0.1",
        "SEMOOKII_BRIDGE_MQTT_USERNAME": user, "SEMOOKII_BRIDGE_MQTT_PASSWORD": passwords[user],
        "SEMOOKII_BRIDGE_API_BASE_URL": f"http://127.0.0.1:{free_port()}", "SEMOOKII_BRIDGE_API_TIMEOUT": "2"})
    refusals = [line for line in out.stderr.splitlines() if line.startswith("FAIL mqtt:")]
    if user == "bridge":
        assert "mqtt: ok" in out.stderr and refusals == [], out.stderr
        return
    assert any("publish to vpp/bridge/response/config-check (Not authorized)" in line for line in refusals), out.stderr
    assert out.returncode == 1


def test_run_with_its_http_port_taken_says_so_in_one_line(tmp_path: Path, broker: Mosquitto) -> None:
    """Another process holds http.port: one line naming host, port and reason, exit code 6, no traceback."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        out = run_cli("run", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(broker.port), "--journal",
                      str(tmp_path / "j.db"), env={"SEMOOKII_BRIDGE_HTTP_PORT": str(port)})  # fmt: skip
    finally:
        holder.close()
    assert out.returncode == 6, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (f"Error: cannot serve http on 127.0.0.1:{port}: Address already in "
                                                   "use (set http.port, or http.enabled = false; or is this bridge "
                                                   "already running?)")  # fmt: skip
    assert "Traceback" not in out.stderr and "Unclosed" not in out.stderr
