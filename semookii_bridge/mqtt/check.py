"""`config check --connect`: one throwaway connection with the configured credentials and TLS, on a client id
of its own (`<client_id>-check`, clean session) so it never takes over the running bridge's session."""

from __future__ import annotations

import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ..config import MqttConfig
from .client import credentials
from .failures import refused, unreachable


def try_broker(cfg: MqttConfig, timeout: float = 10.0) -> str | None:
    """None when the broker accepts the credentials; else the cause, worded like `run`'s errors."""
    v5 = cfg.protocol == 5
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{cfg.client_id}-check",
                         protocol=paho.MQTTv5 if v5 else paho.MQTTv311)  # fmt: skip
    where = f"{cfg.host}:{cfg.port}"
    answered = threading.Event()
    verdict: list[str | None] = []

    def on_connect(c: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        failed = getattr(reason, "is_failure", False)
        verdict.append(refused(where, int(getattr(reason, "value", 0)), str(reason)).message if failed else None)
        answered.set()

    client.on_connect = on_connect
    try:
        credentials(client, cfg)
        client.connect(cfg.host, cfg.port, keepalive=max(5, int(timeout)))
    except (OSError, ValueError) as exc:
        return unreachable(where, exc).message
    client.loop_start()
    try:
        if not answered.wait(timeout):
            return f"broker unreachable at {where}: no CONNACK within {timeout:g} s"
        return verdict[0]
    finally:
        client.disconnect()
        client.loop_stop()
