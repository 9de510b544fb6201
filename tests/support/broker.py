"""Test helpers: a real mosquitto on a free loopback port, and a paho probe client that records messages."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)


class Mosquitto:
    """A mosquitto process with persistence in a temp dir, so sessions survive `restart()`."""

    def __init__(self, workdir: Path, *, config_text: str | None = None, port: int | None = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (make test installs it)")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            config_text
            or (
                # `user root`: as root mosquitto would drop to the `mosquitto` user, which cannot write the
                # persistence file under pytest's private temp dirs (ignored when not run as root).
                f"user root\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                f"persistence_location {workdir}/\nautosave_interval 1\nmax_queued_messages 100000\nset_tcp_nodelay true\n"
                "log_dest none\n"
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError as exc:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read() if self.proc.stderr else b""
                    raise RuntimeError(f"mosquitto exited: {err!r}") from exc
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    correlation: bytes | None = None

    def json(self) -> Any:
        return json.loads(self.payload)


class Probe:
    """An MQTT 5 client standing in for an operator: publishes commands and records what comes back."""

    def __init__(self, port: int, *, subscribe: str | list[str] = "vpp/#", client_id: str | None = None,
                 username: str | None = None, password: str | None = None) -> None:  # fmt: skip
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=paho.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        self.subs = [subscribe] if isinstance(subscribe, str) else subscribe
        self.port = port

    def __enter__(self) -> Probe:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self._connected.wait(5):
            raise RuntimeError("probe could not connect")
        for sub in self.subs:
            self.client.subscribe(sub, qos=1)
        time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain),
                                          getattr(props, "CorrelationData", None)))  # fmt: skip

    def publish(self, topic: str, payload: Any, *, retain: bool = False, response_topic: str | None = None,
                correlation: bytes | None = None, expiry: int | None = None) -> None:  # fmt: skip
        data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        props = None
        if response_topic or correlation or expiry is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
            if expiry is not None:
                props.MessageExpiryInterval = expiry
        self.client.publish(topic, data, qos=1, retain=retain, properties=props).wait_for_publish(5)

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def states(self, topic: str, request_id: str | None = None) -> list[dict[str, Any]]:
        docs = [m.json() for m in self.on(topic) if m.payload]
        return [d for d in docs if request_id is None or d.get("request_id") == request_id]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s; last messages: {self.messages[-5:]}")

    async def wait_status(self, topic: str, request_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((d for d in self.states(topic, request_id) if d["status"] == status), None)

        result: dict[str, Any] = await self.wait_for(find, timeout)
        return result

    async def wait_response(self, op: str, timeout: float = 10.0, prefix: str = "vpp") -> dict[str, Any]:
        result: dict[str, Any] = (await self.wait_for(lambda: self.on(f"{prefix}/bridge/response/{op}"), timeout))[
            -1
        ].json()
        return result


PASSWORDS = {"bridge": "bridge-test-password", "operator": "operator-test-password",
             "viewer": "viewer-test-password", "sparkplug": "sparkplug-test-password"}  # fmt: skip
"""Broker passwords of the tests' secured brokers (no password ships with the repo)."""


def wait_port(port: int, seconds: float = 30) -> bool:
    """Whether something listens on 127.0.0.1:`port` within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def shipped_queue_limits() -> str:
    """The backlog lines of the shipped broker configuration (mosquitto/mosquitto.conf)."""
    conf = Path(__file__).resolve().parents[2] / "mosquitto" / "mosquitto.conf"
    lines = [line for line in conf.read_text().splitlines() if line.startswith(("max_queued", "max_inflight"))]
    assert any(line.startswith("max_queued_messages") for line in lines)
    return "\n".join(lines) + "\n"
