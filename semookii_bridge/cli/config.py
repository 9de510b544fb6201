"""`config check`: validate a configuration file and print what the bridge would run with."""

from __future__ import annotations

import json

import click

from .. import config
from .options import config_option, load_config


@click.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("check")
@config_option()
def config_check(config_path: str | None) -> None:
    """Validate the configuration and print the effective values (secrets redacted)."""
    cfg = load_config(config_path, {})
    try:
        config.load_token(cfg.api)
        token_source = "set (api.token_file)" if cfg.api.token_file else "set (SEMOOKII_TOKEN)"
    except config.ConfigError:
        token_source = "not set: set SEMOOKII_TOKEN or api.token_file before `run`"
    click.echo(json.dumps({**config.redacted(cfg), "token": token_source}, indent=2))
