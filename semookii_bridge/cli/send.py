"""`send`: publish one command over MQTT and print its lifecycle states until it ends."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import cast

import click
import msgspec

from .. import config
from ..control.commands import is_safety
from ..interface.topics import Target, TargetKind, Topics
from ..mqtt import StateFollower
from .options import broker_options, command_arg, config_option, load_config


@click.command()
@click.argument("kind", type=click.Choice(["group", "inverter", "batch"]))
@click.argument("args", nargs=-1, required=True)
@config_option("Read broker settings from here.")
@broker_options
@click.option("--username", help="Broker user (password: $SEMOOKII_BRIDGE_MQTT_PASSWORD).")
@click.option("--wait", default=60.0, show_default=True, type=click.FloatRange(0.1), help="Seconds to follow.")
@click.option("--safety", is_flag=True, help="On the safety lane: a stop that must not wait behind setpoints.")
def send(
    kind: str,
    args: tuple[str, ...],
    config_path: str | None,
    mqtt_host: str | None,
    mqtt_port: int | None,
    prefix: str | None,
    username: str | None,
    wait: float,
    safety: bool,
) -> None:
    """Publish a command and print its lifecycle until it ends (exit 0 only when `completed`).

    \b
    semookii-bridge send group 1028902640000001234 '{"type":"manual","action":"stop"}'
    semookii-bridge send --safety group 1028902640000001234 '{"type":"manual","action":"stop"}'
    semookii-bridge send inverter H475XXXXXX '{"type":"system_switch","on":true}'
    semookii-bridge send batch '{"type":"system_switch","on":true,"sns":["H475A","H475B"]}'
    """
    target, payload = _target_and_payload(cast(TargetKind, kind), args)
    command = command_arg(payload)
    if safety and not is_safety(command):
        raise click.UsageError("--safety takes only a manual stop, exit_remote_control or system_switch off")
    flags: dict[str, object] = {"host": mqtt_host, "port": mqtt_port, "prefix": prefix, "username": username}
    cfg = load_config(config_path, {"mqtt": flags})
    request_id = command.request_id or uuid.uuid4().hex
    doc = {**msgspec.to_builtins(command), "request_id": request_id}
    topic = Topics(cfg.mqtt.prefix).command(target, safety=safety)
    final = asyncio.run(_send_and_follow(cfg.mqtt, topic, json.dumps(doc).encode(), request_id, wait))
    sys.exit(0 if final == "completed" else 1)


def _target_and_payload(kind: TargetKind, args: tuple[str, ...]) -> tuple[Target, str]:
    """`batch '<json>'` or `group|inverter ID '<json>'`; anything else is bad usage."""
    wanted = 1 if kind == "batch" else 2
    if len(args) != wanted or not args[-1]:
        raise click.UsageError(f"usage: send {kind} {'' if kind == 'batch' else 'ID '}'<json command>'")
    return Target(kind, None if kind == "batch" else args[0]), args[-1]


async def _send_and_follow(
    mqtt_cfg: config.MqttConfig, topic: str, payload: bytes, request_id: str, wait: float
) -> str:
    """Publish, print each state of `request_id` as a JSON line, and return the last status seen."""
    follower = StateFollower(
        mqtt_cfg.host,
        mqtt_cfg.port,
        prefix=mqtt_cfg.prefix,
        username=mqtt_cfg.username,
        password=mqtt_cfg.password_secret().reveal(),
    )
    status = "timeout"
    try:
        async with follower:
            follower.send(topic, payload)
            async for state in follower.follow(request_id, wait):
                click.echo(json.dumps(state))
                status = str(state.get("status"))
    except TimeoutError:
        raise click.ClickException(f"cannot reach the MQTT broker at {mqtt_cfg.host}:{mqtt_cfg.port}") from None
    if status == "timeout":
        click.echo(f"no final state within {wait:g} s", err=True)
    return status
