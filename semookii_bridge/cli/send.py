"""`send`: publish one command over MQTT and print its lifecycle states until it ends."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any, cast

import click
import msgspec

from .. import config
from ..config import BridgeConfig
from ..control.commands import is_safety
from ..interface.topics import Target, TargetKind, Topics
from ..mqtt import StateFollower
from .options import broker_options, command_arg, config_option, load_config
from .plan_file import read_plan


@click.command()
@click.argument("kind", type=click.Choice(["group", "inverter", "batch"]))
@click.argument("args", nargs=-1, required=True)
@config_option("Read broker settings from here.")
@broker_options
@click.option("--username", help="Broker user (password: $SEMOOKII_BRIDGE_MQTT_PASSWORD).")
@click.option("--wait", default=60.0, show_default=True, type=click.FloatRange(0.1), help="Seconds to follow.")
@click.option("--safety", is_flag=True, help="On the safety lane: a stop that must not wait behind setpoints.")
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Send this dispatch plan (JSON, or CSV: start,end,<command fields>) instead of a command.",
)
@click.option("--plan-id", help="The plan's id (default: the JSON's own, else the file's name).")
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
    plan_file: Path | None,
    plan_id: str | None,
) -> None:
    """Publish a command and print its lifecycle until it ends (exit 0 only when `completed`).

    \b
    semookii-bridge send group 1028902640000001234 '{"type":"manual","action":"stop"}'
    semookii-bridge send --safety group 1028902640000001234 '{"type":"manual","action":"stop"}'
    semookii-bridge send inverter H475XXXXXX '{"type":"system_switch","on":true}'
    semookii-bridge send batch '{"type":"system_switch","on":true,"sns":["H475A","H475B"]}'
    semookii-bridge send group 1028902640000001234 --plan day.csv
    """
    flags: dict[str, object] = {"host": mqtt_host, "port": mqtt_port, "prefix": prefix, "username": username}
    if plan_file is not None:
        sys.exit(_send_plan(kind, args, plan_file, plan_id, load_config(config_path, {"mqtt": flags}), wait))
    target, payload = _target_and_payload(cast(TargetKind, kind), args)
    command = command_arg(payload)
    if safety and not is_safety(command):
        raise click.UsageError("--safety takes only a manual stop, exit_remote_control or system_switch off")
    cfg = load_config(config_path, {"mqtt": flags})
    request_id = command.request_id or uuid.uuid4().hex
    doc = {**msgspec.to_builtins(command), "request_id": request_id}
    topic = Topics(cfg.mqtt.prefix).command(target, safety=safety)
    final = asyncio.run(_send_and_follow(cfg.mqtt, topic, json.dumps(doc).encode(), request_id, wait))
    sys.exit(0 if final == "completed" else 1)


def _send_plan(
    kind: str, args: tuple[str, ...], path: Path, plan_id: str | None, cfg: BridgeConfig, wait: float
) -> int:
    """Publish the plan in `path` for a group or an inverter and print the bridge's answer (exit 0 if `active`)."""
    if kind == "batch" or len(args) != 1:
        raise click.UsageError("usage: send group|inverter ID --plan FILE")
    plan = read_plan(path, plan_id)
    topic = Topics(cfg.mqtt.prefix).plan(Target(cast(TargetKind, kind), args[0]))
    answer = asyncio.run(_publish_plan(cfg.mqtt, topic, plan, wait))
    click.echo(json.dumps(answer) if answer is not None else f"no answer within {wait:g} s")
    return 0 if answer is not None and answer.get("status") == "active" else 1


async def _publish_plan(
    mqtt_cfg: config.MqttConfig, topic: str, plan: dict[str, Any], wait: float
) -> dict[str, Any] | None:
    follower = _follower(mqtt_cfg)
    try:
        async with follower:
            follower.send(topic, json.dumps(plan).encode())
            return await follower.plan_answer(str(plan["plan_id"]), wait)
    except TimeoutError:
        raise click.ClickException(f"cannot reach the MQTT broker at {mqtt_cfg.host}:{mqtt_cfg.port}") from None


def _follower(mqtt_cfg: config.MqttConfig) -> StateFollower:
    """An operator-side client of the configured broker."""
    password = mqtt_cfg.password_secret().reveal()
    return StateFollower(
        mqtt_cfg.host, mqtt_cfg.port, prefix=mqtt_cfg.prefix, username=mqtt_cfg.username, password=password
    )


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
    follower = _follower(mqtt_cfg)
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
