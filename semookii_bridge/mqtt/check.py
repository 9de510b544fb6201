"""`config check --connect`: one throwaway connection with the configured credentials and TLS, on a client id
of its own (`<client_id>-check`, clean session) so it never takes over the running bridge's session. Once in,
it asks for the bridge's command subscriptions (a broker that refuses one at SUBACK is named; mosquitto grants
what its ACL will not deliver) and (MQTT 5) publishes one answer on its response topics, so an ACL that lets
the bridge connect but not publish is found before the first command's states are lost."""

from __future__ import annotations

import queue
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ..config import MqttConfig
from ..interface.topics import Topics
from .client import credentials
from .failures import refused, unreachable

CHECK_OP = "config-check"
"""The management op name the check's one publish answers (`<prefix>/bridge/response/config-check`): a valid
response envelope that no client asked for, so subscribers of responses can ignore it."""


def try_broker(cfg: MqttConfig, timeout: float = 10.0) -> list[str]:
    """What the broker refuses: the connection (worded like `run`'s errors), or else each command subscription
    and the publish it does not allow; empty when all is allowed."""
    v5 = cfg.protocol == 5
    protocol = paho.MQTTv5 if v5 else paho.MQTTv311
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{cfg.client_id}-check", protocol=protocol)
    where = f"{cfg.host}:{cfg.port}"
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    client.on_connect = lambda c, u, flags, reason, props: events.put(("connect", reason))
    client.on_subscribe = lambda c, u, mid, reasons, props: events.put(("subscribe", reasons))
    client.on_publish = lambda c, u, mid, reason, props: events.put(("publish", reason))
    try:
        credentials(client, cfg)
        client.connect(cfg.host, cfg.port, keepalive=max(5, int(timeout)))
    except (OSError, ValueError) as exc:
        return [unreachable(where, exc).message]
    client.loop_start()
    try:
        reason = _next(events, "connect", timeout)
        if reason is None:
            return [f"broker unreachable at {where}: no CONNACK within {timeout:g} s"]
        if getattr(reason, "is_failure", False):
            return [refused(where, int(getattr(reason, "value", 0)), str(reason)).message]
        return _permissions(client, events, Topics(cfg.prefix), v5, timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def _permissions(
    client: paho.Client, events: queue.Queue[tuple[str, Any]], topics: Topics, v5: bool, timeout: float
) -> list[str]:
    """The subscriptions the broker refuses, and (MQTT 5: PUBACK reason codes) a refused publish."""
    filters = [*topics.subscriptions(), *topics.safety_subscriptions()]
    client.subscribe([(f, 1) for f in filters])
    granted = _next(events, "subscribe", timeout)
    if granted is None:
        return [f"the broker did not answer the subscriptions to {', '.join(filters)} within {timeout:g} s"]
    refusals = [(f, r) for f, r in zip(filters, granted, strict=False) if getattr(r, "is_failure", False)]
    problems = [
        f"the broker refuses the subscription to {f} ({r}): allow the bridge's user to read it" for f, r in refusals
    ]
    if v5:
        topic = topics.response(CHECK_OP)
        envelope = b'{"status":"ok","data":null,"error":null,"transaction":"config-check"}'
        client.publish(topic, envelope, qos=1)
        answer = _next(events, "publish", timeout)
        if answer is None or getattr(answer, "is_failure", False):
            fix = "allow the bridge's user to write its state and response topics"
            problems.append(f"the broker refuses the bridge's publish to {topic} ({answer or 'no PUBACK'}): {fix}")
    return problems


def _next(events: queue.Queue[tuple[str, Any]], kind: str, timeout: float) -> Any:
    """The next event of `kind` within `timeout` (None when none came)."""
    try:
        while True:
            got, value = events.get(timeout=timeout)
            if got == kind:
                return value
    except queue.Empty:
        return None
