"""Click parameters and conversions that several commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from .. import config
from ..config.secret import Secret
from ..control.commands import Command, decode_command
from ..errors import BridgeError

F = TypeVar("F", bound=Callable[..., Any])


def config_option(help_text: str = "TOML configuration file.") -> Callable[[F], F]:
    """`--config PATH`, stored as `config_path`."""
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), help=help_text)


def broker_options(fn: F) -> F:
    """`--mqtt-host`, `--mqtt-port` and `--prefix`, each overriding its `[mqtt]` setting."""
    fn = click.option("--prefix", help="Overrides mqtt.prefix.")(fn)
    fn = click.option("--mqtt-port", type=click.IntRange(1, 65535), help="Overrides mqtt.port.")(fn)
    return click.option("--mqtt-host", help="Overrides mqtt.host.")(fn)


LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)
FORMATS = click.Choice(["logfmt", "json", "kv"])


def log_options(fn: F) -> F:
    """`--log-level` and `--log-format` after the subcommand, overriding `[log]` (file and environment)."""
    fn = click.option("--log-format", type=FORMATS, help="Overrides log.format (logfmt or json).")(fn)
    return click.option("--log-level", type=LEVELS, help="Overrides log.level.")(fn)


def log_flags(level: str | None, fmt: str | None) -> dict[str, object]:
    """The `[log]` overrides from flags after the subcommand, else from the ones before it."""
    given = click.get_current_context().find_root().params
    return {"level": level or given.get("log_level"), "format": fmt or given.get("log_format")}


def load_config(path: str | None, overrides: dict[str, dict[str, object]]) -> config.BridgeConfig:
    """The validated configuration with the flags that were given (None = not given); bad config is bad usage."""
    given = {section: {k: v for k, v in values.items() if v is not None} for section, values in overrides.items()}
    try:
        return config.load(path, overrides=given)
    except config.ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def token(token_file: str | None) -> Secret:
    """The API token the way `run` reads it (`config.load_token`); missing or unreadable is bad usage."""
    try:
        return config.load_token(config.ApiConfig(token_file=token_file or ""))
    except config.ConfigError as exc:
        raise click.UsageError(f"{exc} (or pass --token-file)") from None


def command_arg(text: str) -> Command:
    """A JSON command as on the `/set` topic; one that does not validate is a bad parameter naming the field."""
    try:
        return decode_command(text.encode())
    except BridgeError as exc:
        raise click.BadParameter(f"{exc.code}: {exc.message}", param_hint="COMMAND") from None


def ids(values: tuple[str, ...]) -> list[str]:
    """Ids given space or comma separated, as one flat list."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
