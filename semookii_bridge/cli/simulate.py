"""`simulate`: a simulator of the Cloud Control API as its own process, for demos, tests and benchmarks."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import click

from ..interface import wire
from ..simulator import SimConfig, serve


@click.command(context_settings={"show_default": True})
@click.option("--host", default="127.0.0.1", help="Address to listen on.")
@click.option("--port", default=8080, type=click.IntRange(0, 65535))
@click.option("--rate", default=0.0, type=click.FloatRange(0), help="Calls/s per token; 0 = no limit.")
@click.option("--burst", default=10, type=click.IntRange(1))
@click.option("--latency", default=0.0, type=click.FloatRange(0), help="Seconds added to each answer.")
@click.option("--task-delay", default=0.2, type=click.FloatRange(0), help="Seconds until a task id.")
@click.option("--result-delay", default=0.5, type=click.FloatRange(0), help="Seconds until results.")
@click.option("--groups", default=2, type=click.IntRange(0))
@click.option("--inverters-per-group", default=3, type=click.IntRange(0))
@click.option("--seed", default=1, type=int)
@click.option("--record/--no-record", "record_calls", default=True, help="Keep a log of calls (/_sim/calls).")
@click.option(
    "--ban-after", default=0, type=click.IntRange(0), help="Ban after N over-limit calls in a row (0: never)."
)
@click.option("--ban-for", default=3600.0, type=click.FloatRange(0), help="Seconds a ban lasts.")
@click.option("--tz", default="UTC", help="The site's time zone for the dates the API writes.")
@click.option(
    "--silent-devices",
    default=0,
    type=click.IntRange(0),
    help="Devices that never answer a command (the first of each group); results stay null.",
)
def simulate(host: str, port: int, **options: Any) -> None:
    """Run a simulator of the Cloud Control API (token: $SEMOOKII_TOKEN, else `sim-token`).

    Every option other than --host and --port is the `SimConfig` field of the same name.
    """
    token = os.environ.get("SEMOOKII_TOKEN", "").strip() or "sim-token"
    sim_config = SimConfig(tokens=[token], **options)
    try:
        asyncio.run(_serve(sim_config, host, port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _serve(sim_config: SimConfig, host: str, port: int) -> None:
    """Serve until killed; print where and which groups on stderr first (scripts read that line)."""
    async with serve(sim_config, host=host, port=port) as running:
        groups = running.simulator.fleet()["groups"]
        click.echo(wire.encode({"listening": running.base_url, "groups": groups}).decode(), err=True)
        await asyncio.Event().wait()
