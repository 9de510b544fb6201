"""`config check`: validate a configuration file and print what the bridge would run with; with `--connect`,
try the broker and the API with the real credentials and say which one fails."""

from __future__ import annotations

import asyncio
import json

import click

from .. import config
from ..api import ApiError, CloudClient, RetryPolicy
from ..config.files import check_files
from ..config.secret import Secret
from .options import config_option, load_config


@click.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("check")
@config_option()
@click.option(
    "--connect",
    is_flag=True,
    help="Also connect to the broker and call the API (one cheap call, "
    "counted by the vendor) with the configured credentials.",
)
def config_check(config_path: str | None, connect: bool) -> None:
    """Validate the configuration and print the effective values (secrets redacted). Exit 1 when the token is
    missing or, with --connect, the broker or the API refuses."""
    cfg = load_config(config_path, {})
    token: Secret | None = None
    try:
        token = config.load_token(cfg.api)
        token_source = "set (api.token_file)" if cfg.api.token_file else "set (SEMOOKII_TOKEN)"
    except config.ConfigError as exc:
        token_source = f"unusable: {exc}" if cfg.api.token_file else "missing: set SEMOOKII_TOKEN or api.token_file"
    click.echo(json.dumps({**config.redacted(cfg), "token": token_source}, indent=2))
    problems = [] if token else [f"api token {token_source}"]
    try:
        check_files(cfg)
    except config.ConfigError as exc:
        problems.append(str(exc))
    if connect:
        problems += _connect(cfg, token)
    for problem in problems:
        click.echo(f"FAIL {problem}", err=True)
    if problems:
        raise SystemExit(1)


def _connect(cfg: config.BridgeConfig, token: Secret | None) -> list[str]:
    """The broker's and the API's verdicts on the configured credentials; each line is printed as it comes."""
    from ..mqtt.check import try_broker

    problems = []
    broker = try_broker(cfg.mqtt)
    click.echo(f"mqtt: {'ok' if not broker else '; '.join(broker)}", err=True)
    problems += [f"mqtt: {problem}" for problem in broker]
    if token:
        api = asyncio.run(_try_api(cfg.api, token))
        click.echo(f"api: {'ok' if api is None else api}", err=True)
        if api is not None:
            problems.append(f"api: {api}")
    return problems


async def _try_api(api: config.ApiConfig, token: Secret) -> str | None:
    """None when the API accepts the token (one group-list call of one row); else the cause with its code."""
    try:
        async with CloudClient(
            api.base_url, token, timeout=api.timeout, connect_timeout=api.connect_timeout, retry=RetryPolicy(attempts=1)
        ) as client:
            await client.group_find_all(1, 1)
    except ApiError as exc:
        return f"{exc.code}: {exc.message}"
    return None
