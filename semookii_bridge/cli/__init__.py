"""Command line: one module per command group; click only parses and hands over to the package.

Exit codes: 0 success, 1 the API call (or the followed command) failed, 2 bad usage.
"""

from __future__ import annotations

import os

import click

from .. import __version__
from ..ops import logs
from .api import api
from .config import config_group
from .options import FORMATS, LEVELS
from .run import run
from .schema import schema
from .send import send
from .simulate import simulate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="semookii-bridge")
@click.option("--log-level", type=LEVELS, help="Log level (default: log.level, SEMOOKII_BRIDGE_LOG_LEVEL, INFO).")
@click.option("--log-format", type=FORMATS, help="logfmt or json (default: log.format, SEMOOKII_BRIDGE_LOG_FORMAT).")
def main(log_level: str | None, log_format: str | None) -> None:
    """MQTT bridge for virtual power plants on the Semookii Cloud Control API."""
    env = os.environ
    logs.setup(
        log_level or env.get("SEMOOKII_BRIDGE_LOG_LEVEL") or "INFO",
        log_format or env.get("SEMOOKII_BRIDGE_LOG_FORMAT") or "logfmt",
    )


for _command in (run, send, simulate, config_group, api, schema):
    main.add_command(_command)

__all__ = ["main"]
