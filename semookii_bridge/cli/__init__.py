"""Command line: one module per command group; click only parses and hands over to the package.

Exit codes: 0 success, 1 the API call (or the followed command) failed, 2 bad usage.
"""

from __future__ import annotations

import click

from .. import __version__, logs
from .api import api
from .config import config_group
from .run import run
from .schema import schema
from .send import send
from .simulate import simulate


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


for _command in (run, send, simulate, config_group, api, schema):
    main.add_command(_command)

__all__ = ["main"]
