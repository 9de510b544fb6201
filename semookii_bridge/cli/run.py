"""`run`: the bridge itself, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

import click

from .. import config
from ..config.files import check_files
from ..config.secret import Secret
from ..ha.fleet import FleetMismatch
from ..mqtt import MqttFailure
from ..ops import logs
from ..ops.http_server import PortBusy
from ..service import Service
from .options import broker_options, config_option, load_config, log_flags, log_options


@click.command()
@config_option()
@broker_options
@log_options
@click.option("--api-base-url", help="Overrides api.base_url.")
@click.option("--journal", "journal_path", help="Overrides journal.path.")
@click.option("--dry-run/--no-dry-run", default=None, help="Overrides commands.dry_run.")
@click.option(
    "--event-loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",
    show_default=True,
    help="auto: uvloop where installed (about 10 % less CPU per command), else asyncio.",
)
def run(
    config_path: str | None,
    mqtt_host: str | None,
    mqtt_port: int | None,
    prefix: str | None,
    api_base_url: str | None,
    journal_path: str | None,
    dry_run: bool | None,
    event_loop: str,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run the bridge: MQTT commands in, Cloud API calls out, lifecycle states back."""
    cfg = load_config(
        config_path,
        {
            "log": log_flags(log_level, log_format),
            "mqtt": {"host": mqtt_host, "port": mqtt_port, "prefix": prefix},
            "api": {"base_url": api_base_url},
            "journal": {"path": journal_path},
            "commands": {"dry_run": dry_run},
        },
    )
    logs.setup(cfg.log.level, cfg.log.format)
    try:
        token = config.load_token(cfg.api)
        check_files(cfg)
    except config.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logs.redact(token)
    try:
        _run_loop(_serve(cfg, token), event_loop)
    except MqttFailure as exc:
        raise Failed(exc.message, exc.exit_code) from None
    except PortBusy as exc:
        raise Failed(str(exc), PORT_BUSY) from None
    except FleetMismatch as exc:
        raise Failed(str(exc), exc.exit_code) from None


PORT_BUSY = 6


class Failed(click.ClickException):
    """`run` could not start: one line naming the cause, and an exit code per cause."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance


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
    """Start the service, wait for SIGTERM/SIGINT, stop it (which drains what is in flight)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = Service(cfg, token)
    loop.add_signal_handler(signal.SIGHUP, service.reload)
    starting = asyncio.ensure_future(service.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        # A standby waits in start() until it leads: a signal meanwhile ends the wait.
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            failed = service.failed or asyncio.get_running_loop().create_future()
            await asyncio.wait({stopping, failed}, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                raise failed.result()
    finally:
        starting.cancel()
        stopping.cancel()
        await service.stop()
