"""Command line: `simulate`, `api <endpoint>`; click only parses and hands over.

Exit codes: 0 success, 1 the API call failed (JSON error on stderr), 2 bad usage.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import click
import msgspec

from . import __version__, config, logs, wire
from .api import ApiError, CloudClient, RetryPolicy
from .commands import Command, decode_command, to_params
from .errors import BridgeError
from .mqtt import StateFollower
from .secret import Secret
from .service import Service
from .simulator import SimConfig, serve
from .topics import Target, Topics

DEFAULT_BASE_URL = "https://www.solaxcloud.com:9443/proxy"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="semookii-bridge")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option("--log-format", default="kv", show_default=True, type=click.Choice(["kv", "json"]))
def main(log_level: str, log_format: str) -> None:
    """MQTT bridge for virtual power plants on the Semookii Cloud Control API."""
    logs.setup(log_level, log_format)


# ---- simulate ----------------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--rate", default=0.0, show_default=True, type=click.FloatRange(0), help="Calls/s per token; 0 = no limit."
)
@click.option("--burst", default=10, show_default=True, type=click.IntRange(1))
@click.option(
    "--latency", default=0.0, show_default=True, type=click.FloatRange(0), help="Seconds added to each answer."
)
@click.option("--task-delay", default=0.2, show_default=True, type=click.FloatRange(0), help="Seconds until a task id.")
@click.option("--result-delay", default=0.5, show_default=True, type=click.FloatRange(0), help="Seconds until results.")
@click.option("--groups", default=2, show_default=True, type=click.IntRange(0))
@click.option("--inverters-per-group", default=3, show_default=True, type=click.IntRange(0))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--record/--no-record", default=True, show_default=True, help="Keep a log of calls (/_sim/calls).")
@click.option(
    "--ban-after", default=0, show_default=True, type=click.IntRange(0),
    help="Ban the token after this many over-limit calls in a row (0: never).",
)  # fmt: skip
@click.option("--ban-for", default=3600.0, show_default=True, type=click.FloatRange(0), help="Seconds a ban lasts.")
@click.option("--tz", default="UTC", show_default=True, help="The site's time zone for the dates the API writes.")
@click.option(
    "--silent-devices", default=0, show_default=True, type=click.IntRange(0),
    help="Devices (the first of each group) that never answer a command: their result stays \"null\".",
)  # fmt: skip
def simulate(
    host: str,
    port: int,
    rate: float,
    burst: int,
    latency: float,
    task_delay: float,
    result_delay: float,
    groups: int,
    inverters_per_group: int,
    seed: int,
    record: bool,
    ban_after: int,
    ban_for: float,
    silent_devices: int,
    tz: str,
) -> None:
    """Run a simulator of the Cloud Control API (token: $SEMOOKII_TOKEN, else `sim-token`)."""
    token = os.environ.get("SEMOOKII_TOKEN", "").strip() or "sim-token"
    config = SimConfig(
        tokens=[token],
        rate=rate,
        burst=burst,
        latency=latency,
        task_delay=task_delay,
        result_delay=result_delay,
        groups=groups,
        inverters_per_group=inverters_per_group,
        seed=seed,
        record_calls=record,
        ban_after=ban_after,
        ban_for=ban_for,
        silent_devices=silent_devices,
        tz=tz,
    )

    async def run() -> None:
        async with serve(config, host=host, port=port) as running:
            groups = running.simulator.fleet()["groups"]
            click.echo(wire.encode({"listening": running.base_url, "groups": groups}).decode(), err=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


# ---- run -----------------------------------------------------------------------------------------------


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--mqtt-host", help="Overrides mqtt.host.")
@click.option("--mqtt-port", type=click.IntRange(1, 65535), help="Overrides mqtt.port.")
@click.option("--prefix", help="Overrides mqtt.prefix.")
@click.option("--api-base-url", help="Overrides api.base_url.")
@click.option("--journal", "journal_path", help="Overrides journal.path.")
@click.option("--dry-run/--no-dry-run", default=None, help="Overrides commands.dry_run.")
@click.option("--event-loop", type=click.Choice(["auto", "uvloop", "asyncio"]), default="auto", show_default=True,
              help="auto: uvloop where installed (about 10 % less CPU per command), else asyncio.")  # fmt: skip
def run(
    config_path: str | None,
    mqtt_host: str | None,
    mqtt_port: int | None,
    prefix: str | None,
    api_base_url: str | None,
    journal_path: str | None,
    dry_run: bool | None,
    event_loop: str,
) -> None:
    """Run the bridge: MQTT commands in, Cloud API calls out, lifecycle states back."""
    flags: dict[str, dict[str, object]] = {
        "mqtt": {"host": mqtt_host, "port": mqtt_port, "prefix": prefix},
        "api": {"base_url": api_base_url},
        "journal": {"path": journal_path},
        "commands": {"dry_run": dry_run},
    }
    overrides = {section: {k: v for k, v in values.items() if v is not None} for section, values in flags.items()}
    try:
        cfg = config.load(config_path, overrides=overrides)
        token = config.load_token(cfg.api)
    except config.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        _run_loop(_serve(cfg, token), event_loop)
    except TimeoutError:
        raise click.ClickException(f"cannot reach the MQTT broker at {cfg.mqtt.host}:{cfg.mqtt.port}") from None


def _run_loop(main: Coroutine[Any, Any, None], choice: str) -> None:
    """Run `main` on uvloop (when chosen or, for `auto`, installed) or on the standard asyncio loop."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise click.UsageError("--event-loop uvloop: uvloop is not installed") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


async def _serve(cfg: config.BridgeConfig, token: Secret) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = Service(cfg, token)
    try:
        await service.start()
        await stop.wait()
    finally:
        await service.stop()


# ---- config check ----------------------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("check")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file.")
def config_check(config_path: str | None) -> None:
    """Validate the configuration and print the effective values (secrets redacted)."""
    try:
        cfg = config.load(config_path)
    except config.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        config.load_token(cfg.api)
        token_source = "set (api.token_file)" if cfg.api.token_file else "set (SEMOOKII_TOKEN)"
    except config.ConfigError:
        token_source = "not set: set SEMOOKII_TOKEN or api.token_file before `run`"
    click.echo(json.dumps({**config.redacted(cfg), "token": token_source}, indent=2))


# ---- send ------------------------------------------------------------------------------------------------


@main.command()
@click.argument("kind", type=click.Choice(["group", "inverter", "batch"]))
@click.argument("args", nargs=-1, required=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Read broker settings from here.")
@click.option("--mqtt-host", help="Overrides mqtt.host.")
@click.option("--mqtt-port", type=click.IntRange(1, 65535), help="Overrides mqtt.port.")
@click.option("--prefix", help="Overrides mqtt.prefix.")
@click.option("--username", help="Broker user (password: $SEMOOKII_BRIDGE_MQTT_PASSWORD).")
@click.option("--wait", default=60.0, show_default=True, type=click.FloatRange(0.1), help="Seconds to follow.")
def send(
    kind: str,
    args: tuple[str, ...],
    config_path: str | None,
    mqtt_host: str | None,
    mqtt_port: int | None,
    prefix: str | None,
    username: str | None,
    wait: float,
) -> None:
    """Publish a command and print its lifecycle until it ends (exit 0 only when `completed`).

    \b
    semookii-bridge send group 1028902640000001234 '{"type":"manual","action":"stop"}'
    semookii-bridge send inverter H475XXXXXX '{"type":"system_switch","on":true}'
    semookii-bridge send batch '{"type":"system_switch","on":true,"sns":["H475A","H475B"]}'
    """
    target, payload = (None, args[0]) if kind == "batch" else (args[0], args[1] if len(args) > 1 else "")
    if not payload or len(args) != (1 if kind == "batch" else 2):
        raise click.UsageError(f"usage: send {kind} {'' if kind == 'batch' else 'ID '}'<json command>'")
    command = _command_arg(payload)
    flags = {"host": mqtt_host, "port": mqtt_port, "prefix": prefix, "username": username}
    try:
        cfg = config.load(config_path, overrides={"mqtt": {k: v for k, v in flags.items() if v is not None}})
    except config.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    request_id = command.request_id or uuid.uuid4().hex
    doc = {**msgspec.to_builtins(command), "request_id": request_id}
    topic = Topics(cfg.mqtt.prefix).command(Target(kind, None if kind == "batch" else target))  # type: ignore[arg-type]  # kind is one of the Choice values
    final = asyncio.run(_send_and_follow(cfg.mqtt, topic, json.dumps(doc).encode(), request_id, wait))
    sys.exit(0 if final == "completed" else 1)


async def _send_and_follow(
    mqtt_cfg: config.MqttConfig, topic: str, payload: bytes, request_id: str, wait: float
) -> str:
    follower = StateFollower(
        mqtt_cfg.host, mqtt_cfg.port, prefix=mqtt_cfg.prefix, username=mqtt_cfg.username,
        password=mqtt_cfg.password_secret().reveal(),
    )  # fmt: skip
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


# ---- api -----------------------------------------------------------------------------------------------


class ApiContext:
    """What every `api` subcommand needs: where to call and with which token."""

    def __init__(self, base_url: str, token_file: str | None, timeout: float, attempts: int) -> None:
        self.base_url = base_url
        self.token_file = token_file
        self.timeout = timeout
        self.attempts = attempts

    def token(self) -> Secret:
        if self.token_file:
            try:
                return Secret(Path(self.token_file).read_text(encoding="utf-8"))
            except OSError as exc:
                raise click.UsageError(f"cannot read token file {self.token_file}: {exc.strerror}") from None
        token = os.environ.get("SEMOOKII_TOKEN", "")
        if not token.strip():
            raise click.UsageError("no token: set SEMOOKII_TOKEN or pass --token-file")
        return Secret(token)

    def call(self, fn: Callable[[CloudClient], Awaitable[Any]]) -> None:
        """Run one API call and print its answer as JSON (ids as strings); exit 1 on API failure."""
        token = self.token()

        async def run() -> Any:
            retry = RetryPolicy(attempts=self.attempts)
            async with CloudClient(self.base_url, token, timeout=self.timeout, retry=retry) as client:
                return await fn(client)

        try:
            result = asyncio.run(run())
        except ApiError as exc:
            click.echo(wire.encode({"code": exc.code, "message": exc.message, "endpoint": exc.endpoint}), err=True)
            sys.exit(1)
        click.echo(wire.encode(wire.to_user(result)).decode())


pass_api = click.make_pass_decorator(ApiContext)


@main.group()
@click.option(
    "--base-url",
    envvar="SEMOOKII_BRIDGE_API_BASE_URL",
    default=DEFAULT_BASE_URL,
    show_default=True,
    help="API root (env SEMOOKII_BRIDGE_API_BASE_URL).",
)
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="Read the token from this file instead of $SEMOOKII_TOKEN."
)
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1), help="Seconds per HTTP call.")
@click.option("--attempts", default=4, show_default=True, type=click.IntRange(1, 10), help="Tries per call.")
@click.pass_context
def api(ctx: click.Context, base_url: str, token_file: str | None, timeout: float, attempts: int) -> None:
    """Call one Cloud API endpoint and print the answer as JSON. Token: $SEMOOKII_TOKEN or --token-file."""
    ctx.obj = ApiContext(base_url, token_file, timeout, attempts)


def _command_arg(text: str) -> Command:
    try:
        return decode_command(text.encode())
    except BridgeError as exc:
        raise click.BadParameter(f"{exc.code}: {exc.message}", param_hint="COMMAND") from None


def _ids(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@api.command("single-control")
@click.argument("sn")
@click.argument("command")
@pass_api
def single_control(ctx: ApiContext, sn: str, command: str) -> None:
    """Control one inverter. COMMAND is a JSON command, e.g. '{"type":"system_switch","on":true}'."""
    params = to_params(_command_arg(command))
    ctx.call(lambda c: _command_id(c.single_control(sn, params)))


@api.command("batch-control")
@click.argument("sns", nargs=-1, required=True)
@click.argument("command")
@pass_api
def batch_control(ctx: ApiContext, sns: tuple[str, ...], command: str) -> None:
    """Control several inverters (SNS space or comma separated)."""
    params = to_params(_command_arg(command))
    ctx.call(lambda c: _command_id(c.batch_control(_ids(sns), params)))


@api.command("group-control")
@click.argument("group_id")
@click.argument("command")
@pass_api
def group_control(ctx: ApiContext, group_id: str, command: str) -> None:
    """Control every inverter of a group."""
    params = to_params(_command_arg(command))
    ctx.call(lambda c: _command_id(c.group_control(group_id, params)))


async def _command_id(call: Awaitable[str]) -> dict[str, str]:
    return {"command_id": await call}


async def _done(call: Awaitable[None]) -> dict[str, bool]:
    await call
    return {"ok": True}


@api.command("group-add")
@click.argument("name")
@pass_api
def group_add(ctx: ApiContext, name: str) -> None:
    """Create a group; prints its id."""
    ctx.call(lambda c: _keyed("id", c.group_add(name)))


async def _keyed(key: str, call: Awaitable[Any]) -> dict[str, Any]:
    return {key: await call}


@api.command("group-update")
@click.argument("group_id")
@click.argument("name")
@pass_api
def group_update(ctx: ApiContext, group_id: str, name: str) -> None:
    """Rename a group."""
    ctx.call(lambda c: _done(c.group_update(group_id, name)))


@api.command("group-delete")
@click.argument("group_id")
@pass_api
def group_delete(ctx: ApiContext, group_id: str) -> None:
    """Delete one group."""
    ctx.call(lambda c: _done(c.group_delete(group_id)))


@api.command("group-delete-batch")
@click.argument("group_ids", nargs=-1, required=True)
@pass_api
def group_delete_batch(ctx: ApiContext, group_ids: tuple[str, ...]) -> None:
    """Delete several groups in one call."""
    ctx.call(lambda c: _done(c.group_delete_batch(_ids(group_ids))))


def _paging(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--all", "all_pages", is_flag=True, help="Read every page.")(fn)
    fn = click.option("--size", default=20, show_default=True, type=click.IntRange(1, 1000))(fn)
    return click.option("--current", default=1, show_default=True, type=click.IntRange(1), help="Page number.")(fn)


@api.command("group-list")
@_paging
@pass_api
def group_list(ctx: ApiContext, current: int, size: int, all_pages: bool) -> None:
    """List groups, one page or --all."""
    if all_pages:
        ctx.call(lambda c: _keyed("groups", c.group_list_all(page_size=max(size, 100))))
    else:
        ctx.call(lambda c: c.group_find_all(current, size))


@api.command("group-search")
@click.argument("name")
@pass_api
def group_search(ctx: ApiContext, name: str) -> None:
    """Groups whose name contains NAME."""
    ctx.call(lambda c: c.group_find_like_name(name))


@api.command("inverter-add")
@click.argument("group_id")
@click.argument("sn")
@pass_api
def inverter_add(ctx: ApiContext, group_id: str, sn: str) -> None:
    """Add inverter SN to a group; prints the inverter id."""
    ctx.call(lambda c: _keyed("id", c.inverter_add(group_id, sn)))


@api.command("inverter-delete")
@click.argument("inverter_id")
@pass_api
def inverter_delete(ctx: ApiContext, inverter_id: str) -> None:
    """Remove one inverter (by inverter id) from its group."""
    ctx.call(lambda c: _done(c.inverter_delete(inverter_id)))


@api.command("inverter-delete-batch")
@click.argument("inverter_ids", nargs=-1, required=True)
@pass_api
def inverter_delete_batch(ctx: ApiContext, inverter_ids: tuple[str, ...]) -> None:
    """Remove several inverters in one call."""
    ctx.call(lambda c: _done(c.inverter_delete_batch(_ids(inverter_ids))))


@api.command("inverter-update")
@click.argument("inverter_id")
@click.argument("new_sn")
@pass_api
def inverter_update(ctx: ApiContext, inverter_id: str, new_sn: str) -> None:
    """Replace the inverter behind INVERTER_ID with NEW_SN."""
    ctx.call(lambda c: _done(c.inverter_update(inverter_id, new_sn)))


@api.command("inverter-list")
@click.argument("group_id")
@_paging
@pass_api
def inverter_list(ctx: ApiContext, group_id: str, current: int, size: int, all_pages: bool) -> None:
    """List a group's inverters, one page or --all."""
    if all_pages:
        ctx.call(lambda c: _keyed("inverters", c.inverter_list_all(group_id, page_size=max(size, 100))))
    else:
        ctx.call(lambda c: c.inverter_find_by_group(group_id, current, size))


@api.command("inverter-search")
@click.argument("group_id")
@click.option("--wifi-sn", help="Part of the dongle registration number.")
@click.option("--sn", help="Part of the inverter serial number.")
@pass_api
def inverter_search(ctx: ApiContext, group_id: str, wifi_sn: str | None, sn: str | None) -> None:
    """Inverters of a group matching --wifi-sn and/or --sn."""
    ctx.call(lambda c: c.inverter_find_like(group_id, wifi_sn=wifi_sn, sn=sn))


@api.command("query-command")
@click.argument("command_id")
@pass_api
def query_command(ctx: ApiContext, command_id: str) -> None:
    """The task id of a command (null until the cloud dispatched it)."""
    ctx.call(lambda c: _keyed("task_id", c.query_command(command_id)))


@api.command("query-result")
@click.argument("task_id")
@pass_api
def query_result(ctx: ApiContext, task_id: str) -> None:
    """Per-device results of a task (null until they are in)."""
    ctx.call(lambda c: _keyed("results", c.get_query_result(task_id)))


@api.command("bind")
@click.argument("sns", nargs=-1, required=True)
@pass_api
def bind(ctx: ApiContext, sns: tuple[str, ...]) -> None:
    """Bind dongles (registration numbers) to the account; any number, sent 100 per call."""
    ctx.call(lambda c: c.bind_sns(_ids(sns)))


# ---- schema ---------------------------------------------------------------------------------------------


@main.group()
def schema() -> None:
    """Print the MQTT interface as machine-readable documents, generated from the code's types."""


@schema.command("asyncapi")
@click.option("--prefix", default="vpp", show_default=True, help="Topic prefix (mqtt.prefix).")
def schema_asyncapi(prefix: str) -> None:
    """The AsyncAPI 3.0 document (YAML) of topics, operations and payloads; docs/asyncapi.yaml is its output."""
    from . import schema as interface

    click.echo(interface.asyncapi_yaml(prefix), nl=False)


@schema.command("json")
def schema_json() -> None:
    """The JSON Schema of every payload (commands, states, management requests and answers, budget)."""
    from . import schema as interface

    click.echo(wire.encode({"$defs": interface.json_schemas()}).decode())


if __name__ == "__main__":  # pragma: no cover
    main()
